package main

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"flashsale/database"
)

// baseline is the db-forupdate scenario: one transaction per hold straight
// from Go, no HTTP, the way the contract's createHold must work at least:
//
//	BEGIN
//	SELECT stock_available, stock_reserved FROM products WHERE id = ? FOR UPDATE
//	INSERT INTO holds (...) VALUES (... 'ACTIVE' ...)
//	UPDATE products SET stock_reserved = stock_reserved + 1 WHERE id = ?
//	COMMIT
//
// Its holds are real rows of the server's schema, expiring after -hold-ttl,
// so the server's sweeper releases them and the invariants keep holding.
type baseline struct {
	db      *database.DB
	clients int
	pool    int
	how     string // how pool was chosen
	ttl     time.Duration
}

// openBaseline opens a MySQL -db for the baseline with a pool of conns
// connections, or when conns is 0 of min(clients, dbPoolLimit) (MariaDB's
// max_connections, 151 by default, is shared with the server). The figure
// depends on it: more connections than the row lock can use only lengthen
// its wait queue. Parameters are interpolated by the
// driver, saving the prepare/close round trips: this is the ceiling of the
// one-transaction-per-hold design, so it gets the fastest client.
func openBaseline(dbURL string, clients, conns int, ttl time.Duration) (*baseline, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	q := u.Query()
	if q.Get("interpolateParams") == "" {
		q.Set("interpolateParams", "true")
	}
	u.RawQuery = q.Encode()
	pool, how := conns, "set by -db-conns"
	if pool == 0 {
		pool, how = min(clients, dbPoolLimit), fmt.Sprintf("min(clients, %d)", dbPoolLimit)
	}
	db, err := database.Open(u.String(), database.Options{MaxConns: pool})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s unreachable: %w", db.Redacted, err)
	}
	return &baseline{db: db, clients: clients, pool: pool, how: how, ttl: ttl}, nil
}

func (b *baseline) close() { b.db.Close() }

func (b *baseline) note() string {
	return fmt.Sprintf("db-forupdate: %d goroutines share a pool of %d database connections (%s; MariaDB's max_connections, 151, "+
		"is shared with the server); driver-side interpolated parameters; holds expire after %s", b.clients, b.pool, b.how, b.ttl)
}

// hold runs one hold transaction on product pid. refused is true (and
// nothing is written) when the product has no sellable unit.
func (b *baseline) hold(ctx context.Context, pid int64) (refused bool, err error) {
	tx, err := b.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil || refused {
			_ = tx.Rollback()
		}
	}()
	var available, reserved int64
	if err := tx.QueryRowContext(ctx,
		"SELECT stock_available, stock_reserved FROM products WHERE id = ? FOR UPDATE", pid).
		Scan(&available, &reserved); err != nil {
		return false, err
	}
	if available-reserved < 1 {
		return true, nil
	}
	if _, err := tx.ExecContext(ctx,
		"INSERT INTO holds (id, created_at, updated_at, qty, status, expires_at, product_id) "+
			"VALUES (?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 1, 'ACTIVE', UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, ?)",
		uuid.NewString(), b.ttl.Microseconds(), pid); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx,
		"UPDATE products SET stock_reserved = stock_reserved + 1, updated_at = UTC_TIMESTAMP(6) WHERE id = ?", pid); err != nil {
		return false, err
	}
	return false, tx.Commit()
}

// dbErrClass names a database error for the report.
func dbErrClass(err error) string {
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &me):
		return "mysql " + strconv.Itoa(int(me.Number))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn):
		return "bad connection"
	}
	return "db error"
}
