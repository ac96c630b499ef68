package stock_test

import (
	"testing"
	"time"

	"flashsale/ent/hold"
	"flashsale/ent/holdkey"
	"flashsale/stock"
)

// TestPurge: holds that lapsed without an order (with their keys) and
// payment events older than the retention go; holds with orders, live
// holds and recent rows stay, and the invariants still hold.
func TestPurge(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: time.Second})
		p := e.newProduct(10)
		expired, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1, IdempotencyKey: "k-expired"})
		if err != nil {
			t.Fatal(err)
		}
		released := e.hold(e.svc, p.ID, 1)
		if _, err := e.svc.ReleaseHold(e.ctx, released.ID, stock.Anonymous); err != nil {
			t.Fatal(err)
		}
		ordered := e.hold(e.svc, p.ID, 2)
		o := e.order(e.svc, ordered.ID)
		e.pay(e.svc, "pay-1", o.ID, stock.PaymentFailure) // the order's hold is RELEASED too
		e.waitPast(expired.ExpiresAt.Add(10 * time.Millisecond))
		e.sweep(e.svc)
		live := e.hold(e.svc, p.ID, 1) // after the cutoff: not old enough

		if r, err := e.svc.Purge(e.ctx, time.Hour); err != nil || r != (stock.PurgeResult{}) {
			t.Fatalf("Purge(1h) = %+v, %v; want nothing deleted", r, err)
		}
		time.Sleep(20 * time.Millisecond)
		cutoff := 10 * time.Millisecond
		r, err := e.svc.Purge(e.ctx, cutoff)
		if err != nil {
			t.Fatal(err)
		}
		if r.Holds != 2 || r.PaymentEvents != 1 {
			t.Errorf("Purge deleted %+v, want the expired and the released hold, and the payment event", r)
		}
		left, _ := e.db.Ent.Hold.Query().IDs(e.ctx)
		if len(left) != 2 {
			t.Errorf("%d holds left, want the ordered one and the live one", len(left))
		}
		e.wantHoldStatus(ordered.ID, hold.StatusRELEASED)
		e.wantHoldStatus(live.ID, hold.StatusACTIVE)
		if n, _ := e.db.Ent.HoldKey.Query().Where(holdkey.IdempotencyKey("k-expired")).Count(e.ctx); n != 0 {
			t.Errorf("the purged hold's key is still there")
		}
		e.audit()
	})
}
