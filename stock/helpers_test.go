package stock_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/database"
	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
	"flashsale/internal/testdb"
	"flashsale/internal/testkit"
	"flashsale/stock"
)

// quietLog discards the service's logs.
var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// testTimeout bounds one dialect's run of a test, so a lock that is never
// released fails the test instead of hanging it.
const testTimeout = 2 * time.Minute

// forEachDialect runs fn as a subtest per dialect, each with its own database.
func forEachDialect(t *testing.T, fn func(t *testing.T, d string)) {
	t.Helper()
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

// env is one test's database, service and context.
type env struct {
	t   *testing.T
	ctx context.Context
	db  *database.DB
	svc *stock.Service
}

// newEnv opens a fresh migrated database of dialect d and a Service over it.
func newEnv(t *testing.T, d string, cfg stock.Config) *env {
	t.Helper()
	db := testdb.Open(t, d, database.Options{MaxConns: 20})
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, db: db, svc: newService(db, cfg)}
}

// newTwoServerEnv opens one fresh database through two connection pools, as
// two server processes would: e (without a service) over the first pool,
// and the second pool for another service.
func newTwoServerEnv(t *testing.T, d string) (*env, *database.DB) {
	t.Helper()
	u := testdb.URL(t, d)
	open := func() *database.DB {
		db, err := database.Open(u, database.Options{MaxConns: 10})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db1, db2 := open(), open()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	if err := db1.Migrate(ctx, quietLog); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return &env{t: t, ctx: ctx, db: db1}, db2
}

// newService builds a Service with the tests' defaults filled in.
func newService(db *database.DB, cfg stock.Config) *stock.Service {
	if cfg.HoldTTL == 0 {
		cfg.HoldTTL = time.Minute
	}
	if cfg.PaymentTimeout == 0 {
		cfg.PaymentTimeout = time.Minute
	}
	if cfg.MaxHoldQty == 0 {
		cfg.MaxHoldQty = 10
	}
	return stock.New(db.Ent, db.Dialect, cfg, quietLog)
}

// with returns e for use in subtest t.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// service returns another Service over the same database with other rules.
func (e *env) service(cfg stock.Config) *stock.Service { return newService(e.db, cfg) }

func (e *env) newProduct(stockN int) *ent.Product {
	e.t.Helper()
	return e.newPricedProduct(stockN, 100)
}

func (e *env) newPricedProduct(stockN int, price int64) *ent.Product {
	e.t.Helper()
	p, err := e.svc.CreateProduct(e.ctx, nil, stock.NewProduct{Name: fmt.Sprintf("product %d", stockN), PriceCents: price, Stock: stockN})
	if err != nil {
		e.t.Fatalf("CreateProduct: %v", err)
	}
	return p
}

func (e *env) hold(svc *stock.Service, productID, qty int) *ent.Hold {
	e.t.Helper()
	h, err := svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: productID, Qty: qty})
	if err != nil {
		e.t.Fatalf("CreateHold(product %d, qty %d): %v", productID, qty, err)
	}
	return h
}

func (e *env) order(svc *stock.Service, holdID uuid.UUID) *ent.Order {
	e.t.Helper()
	o, err := svc.CreateOrder(e.ctx, holdID, stock.Anonymous)
	if err != nil {
		e.t.Fatalf("CreateOrder(%s): %v", holdID, err)
	}
	return o
}

func (e *env) pay(svc *stock.Service, key string, orderID uuid.UUID, status string) stock.PaymentResult {
	e.t.Helper()
	r, err := svc.ApplyPayment(e.ctx, stock.Payment{Key: key, OrderID: orderID, Status: status})
	if err != nil {
		e.t.Fatalf("ApplyPayment(%s, %s): %v", key, status, err)
	}
	return r
}

func (e *env) sweep(svc *stock.Service) stock.SweepResult {
	e.t.Helper()
	r, err := svc.Sweep(e.ctx)
	if err != nil {
		e.t.Fatalf("Sweep: %v", err)
	}
	return r
}

// getProduct reads a product's current row.
func (e *env) getProduct(id int) *ent.Product {
	e.t.Helper()
	p, err := e.db.Ent.Product.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("get product %d: %v", id, err)
	}
	return p
}

func (e *env) getHold(id uuid.UUID) *ent.Hold {
	e.t.Helper()
	h, err := e.db.Ent.Hold.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("get hold %s: %v", id, err)
	}
	return h
}

func (e *env) getOrder(id uuid.UUID) *ent.Order {
	e.t.Helper()
	o, err := e.db.Ent.Order.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("get order %s: %v", id, err)
	}
	return o
}

// wantStock checks a product's counters.
func (e *env) wantStock(productID, available, reserved int) {
	e.t.Helper()
	p := e.getProduct(productID)
	if p.StockAvailable != available || p.StockReserved != reserved {
		e.t.Errorf("product %d: available %d, reserved %d; want %d, %d",
			productID, p.StockAvailable, p.StockReserved, available, reserved)
	}
}

func (e *env) wantHoldStatus(id uuid.UUID, want hold.Status) {
	e.t.Helper()
	if h := e.getHold(id); h.Status != want {
		e.t.Errorf("hold %s is %s, want %s", id, h.Status, want)
	}
}

func (e *env) wantOrderStatus(id uuid.UUID, want order.Status) {
	e.t.Helper()
	if o := e.getOrder(id); o.Status != want {
		e.t.Errorf("order %s is %s, want %s", id, o.Status, want)
	}
}

func (e *env) countHolds(st hold.Status) int {
	e.t.Helper()
	n, err := e.db.Ent.Hold.Query().Where(hold.StatusEQ(st)).Count(e.ctx)
	if err != nil {
		e.t.Fatalf("count holds: %v", err)
	}
	return n
}

func (e *env) countOrders() int {
	e.t.Helper()
	n, err := e.db.Ent.Order.Query().Count(e.ctx)
	if err != nil {
		e.t.Fatalf("count orders: %v", err)
	}
	return n
}

func (e *env) countEvents() int {
	e.t.Helper()
	n, err := e.db.Ent.PaymentEvent.Query().Count(e.ctx)
	if err != nil {
		e.t.Fatalf("count payment events: %v", err)
	}
	return n
}

func (e *env) eventsOfKey(key string) []*ent.PaymentEvent {
	e.t.Helper()
	evs, err := e.db.Ent.PaymentEvent.Query().Where(paymentevent.IdempotencyKey(key)).All(e.ctx)
	if err != nil {
		e.t.Fatalf("payment events of %q: %v", key, err)
	}
	return evs
}

// audit fails the test for every invariant violation Audit reports.
func (e *env) audit() {
	e.t.Helper()
	testkit.MustAudit(e.t, e.ctx, e.svc)
}

// dbNow reads the clock that decides expiry: the database's on MySQL, the
// process's for the embedded SQLite.
func (e *env) dbNow() time.Time {
	e.t.Helper()
	return dbNow(e.t, e.ctx, e.db)
}

func dbNow(t *testing.T, ctx context.Context, db *database.DB) time.Time {
	t.Helper()
	if db.Dialect != dialect.MySQL {
		return time.Now().UTC()
	}
	var now time.Time
	if err := db.SQL.QueryRowContext(ctx, "SELECT UTC_TIMESTAMP(6)").Scan(&now); err != nil {
		t.Fatalf("read database clock: %v", err)
	}
	return now.UTC()
}

// waitPast polls the database clock until it is past ts.
func (e *env) waitPast(ts time.Time) {
	e.t.Helper()
	waitPast(e.t, e.ctx, e.db, ts)
}

func waitPast(t *testing.T, ctx context.Context, db *database.DB, ts time.Time) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := dbNow(t, ctx, db)
		if now.After(ts) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("database clock %s never passed %s", now, ts)
		}
		time.Sleep(min(ts.Sub(now)+time.Millisecond, 50*time.Millisecond))
	}
}

// latest returns the latest of some times.
func latest(ts ...time.Time) time.Time {
	var m time.Time
	for _, x := range ts {
		if x.After(m) {
			m = x
		}
	}
	return m
}
