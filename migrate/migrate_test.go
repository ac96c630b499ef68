package migrate_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql/schema"
	"github.com/google/uuid"

	"flashsale/database"
	"flashsale/internal/testdb"
	"flashsale/migrate"
	"flashsale/stock"
)

// TestNoDrift applies the versioned migrations to a fresh database and asks
// Atlas what it would still change to reach the ent schema: the answer must
// be nothing. A schema change without `go run ./migrate/gen -name ...`
// fails here.
func TestNoDrift(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			db := testdb.Open(t, d, database.Options{MaxConns: 2})
			var plan strings.Builder
			if err := db.Ent.Schema.WriteTo(context.Background(), &plan,
				schema.WithDropColumn(true), schema.WithDropIndex(true)); err != nil {
				t.Fatal(err)
			}
			var changes []string
			for _, line := range strings.Split(plan.String(), "\n") {
				if line = strings.TrimSpace(line); line != "" && line != "BEGIN;" && line != "COMMIT;" {
					changes = append(changes, line)
				}
			}
			if len(changes) > 0 {
				t.Fatalf("migrations drift from the ent schema; run `go run ./migrate/gen -name <change>`. Pending:\n%s",
					strings.Join(changes, "\n"))
			}
		})
	}
}

// TestUpIsIdempotent: a second start applies nothing and fails nothing.
func TestUpIsIdempotent(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			db := testdb.Open(t, d, database.Options{MaxConns: 2})
			if err := db.Migrate(context.Background(), testLogger(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUpgradeKeepsData: a database as the first release left it, with a
// paid lifecycle and a pending one in it, takes every later migration and
// keeps its rows and their links.
func TestUpgradeKeepsData(t *testing.T) {
	const firstRelease = 20261125132937
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ctx := t.Context()
			db, err := database.Open(testdb.URL(t, d), database.Options{MaxConns: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := migrate.UpTo(ctx, db.SQL, d, testLogger(t), firstRelease); err != nil {
				t.Fatal(err)
			}
			const (
				h1, h2 = "0190a000-0000-7000-8000-000000000001", "0190a000-0000-7000-8000-000000000002"
				h3     = "0190a000-0000-7000-8000-000000000003" // still ACTIVE: an anonymous buyer's
				o1, o2 = "0190a000-0000-7000-8000-0000000000a1", "0190a000-0000-7000-8000-0000000000a2"
				ts     = "2026-11-25 12:00:00"
			)
			for _, q := range []string{
				`INSERT INTO products (id, created_at, updated_at, name, price_cents, stock_received, stock_available, stock_reserved) VALUES (1, '` + ts + `', '` + ts + `', 'old', 500, 10, 9, 3)`,
				`INSERT INTO holds (id, created_at, updated_at, qty, status, expires_at, product_id) VALUES ('` + h1 + `', '` + ts + `', '` + ts + `', 1, 'REDEEMED', '` + ts + `', 1), ('` + h2 + `', '` + ts + `', '` + ts + `', 2, 'REDEEMED', '` + ts + `', 1), ('` + h3 + `', '` + ts + `', '` + ts + `', 1, 'ACTIVE', '2099-01-01 00:00:00', 1)`,
				`INSERT INTO orders (id, created_at, updated_at, qty, amount_cents, status, payment_due_at, hold_id, product_id) VALUES ('` + o1 + `', '` + ts + `', '` + ts + `', 1, 500, 'PAID', '` + ts + `', '` + h1 + `', 1), ('` + o2 + `', '` + ts + `', '` + ts + `', 2, 1000, 'PENDING_PAYMENT', '` + ts + `', '` + h2 + `', 1)`,
				`INSERT INTO payment_events (idempotency_key, status, outcome, order_status_before, order_status_after, created_at, order_id) VALUES ('evt_1', 'success', 'APPLIED', 'PENDING_PAYMENT', 'PAID', '` + ts + `', '` + o1 + `')`,
			} {
				if _, err := db.SQL.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if err := db.Migrate(ctx, testLogger(t)); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			var got []string
			rows, err := db.SQL.QueryContext(ctx, `SELECT o.id, o.status, o.product_id, h.id, COUNT(e.id) FROM orders o JOIN holds h ON h.id = o.hold_id LEFT JOIN payment_events e ON e.order_id = o.id GROUP BY o.id, o.status, o.product_id, h.id ORDER BY o.id`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var oid, st, hid string
				var pid, events int
				if err := rows.Scan(&oid, &st, &pid, &hid, &events); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s %s product %d hold %s events %d", oid, st, pid, hid, events))
			}
			want := []string{
				o1 + " PAID product 1 hold " + h1 + " events 1",
				o2 + " PENDING_PAYMENT product 1 hold " + h2 + " events 0",
			}
			if !slices.Equal(got, want) {
				t.Fatalf("after the upgrade:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if d == dialect.SQLite {
				// Every foreign key still holds, and is still enforced.
				var n int
				if err := db.SQL.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_foreign_key_check`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Fatalf("%d foreign key violations after the upgrade", n)
				}
			}
			if _, err := db.SQL.ExecContext(ctx, `INSERT INTO payment_events (idempotency_key, status, outcome, order_status_before, order_status_after, created_at, order_id) VALUES ('evt_x', 'success', 'APPLIED', 'PENDING_PAYMENT', 'PAID', '`+ts+`', '0190a000-0000-7000-8000-0000000000ff')`); err == nil {
				t.Fatal("an event for no order was accepted: payment_events lost its foreign key")
			}
			// The old rows keep working: they are anonymous, and the ACTIVE
			// hold can still be ordered by whoever has its ID, under the
			// invariants.
			svc := stock.New(db.Ent, d, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 10}, testLogger(t))
			if bad, err := svc.Audit(ctx); err != nil || len(bad) > 0 {
				t.Fatalf("audit after the upgrade: %v %v", bad, err)
			}
			o, err := svc.CreateOrder(ctx, uuid.MustParse(h3), stock.Anonymous)
			if err != nil {
				t.Fatalf("ordering a hold made before the upgrade: %v", err)
			}
			if o.CustomerID != "" || o.AmountCents != 500 {
				t.Fatalf("order of an old hold: customer %q, amount %d", o.CustomerID, o.AmountCents)
			}
			if _, err := svc.Hold(ctx, uuid.MustParse(h1), stock.Caller{Customer: "alice"}); err != nil {
				t.Fatalf("an anonymous hold made before the upgrade is not reachable by its ID: %v", err)
			}
			if bad, err := svc.Audit(ctx); err != nil || len(bad) > 0 {
				t.Fatalf("audit after ordering: %v %v", bad, err)
			}
			// The stock received before adjustments existed became the
			// product's first adjustment, so a restock adds to it.
			adj, err := svc.Adjustments(ctx, 1)
			if err != nil || len(adj) != 1 || adj[0].Delta != 10 {
				t.Fatalf("adjustments after the upgrade: %v %v, want the initial 10", adj, err)
			}
			if p, err := svc.AdjustStock(ctx, nil, 1, 5, "restock after the upgrade"); err != nil || p.StockReceived != 15 || p.StockAvailable != 14 {
				t.Fatalf("restock after the upgrade: %v %v", p, err)
			}
			if bad, err := svc.Audit(ctx); err != nil || len(bad) > 0 {
				t.Fatalf("audit after a restock: %v %v", bad, err)
			}
		})
	}
}
