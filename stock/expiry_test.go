package stock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/stock"
)

// TestExpiry covers createOrder on holds past their TTL, before and after the
// sweeper, and on holds that are no longer ACTIVE.
func TestExpiry(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: time.Second})
		// Holds of this one outlive the test, so timing cannot blur its cases.
		long := e.service(stock.Config{HoldTTL: time.Minute})

		t.Run("overdue ACTIVE hold", func(t *testing.T) {
			e := e.with(t)
			p := e.newProduct(10)
			h1, h2 := e.hold(e.svc, p.ID, 2), e.hold(e.svc, p.ID, 3)
			e.waitPast(latest(h1.ExpiresAt, h2.ExpiresAt))

			// Overdue but not yet swept: refused, and nothing changes.
			before := e.getProduct(p.ID)
			for _, h := range []uuid.UUID{h1.ID, h2.ID} {
				o, err := e.svc.CreateOrder(e.ctx, h, stock.Anonymous)
				if !errors.Is(err, stock.ErrHoldExpired) {
					t.Errorf("CreateOrder on an overdue ACTIVE hold: %v, %v; want ErrHoldExpired", o, err)
				}
				if got := e.getHold(h); got.Status != hold.StatusACTIVE {
					t.Errorf("refused CreateOrder left hold %s %s, want it still ACTIVE", h, got.Status)
				}
				if o, err := e.svc.OrderOfHold(e.ctx, h); o != nil || err != nil {
					t.Errorf("refused CreateOrder left an order %v (err %v)", o, err)
				}
			}
			after := e.getProduct(p.ID)
			if after.StockAvailable != before.StockAvailable || after.StockReserved != before.StockReserved || after.StockReserved != 5 {
				t.Errorf("refused CreateOrder moved stock: available %d→%d, reserved %d→%d (want reserved 5 throughout)",
					before.StockAvailable, after.StockAvailable, before.StockReserved, after.StockReserved)
			}
			if n := e.countOrders(); n != 0 {
				t.Errorf("%d orders exist, want 0", n)
			}
			e.audit()

			r := e.sweep(e.svc)
			if r != (stock.SweepResult{HoldsExpired: 2}) {
				t.Errorf("Sweep = %+v, want 2 holds expired and no orders", r)
			}
			e.wantHoldStatus(h1.ID, hold.StatusEXPIRED)
			e.wantHoldStatus(h2.ID, hold.StatusEXPIRED)
			e.wantStock(p.ID, 10, 0)
			for _, h := range []uuid.UUID{h1.ID, h2.ID} {
				if _, err := e.svc.CreateOrder(e.ctx, h, stock.Anonymous); !errors.Is(err, stock.ErrHoldExpired) {
					t.Errorf("CreateOrder on an EXPIRED hold: %v, want ErrHoldExpired", err)
				}
			}
			if r := e.sweep(e.svc); r != (stock.SweepResult{}) {
				t.Errorf("second Sweep = %+v, want nothing left to release", r)
			}
			e.wantStock(p.ID, 10, 0)
			e.audit()
		})

		t.Run("REDEEMED and RELEASED holds", func(t *testing.T) {
			e := e.with(t)
			p := e.newPricedProduct(10, 1999)
			h := e.hold(long, p.ID, 3)
			o := e.order(long, h.ID)
			if o.Qty != 3 || o.AmountCents != 3*1999 || o.Status != order.StatusPENDING_PAYMENT || o.HoldID != h.ID || o.ProductID != p.ID {
				t.Errorf("order: qty %d amount %d status %s hold %s product %d; want 3, %d, PENDING_PAYMENT, %s, %d",
					o.Qty, o.AmountCents, o.Status, o.HoldID, o.ProductID, 3*1999, h.ID, p.ID)
			}
			e.wantHoldStatus(h.ID, hold.StatusREDEEMED)
			e.wantStock(p.ID, 10, 3) // still reserved, now for the order
			if _, err := long.CreateOrder(e.ctx, h.ID, stock.Anonymous); !errors.Is(err, stock.ErrHoldNotActive) {
				t.Errorf("second CreateOrder on a REDEEMED hold: %v, want ErrHoldNotActive", err)
			}

			h2 := e.hold(long, p.ID, 2)
			o2 := e.order(long, h2.ID)
			if r := e.pay(long, "fail-"+o2.ID.String(), o2.ID, stock.PaymentFailure); r.OrderStatus != order.StatusCANCELLED {
				t.Errorf("failure left the order %s, want CANCELLED", r.OrderStatus)
			}
			e.wantHoldStatus(h2.ID, hold.StatusRELEASED)
			if _, err := long.CreateOrder(e.ctx, h2.ID, stock.Anonymous); !errors.Is(err, stock.ErrHoldNotActive) {
				t.Errorf("CreateOrder on a RELEASED hold: %v, want ErrHoldNotActive", err)
			}
			e.wantStock(p.ID, 10, 3)
			if n, err := e.db.Ent.Order.Query().Where(order.ProductID(p.ID)).Count(e.ctx); err != nil || n != 2 {
				t.Errorf("%d orders for the product (err %v), want 2", n, err)
			}

			if _, err := long.CreateOrder(e.ctx, uuid.New(), stock.Anonymous); !errors.Is(err, stock.ErrNotFound) {
				t.Errorf("CreateOrder on an unknown hold: %v, want ErrNotFound", err)
			}

			e.pay(long, "ok-"+o.ID.String(), o.ID, stock.PaymentSuccess)
			e.wantStock(p.ID, 7, 0)
			e.audit()
		})
	})
}

// TestCreateHoldReleasesLapsedStock: stock held by a lapsed hold or a
// timed-out order is sold again without waiting for the sweeper.
func TestCreateHoldReleasesLapsedStock(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: time.Second, PaymentTimeout: time.Second})
		// Same rules but a long TTL, for the hold whose refusal is checked
		// before the first one lapses.
		long := e.service(stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Second})

		t.Run("lapsed hold", func(t *testing.T) {
			e := e.with(t)
			p := e.newProduct(2)
			h1 := e.hold(e.svc, p.ID, 2)
			if _, err := long.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1}); !errors.Is(err, stock.ErrInsufficientStock) {
				t.Errorf("CreateHold while the stock is held: %v, want ErrInsufficientStock", err)
			}
			e.wantHoldStatus(h1.ID, hold.StatusACTIVE)
			e.waitPast(h1.ExpiresAt)

			h2, err := long.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2})
			if err != nil {
				t.Fatalf("CreateHold after the only hold lapsed: %v", err)
			}
			e.wantHoldStatus(h1.ID, hold.StatusEXPIRED)
			e.wantHoldStatus(h2.ID, hold.StatusACTIVE)
			e.wantStock(p.ID, 2, 2)
			e.audit()
		})

		t.Run("timed-out order", func(t *testing.T) {
			e := e.with(t)
			p := e.newProduct(2)
			h1 := e.hold(e.svc, p.ID, 2)
			o1 := e.order(e.svc, h1.ID)
			e.waitPast(o1.CreatedAt.Add(time.Second))

			if _, err := long.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2}); err != nil {
				t.Fatalf("CreateHold after the only order timed out: %v", err)
			}
			e.wantOrderStatus(o1.ID, order.StatusCANCELLED)
			e.wantHoldStatus(h1.ID, hold.StatusRELEASED)
			e.wantStock(p.ID, 2, 2)
			e.audit()
		})
	})
}

// TestCreateOrderJudgesExpiryUnderLock: a CreateOrder that has to wait for
// the hold's lock must judge the hold's expiry by the clock once it holds
// the lock. Otherwise a hold that expires while the request waits (behind
// another server's long transaction) is still redeemed.
func TestCreateOrderJudgesExpiryUnderLock(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: time.Second})
		p := e.newProduct(5)
		h := e.hold(e.svc, p.ID, 1)

		// Another transaction holds the hold's lock: the row lock on MySQL,
		// the database's write lock on SQLite (BEGIN IMMEDIATE).
		blocker, err := e.db.SQL.BeginTx(e.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		lock := "UPDATE holds SET updated_at = updated_at WHERE id = ?"
		if _, err := blocker.ExecContext(e.ctx, lock, h.ID.String()); err != nil {
			blocker.Rollback()
			t.Fatal(err)
		}
		type result struct {
			detail string
			err    error
		}
		done := make(chan result, 1)
		go func() {
			o, err := e.svc.CreateOrder(e.ctx, h.ID, stock.Anonymous)
			r := result{err: err}
			if o != nil {
				r.detail = "order created at " + o.CreatedAt.Format(time.RFC3339Nano)
			}
			done <- r
		}()
		// CreateOrder starts well before the hold expires, then waits.
		time.Sleep(100 * time.Millisecond)
		e.waitPast(h.ExpiresAt.Add(200 * time.Millisecond))
		unlockedAt := e.dbNow()
		if err := blocker.Commit(); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if !errors.Is(r.err, stock.ErrHoldExpired) {
			t.Errorf("CreateOrder got the lock %v after the hold expired at %s and returned %v (%s); want ErrHoldExpired",
				unlockedAt.Sub(h.ExpiresAt).Round(time.Millisecond), h.ExpiresAt.Format(time.RFC3339Nano), r.err, r.detail)
		}
		e.wantHoldStatus(h.ID, hold.StatusACTIVE)
		e.wantStock(p.ID, 5, 1)
		e.audit()
	})
}
