package database

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
)

// Transactions without START TRANSACTION.
//
// database/sql begins a MySQL transaction with its own round trip (START
// TRANSACTION), before the transaction's first statement. A hot product's
// group-commit batch is four more (lock, insert, update, commit), and on a
// busy server each is a wait of its own, far longer than the database's
// work in it, in which the product's next batch cannot start (see the
// docs/performance.md, "Why it is fast").
//
// txDriver runs ent's transactions on a second pool whose sessions have
// autocommit off: there, as with JDBC's autoCommit=false, the first
// statement starts the transaction (with the session's isolation, as
// START TRANSACTION would; see sessionSetup) and COMMIT or ROLLBACK ends
// it. Statements outside transactions stay on the main pool, in
// autocommit mode. A session is only handed out again when its last
// transaction certainly committed: after a rollback or a failed COMMIT it
// is closed (see galeraTx for why a rolled-back session is not reused).
type txDriver struct {
	*entsql.Driver         // statements outside transactions (autocommit on)
	txPool         *sql.DB // sessions with autocommit=0, used by implicitTx only
}

// Tx starts a transaction; see BeginTx.
func (d *txDriver) Tx(ctx context.Context) (dialect.Tx, error) { return d.BeginTx(ctx, nil) }

// BeginTx takes a session for a transaction; nothing is sent yet. Options
// other than the default isolation, read-write, use START TRANSACTION on
// the main pool as database/sql does.
func (d *txDriver) BeginTx(ctx context.Context, opts *sql.TxOptions) (dialect.Tx, error) {
	if opts != nil && (opts.Isolation != sql.LevelDefault || opts.ReadOnly) {
		return d.Driver.BeginTx(ctx, opts)
	}
	c, err := d.txPool.Conn(ctx)
	if err != nil {
		return nil, err
	}
	return &implicitTx{Conn: entsql.Conn{ExecQuerier: c}, conn: c, ctx: ctx}, nil
}

// Close closes both pools.
func (d *txDriver) Close() error {
	return errors.Join(d.Driver.Close(), d.txPool.Close())
}

// implicitTx is one transaction on an autocommit=0 session.
type implicitTx struct {
	entsql.Conn // runs the statements on conn
	conn        *sql.Conn
	ctx         context.Context
	done        bool
}

// Commit ends the transaction with COMMIT.
func (t *implicitTx) Commit() error { return t.end("COMMIT") }

// Rollback ends the transaction with ROLLBACK, and retires its session.
func (t *implicitTx) Rollback() error { return t.end("ROLLBACK") }

func (t *implicitTx) end(stmt string) error {
	if t.done {
		return sql.ErrTxDone
	}
	t.done = true
	// Not cut short by the caller's context, like database/sql's Commit
	// with this driver: the connection's I/O timeouts bound it, and a
	// COMMIT cut off midway would leave its outcome unknown.
	_, err := t.conn.ExecContext(context.WithoutCancel(t.ctx), stmt)
	if err != nil || stmt == "ROLLBACK" {
		// ErrBadConn from Raw makes database/sql close the session.
		_ = t.conn.Raw(func(any) error { return driver.ErrBadConn })
		return err
	}
	return t.conn.Close()
}
