package stock_test

// releaseHold. Helpers in customers_test.go.

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/stock"
)

// TestReleaseHold: releaseHold gives the units back at once, is idempotent,
// leaves EXPIRED holds alone, refuses REDEEMED ones, and races createOrder
// and the sweeper without losing or double-counting a unit.
func TestReleaseHold(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		short := e.service(stock.Config{HoldTTL: time.Second})
		alice := stock.Caller{Customer: "alice"}

		t.Run("gives stock back at once, idempotent", func(t *testing.T) {
			e := e.with(t)
			p := e.cuProduct(3, cuInt(3), nil, nil)
			h := e.cuHold(e.svc, p.ID, 3, "alice", "")
			if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1, Customer: "bob"}); !errors.Is(err, stock.ErrInsufficientStock) {
				t.Fatalf("hold on the sold-out product: %v", err)
			}
			r1, err := e.svc.ReleaseHold(e.ctx, h.ID, alice)
			if err != nil || r1.ID != h.ID || r1.Status != hold.StatusRELEASED {
				t.Fatalf("ReleaseHold = %v, %v; want RELEASED", r1, err)
			}
			e.wantStock(p.ID, 3, 0)
			// At once, through the service that just saw the product sold out.
			e.cuHold(e.svc, p.ID, 3, "bob", "")
			r2, err := e.svc.ReleaseHold(e.ctx, h.ID, alice)
			stored := e.getHold(h.ID)
			if err != nil || r2.Status != hold.StatusRELEASED || !r2.UpdatedAt.Equal(stored.UpdatedAt) || stored.Status != hold.StatusRELEASED {
				t.Errorf("second ReleaseHold = %v, %v; want the RELEASED hold unchanged (stored: %s, updated %s)", r2, err, stored.Status, stored.UpdatedAt)
			}
			e.wantStock(p.ID, 3, 3)
			e.cuCheck()
		})

		t.Run("expired", func(t *testing.T) {
			e := e.with(t)
			p := e.cuProduct(10, nil, nil, nil)
			overdue, swept := e.cuHold(short, p.ID, 2, "alice", ""), e.cuHold(short, p.ID, 3, "alice", "")
			e.waitPast(latest(overdue.ExpiresAt, swept.ExpiresAt))
			// ACTIVE but overdue: released as EXPIRED, the sweeper's way.
			r, err := e.svc.ReleaseHold(e.ctx, overdue.ID, alice)
			if err != nil || r.Status != hold.StatusEXPIRED {
				t.Errorf("ReleaseHold on an overdue hold = %v, %v; want EXPIRED", r, err)
			}
			e.wantStock(p.ID, 10, 3)
			if r := e.sweep(e.svc); r.HoldsExpired != 1 {
				t.Errorf("Sweep = %+v, want one hold expired", r)
			}
			e.wantStock(p.ID, 10, 0)
			for _, h := range []*ent.Hold{overdue, swept} {
				stored := e.getHold(h.ID)
				r, err := e.svc.ReleaseHold(e.ctx, h.ID, alice)
				if err != nil || r.Status != hold.StatusEXPIRED || !r.UpdatedAt.Equal(stored.UpdatedAt) {
					t.Errorf("ReleaseHold on an EXPIRED hold = %v, %v; want it unchanged", r, err)
				}
				e.wantHoldStatus(h.ID, hold.StatusEXPIRED)
			}
			e.wantStock(p.ID, 10, 0)
			e.cuCheck()
		})

		t.Run("redeemed", func(t *testing.T) {
			e := e.with(t)
			p := e.cuProduct(10, nil, nil, nil)
			pending := e.cuOrder(e.svc, e.cuHold(e.svc, p.ID, 2, "alice", "").ID, alice)
			paid := e.cuOrder(e.svc, e.cuHold(e.svc, p.ID, 3, "alice", "").ID, alice)
			e.pay(e.svc, "rel-paid", paid.ID, stock.PaymentSuccess)
			for _, o := range []*ent.Order{pending, paid} {
				if r, err := e.svc.ReleaseHold(e.ctx, o.HoldID, alice); !errors.Is(err, stock.ErrHoldNotActive) {
					t.Errorf("ReleaseHold on a REDEEMED hold = %v, %v; want ErrHoldNotActive", r, err)
				}
				e.wantHoldStatus(o.HoldID, hold.StatusREDEEMED)
			}
			e.wantOrderStatus(pending.ID, order.StatusPENDING_PAYMENT)
			e.wantStock(p.ID, 7, 2)
			// Payment failure releases the hold; releasing it again changes nothing.
			e.pay(e.svc, "rel-failed", pending.ID, stock.PaymentFailure)
			stored := e.getHold(pending.HoldID)
			if r, err := e.svc.ReleaseHold(e.ctx, pending.HoldID, alice); err != nil || r.Status != hold.StatusRELEASED || !r.UpdatedAt.Equal(stored.UpdatedAt) {
				t.Errorf("ReleaseHold on a hold its failed payment released = %v, %v; want it RELEASED, unchanged", r, err)
			}
			e.wantStock(p.ID, 7, 0)
			e.cuCheck()
		})

		t.Run("races createOrder", func(t *testing.T) {
			e := e.with(t)
			other := e.service(stock.Config{})
			const holds = 40
			p := e.cuProduct(200, nil, nil, nil)
			hs := make([]*ent.Hold, holds)
			for i := range hs {
				hs[i] = e.cuHold(e.svc, p.ID, 1+i%3, "alice", "")
			}
			type outcome struct {
				released *ent.Hold
				relErr   error
				order    *ent.Order
				ordErr   error
			}
			out := make([]outcome, holds)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, h := range hs {
				// createOrder is queued at once while releaseHold first reads
				// the hold: give the release a head start of 0 to 3 ms on
				// some holds, so both sides win some races (which side wins
				// is not asserted, only that exactly one does).
				headStart := time.Duration(i%4) * time.Millisecond
				wg.Go(func() {
					<-start
					out[i].released, out[i].relErr = e.svc.ReleaseHold(e.ctx, h.ID, alice)
				})
				wg.Go(func() {
					<-start
					time.Sleep(headStart)
					out[i].order, out[i].ordErr = other.CreateOrder(e.ctx, h.ID, alice)
				})
			}
			close(start)
			wg.Wait()
			reserved, releases, orders := 0, 0, 0
			for i, h := range hs {
				o, stored := out[i], e.getHold(h.ID)
				switch {
				case o.relErr == nil && errors.Is(o.ordErr, stock.ErrHoldNotActive):
					releases++
					if o.released.Status != hold.StatusRELEASED || stored.Status != hold.StatusRELEASED {
						t.Errorf("hold %s: release won, answered %s, stored %s", h.ID, o.released.Status, stored.Status)
					}
					if ord, err := e.svc.OrderOfHold(e.ctx, h.ID); ord != nil || err != nil {
						t.Errorf("hold %s: released, yet order %v (err %v)", h.ID, ord, err)
					}
				case o.ordErr == nil && errors.Is(o.relErr, stock.ErrHoldNotActive):
					orders++
					reserved += h.Qty
					if stored.Status != hold.StatusREDEEMED || o.order.HoldID != h.ID || o.order.CustomerID != "alice" {
						t.Errorf("hold %s: order won, hold stored %s, order of hold %s customer %q", h.ID, stored.Status, o.order.HoldID, o.order.CustomerID)
					}
					e.wantOrderStatus(o.order.ID, order.StatusPENDING_PAYMENT)
				default:
					t.Errorf("hold %s: release %v, %v; order %v, %v; want exactly one to win, the other ErrHoldNotActive",
						h.ID, o.released, o.relErr, o.order, o.ordErr)
				}
			}
			t.Logf("%d releases and %d orders won", releases, orders)
			e.wantStock(p.ID, 200, reserved)
			e.cuCheck()
		})

		t.Run("races the sweeper", func(t *testing.T) {
			e := e.with(t)
			other := e.service(stock.Config{})
			const holds, sweepers = 30, 4
			p := e.cuProduct(100, cuInt(20), nil, nil)
			hs := make([]*ent.Hold, holds)
			for i := range hs {
				hs[i] = e.cuHold(short, p.ID, 1+i%3, fmt.Sprintf("c%d", i%5), "")
			}
			e.wantStock(p.ID, 100, 60)
			e.waitPast(hs[holds-1].ExpiresAt)
			released := make([]*ent.Hold, holds)
			relErrs := make([]error, holds)
			swept := make([]stock.SweepResult, sweepers)
			sweepErrs := make([]error, sweepers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, h := range hs {
				wg.Go(func() {
					<-start
					released[i], relErrs[i] = []*stock.Service{e.svc, other}[i%2].ReleaseHold(e.ctx, h.ID, stock.Caller{Customer: h.CustomerID})
				})
			}
			for i := range sweepers {
				wg.Go(func() {
					<-start
					swept[i], sweepErrs[i] = []*stock.Service{e.svc, other}[i%2].Sweep(e.ctx)
				})
			}
			close(start)
			wg.Wait()
			bySweep := 0
			for i := range sweepers {
				if sweepErrs[i] != nil {
					t.Errorf("Sweep: %v", sweepErrs[i])
				}
				bySweep += swept[i].HoldsExpired
			}
			if bySweep > holds {
				t.Errorf("sweepers expired %d holds of %d", bySweep, holds)
			}
			for i, h := range hs {
				if relErrs[i] != nil || released[i].Status != hold.StatusEXPIRED {
					t.Errorf("ReleaseHold on overdue hold %s: %v, %v; want EXPIRED", h.ID, released[i], relErrs[i])
				}
				e.wantHoldStatus(h.ID, hold.StatusEXPIRED)
			}
			t.Logf("sweepers expired %d holds, releaseHold the other %d", bySweep, holds-bySweep)
			e.wantStock(p.ID, 100, 0)
			e.cuCheck()
		})
	})
}
