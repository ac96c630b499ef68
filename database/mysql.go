package database

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQL connections: the driver's own connector per host, wrapped by
// hostsConnector, which the pool asks for every new connection. It tries
// the hosts of DATABASE_URL in order, so connections go to the first that
// answers and is ready, and a node that failed is passed over for a while;
// a connection that a dead node broke is dropped by the pool, and its
// replacement is dialed on the next host. No proxy: database/sql and the
// driver do the rest.

// sessionSetup is run on every new MySQL connection:
//   - UTC, so SYSDATE(6), which package stock reads under a row lock to
//     judge expiry (UTC_TIMESTAMP is fixed when a statement starts, before
//     its lock wait), is in UTC like every stored time;
//   - READ COMMITTED: every decision in package stock is taken under row
//     locks, and each statement then sees the latest committed rows. It
//     also takes no gap locks, so a lookup of a hold that does not exist
//     cannot block the inserts of a hot product's hold batch.
var sessionSetup = []string{
	"SET time_zone = '+00:00'",
	"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
}

// galeraSetup is run as well on a Galera node: causal reads, so a read
// waits until the node has applied every transaction the cluster committed
// before it (a hold made through another node is found by createOrder
// here; a product read is as fresh as on a single server). Conflicting
// writes from two nodes are caught by Galera's certification, since every
// decision in package stock writes the rows it decided on (see the lock
// order in package stock); this makes the reads before them current too.
var galeraSetup = []string{
	"SET SESSION wsrep_sync_wait = 1",
}

// hostDownFor is how long a host that failed to connect, or was not a
// ready Galera node, is passed over while others answer.
const hostDownFor = 5 * time.Second

// hostsConnector connects to the first host that answers and is ready.
type hostsConnector struct {
	hosts []hostConnector
	log   *slog.Logger
}

type hostConnector struct {
	addr      string
	driver    driver.Connector // the driver's connector for this host
	downUntil *atomic.Int64    // unix nanoseconds; shared by connectors to the host
}

func newHostsConnector(cfg *mysql.Config, addrs []string, log *slog.Logger) (*hostsConnector, error) {
	c := &hostsConnector{hosts: make([]hostConnector, len(addrs)), log: log}
	for i, addr := range addrs {
		c.hosts[i].addr, c.hosts[i].downUntil = addr, new(atomic.Int64)
	}
	return c.with(cfg)
}

// with returns a connector to the same hosts, sharing which are down, whose
// sessions are opened with cfg.
func (c *hostsConnector) with(cfg *mysql.Config) (*hostsConnector, error) {
	out := &hostsConnector{hosts: slices.Clone(c.hosts), log: c.log}
	for i := range out.hosts {
		hc := cfg.Clone()
		hc.Addr = out.hosts[i].addr
		d, err := mysql.NewConnector(hc)
		if err != nil {
			return nil, fmt.Errorf("DATABASE_URL: %w", err)
		}
		out.hosts[i].driver = d
	}
	return out, nil
}

func (c *hostsConnector) Driver() driver.Driver { return c.hosts[0].driver.Driver() }

// Connect tries the hosts in order, first those not marked down, then, if
// none of them answered, the others: a whole cluster coming back is found
// at once.
func (c *hostsConnector) Connect(ctx context.Context) (driver.Conn, error) {
	var errs []error
	now := time.Now().UnixNano()
	for pass := 0; pass < 2; pass++ {
		for i := range c.hosts {
			h := &c.hosts[i]
			if skipped := h.downUntil.Load() > now; skipped != (pass == 1) {
				continue
			}
			conn, err := h.connect(ctx)
			if err == nil {
				if i > 0 && c.log != nil {
					c.log.Debug("database connection on a later host", "addr", h.addr)
				}
				return conn, nil
			}
			if ctx.Err() != nil {
				return nil, err
			}
			if h.downUntil.Swap(time.Now().Add(hostDownFor).UnixNano()) <= now && c.log != nil && len(c.hosts) > 1 {
				c.log.Warn("database host unusable, trying the next", "addr", h.addr, "err", err)
			}
			errs = append(errs, err)
		}
	}
	return nil, errors.Join(errs...)
}

// connect opens one connection to h and prepares its session.
func (h *hostConnector) connect(ctx context.Context) (driver.Conn, error) {
	conn, err := h.driver.Connect(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (driver.Conn, error) {
		conn.Close()
		return nil, err
	}
	for _, q := range sessionSetup {
		if _, err := conn.(driver.ExecerContext).ExecContext(ctx, q, nil); err != nil {
			return fail(fmt.Errorf("%s: %s: %w", h.addr, q, err))
		}
	}
	on, err := variable(ctx, conn, "SHOW VARIABLES LIKE 'wsrep_on'")
	if err != nil {
		return fail(fmt.Errorf("%s: %w", h.addr, err))
	}
	if on != "ON" {
		return conn, nil // not Galera
	}
	// A node that is joining, a donor behind, or cut off from the
	// cluster's majority accepts connections but cannot serve them.
	if ready, err := variable(ctx, conn, "SHOW STATUS LIKE 'wsrep_ready'"); err != nil || ready != "ON" {
		return fail(&nodeUnavailable{addr: h.addr, why: fmt.Sprintf("Galera node not ready (wsrep_ready=%q, %v)", ready, err)})
	}
	for _, q := range galeraSetup {
		if _, err := conn.(driver.ExecerContext).ExecContext(ctx, q, nil); err != nil {
			return fail(fmt.Errorf("%s: %s: %w", h.addr, q, err))
		}
	}
	return &galeraConn{Conn: conn}, nil
}

// variable returns the Value column of a SHOW VARIABLES or SHOW STATUS
// query for one name ("" when the server has no such variable).
func variable(ctx context.Context, conn driver.Conn, query string) (string, error) {
	rows, err := conn.(driver.QueryerContext).QueryContext(ctx, query, nil)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	vals := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(vals); err != nil {
		if errors.Is(err, io.EOF) {
			return "", nil
		}
		return "", err
	}
	switch v := vals[len(vals)-1].(type) {
	case []byte:
		return string(v), nil
	case string:
		return v, nil
	}
	return fmt.Sprint(vals[len(vals)-1]), nil
}

// nodeUnavailable is a host that answered but cannot serve. It is a
// net.Error, so callers treat it as the database being unreachable.
type nodeUnavailable struct{ addr, why string }

func (e *nodeUnavailable) Error() string   { return e.addr + ": " + e.why }
func (e *nodeUnavailable) Timeout() bool   { return false }
func (e *nodeUnavailable) Temporary() bool { return true }

// MySQL server error numbers the service reacts to, here and in package
// stock: their one definition.
const (
	MySQLDBAccessDenied   = 1044 // access denied to the database
	MySQLAccessDenied     = 1045 // access denied for the user (password)
	MySQLUnknownDatabase  = 1049
	MySQLTooManyConns     = 1040
	MySQLServerShutdown   = 1053
	MySQLLockWaitTimeout  = 1205
	MySQLDeadlock         = 1213 // also how Galera reports a certification conflict
	MySQLWSREPNotReady    = 1047 // a Galera node not serving: "WSREP has not yet prepared node for application use"
	MySQLConnectionKilled = 1927
)

// Permanent reports whether err is one that no retry will fix (the
// database does not exist, or the user may not use it), with what to do
// about it.
func Permanent(err error) (advice string, ok bool) {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return "", false
	}
	switch me.Number {
	case MySQLUnknownDatabase:
		return "create it first (e.g. mysql -e 'CREATE DATABASE <name>'), or fix the name in DATABASE_URL; the server creates the tables, not the database", true
	case MySQLAccessDenied:
		return "check the user and password in DATABASE_URL", true
	case MySQLDBAccessDenied:
		return "grant the user of DATABASE_URL rights on the database (e.g. GRANT ALL ON <name>.* TO <user>)", true
	}
	return "", false
}

// galeraConn is a connection to a Galera node that marks itself unusable
// when the node stops serving it, so that the pool replaces it rather than
// handing it out again (database/sql asks driver.Validator before reuse).
type galeraConn struct {
	driver.Conn
	bad atomic.Bool
}

func (c *galeraConn) check(err error) error {
	var me *mysql.MySQLError
	// A Galera node stopped serving: the connection is dropped from the
	// pool, so the next one is dialed on another host.
	if errors.As(err, &me) && (me.Number == MySQLWSREPNotReady || me.Number == MySQLConnectionKilled) {
		c.bad.Store(true)
	}
	return err
}

func (c *galeraConn) IsValid() bool {
	if c.bad.Load() {
		return false
	}
	v, ok := c.Conn.(driver.Validator)
	return !ok || v.IsValid()
}

func (c *galeraConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	r, err := c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
	return r, c.check(err)
}

func (c *galeraConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	r, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
	return r, c.check(err)
}

func (c *galeraConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	s, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	return s, c.check(err)
}

func (c *galeraConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, c.check(err)
	}
	return galeraTx{tx, c}, nil
}

func (c *galeraConn) Ping(ctx context.Context) error {
	return c.check(c.Conn.(driver.Pinger).Ping(ctx))
}

func (c *galeraConn) ResetSession(ctx context.Context) error {
	if c.bad.Load() {
		return driver.ErrBadConn
	}
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *galeraConn) CheckNamedValue(nv *driver.NamedValue) error {
	return c.Conn.(driver.NamedValueChecker).CheckNamedValue(nv)
}

// galeraTx catches a node that stopped serving at COMMIT, and retires the
// connection of a transaction that was rolled back. A transaction here
// rolls back after an error, on Galera most often a brute-force abort (a
// write set replicated from another node won, reported as a deadlock, at
// any statement or at COMMIT). Seen in TestGalera: after such an abort
// surfaced in the middle of a statement, the session's next transaction
// was answered OK at COMMIT and kept nothing. A new session carries no
// such state; the cost is a reconnect per lost conflict.
type galeraTx struct {
	driver.Tx
	c *galeraConn
}

func (t galeraTx) Commit() error { return t.c.check(t.Tx.Commit()) }

func (t galeraTx) Rollback() error {
	t.c.bad.Store(true)
	return t.Tx.Rollback()
}
