package stock_test

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/stock"
)

// TestConcurrentHoldsNeverOversell starts 200 CreateHold calls on a product
// of 50 units at once: every unit goes to exactly one hold, and every refusal
// is a fair INSUFFICIENT_STOCK.
func TestConcurrentHoldsNeverOversell(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const initial, buyers = 50, 200
		e := newEnv(t, d, stock.Config{HoldTTL: time.Minute})
		p := e.newProduct(initial)

		type result struct {
			qty  int
			hold *ent.Hold
			err  error
		}
		results := make([]result, buyers)
		for i := range results {
			results[i].qty = 1 + rand.N(3)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() {
				<-start
				results[i].hold, results[i].err = e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: results[i].qty})
			})
		}
		began := time.Now()
		close(start)
		wg.Wait()
		elapsed := time.Since(began)

		var okN, okQty, refused int
		minRefused := 1 << 30
		seen := map[uuid.UUID]bool{}
		for _, r := range results {
			switch {
			case r.err == nil:
				okN++
				okQty += r.qty
				if r.hold.Qty != r.qty || r.hold.ProductID != p.ID || r.hold.Status != hold.StatusACTIVE {
					t.Errorf("hold %s: qty %d product %d status %s; want qty %d product %d ACTIVE",
						r.hold.ID, r.hold.Qty, r.hold.ProductID, r.hold.Status, r.qty, p.ID)
				}
				if seen[r.hold.ID] {
					t.Errorf("hold ID %s returned twice", r.hold.ID)
				}
				seen[r.hold.ID] = true
			case errors.Is(r.err, stock.ErrInsufficientStock):
				refused++
				minRefused = min(minRefused, r.qty)
			default:
				t.Errorf("CreateHold(qty %d): %v, want nil or ErrInsufficientStock", r.qty, r.err)
			}
		}
		t.Logf("%d concurrent CreateHold calls in %v: %.0f calls/s, %.0f holds/s; %d holds for %d units, %d refused",
			buyers, elapsed.Round(time.Millisecond), float64(buyers)/elapsed.Seconds(), float64(okN)/elapsed.Seconds(), okN, okQty, refused)

		after := e.getProduct(p.ID)
		if okQty+stock.Sellable(after) != initial {
			t.Errorf("holds took %d units and %d are sellable; want them to sum to %d", okQty, stock.Sellable(after), initial)
		}
		if after.StockAvailable != initial || after.StockReserved != okQty {
			t.Errorf("product: available %d reserved %d; want %d, %d", after.StockAvailable, after.StockReserved, initial, okQty)
		}
		// Nothing was released during the storm, so sellable only shrank: a
		// refusal was fair only if even the final sellable is below its qty.
		if refused > 0 && stock.Sellable(after) >= minRefused {
			t.Errorf("a hold of %d was refused, yet %d units are still sellable", minRefused, stock.Sellable(after))
		}
		active, err := e.db.Ent.Hold.Query().Where(hold.ProductID(p.ID), hold.StatusEQ(hold.StatusACTIVE)).All(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		activeQty := 0
		for _, h := range active {
			activeQty += h.Qty
			if !seen[h.ID] {
				t.Errorf("ACTIVE hold %s in the database was never returned to a caller", h.ID)
			}
		}
		if len(active) != okN || activeQty != okQty {
			t.Errorf("database has %d ACTIVE holds for %d units; callers got %d holds for %d units", len(active), activeQty, okN, okQty)
		}
		e.audit()

		// Top up one unit at a time: exactly the rest must fit.
		topUp := 0
		for {
			_, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
			if errors.Is(err, stock.ErrInsufficientStock) {
				break
			}
			if err != nil {
				t.Fatalf("top-up CreateHold: %v", err)
			}
			topUp++
			if topUp > initial {
				t.Fatalf("more than %d top-up holds succeeded", initial)
			}
		}
		t.Logf("top-up took the last %d units", topUp)
		if okQty+topUp != initial {
			t.Errorf("storm took %d units and top-up %d: total %d, want exactly %d", okQty, topUp, okQty+topUp, initial)
		}
		e.wantStock(p.ID, initial, initial)
		if n := e.countHolds(hold.StatusACTIVE); n != okN+topUp {
			t.Errorf("%d ACTIVE holds, want %d", n, okN+topUp)
		}
		e.audit()
	})
}

// TestConcurrentSweepersReleaseOnce runs several sweepers, over two
// connection pools as two servers would, on the same overdue holds and
// orders: each one is released exactly once.
func TestConcurrentSweepersReleaseOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const (
			products        = 3
			holdsPerProduct = 100
			ordersPerProd   = 10
		)
		e, db2 := newTwoServerEnv(t, d)
		db1 := e.db
		short := stock.Config{HoldTTL: time.Second, PaymentTimeout: time.Second}
		e.svc = newService(db1, short)

		// Plenty of stock, so CreateHold never has to release anything itself.
		var pids []int
		for range products {
			pids = append(pids, e.newProduct(1000).ID)
		}
		type job struct{ product, qty int }
		var jobs []job
		for _, pid := range pids {
			for range holdsPerProduct + ordersPerProd {
				jobs = append(jobs, job{pid, 1 + rand.N(3)})
			}
		}
		rand.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
		var (
			mu       sync.Mutex
			holds    []*ent.Hold
			orders   []*ent.Order
			ordered  = map[int]int{}
			wg       sync.WaitGroup
			jobsChan = make(chan job)
		)
		for range 8 {
			wg.Go(func() {
				for j := range jobsChan {
					h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: j.product, Qty: j.qty})
					if err != nil {
						t.Errorf("CreateHold: %v", err)
						continue
					}
					mu.Lock()
					makeOrder := ordered[j.product] < ordersPerProd
					if makeOrder {
						ordered[j.product]++
					}
					mu.Unlock()
					if !makeOrder {
						mu.Lock()
						holds = append(holds, h)
						mu.Unlock()
						continue
					}
					o, err := e.svc.CreateOrder(e.ctx, h.ID, stock.Anonymous)
					if err != nil {
						t.Errorf("CreateOrder: %v", err)
						continue
					}
					mu.Lock()
					orders = append(orders, o)
					mu.Unlock()
				}
			})
		}
		began := time.Now()
		for _, j := range jobs {
			jobsChan <- j
		}
		close(jobsChan)
		wg.Wait()
		t.Logf("created %d holds and %d orders in %v", len(holds), len(orders), time.Since(began).Round(time.Millisecond))
		if t.Failed() {
			t.FailNow()
		}
		if len(holds) != products*holdsPerProduct || len(orders) != products*ordersPerProd {
			t.Fatalf("made %d holds and %d orders, want %d and %d", len(holds), len(orders), products*holdsPerProduct, products*ordersPerProd)
		}
		last := time.Time{}
		for _, h := range holds {
			last = latest(last, h.ExpiresAt)
		}
		for _, o := range orders {
			last = latest(last, o.PaymentDueAt)
		}
		e.waitPast(last)

		// Small batches make each sweep take many rounds, so the sweepers
		// contend for the same products again and again.
		sweepCfg := short
		sweepCfg.SweepBatch = 16
		sweepers := []*stock.Service{newService(db1, sweepCfg), newService(db1, sweepCfg), newService(db2, sweepCfg), newService(db2, sweepCfg)}
		got := make([]stock.SweepResult, len(sweepers))
		calls := make([]int, len(sweepers))
		start := make(chan struct{})
		var sweepersWG sync.WaitGroup
		for i, s := range sweepers {
			sweepersWG.Go(func() {
				<-start
				for {
					r, err := s.Sweep(e.ctx)
					calls[i]++
					if err != nil {
						t.Errorf("sweeper %d: %v", i, err)
						return
					}
					got[i].HoldsExpired += r.HoldsExpired
					got[i].OrdersCancelled += r.OrdersCancelled
					if r == (stock.SweepResult{}) {
						return
					}
				}
			})
		}
		// Meanwhile buyers on both servers keep taking the same products'
		// locks. Their holds outlive the test, so no sweep may touch them.
		// (They make no orders: the payment timeout is the sweeper's rule,
		// so orders made now would fall due if the sweeps took over a second.)
		longCfg := stock.Config{HoldTTL: time.Minute}
		buyersSvc := []*stock.Service{newService(db1, longCfg), newService(db2, longCfg)}
		sweepDone := make(chan struct{})
		newReserved := make([]map[int]int, 4)
		newHolds := make([]int, len(newReserved))
		var buyersWG sync.WaitGroup
		for i := range newReserved {
			newReserved[i] = map[int]int{}
			buyersWG.Go(func() {
				svc := buyersSvc[i%2]
				<-start
				for range 200 {
					select {
					case <-sweepDone:
						return
					default:
					}
					pid := pids[rand.N(len(pids))]
					qty := 1 + rand.N(3)
					if _, err := svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: pid, Qty: qty}); err != nil {
						t.Errorf("CreateHold during sweeps: %v", err)
						return
					}
					newReserved[i][pid] += qty
					newHolds[i]++
				}
			})
		}
		began = time.Now()
		close(start)
		sweepersWG.Wait()
		elapsed := time.Since(began)
		close(sweepDone)
		buyersWG.Wait()
		reservedNow := map[int]int{}
		newHoldsN := 0
		for i := range newReserved {
			newHoldsN += newHolds[i]
			for pid, q := range newReserved[i] {
				reservedNow[pid] += q
			}
		}
		t.Logf("%d holds were taken on the same products while the sweepers ran", newHoldsN)
		var total stock.SweepResult
		for i, r := range got {
			t.Logf("sweeper %d: %d calls, %d holds expired, %d orders cancelled", i, calls[i], r.HoldsExpired, r.OrdersCancelled)
			total.HoldsExpired += r.HoldsExpired
			total.OrdersCancelled += r.OrdersCancelled
		}
		t.Logf("sweepers released %d holds and %d orders in %v", total.HoldsExpired, total.OrdersCancelled, elapsed.Round(time.Millisecond))
		// Anything a sweeper left behind shows up here; what counts is that
		// no row is released twice.
		final := e.sweep(e.svc)
		total.HoldsExpired += final.HoldsExpired
		total.OrdersCancelled += final.OrdersCancelled
		if final != (stock.SweepResult{}) {
			t.Logf("a final sweep released %+v more", final)
		}
		if total.HoldsExpired != len(holds) || total.OrdersCancelled != len(orders) {
			t.Errorf("sweeps report %d holds expired and %d orders cancelled; want exactly %d and %d",
				total.HoldsExpired, total.OrdersCancelled, len(holds), len(orders))
		}
		for _, pid := range pids {
			if p := e.getProduct(pid); p.StockReserved != reservedNow[pid] || p.StockAvailable != 1000 {
				t.Errorf("product %d: available %d reserved %d; want 1000, %d", pid, p.StockAvailable, p.StockReserved, reservedNow[pid])
			}
		}
		if n := e.countHolds(hold.StatusEXPIRED); n != len(holds) {
			t.Errorf("%d EXPIRED holds, want %d", n, len(holds))
		}
		if n := e.countHolds(hold.StatusRELEASED); n != len(orders) {
			t.Errorf("%d RELEASED holds, want %d", n, len(orders))
		}
		if n := e.countHolds(hold.StatusACTIVE); n != newHoldsN {
			t.Errorf("%d holds ACTIVE, want the %d taken during the sweeps", n, newHoldsN)
		}
		if n := e.countHolds(hold.StatusREDEEMED); n != 0 {
			t.Errorf("%d holds still REDEEMED, want 0", n)
		}
		if n, err := db2.Ent.Order.Query().Where(order.StatusEQ(order.StatusCANCELLED)).Count(e.ctx); err != nil || n != len(orders) {
			t.Errorf("%d CANCELLED orders (err %v), want %d", n, err, len(orders))
		}
		e.audit()
	})
}
