package main

import (
	"context"
	"database/sql"
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

// baseline runs the db-forupdate and db-lifecycle scenarios: the original
// design, one transaction per step straight from Go, no HTTP. Every step
// locks the product row first, as the contract's stock transactions must:
//
//	hold (db-forupdate's only step, db-lifecycle's first):
//	  BEGIN
//	  SELECT stock_available, stock_reserved, price_cents FROM products WHERE id = ? FOR UPDATE
//	  INSERT INTO holds (...) VALUES (... 'ACTIVE' ...)
//	  UPDATE products SET stock_reserved = stock_reserved + qty WHERE id = ?
//	  COMMIT
//	order:
//	  BEGIN
//	  SELECT ... FROM products WHERE id = ? FOR UPDATE
//	  SELECT status, qty, expires_at > UTC_TIMESTAMP(6) FROM holds WHERE id = ? FOR UPDATE
//	  INSERT INTO orders (...) VALUES (... 'PENDING_PAYMENT' ...)
//	  UPDATE holds SET status = 'REDEEMED' WHERE id = ?
//	  COMMIT
//	payment:
//	  BEGIN
//	  SELECT ... FROM products WHERE id = ? FOR UPDATE
//	  SELECT status, qty, hold_id FROM orders WHERE id = ? FOR UPDATE
//	  SELECT order_id, status FROM payment_events WHERE idempotency_key = ?
//	  UPDATE orders SET status = 'PAID' (or 'CANCELLED') WHERE id = ?
//	  UPDATE products SET stock_available -= qty, stock_reserved -= qty (failure: reserved only) WHERE id = ?
//	  UPDATE holds SET status = 'RELEASED' WHERE id = ?   -- failure only
//	  INSERT INTO payment_events (...) VALUES (...)
//	  COMMIT
//
// Its rows are real rows of the server's schema, written the way package
// stock writes them (UUIDv7 IDs, the database's clock UTC_TIMESTAMP(6),
// every column named), so the invariants keep holding and the server's
// sweeper releases what a run leaves behind: holds expire after -hold-ttl,
// orders fall due after -payment-timeout.
type baseline struct {
	db             *database.DB
	clients        int
	pool           int
	how            string        // how pool was chosen
	ttl            time.Duration // holds' lifetime
	paymentTimeout time.Duration // orders' time to pay
}

// openBaseline opens a MySQL -db for the baseline with a pool of conns
// connections, or when conns is 0 of min(clients, dbPoolLimit) (MariaDB's
// max_connections, 151 by default, is shared with the server). The figure
// depends on it: more connections than the row lock can use only lengthen
// its wait queue. Parameters are interpolated by the
// driver, saving the prepare/close round trips: this is the ceiling of the
// one-transaction-per-step design, so it gets the fastest client.
func openBaseline(dbURL string, clients, conns int, ttl, paymentTimeout time.Duration) (*baseline, error) {
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
	return &baseline{db: db, clients: clients, pool: pool, how: how, ttl: ttl, paymentTimeout: paymentTimeout}, nil
}

func (b *baseline) close() { b.db.Close() }

// note describes how scenario (db-forupdate or db-lifecycle) ran.
func (b *baseline) note(scenario string) string {
	what := fmt.Sprintf("holds expire after %s", b.ttl)
	if scenario == scDBLifecycle {
		what = fmt.Sprintf("one transaction per step, each locking the product row first; holds expire after %s, "+
			"orders fall due after %s", b.ttl, b.paymentTimeout)
	}
	return fmt.Sprintf("%s: %d goroutines share a pool of %d database connections (%s; MariaDB's max_connections, 151, "+
		"is shared with the server); driver-side interpolated parameters; %s", scenario, b.clients, b.pool, b.how, what)
}

// refusal is a step the database state refused (no stock, a hold no longer
// ACTIVE, ...): the transaction rolled back and changed nothing. Its text
// is the class the report counts it under.
type refusal string

func (r refusal) Error() string { return string(r) }

const errInsufficientStock refusal = "INSUFFICIENT_STOCK"

// inTx runs fn in one transaction, committing it unless fn fails.
func (b *baseline) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := b.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// lockedProduct is a product row read under its lock.
type lockedProduct struct {
	available, reserved, priceCents int64
}

// lockProduct locks product pid's row until the transaction ends: every
// step's first statement.
func lockProduct(ctx context.Context, tx *sql.Tx, pid int64) (lockedProduct, error) {
	var p lockedProduct
	err := tx.QueryRowContext(ctx,
		"SELECT stock_available, stock_reserved, price_cents FROM products WHERE id = ? FOR UPDATE", pid).
		Scan(&p.available, &p.reserved, &p.priceCents)
	return p, err
}

// newRowID returns a UUIDv7, as package stock makes hold and order IDs.
func newRowID() string { return uuid.Must(uuid.NewV7()).String() }

// hold runs one hold transaction of qty units of product pid and returns
// the new hold's ID; errInsufficientStock (nothing written) when the
// product has fewer sellable units.
func (b *baseline) hold(ctx context.Context, pid, qty int64) (holdID string, err error) {
	id := newRowID()
	err = b.inTx(ctx, func(tx *sql.Tx) error {
		p, err := lockProduct(ctx, tx, pid)
		if err != nil {
			return err
		}
		if p.available-p.reserved < qty {
			return errInsufficientStock
		}
		if _, err := tx.ExecContext(ctx,
			"INSERT INTO holds (id, created_at, updated_at, qty, status, expires_at, product_id) "+
				"VALUES (?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), ?, 'ACTIVE', UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, ?)",
			id, qty, b.ttl.Microseconds(), pid); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			"UPDATE products SET stock_reserved = stock_reserved + ?, updated_at = UTC_TIMESTAMP(6) WHERE id = ?", qty, pid)
		return err
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// order turns hold holdID of product pid, ACTIVE and not expired by the
// database's clock, into a PENDING_PAYMENT order; its units stay reserved.
func (b *baseline) order(ctx context.Context, pid int64, holdID string) (orderID string, err error) {
	id := newRowID()
	err = b.inTx(ctx, func(tx *sql.Tx) error {
		p, err := lockProduct(ctx, tx, pid)
		if err != nil {
			return err
		}
		var (
			status string
			qty    int64
			live   bool
		)
		// Judged after the product's lock is held, like package stock does.
		err = tx.QueryRowContext(ctx,
			"SELECT status, qty, expires_at > UTC_TIMESTAMP(6) FROM holds WHERE id = ? AND product_id = ? FOR UPDATE", holdID, pid).
			Scan(&status, &qty, &live)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return refusal("NOT_FOUND")
		case err != nil:
			return err
		case status == "EXPIRED" || (status == "ACTIVE" && !live):
			return refusal("HOLD_EXPIRED")
		case status != "ACTIVE":
			return refusal("HOLD_NOT_ACTIVE")
		}
		// orders.product_id is named but nothing here relies on a foreign
		// key from it: the product row is already locked.
		if _, err := tx.ExecContext(ctx,
			"INSERT INTO orders (id, created_at, updated_at, qty, amount_cents, status, payment_due_at, hold_id, product_id) "+
				"VALUES (?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), ?, ?, 'PENDING_PAYMENT', UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, ?, ?)",
			id, qty, p.priceCents*qty, b.paymentTimeout.Microseconds(), holdID, pid); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			"UPDATE holds SET status = 'REDEEMED', updated_at = UTC_TIMESTAMP(6) WHERE id = ?", holdID)
		return err
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// pay applies payment event key (status "success" or "failure") to the
// PENDING_PAYMENT order orderID of product pid and returns the order's new
// status: a success sells its units (PAID: available and reserved -= qty),
// a failure gives them back (CANCELLED: reserved -= qty, its hold
// RELEASED). A key seen before, or an order no longer PENDING_PAYMENT, is
// refused (the run never sends either).
func (b *baseline) pay(ctx context.Context, pid int64, orderID, key, status string) (orderStatus string, err error) {
	to, sold := "PAID", int64(1)
	if status == "failure" {
		to, sold = "CANCELLED", 0
	}
	err = b.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := lockProduct(ctx, tx, pid); err != nil {
			return err
		}
		var (
			from, holdID string
			qty          int64
		)
		err := tx.QueryRowContext(ctx,
			"SELECT status, qty, hold_id FROM orders WHERE id = ? AND product_id = ? FOR UPDATE", orderID, pid).
			Scan(&from, &qty, &holdID)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return refusal("NOT_FOUND")
		case err != nil:
			return err
		}
		var seenOrder, seenStatus string
		err = tx.QueryRowContext(ctx,
			"SELECT order_id, status FROM payment_events WHERE idempotency_key = ?", key).Scan(&seenOrder, &seenStatus)
		switch {
		case err == nil && seenOrder == orderID && seenStatus == status:
			return refusal("duplicate payment event")
		case err == nil:
			return refusal("KEY_REUSED")
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if from != "PENDING_PAYMENT" {
			return refusal("order " + from + ", want PENDING_PAYMENT")
		}
		if _, err := tx.ExecContext(ctx,
			"UPDATE orders SET status = ?, updated_at = UTC_TIMESTAMP(6) WHERE id = ?", to, orderID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			"UPDATE products SET stock_available = stock_available - ?, stock_reserved = stock_reserved - ?, "+
				"updated_at = UTC_TIMESTAMP(6) WHERE id = ?", sold*qty, qty, pid); err != nil {
			return err
		}
		if to == "CANCELLED" {
			if _, err := tx.ExecContext(ctx,
				"UPDATE holds SET status = 'RELEASED', updated_at = UTC_TIMESTAMP(6) WHERE id = ?", holdID); err != nil {
				return err
			}
		}
		// The unique key makes a concurrent delivery of the same event fail
		// here and roll back everything above.
		_, err = tx.ExecContext(ctx,
			"INSERT INTO payment_events (idempotency_key, status, outcome, order_status_before, order_status_after, created_at, order_id) "+
				"VALUES (?, ?, 'APPLIED', 'PENDING_PAYMENT', ?, UTC_TIMESTAMP(6), ?)",
			key, status, to, orderID)
		return err
	})
	if err != nil {
		return "", err
	}
	return to, nil
}

// dbErrClass names a database error for the report.
func dbErrClass(err error) string {
	var me *mysql.MySQLError
	var r refusal
	switch {
	case errors.As(err, &r):
		return string(r)
	case errors.As(err, &me):
		return "mysql " + strconv.Itoa(int(me.Number))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn):
		return "bad connection"
	}
	return "db error"
}
