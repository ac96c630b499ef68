package stock_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"flashsale/stock"
)

// TestGroupCommitAcrossServers: two services, each with its own connection
// pool as two server processes would have, batch holds on one product at
// once. Each batch locks the row, so together they sell exactly the stock.
func TestGroupCommitAcrossServers(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const initial, buyers = 100, 400
		e, db2 := newTwoServerEnv(t, d)
		e.svc = newService(e.db, stock.Config{})
		second := newService(db2, stock.Config{})
		p := e.newProduct(initial)
		var ok, refused atomic.Int64
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range buyers {
			svc := e.svc
			if i%2 == 1 {
				svc = second
			}
			wg.Go(func() {
				<-start
				_, err := svc.CreateHold(e.ctx, p.ID, 1)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, stock.ErrInsufficientStock):
					refused.Add(1)
				default:
					t.Errorf("CreateHold: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if ok.Load() != initial || refused.Load() != buyers-initial {
			t.Fatalf("%d holds and %d refusals, want %d and %d", ok.Load(), refused.Load(), initial, buyers-initial)
		}
		e.wantStock(p.ID, initial, initial)
		e.audit()
	})
}

// TestBatchIsolatesRefusals: in one batch, a request that does not fit is
// refused while smaller ones behind it are still served.
func TestBatchIsolatesRefusals(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newProduct(5)
		// Many concurrent requests of 4 and 1 on 5 units: whatever the batches,
		// all 5 units go, and only requests that could not fit are refused.
		var taken atomic.Int64
		var wg sync.WaitGroup
		for i := range 40 {
			qty := 4
			if i%2 == 1 {
				qty = 1
			}
			wg.Go(func() {
				_, err := e.svc.CreateHold(e.ctx, p.ID, qty)
				if err == nil {
					taken.Add(int64(qty))
				} else if !errors.Is(err, stock.ErrInsufficientStock) {
					t.Errorf("CreateHold(%d): %v", qty, err)
				}
			})
		}
		wg.Wait()
		if taken.Load() != 5 {
			t.Fatalf("holds took %d units of 5", taken.Load())
		}
		e.audit()
	})
}
