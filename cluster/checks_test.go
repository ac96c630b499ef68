package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"flashsale/database"
	"flashsale/stock"
)

// checker checks the database against the contract and against what the
// servers acknowledged to the test's clients.
type checker struct {
	t   *testing.T
	db  *database.DB
	ctx context.Context
	// where: which database the messages are about ("" when there is one).
	where string
}

// newChecker checks the database at url (a DATABASE_URL); where names it
// in the messages ("" when there is only one).
func newChecker(t *testing.T, url, where string) *checker {
	t.Helper()
	db, err := database.Open(url, database.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	if where != "" {
		where += ": "
	}
	return &checker{t: t, db: db, ctx: context.Background(), where: where}
}

// errorf reports a violation, saying where it is.
func (c *checker) errorf(format string, args ...any) {
	c.t.Helper()
	c.t.Errorf(c.where+format, args...)
}

func (c *checker) close() { c.db.Close() }

// rows runs a query and scans each row into the pointers dest returns.
func (c *checker) rows(query string, dest func() []any, each func()) {
	c.t.Helper()
	rs, err := c.db.SQL.QueryContext(c.ctx, query)
	if err != nil {
		c.t.Fatalf("%s%s: %v", c.where, query, err)
	}
	defer rs.Close()
	for rs.Next() {
		if err := rs.Scan(dest()...); err != nil {
			c.t.Fatalf("%s%s: %v", c.where, query, err)
		}
		each()
	}
	if err := rs.Err(); err != nil {
		c.t.Fatalf("%s%s: %v", c.where, query, err)
	}
}

// sweeperKeepsUp: by the database's clock, no hold is ACTIVE and no order
// PENDING_PAYMENT more than two sweep intervals past its deadline.
func (c *checker) sweeperKeepsUp() {
	c.t.Helper()
	lag := strconv.FormatInt((2 * sweepInterval).Microseconds(), 10)
	for _, q := range []struct{ what, query string }{
		{"ACTIVE holds past expires_at", `SELECT id, expires_at, UTC_TIMESTAMP(6) FROM holds
			WHERE status = 'ACTIVE' AND expires_at < UTC_TIMESTAMP(6) - INTERVAL ` + lag + ` MICROSECOND`},
		{"PENDING_PAYMENT orders past payment_due_at", `SELECT id, payment_due_at, UTC_TIMESTAMP(6) FROM orders
			WHERE status = 'PENDING_PAYMENT' AND payment_due_at < UTC_TIMESTAMP(6) - INTERVAL ` + lag + ` MICROSECOND`},
	} {
		var bad []string
		var id string
		var due, now time.Time
		c.rows(q.query, func() []any { return []any{&id, &due, &now} }, func() {
			bad = append(bad, fmt.Sprintf("%s due %s, %s overdue", id, due.Format(time.RFC3339Nano), now.Sub(due)))
		})
		if len(bad) > 0 {
			c.errorf("%d %s by more than 2 × SWEEP_INTERVAL (the sweeper does not keep up): %s", len(bad), q.what, examples(bad))
		}
	}
}

// audit runs stock.Service.Audit: every stock invariant of the contract.
func (c *checker) audit() {
	c.t.Helper()
	svc := stock.New(c.db.Ent, c.db.Dialect, stock.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	bad, err := svc.Audit(c.ctx)
	if err != nil {
		c.t.Fatalf("%saudit: %v", c.where, err)
	}
	for _, b := range bad {
		c.errorf("audit: %s", b)
	}
}

// stock: nothing oversold. Per product the PAID quantity is at most the
// stock it was created with, and stock_available is that stock minus it.
func (c *checker) stock(products []product) {
	c.t.Helper()
	type row struct{ available, reserved, paid int }
	got := map[string]row{}
	var id string
	var r row
	c.rows(`SELECT p.id, p.stock_available, p.stock_reserved,
			COALESCE((SELECT SUM(o.qty) FROM orders o WHERE o.product_id = p.id AND o.status = 'PAID'), 0)
		FROM products p`,
		func() []any { return []any{&id, &r.available, &r.reserved, &r.paid} },
		func() { got[id] = r })
	for _, p := range products {
		g, ok := got[p.id]
		switch {
		case !ok:
			c.errorf("product %s is gone", p.id)
		case g.paid > p.stock:
			c.errorf("product %s oversold: %d units PAID of a stock of %d", p.id, g.paid, p.stock)
		case g.available != p.stock-g.paid:
			c.errorf("product %s: stock_available %d, want stock %d - PAID %d = %d", p.id, g.available, p.stock, g.paid, p.stock-g.paid)
		}
	}
}

// acknowledged: what the servers acknowledged is in the database. Every
// hold and order a client got is there; every idempotency key answered 200
// has exactly one payment event, with the order and status it was sent
// with; every order a 200 said was PAID (or REFUND_REQUIRED) still is:
// both are final.
func (c *checker) acknowledged(l *load) {
	c.t.Helper()
	holds := map[string]string{} // ID → product ID
	var id, pid string
	c.rows(`SELECT id, product_id FROM holds`, func() []any { return []any{&id, &pid} }, func() { holds[id] = pid })
	type orderRow struct{ holdID, status string }
	orders := map[string]orderRow{}
	var o orderRow
	c.rows(`SELECT id, hold_id, status FROM orders`, func() []any { return []any{&id, &o.holdID, &o.status} }, func() { orders[id] = o })
	type eventRow struct {
		orderID, status string
		n               int
	}
	events := map[string]eventRow{}
	var key string
	var e eventRow
	c.rows(`SELECT idempotency_key, MIN(order_id), MIN(status), COUNT(*) FROM payment_events GROUP BY idempotency_key`,
		func() []any { return []any{&key, &e.orderID, &e.status, &e.n} }, func() { events[key] = e })

	l.mu.Lock()
	defer l.mu.Unlock()
	var lost []string
	for h, p := range l.holds {
		if holds[h] != p {
			lost = append(lost, fmt.Sprintf("hold %s of product %s (%s)", h, p, l.acks[h]))
		}
	}
	for id, h := range l.orders {
		if orders[id].holdID != h {
			lost = append(lost, fmt.Sprintf("order %s (%s)", id, l.acks[id]))
		}
	}
	sent := map[string]bool{}
	for _, ev := range l.events {
		sent[ev.key] = true
		ev.mu.Lock()
		acks := append([]webhookAck(nil), ev.acks...)
		ev.mu.Unlock()
		if len(acks) == 0 {
			continue
		}
		row, ok := events[ev.key]
		switch {
		case !ok:
			lost = append(lost, "payment event "+ev.key)
		case row.n != 1:
			c.errorf("idempotency key %s is stored %d times", ev.key, row.n)
		case row.orderID != ev.orderID || row.status != ev.status:
			c.errorf("key %s answered 200 for order %s %s, stored for order %s %s", ev.key, ev.orderID, ev.status, row.orderID, row.status)
		}
		for _, a := range acks {
			if (a.OrderStatus == "PAID" || a.OrderStatus == "REFUND_REQUIRED") && orders[ev.orderID].status != a.OrderStatus {
				c.errorf("order %s: a webhook (key %s) was answered %s, the database says %s (%s is final)",
					ev.orderID, ev.key, a.OrderStatus, orders[ev.orderID].status, a.OrderStatus)
			}
		}
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		c.errorf("%d acknowledged writes are not in the database: %s", len(lost), examples(lost))
	}
	for k := range events {
		if !sent[k] {
			c.errorf("payment event %s in the database was never sent", k)
		}
	}
}

// checkEvents checks the webhook answers among themselves: one key, one
// content; at most one first (non-duplicate) application per key; a
// success leaves the order PAID or REFUND_REQUIRED; and every event got a
// final answer (the provider stops retrying only then).
func (l *load) checkEvents(t *testing.T) {
	t.Helper()
	type keyState struct {
		statuses map[string]bool // payment statuses answered 200
		firsts   int
		answered bool
		orderID  string
	}
	keys := map[string]*keyState{}
	var unanswered []string
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		ks := keys[ev.key]
		if ks == nil {
			ks = &keyState{statuses: map[string]bool{}, orderID: ev.orderID}
			keys[ev.key] = ks
		}
		ev.mu.Lock()
		ks.answered = ks.answered || ev.answered
		for _, a := range ev.acks {
			ks.statuses[ev.status] = true
			if !a.Duplicate {
				ks.firsts++
			}
			if a.OrderID != ev.orderID {
				t.Errorf("key %s: webhook answered for order %s, sent for %s", ev.key, a.OrderID, ev.orderID)
			}
			if ev.status == "success" && a.OrderStatus != "PAID" && a.OrderStatus != "REFUND_REQUIRED" {
				t.Errorf("key %s: success answered with order_status %s, want PAID or REFUND_REQUIRED", ev.key, a.OrderStatus)
			}
		}
		ev.mu.Unlock()
	}
	for k, ks := range keys {
		if len(ks.statuses) > 1 {
			t.Errorf("key %s was answered 200 for both success and failure (want 409 for the second)", k)
		}
		if ks.firsts > 1 {
			t.Errorf("key %s was applied %d times (answered 200 with duplicate=false)", k, ks.firsts)
		}
		if !ks.answered {
			unanswered = append(unanswered, k+" (order "+ks.orderID+")")
		}
	}
	if len(unanswered) > 0 {
		sort.Strings(unanswered)
		t.Errorf("%d payment events never got a final answer despite retries: %s", len(unanswered), examples(unanswered))
	}
}

// dbCounts are the database's totals, for the summary.
type dbCounts struct {
	holds, orders, events map[string]int
	products              map[string]productRow
}

type productRow struct{ received, available, reserved int }

func (c *checker) counts() dbCounts {
	c.t.Helper()
	d := dbCounts{holds: map[string]int{}, orders: map[string]int{}, events: map[string]int{}, products: map[string]productRow{}}
	var k string
	var n int
	for _, q := range []struct {
		query string
		into  map[string]int
	}{
		{`SELECT status, COUNT(*) FROM holds GROUP BY status`, d.holds},
		{`SELECT status, COUNT(*) FROM orders GROUP BY status`, d.orders},
		{`SELECT outcome, COUNT(*) FROM payment_events GROUP BY outcome`, d.events},
	} {
		c.rows(q.query, func() []any { return []any{&k, &n} }, func() { q.into[k] = n })
	}
	var id string
	var p productRow
	c.rows(`SELECT id, stock_received, stock_available, stock_reserved FROM products`,
		func() []any { return []any{&id, &p.received, &p.available, &p.reserved} },
		func() { d.products[id] = p })
	return d
}

func examples(items []string) string {
	if len(items) > 5 {
		return strings.Join(items[:5], "; ") + fmt.Sprintf("; … (%d more)", len(items)-5)
	}
	return strings.Join(items, "; ")
}
