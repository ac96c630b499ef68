package stock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
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
				_, err := svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
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
				_, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: qty})
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

// blockRow starts a transaction that holds a row's lock (on SQLite: the
// database's write lock) until the returned release is called.
func (e *env) blockRow(table string, id any) (release func()) {
	e.t.Helper()
	tx, err := e.db.SQL.BeginTx(e.ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := tx.ExecContext(e.ctx, "UPDATE "+table+" SET updated_at = updated_at WHERE id = ?", id); err != nil {
		tx.Rollback()
		e.t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback() }) }
	e.t.Cleanup(release)
	return release
}

// waitUntil polls cond until it holds; a hang fails the test.
func (e *env) waitUntil(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCreateHoldJudgesExpiryUnderLock: a hold batch that waits for the
// product's lock must judge expiry by the clock once it holds the lock (the
// clock is read in the locking statement itself). A hold that lapsed during
// the wait is then released for the waiting buyer; judged by the time the
// wait began, the product would look sold out.
func TestCreateHoldJudgesExpiryUnderLock(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: time.Second})
		p := e.newProduct(1)
		first := e.hold(e.svc, p.ID, 1)
		time.Sleep(300 * time.Millisecond) // past the sold-out fast path's memory
		release := e.blockRow("products", p.ID)
		type answer struct {
			h   *ent.Hold
			err error
		}
		done := make(chan answer, 1)
		go func() {
			h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
			done <- answer{h, err}
		}()
		e.waitPast(first.ExpiresAt.Add(200 * time.Millisecond))
		release()
		a := <-done
		if a.err != nil {
			t.Fatalf("CreateHold waited for the lock past the first hold's expiry and got %v; want the lapsed unit", a.err)
		}
		if !a.h.CreatedAt.After(first.ExpiresAt) {
			t.Errorf("new hold created at %s, before the first expired at %s: the clock was read before the lock", a.h.CreatedAt, first.ExpiresAt)
		}
		e.wantHoldStatus(first.ID, hold.StatusEXPIRED)
		e.wantStock(p.ID, 1, 1)
		e.audit()
	})
}

// TestCreateOrderSkipsProductLock: createOrder changes no product counter,
// so it does not wait for the product's row, which a hot product's hold
// batches keep locked. (MySQL only: SQLite locks the whole database.)
func TestCreateOrderSkipsProductLock(t *testing.T) {
	e := newEnv(t, dialect.MySQL, stock.Config{})
	p := e.newPricedProduct(5, 250)
	h := e.hold(e.svc, p.ID, 2)
	e.blockRow("products", p.ID) // held until the test ends
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	o, err := e.svc.CreateOrder(ctx, h.ID, stock.Anonymous)
	if err != nil {
		t.Fatalf("CreateOrder while another transaction holds the product's row: %v", err)
	}
	if o.AmountCents != 500 || o.ProductID != p.ID || o.Status != order.StatusPENDING_PAYMENT {
		t.Fatalf("order %+v", o)
	}
}

// TestConcurrentCallsShareABatch: calls that queue while a batch waits are
// committed together in the next one, each with its own answer. A row lock
// held by another transaction keeps the first batch waiting while the rest
// queue up behind it.
func TestConcurrentCallsShareABatch(t *testing.T) {
	const n = 40
	forEachDialect(t, func(t *testing.T, d string) {
		t.Run("payments", func(t *testing.T) {
			e := newEnv(t, d, stock.Config{}).with(t)
			p := e.newProduct(n)
			orders := make([]*ent.Order, n)
			for i := range orders {
				orders[i] = e.order(e.svc, e.hold(e.svc, p.ID, 1).ID)
			}
			before := e.svc.PaymentBatches()
			release := e.blockRow("products", p.ID)
			results := make([]stock.PaymentResult, n+1)
			errs := make([]error, n+1)
			var wg sync.WaitGroup
			for i := range n + 1 {
				o, status, key := orders[i%n], stock.PaymentSuccess, fmt.Sprintf("evt_%d", i)
				switch {
				case i%4 == 3:
					status = stock.PaymentFailure
				case i == n: // a second delivery of evt_0
					key = "evt_0"
				}
				wg.Go(func() {
					results[i], errs[i] = e.svc.ApplyPayment(e.ctx, stock.Payment{Key: key, OrderID: o.ID, Status: status})
				})
			}
			e.waitUntil("every payment is in a batch or queued", func() bool {
				return e.svc.PaymentBatches().Calls-before.Calls+int64(e.svc.PaymentsWaiting()) == n+1
			})
			release()
			wg.Wait()
			if got := e.svc.PaymentBatches().Batches - before.Batches; got > 2 {
				t.Errorf("%d payments in %d transactions, want at most 2", n+1, got)
			}
			paid, duplicates := 0, 0
			for i, err := range errs {
				if err != nil {
					t.Fatalf("payment %d: %v", i, err)
				}
				if results[i].Duplicate {
					duplicates++
				} else if results[i].OrderStatus == order.StatusPAID {
					paid++
				}
			}
			if duplicates != 1 || paid != n-n/4 {
				t.Errorf("%d paid and %d duplicates, want %d and 1", paid, duplicates, n-n/4)
			}
			e.wantStock(p.ID, n-paid, 0)
			e.audit()
		})
		t.Run("orders", func(t *testing.T) {
			e := newEnv(t, d, stock.Config{}).with(t)
			p := e.newProduct(4 * n)
			// Holds of one order queue, so one blocked batch holds up the rest.
			var holds []*ent.Hold
			for len(holds) < n {
				if h := e.hold(e.svc, p.ID, 1); stock.OrderShard(h.ID) == 0 {
					holds = append(holds, h)
				}
			}
			before := e.svc.OrderBatches()
			release := e.blockRow("holds", holds[0].ID.String())
			errs := make([]error, n+1)
			var wg sync.WaitGroup
			for i := range n + 1 {
				h := holds[i%n] // the last call repeats the first hold
				wg.Go(func() { _, errs[i] = e.svc.CreateOrder(e.ctx, h.ID, stock.Anonymous) })
			}
			e.waitUntil("every order is in a batch or queued", func() bool {
				return e.svc.OrderBatches().Calls-before.Calls+int64(e.svc.OrdersWaiting(holds[0].ID)) == n+1
			})
			release()
			wg.Wait()
			if got := e.svc.OrderBatches().Batches - before.Batches; got > 2 {
				t.Errorf("%d orders in %d transactions, want at most 2", n+1, got)
			}
			refused := 0
			for i, err := range errs {
				switch {
				case errors.Is(err, stock.ErrHoldNotActive):
					refused++
				case err != nil:
					t.Fatalf("order %d: %v", i, err)
				}
			}
			if refused != 1 || e.countOrders() != n {
				t.Errorf("%d orders made and %d refused, want %d and 1", e.countOrders(), refused, n)
			}
			e.audit()
		})
	})
}

// TestBatchReleaseKeepsDecidedOrders: a payment batch that releases lapsed
// stock for a late success must leave alone the orders it has already
// decided and not yet written. Here one batch pays an overdue, unswept
// order, then meets a late success with no room; releasing lapsed stock
// then must not cancel the order just paid (it did: the order ended PAID
// with its hold RELEASED and its units taken off reserved twice).
func TestBatchReleaseKeepsDecidedOrders(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		svc := e.service(stock.Config{PaymentTimeout: time.Second})
		e.svc = svc
		p := e.newProduct(5)
		o1 := e.order(svc, e.hold(svc, p.ID, 1).ID)
		o2 := e.order(svc, e.hold(svc, p.ID, 2).ID)
		o4 := e.order(svc, e.hold(svc, p.ID, 1).ID)
		e.pay(svc, "o2-failed", o2.ID, stock.PaymentFailure) // CANCELLED, its 2 units back
		e.hold(svc, p.ID, 3)                                 // sellable 0: o2's late success has no room
		e.waitPast(latest(o1.PaymentDueAt, o4.PaymentDueAt)) // o1 and o4 overdue, not swept

		before := svc.PaymentBatches()
		release := e.blockRow("products", p.ID)
		type answer struct {
			r   stock.PaymentResult
			err error
		}
		pay := func(key string, id uuid.UUID) chan answer {
			ch := make(chan answer, 1)
			go func() {
				r, err := svc.ApplyPayment(e.ctx, stock.Payment{Key: key, OrderID: id, Status: stock.PaymentSuccess})
				ch <- answer{r, err}
			}()
			return ch
		}
		c := pay("o4-paid", o4.ID) // its batch waits for the row
		e.waitUntil("o4's batch is under way", func() bool { return svc.PaymentBatches().Calls == before.Calls+1 })
		a := pay("o1-paid", o1.ID)
		e.waitUntil("o1's payment is queued", func() bool { return svc.PaymentsWaiting() == 1 })
		b := pay("o2-late", o2.ID)
		e.waitUntil("o2's payment is queued behind it", func() bool { return svc.PaymentsWaiting() == 2 })
		release()
		for _, w := range []struct {
			name string
			ch   chan answer
			want order.Status
		}{{"o4", c, order.StatusPAID}, {"o1", a, order.StatusPAID}, {"o2 late", b, order.StatusREFUND_REQUIRED}} {
			got := <-w.ch
			if got.err != nil || got.r.OrderStatus != w.want {
				t.Errorf("%s: %+v %v, want %s", w.name, got.r, got.err, w.want)
			}
		}
		if got := svc.PaymentBatches().Batches - before.Batches; got != 2 {
			t.Fatalf("%d payment batches, want 2 (o1 and o2 in one)", got)
		}
		e.wantOrderStatus(o1.ID, order.StatusPAID)
		e.wantHoldStatus(o1.HoldID, hold.StatusREDEEMED)
		e.wantStock(p.ID, 3, 3)
		e.audit()
	})
}
