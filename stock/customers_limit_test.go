package stock_test

// Purchase limits (maxPerCustomer): exact under concurrency and across
// servers, anonymous holds, lapsed units, late payments. Helpers in
// customers_test.go.

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/stock"
)

// TestCustomerLimitExactUnderConcurrency: hundreds of concurrent holds of
// two customers on a product with maxPerCustomer 5 admit exactly 5 units
// each, and every refusal is ErrPurchaseLimit for a call that could not
// fit. Then, step by step, which holds and orders count against the limit.
func TestCustomerLimitExactUnderConcurrency(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})

		t.Run("concurrent holds", func(t *testing.T) {
			e := e.with(t)
			const limit, calls, initial = 5, 300, 1000
			p := e.cuProduct(initial, cuInt(limit), nil, nil)
			type call struct {
				customer string
				qty      int
				h        *ent.Hold
				err      error
			}
			cs := make([]call, calls)
			for i := range cs {
				cs[i] = call{customer: "alice", qty: 1 + i%3}
				if i%4 == 3 {
					cs[i].customer = "bob"
				}
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range cs {
				wg.Go(func() {
					<-start
					cs[i].h, cs[i].err = e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: cs[i].qty, Customer: cs[i].customer})
				})
			}
			close(start)
			wg.Wait()

			admitted, holds := map[string]int{}, map[string]int{}
			minRefused := map[string]int{}
			for _, c := range cs {
				switch {
				case c.err == nil:
					admitted[c.customer] += c.qty
					holds[c.customer]++
					if c.h.Qty != c.qty || c.h.CustomerID != c.customer || c.h.Status != hold.StatusACTIVE || c.h.ProductID != p.ID {
						t.Errorf("hold %s: qty %d customer %q status %s; want %d, %q, ACTIVE", c.h.ID, c.h.Qty, c.h.CustomerID, c.h.Status, c.qty, c.customer)
					}
				case errors.Is(c.err, stock.ErrPurchaseLimit):
					if m, ok := minRefused[c.customer]; !ok || c.qty < m {
						minRefused[c.customer] = c.qty
					}
				default:
					t.Errorf("CreateHold(%s, qty %d): %v; want a hold or ErrPurchaseLimit", c.customer, c.qty, c.err)
				}
			}
			for _, c := range []string{"alice", "bob"} {
				got := admitted[c]
				if got > limit || got < limit-2 {
					t.Errorf("%s: %d units admitted, want at most %d and at least %d", c, got, limit, limit-2)
				}
				// A call refused at its turn did not fit what was admitted by
				// then, which is at most what was admitted in the end.
				if m, ok := minRefused[c]; ok && m <= limit-got {
					t.Errorf("%s: a call of qty %d was refused although only %d of %d units were ever admitted", c, m, got, limit)
				}
				// Each customer fired far more than 5 calls of qty 1, so some
				// were refused: at that turn the customer had all 5.
				if got != limit {
					t.Errorf("%s: %d units admitted; qty-1 calls were refused, so want exactly %d", c, got, limit)
				}
				if u := e.cuUnits(p.ID, c); u != got {
					t.Errorf("%s: %d units in the database, %d admitted", c, u, got)
				}
				n, err := e.db.Ent.Hold.Query().Where(hold.CustomerID(c), hold.ProductID(p.ID)).Count(e.ctx)
				if err != nil || n != holds[c] {
					t.Errorf("%s: %d holds stored (err %v), %d calls admitted", c, n, err, holds[c])
				}
			}
			e.wantStock(p.ID, initial, admitted["alice"]+admitted["bob"])
			e.cuCheck()
		})

		t.Run("what counts", func(t *testing.T) {
			e := e.with(t)
			short := e.service(stock.Config{HoldTTL: time.Second})
			const c = "carol"
			carol := stock.Caller{Customer: c}
			p := e.cuProduct(100, cuInt(5), nil, nil)
			refused := func(qty int, why string) {
				t.Helper()
				h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: qty, Customer: c})
				if !errors.Is(err, stock.ErrPurchaseLimit) {
					t.Fatalf("%s: CreateHold(qty %d) = %v, %v; want ErrPurchaseLimit", why, qty, h, err)
				}
			}
			expiring := e.cuHold(short, p.ID, 1, c, "")
			active := e.cuHold(e.svc, p.ID, 1, c, "")
			pending := e.cuOrder(e.svc, e.cuHold(e.svc, p.ID, 1, c, "").ID, carol)
			paid := e.cuOrder(e.svc, e.cuHold(e.svc, p.ID, 1, c, "").ID, carol)
			e.pay(e.svc, "pay-paid", paid.ID, stock.PaymentSuccess)
			failed := e.cuOrder(e.svc, e.cuHold(e.svc, p.ID, 1, c, "").ID, carol)
			e.pay(e.svc, "pay-failed", failed.ID, stock.PaymentFailure)
			e.wantOrderStatus(pending.ID, order.StatusPENDING_PAYMENT)
			e.wantOrderStatus(paid.ID, order.StatusPAID)
			e.wantOrderStatus(failed.ID, order.StatusCANCELLED)
			e.wantHoldStatus(failed.HoldID, hold.StatusRELEASED)
			// ACTIVE 2, PENDING_PAYMENT 1, PAID 1; the CANCELLED order does not count.
			if u := e.cuUnits(p.ID, c); u != 4 {
				t.Fatalf("carol has %d units counted, want 4", u)
			}
			refused(2, "4 of 5 units held, pending or bought")
			fifth := e.cuHold(e.svc, p.ID, 1, c, "")
			refused(1, "5 of 5 units, one of them PAID and one PENDING_PAYMENT")

			// An EXPIRED hold no longer counts.
			e.waitPast(expiring.ExpiresAt)
			if r := e.sweep(e.svc); r.HoldsExpired != 1 {
				t.Fatalf("Sweep = %+v, want the one overdue hold expired", r)
			}
			e.wantHoldStatus(expiring.ID, hold.StatusEXPIRED)
			afterExpiry := e.cuHold(e.svc, p.ID, 1, c, "")
			refused(1, "after the expired hold's unit was taken again")

			// Neither does a RELEASED one.
			if h, err := e.svc.ReleaseHold(e.ctx, active.ID, carol); err != nil || h.Status != hold.StatusRELEASED {
				t.Fatalf("ReleaseHold = %v, %v; want RELEASED", h, err)
			}
			afterRelease := e.cuHold(e.svc, p.ID, 1, c, "")
			refused(1, "after the released hold's unit was taken again")

			// Other customers have their own limit.
			dave := e.cuHold(e.svc, p.ID, 5, "dave", "")

			if u := e.cuUnits(p.ID, c); u != 5 {
				t.Errorf("carol has %d units counted, want 5", u)
			}
			for _, id := range []uuid.UUID{fifth.ID, afterExpiry.ID, afterRelease.ID, dave.ID} {
				e.wantHoldStatus(id, hold.StatusACTIVE)
			}
			// Available: 100 - 1 PAID. Reserved: carol's 3 ACTIVE + 1 PENDING, dave's 5.
			e.wantStock(p.ID, 99, 9)
			e.cuCheck()
		})
	})
}

// TestCustomerLimitAcrossServers: customers send each keyed hold to two
// services with their own connection pools at once (a retry landing on
// another server). Every key makes at most one hold, both copies of a call
// get the same answer, and no customer passes the limit in total.
func TestCustomerLimitAcrossServers(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const limit, perCustomer, initial = 5, 60, 1000
		e, db2 := newTwoServerEnv(t, d)
		e.svc = newService(e.db, stock.Config{})
		svcs := []*stock.Service{e.svc, newService(db2, stock.Config{})}
		p := e.cuProduct(initial, cuInt(limit), nil, nil)
		customers := []string{"alice", "bob", "carol"}

		type answer struct {
			h   *ent.Hold
			err error
		}
		type call struct {
			req stock.HoldRequest
			ans [2]answer // one per service
		}
		var cs []*call
		for i := range perCustomer {
			for _, c := range customers {
				cs = append(cs, &call{req: stock.HoldRequest{ProductID: p.ID, Qty: 1 + i%3, Customer: c, IdempotencyKey: fmt.Sprintf("k%d", i)}})
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, c := range cs {
			for s := range svcs {
				wg.Go(func() {
					<-start
					c.ans[s].h, c.ans[s].err = svcs[s].CreateHold(e.ctx, c.req)
				})
			}
		}
		close(start)
		wg.Wait()

		admitted, keys := map[string]int{}, map[string]int{}
		minRefused := map[string]int{}
		for _, c := range cs {
			a, b := c.ans[0], c.ans[1]
			switch {
			case a.err == nil && b.err == nil:
				if a.h.ID != b.h.ID {
					t.Errorf("%s key %s: two holds %s and %s", c.req.Customer, c.req.IdempotencyKey, a.h.ID, b.h.ID)
				}
				admitted[c.req.Customer] += c.req.Qty
				keys[c.req.Customer]++
			case errors.Is(a.err, stock.ErrPurchaseLimit) && errors.Is(b.err, stock.ErrPurchaseLimit):
				// Nothing is released here, so a key refused once stays refused.
				if m, ok := minRefused[c.req.Customer]; !ok || c.req.Qty < m {
					minRefused[c.req.Customer] = c.req.Qty
				}
			default:
				t.Errorf("%s key %s qty %d: answers (%v, %v) and (%v, %v); want one hold for both or ErrPurchaseLimit for both",
					c.req.Customer, c.req.IdempotencyKey, c.req.Qty, a.h, a.err, b.h, b.err)
			}
		}
		total := 0
		for _, c := range customers {
			got := admitted[c]
			total += got
			if got != limit {
				t.Errorf("%s: %d units admitted, want exactly %d (qty-1 calls were refused)", c, got, limit)
			}
			if m, ok := minRefused[c]; ok && m <= limit-got {
				t.Errorf("%s: qty %d refused with only %d of %d units admitted", c, m, got, limit)
			}
			if u := e.cuUnits(p.ID, c); u != got {
				t.Errorf("%s: %d units stored, %d admitted", c, u, got)
			}
			n, err := e.db.Ent.Hold.Query().Where(hold.CustomerID(c)).Count(e.ctx)
			if err != nil || n != keys[c] {
				t.Errorf("%s: %d holds stored (err %v), %d keys admitted", c, n, err, keys[c])
			}
		}
		e.wantStock(p.ID, initial, total)
		e.cuCheck()
	})
}

// TestAnonymousLimit: without a customer, each hold is its own buyer, so
// maxPerCustomer caps the qty of one hold, and holds within it pass again
// and again; a customer in the same batches is limited in total.
func TestAnonymousLimit(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		const limit, initial = 3, 500
		p := e.cuProduct(initial, cuInt(limit), nil, nil)
		if h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: limit + 1}); !errors.Is(err, stock.ErrPurchaseLimit) {
			t.Fatalf("anonymous hold of %d (limit %d) = %v, %v; want ErrPurchaseLimit", limit+1, limit, h, err)
		}
		// A paid anonymous order does not stand in the way of the next anonymous buyer.
		paid := e.order(e.svc, e.hold(e.svc, p.ID, limit).ID)
		e.pay(e.svc, "anon-paid", paid.ID, stock.PaymentSuccess)

		type call struct {
			customer string
			qty      int
			err      error
		}
		cs := make([]call, 120)
		for i := range cs {
			cs[i].qty = 1 + i%(limit+1) // 1..4: 4 is always over
			if i%5 == 4 {
				cs[i].customer = "alice"
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range cs {
			wg.Go(func() {
				<-start
				_, cs[i].err = e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: cs[i].qty, Customer: cs[i].customer})
			})
		}
		close(start)
		wg.Wait()
		anonUnits, aliceUnits := 0, 0
		for _, c := range cs {
			switch {
			case c.customer == "" && c.qty <= limit:
				if c.err != nil {
					t.Errorf("anonymous hold of %d: %v; want it held", c.qty, c.err)
				}
				anonUnits += c.qty
			case c.qty > limit:
				if !errors.Is(c.err, stock.ErrPurchaseLimit) {
					t.Errorf("%q hold of %d: %v; want ErrPurchaseLimit", c.customer, c.qty, c.err)
				}
			case c.err == nil:
				aliceUnits += c.qty
			case !errors.Is(c.err, stock.ErrPurchaseLimit):
				t.Errorf("alice's hold of %d: %v; want a hold or ErrPurchaseLimit", c.qty, c.err)
			}
		}
		// alice sent six calls of qty 1: some were refused, so she had all 3.
		if aliceUnits != limit {
			t.Errorf("alice got %d units, want exactly %d", aliceUnits, limit)
		}
		if u := e.cuUnits(p.ID, "alice"); u != aliceUnits {
			t.Errorf("alice: %d units stored, %d admitted", u, aliceUnits)
		}
		e.wantStock(p.ID, initial-limit, anonUnits+aliceUnits)
		e.cuCheck()
	})
}

// TestCustomerLimitIgnoresLapsedUnits: a hold batch short of stock releases
// the product's overdue holds and orders (releaseOverdue) after it has
// counted the customer's units (unitsOfCustomers), so a customer whose own
// lapsed hold or unpaid order that very transaction expires is refused
// with ErrPurchaseLimit, although at commit they hold nothing.
func TestCustomerLimitIgnoresLapsedUnits(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		short := e.service(stock.Config{HoldTTL: time.Second, PaymentTimeout: time.Second})
		alice := stock.Caller{Customer: "alice"}
		for _, x := range []struct {
			name  string
			stock int
			lapse func(p *ent.Product) (due time.Time)
		}{
			{"lapsed hold", 2, func(p *ent.Product) time.Time {
				return e.cuHold(short, p.ID, 2, "alice", "").ExpiresAt
			}},
			{"unpaid order", 2, func(p *ent.Product) time.Time {
				return e.cuOrder(short, e.cuHold(e.svc, p.ID, 2, "alice", "").ID, alice).PaymentDueAt
			}},
			// Stock to spare: only her limit stands in the way.
			{"lapsed hold, stock to spare", 10, func(p *ent.Product) time.Time {
				return e.cuHold(short, p.ID, 2, "alice", "").ExpiresAt
			}},
		} {
			t.Run(x.name, func(t *testing.T) {
				e := e.with(t)
				// Alice's 2 units, her limit (and with stock 2 the whole
				// stock): a new hold of hers makes the batch release lapsed
				// units first.
				p := e.cuProduct(x.stock, cuInt(2), nil, nil)
				e.waitPast(x.lapse(p))
				h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2, Customer: "alice"})
				if err != nil {
					t.Errorf("CreateHold after alice's units lapsed: %v (she now has %d units counted); want a hold", err, e.cuUnits(p.ID, "alice"))
				} else if h.Status != hold.StatusACTIVE {
					t.Errorf("hold %s is %s", h.ID, h.Status)
				}
				e.cuCheck()
			})
		}
	})
}

// TestLatePaymentRespectsPurchaseLimit: a success that arrives after the
// order was cancelled sells it again when stock allows, without looking at
// maxPerCustomer; if the customer has since held their limit again, they
// end up past it.
func TestLatePaymentRespectsPurchaseLimit(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		alice := stock.Caller{Customer: "alice"}
		p := e.cuProduct(10, cuInt(2), nil, nil)
		o := e.cuOrder(e.svc, e.cuHold(e.svc, p.ID, 2, "alice", "").ID, alice)
		e.pay(e.svc, "late-failure", o.ID, stock.PaymentFailure)
		e.wantOrderStatus(o.ID, order.StatusCANCELLED)
		e.cuHold(e.svc, p.ID, 2, "alice", "") // her limit again
		r := e.pay(e.svc, "late-success", o.ID, stock.PaymentSuccess)
		t.Logf("late success: order %s", r.OrderStatus)
		if u := e.cuUnits(p.ID, "alice"); u > 2 {
			t.Errorf("alice has %d units held, pending or bought; maxPerCustomer 2", u)
		}
		e.cuCheck()
	})
}
