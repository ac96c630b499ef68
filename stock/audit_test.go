package stock_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"flashsale/stock"
)

// TestAuditWhileSweeping: Audit reads one snapshot, so it stays exact
// while the sweeper releases thousands of lapsed holds in batches of
// their own transactions (reading its sums and the products in separate
// statements, it once reported "reserved N, but active holds + pending
// orders = M" in that window).
func TestAuditWhileSweeping(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: time.Second, SweepBatch: 200})
		p := e.newProduct(5000)
		const holds = 3000
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				for range holds / 50 {
					if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		e.waitPast(e.dbNow().Add(time.Second))

		var sweeping atomic.Bool
		sweeping.Store(true)
		audits := 0
		wg.Go(func() {
			defer sweeping.Store(false)
			r := e.sweep(e.svc)
			if r.HoldsExpired != holds {
				t.Errorf("swept %d holds, want %d", r.HoldsExpired, holds)
			}
		})
		for sweeping.Load() || audits == 0 {
			bad, err := e.svc.Audit(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range bad {
				t.Errorf("audit %d during the sweep: %s", audits, b)
			}
			audits++
			time.Sleep(2 * time.Millisecond) // SQLite's audit holds its one writer's lock
		}
		wg.Wait()
		t.Logf("%d audits during a sweep of %d holds", audits, holds)
		e.wantStock(p.ID, 5000, 0)
		e.audit()
	})
}
