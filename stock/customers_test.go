package stock_test

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
	"flashsale/ent/product"
	"flashsale/stock"
)

// Tests of customers in the stock domain: maxPerCustomer, hold idempotency
// keys, sale windows, releaseHold and ownership.

func cuInt(n int) *int { return &n }

// cuProduct creates a product with an optional limit and sale window.
func (e *env) cuProduct(stockN int, limit *int, starts, ends *time.Time) *ent.Product {
	e.t.Helper()
	p, err := e.svc.CreateProduct(e.ctx, stock.NewProduct{
		Name: "limited", PriceCents: 250, Stock: stockN,
		MaxPerCustomer: limit, SaleStartsAt: starts, SaleEndsAt: ends,
	})
	if err != nil {
		e.t.Fatalf("CreateProduct: %v", err)
	}
	return p
}

// cuHold makes a hold that must succeed.
func (e *env) cuHold(svc *stock.Service, productID, qty int, customer, key string) *ent.Hold {
	e.t.Helper()
	h, err := svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: productID, Qty: qty, Customer: customer, IdempotencyKey: key})
	if err != nil {
		e.t.Fatalf("CreateHold(product %d, qty %d, customer %q, key %q): %v", productID, qty, customer, key, err)
	}
	if h.ProductID != productID || h.Qty != qty || h.CustomerID != customer {
		e.t.Fatalf("CreateHold made product %d qty %d customer %q; want %d, %d, %q", h.ProductID, h.Qty, h.CustomerID, productID, qty, customer)
	}
	return h
}

// cuOrder turns a hold into an order as caller by; it must succeed.
func (e *env) cuOrder(svc *stock.Service, holdID uuid.UUID, by stock.Caller) *ent.Order {
	e.t.Helper()
	o, err := svc.CreateOrder(e.ctx, holdID, by)
	if err != nil {
		e.t.Fatalf("CreateOrder(%s, %+v): %v", holdID, by, err)
	}
	return o
}

// cuHoldsWithKey returns the holds stored with a customer's key.
func (e *env) cuHoldsWithKey(customer, key string) []*ent.Hold {
	e.t.Helper()
	hs, err := e.db.Ent.Hold.Query().Where(hold.CustomerID(customer), hold.IdempotencyKey(key)).All(e.ctx)
	if err != nil {
		e.t.Fatalf("holds with key %q: %v", key, err)
	}
	return hs
}

func (e *env) cuCountHoldsOf(productID int) int {
	e.t.Helper()
	n, err := e.db.Ent.Hold.Query().Where(hold.ProductID(productID)).Count(e.ctx)
	if err != nil {
		e.t.Fatalf("count holds: %v", err)
	}
	return n
}

// cuUnits returns what counts against a product's maxPerCustomer for a
// customer, read from the database: ACTIVE holds, PENDING_PAYMENT and PAID
// orders.
func (e *env) cuUnits(productID int, customer string) int {
	e.t.Helper()
	hs, err := e.db.Ent.Hold.Query().Where(hold.ProductID(productID), hold.CustomerID(customer), hold.StatusEQ(hold.StatusACTIVE)).All(e.ctx)
	if err != nil {
		e.t.Fatalf("holds: %v", err)
	}
	os, err := e.db.Ent.Order.Query().Where(order.ProductID(productID), order.CustomerID(customer),
		order.StatusIn(order.StatusPENDING_PAYMENT, order.StatusPAID)).All(e.ctx)
	if err != nil {
		e.t.Fatalf("orders: %v", err)
	}
	n := 0
	for _, h := range hs {
		n += h.Qty
	}
	for _, o := range os {
		n += o.Qty
	}
	return n
}

// cuCheckLimits checks the contract's purchase-limit invariant for every
// product with a limit: each customer's ACTIVE holds + PENDING_PAYMENT and
// PAID orders add up to at most maxPerCustomer, and each anonymous hold or
// order (its own buyer) is at most that.
func (e *env) cuCheckLimits() {
	e.t.Helper()
	ps, err := e.db.Ent.Product.Query().Where(product.MaxPerCustomerNotNil()).All(e.ctx)
	if err != nil {
		e.t.Fatalf("products: %v", err)
	}
	for _, p := range ps {
		limit := *p.MaxPerCustomer
		hs, err := e.db.Ent.Hold.Query().Where(hold.ProductID(p.ID), hold.StatusEQ(hold.StatusACTIVE)).All(e.ctx)
		if err != nil {
			e.t.Fatalf("holds: %v", err)
		}
		os, err := e.db.Ent.Order.Query().Where(order.ProductID(p.ID), order.StatusIn(order.StatusPENDING_PAYMENT, order.StatusPAID)).All(e.ctx)
		if err != nil {
			e.t.Fatalf("orders: %v", err)
		}
		units := map[string]int{}
		count := func(customer string, qty int, what string, id uuid.UUID) {
			if customer == "" {
				if qty > limit {
					e.t.Errorf("product %d: anonymous %s %s of %d units, limit %d", p.ID, what, id, qty, limit)
				}
				return
			}
			units[customer] += qty
		}
		for _, h := range hs {
			count(h.CustomerID, h.Qty, "hold", h.ID)
		}
		for _, o := range os {
			count(o.CustomerID, o.Qty, "order", o.ID)
		}
		for c, n := range units {
			if n > limit {
				e.t.Errorf("product %d: customer %q has %d units held, pending or bought; limit %d", p.ID, c, n, limit)
			}
		}
	}
}

// cuCheck runs the stock audit and the purchase-limit check.
func (e *env) cuCheck() {
	e.t.Helper()
	e.cuCheckLimits()
	e.audit()
}

// cuSameStock reports whether two products' counters are equal.
func cuSameStock(a, b *ent.Product) bool {
	return a.StockAvailable == b.StockAvailable && a.StockReserved == b.StockReserved && a.StockReceived == b.StockReceived
}

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

// TestHoldIdempotencyKey: a customer's key makes one hold however often and
// wherever it is sent, and a retry answers with that hold as it is now.
func TestHoldIdempotencyKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e, db2 := newTwoServerEnv(t, d)
		e.svc = newService(e.db, stock.Config{})
		second := newService(db2, stock.Config{})
		svcs := []*stock.Service{e.svc, second}

		t.Run("concurrent duplicates make one hold", func(t *testing.T) {
			e := e.with(t)
			p := e.cuProduct(50, nil, nil, nil)
			type call struct {
				customer string
				h        *ent.Hold
				err      error
			}
			cs := make([]call, 150)
			for i := range cs {
				if i%3 == 2 {
					cs[i].customer = "" // anonymous: one shared scope
				} else {
					cs[i].customer = "alice"
				}
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range cs {
				wg.Go(func() {
					<-start
					cs[i].h, cs[i].err = svcs[i%2].CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2, Customer: cs[i].customer, IdempotencyKey: "dup"})
				})
			}
			close(start)
			wg.Wait()
			ids := map[string]uuid.UUID{}
			for _, c := range cs {
				if c.err != nil {
					t.Errorf("CreateHold(%q, dup): %v", c.customer, c.err)
					continue
				}
				if id, ok := ids[c.customer]; ok && id != c.h.ID {
					t.Errorf("customer %q: key dup answered with holds %s and %s", c.customer, id, c.h.ID)
				}
				ids[c.customer] = c.h.ID
				if c.h.Qty != 2 || c.h.CustomerID != c.customer || c.h.IdempotencyKey == nil || *c.h.IdempotencyKey != "dup" {
					t.Errorf("hold %s: qty %d customer %q key %v", c.h.ID, c.h.Qty, c.h.CustomerID, c.h.IdempotencyKey)
				}
			}
			if ids["alice"] == ids[""] {
				t.Errorf("alice and anonymous share hold %s", ids[""])
			}
			for _, c := range []string{"alice", ""} {
				if hs := e.cuHoldsWithKey(c, "dup"); len(hs) != 1 || hs[0].ID != ids[c] {
					t.Errorf("customer %q: %d holds stored with key dup, want one (%s)", c, len(hs), ids[c])
				}
			}
			if n := e.cuCountHoldsOf(p.ID); n != 2 {
				t.Errorf("%d holds of the product, want 2", n)
			}
			e.wantStock(p.ID, 50, 4)
			e.cuCheck()
		})

		t.Run("same key, other qty, concurrently", func(t *testing.T) {
			e := e.with(t)
			const rounds, perQty = 5, 40
			p := e.cuProduct(1000, nil, nil, nil)
			reserved := 0
			for r := range rounds {
				key := fmt.Sprintf("mixed-%d", r)
				type call struct {
					qty int
					h   *ent.Hold
					err error
				}
				cs := make([]call, 2*perQty)
				for i := range cs {
					cs[i].qty = 1 + i%2
				}
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range cs {
					wg.Go(func() {
						<-start
						cs[i].h, cs[i].err = svcs[(i/2)%2].CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: cs[i].qty, Customer: "bob", IdempotencyKey: key})
					})
				}
				close(start)
				wg.Wait()
				hs := e.cuHoldsWithKey("bob", key)
				if len(hs) != 1 {
					t.Fatalf("round %d: %d holds with key %s, want 1", r, len(hs), key)
				}
				won := hs[0]
				reserved += won.Qty
				for _, c := range cs {
					switch {
					case c.qty == won.Qty:
						if c.err != nil || c.h.ID != won.ID {
							t.Errorf("round %d: qty %d (the stored hold's) answered %v, %v; want hold %s", r, c.qty, c.h, c.err, won.ID)
						}
					case !errors.Is(c.err, stock.ErrKeyReused):
						t.Errorf("round %d: qty %d, key stored with qty %d: %v, %v; want ErrKeyReused", r, c.qty, won.Qty, c.h, c.err)
					}
				}
			}
			// The same key for another product, or another qty, afterwards.
			other := e.cuProduct(10, nil, nil, nil)
			won := e.cuHoldsWithKey("bob", "mixed-0")[0]
			for _, req := range []stock.HoldRequest{
				{ProductID: other.ID, Qty: won.Qty, Customer: "bob", IdempotencyKey: "mixed-0"},
				{ProductID: p.ID, Qty: 3, Customer: "bob", IdempotencyKey: "mixed-0"},
			} {
				if h, err := e.svc.CreateHold(e.ctx, req); !errors.Is(err, stock.ErrKeyReused) {
					t.Errorf("CreateHold(%+v) = %v, %v; want ErrKeyReused", req, h, err)
				}
			}
			if n := e.cuCountHoldsOf(p.ID); n != rounds {
				t.Errorf("%d holds of the product, want %d", n, rounds)
			}
			e.wantStock(p.ID, 1000, reserved)
			e.wantStock(other.ID, 10, 0)
			e.cuCheck()
		})

		t.Run("keys are per customer", func(t *testing.T) {
			e := e.with(t)
			p := e.cuProduct(20, nil, nil, nil)
			made := map[string]*ent.Hold{}
			for _, c := range []string{"alice", "bob", ""} {
				made[c] = e.cuHold(e.svc, p.ID, 1, c, "same")
			}
			if made["alice"].ID == made["bob"].ID || made["alice"].ID == made[""].ID || made["bob"].ID == made[""].ID {
				t.Fatalf("one key of three customers made holds %s, %s, %s; want three", made["alice"].ID, made["bob"].ID, made[""].ID)
			}
			// Every anonymous caller shares one scope; a customer has their own.
			for i, c := range []string{"", "", "alice", "bob"} {
				if h := e.cuHold(svcs[i%2], p.ID, 1, c, "same"); h.ID != made[c].ID {
					t.Errorf("retry of %q: hold %s, want %s", c, h.ID, made[c].ID)
				}
			}
			if h, err := second.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2, IdempotencyKey: "same"}); !errors.Is(err, stock.ErrKeyReused) {
				t.Errorf("anonymous key reused with qty 2: %v, %v; want ErrKeyReused", h, err)
			}
			e.wantStock(p.ID, 20, 3)
			e.cuCheck()
		})

		t.Run("retry after the hold moved on", func(t *testing.T) {
			e := e.with(t)
			short := e.service(stock.Config{HoldTTL: time.Second})
			const c = "erin"
			erin := stock.Caller{Customer: c}
			type tc struct {
				name string
				p    *ent.Product
				h    *ent.Hold
				want hold.Status
			}
			var cases []*tc
			add := func(name string, svc *stock.Service, p *ent.Product, qty int, want hold.Status) *tc {
				x := &tc{name: name, p: p, h: e.cuHold(svc, p.ID, qty, c, "retry-"+name), want: want}
				cases = append(cases, x)
				return x
			}
			expired := add("expired", short, e.cuProduct(10, nil, nil, nil), 2, hold.StatusEXPIRED)
			released := add("released", e.svc, e.cuProduct(10, cuInt(3), nil, nil), 3, hold.StatusRELEASED)
			soldOut := add("redeemed and paid, sold out", e.svc, e.cuProduct(2, cuInt(2), nil, nil), 2, hold.StatusREDEEMED)
			cancelled := add("order cancelled", e.svc, e.cuProduct(4, nil, nil, nil), 1, hold.StatusRELEASED)
			ends := e.dbNow().Add(1500 * time.Millisecond)
			ended := add("sale ended", e.svc, e.cuProduct(5, nil, nil, &ends), 1, hold.StatusACTIVE)

			if h, err := e.svc.ReleaseHold(e.ctx, released.h.ID, erin); err != nil || h.Status != hold.StatusRELEASED {
				t.Fatalf("ReleaseHold: %v, %v", h, err)
			}
			o := e.cuOrder(e.svc, soldOut.h.ID, erin)
			e.pay(e.svc, "retry-paid", o.ID, stock.PaymentSuccess)
			o = e.cuOrder(e.svc, cancelled.h.ID, erin)
			e.pay(e.svc, "retry-failed", o.ID, stock.PaymentFailure)
			e.waitPast(latest(expired.h.ExpiresAt, ends))
			if r := e.sweep(e.svc); r.HoldsExpired != 1 {
				t.Fatalf("Sweep = %+v, want one hold expired", r)
			}
			// Refused outright without a key now: sold out, and the sale is over.
			if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: soldOut.p.ID, Qty: 1, Customer: "frank"}); !errors.Is(err, stock.ErrInsufficientStock) {
				t.Errorf("hold on the sold-out product: %v, want ErrInsufficientStock", err)
			}
			if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: ended.p.ID, Qty: 1, Customer: "frank"}); !errors.Is(err, stock.ErrSaleEnded) {
				t.Errorf("hold after the sale: %v, want ErrSaleEnded", err)
			}

			for _, x := range cases {
				t.Run(x.name, func(t *testing.T) {
					e := e.with(t)
					before, beforeHold, holds := e.getProduct(x.p.ID), e.getHold(x.h.ID), e.cuCountHoldsOf(x.p.ID)
					if beforeHold.Status != x.want {
						t.Fatalf("hold is %s before the retry, want %s", beforeHold.Status, x.want)
					}
					const retries = 10
					answers := make([]*ent.Hold, retries)
					errs := make([]error, retries)
					var wg sync.WaitGroup
					for i := range retries {
						wg.Go(func() {
							answers[i], errs[i] = svcs[i%2].CreateHold(e.ctx, stock.HoldRequest{ProductID: x.p.ID, Qty: x.h.Qty, Customer: c, IdempotencyKey: "retry-" + x.name})
						})
					}
					wg.Wait()
					for i := range retries {
						if errs[i] != nil {
							t.Errorf("retry: %v; want hold %s", errs[i], x.h.ID)
							continue
						}
						if h := answers[i]; h.ID != x.h.ID || h.Status != x.want || h.Qty != x.h.Qty || !h.UpdatedAt.Equal(beforeHold.UpdatedAt) {
							t.Errorf("retry answered hold %s %s qty %d updated %s; want %s %s qty %d updated %s",
								h.ID, h.Status, h.Qty, h.UpdatedAt, x.h.ID, x.want, x.h.Qty, beforeHold.UpdatedAt)
						}
					}
					after := e.getProduct(x.p.ID)
					if !cuSameStock(before, after) {
						t.Errorf("retry moved stock: available %d→%d, reserved %d→%d", before.StockAvailable, after.StockAvailable, before.StockReserved, after.StockReserved)
					}
					if n := e.cuCountHoldsOf(x.p.ID); n != holds {
						t.Errorf("%d holds of the product after the retry, %d before", n, holds)
					}
					e.wantHoldStatus(x.h.ID, x.want)
				})
			}
			e.wantStock(soldOut.p.ID, 0, 0)
			e.cuCheck()
		})

		t.Run("a refused call made nothing", func(t *testing.T) {
			e := e.with(t)
			type tc struct {
				name    string
				refusal error
				// block makes the key's first call refused and returns what
				// lifts the refusal.
				block func(p *ent.Product) (unblock func())
				limit *int
			}
			release := func(h *ent.Hold, by stock.Caller) func() {
				return func() {
					if _, err := e.svc.ReleaseHold(e.ctx, h.ID, by); err != nil {
						t.Fatalf("ReleaseHold: %v", err)
					}
				}
			}
			for _, x := range []tc{
				{name: "insufficient stock", refusal: stock.ErrInsufficientStock, block: func(p *ent.Product) func() {
					return release(e.cuHold(e.svc, p.ID, 4, "bob", ""), stock.Caller{Customer: "bob"})
				}},
				{name: "purchase limit", refusal: stock.ErrPurchaseLimit, limit: cuInt(4), block: func(p *ent.Product) func() {
					return release(e.cuHold(e.svc, p.ID, 4, "alice", "first"), stock.Caller{Customer: "alice"})
				}},
			} {
				t.Run(x.name, func(t *testing.T) {
					e := e.with(t)
					p := e.cuProduct(4, x.limit, nil, nil)
					unblock := x.block(p)
					key := "again-" + x.name
					req := stock.HoldRequest{ProductID: p.ID, Qty: 2, Customer: "alice", IdempotencyKey: key}
					for _, svc := range svcs {
						if h, err := svc.CreateHold(e.ctx, req); !errors.Is(err, x.refusal) {
							t.Fatalf("first call: %v, %v; want %v", h, err, x.refusal)
						}
					}
					if hs := e.cuHoldsWithKey("alice", key); len(hs) != 0 {
						t.Fatalf("a refused call stored %d holds", len(hs))
					}
					unblock()
					h := e.cuHold(second, p.ID, 2, "alice", key)
					if again := e.cuHold(e.svc, p.ID, 2, "alice", key); again.ID != h.ID {
						t.Errorf("retry made hold %s, want %s", again.ID, h.ID)
					}
					e.wantStock(p.ID, 4, 2)
					e.cuCheck()
				})
			}
		})
	})
}

// TestHoldKeyRaceAcrossProducts: one customer's key sent at once for
// several products. Their batches run side by side, each on its own
// product's lock, so only the unique key decides: one hold, and every call
// for another product is ErrKeyReused, never an internal error.
func TestHoldKeyRaceAcrossProducts(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const rounds, products, perProduct = 8, 4, 6
		e, db2 := newTwoServerEnv(t, d)
		e.svc = newService(e.db, stock.Config{})
		svcs := []*stock.Service{e.svc, newService(db2, stock.Config{})}
		ps := make([]*ent.Product, products)
		for i := range ps {
			ps[i] = e.cuProduct(100, cuInt(50), nil, nil)
		}
		won := map[int]int{}
		for r := range rounds {
			customer := "frank"
			if r%2 == 1 {
				customer = "" // the anonymous scope races the same way
			}
			key := fmt.Sprintf("race-%d", r)
			type call struct {
				p   int
				h   *ent.Hold
				err error
			}
			cs := make([]call, products*perProduct)
			for i := range cs {
				cs[i].p = ps[i%products].ID
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range cs {
				wg.Go(func() {
					<-start
					cs[i].h, cs[i].err = svcs[(i/products)%2].CreateHold(e.ctx, stock.HoldRequest{ProductID: cs[i].p, Qty: 1, Customer: customer, IdempotencyKey: key})
				})
			}
			close(start)
			wg.Wait()
			hs := e.cuHoldsWithKey(customer, key)
			if len(hs) != 1 {
				t.Fatalf("round %d: %d holds with key %s, want 1", r, len(hs), key)
			}
			w := hs[0]
			won[w.ProductID]++
			for _, c := range cs {
				switch {
				case c.p == w.ProductID:
					if c.err != nil || c.h.ID != w.ID {
						t.Errorf("round %d: call for the winning product %d: %v, %v; want hold %s", r, c.p, c.h, c.err, w.ID)
					}
				case !errors.Is(c.err, stock.ErrKeyReused):
					t.Errorf("round %d: call for product %d (key stored for %d): %v, %v; want ErrKeyReused", r, c.p, w.ProductID, c.h, c.err)
				}
			}
		}
		for _, p := range ps {
			e.wantStock(p.ID, 100, won[p.ID])
			if n := e.cuCountHoldsOf(p.ID); n != won[p.ID] {
				t.Errorf("product %d: %d holds, %d keys won", p.ID, n, won[p.ID])
			}
		}
		e.cuCheck()
	})
}

// TestSaleWindow: holds are refused before saleStartsAt and at or after
// saleEndsAt, by the database clock; an order may be made after the end
// from a hold taken inside the window; CreateProduct refuses empty windows
// and limits below 1.
func TestSaleWindow(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})

		t.Run("not started", func(t *testing.T) {
			e := e.with(t)
			// Nanoseconds in the input: the error must carry the time as stored.
			starts := e.dbNow().Add(time.Hour + 123456789*time.Nanosecond + 789)
			p := e.cuProduct(10, cuInt(3), &starts, nil)
			stored := e.getProduct(p.ID)
			if stored.SaleStartsAt == nil || stored.SaleStartsAt.Sub(starts).Abs() >= time.Microsecond {
				t.Fatalf("saleStartsAt stored as %v, want %s to the microsecond", stored.SaleStartsAt, starts)
			}
			const calls = 30
			errs := make([]error, calls)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range calls {
				wg.Go(func() {
					<-start
					req := stock.HoldRequest{ProductID: p.ID, Qty: 1 + i%3, Customer: []string{"", "alice", "bob"}[i%3]}
					if i%2 == 0 {
						req.IdempotencyKey = fmt.Sprintf("early-%d", i)
					}
					_, errs[i] = e.svc.CreateHold(e.ctx, req)
				})
			}
			close(start)
			wg.Wait()
			for _, err := range errs {
				var notYet *stock.SaleNotStartedError
				if !errors.Is(err, stock.ErrSaleNotStarted) || !errors.As(err, &notYet) {
					t.Errorf("CreateHold before the sale: %v; want a *SaleNotStartedError", err)
					continue
				}
				if !notYet.StartsAt.Equal(*stored.SaleStartsAt) || notYet.StartsAt.Location() != time.UTC {
					t.Errorf("SaleNotStartedError.StartsAt = %s, want %s in UTC", notYet.StartsAt, stored.SaleStartsAt)
				}
			}
			if n := e.cuCountHoldsOf(p.ID); n != 0 {
				t.Errorf("%d holds before the sale", n)
			}
			e.wantStock(p.ID, 10, 0)
			e.cuCheck()
		})

		t.Run("opens", func(t *testing.T) {
			e := e.with(t)
			starts := e.dbNow().Add(time.Second).Truncate(time.Microsecond)
			p := e.cuProduct(10, cuInt(3), &starts, nil)
			h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2, Customer: "alice", IdempotencyKey: "early"})
			decidedBy := e.dbNow()
			var notYet *stock.SaleNotStartedError
			switch {
			case errors.As(err, &notYet):
				if !notYet.StartsAt.Equal(starts) {
					t.Errorf("StartsAt = %s, want %s", notYet.StartsAt, starts)
				}
			case err == nil && decidedBy.Before(starts):
				t.Fatalf("hold %s admitted before the sale opened (%s, clock %s)", h.ID, starts, decidedBy)
			case err != nil:
				t.Fatalf("CreateHold before the sale: %v", err)
			}
			if err != nil {
				e.waitPast(starts)
			}
			// A key refused before the start made nothing: it works now.
			h = e.cuHold(e.svc, p.ID, 2, "alice", "early")
			if again := e.cuHold(e.svc, p.ID, 2, "alice", "early"); again.ID != h.ID {
				t.Errorf("retry made hold %s, want %s", again.ID, h.ID)
			}
			e.cuHold(e.svc, p.ID, 3, "bob", "")
			e.wantStock(p.ID, 10, 5)
			e.cuCheck()
		})

		t.Run("ends", func(t *testing.T) {
			e := e.with(t)
			past := e.dbNow().Add(-time.Second)
			over := e.cuProduct(10, nil, nil, &past)
			if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: over.ID, Qty: 1, Customer: "alice", IdempotencyKey: "late"}); !errors.Is(err, stock.ErrSaleEnded) {
				t.Errorf("CreateHold after the sale: %v, want ErrSaleEnded", err)
			}

			ends := e.dbNow().Add(1500 * time.Millisecond)
			p := e.cuProduct(10, cuInt(3), nil, &ends)
			h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2, Customer: "alice", IdempotencyKey: "in-window"})
			if err != nil {
				if errors.Is(err, stock.ErrSaleEnded) && !e.dbNow().Before(ends) {
					t.Skipf("the machine was too slow to hold within a 1.5 s window: %v", err)
				}
				t.Fatalf("CreateHold in the window: %v", err)
			}
			e.waitPast(ends)
			const calls = 20
			errs := make([]error, calls)
			var wg sync.WaitGroup
			for i := range calls {
				wg.Go(func() {
					_, errs[i] = e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1, Customer: []string{"", "bob"}[i%2]})
				})
			}
			wg.Wait()
			for _, err := range errs {
				if !errors.Is(err, stock.ErrSaleEnded) {
					t.Errorf("CreateHold after the sale: %v, want ErrSaleEnded", err)
				}
			}
			// The key's retry finds its hold after the end.
			if again := e.cuHold(e.svc, p.ID, 2, "alice", "in-window"); again.ID != h.ID || again.Status != hold.StatusACTIVE {
				t.Errorf("retry after the sale: hold %s %s, want %s ACTIVE", again.ID, again.Status, h.ID)
			}
			// The hold taken in the window is still good for an order, and its payment.
			o := e.cuOrder(e.svc, h.ID, stock.Caller{Customer: "alice"})
			if r := e.pay(e.svc, "after-sale", o.ID, stock.PaymentSuccess); r.OrderStatus != order.StatusPAID {
				t.Errorf("payment after the sale: %+v, want PAID", r)
			}
			e.wantHoldStatus(h.ID, hold.StatusREDEEMED)
			e.wantStock(p.ID, 8, 0)
			e.wantStock(over.ID, 10, 0)
			e.cuCheck()
		})

		t.Run("product input", func(t *testing.T) {
			e := e.with(t)
			at := e.dbNow().Add(time.Hour).Truncate(time.Microsecond)
			before := at.Add(-time.Microsecond)
			after := at.Add(time.Microsecond)
			count := func() int {
				n, err := e.svc.CountProducts(e.ctx)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			n0 := count()
			for _, x := range []struct {
				name string
				in   stock.NewProduct
			}{
				{"ends at start", stock.NewProduct{SaleStartsAt: &at, SaleEndsAt: &at}},
				{"ends before start", stock.NewProduct{SaleStartsAt: &at, SaleEndsAt: &before}},
				{"maxPerCustomer 0", stock.NewProduct{MaxPerCustomer: cuInt(0)}},
				{"maxPerCustomer -1", stock.NewProduct{MaxPerCustomer: cuInt(-1)}},
			} {
				x.in.Name, x.in.PriceCents, x.in.Stock = "bad", 100, 5
				if p, err := e.svc.CreateProduct(e.ctx, x.in); !errors.Is(err, stock.ErrInvalidInput) {
					t.Errorf("%s: CreateProduct = %v, %v; want ErrInvalidInput", x.name, p, err)
				}
			}
			if n := count(); n != n0 {
				t.Errorf("refused CreateProduct calls made %d products", n-n0)
			}
			p, err := e.svc.CreateProduct(e.ctx, stock.NewProduct{Name: "ok", PriceCents: 100, Stock: 5, MaxPerCustomer: cuInt(1), SaleStartsAt: &at, SaleEndsAt: &after})
			if err != nil {
				t.Fatalf("the smallest window and limit: %v", err)
			}
			if *p.MaxPerCustomer != 1 || !p.SaleStartsAt.Equal(at) || !p.SaleEndsAt.Equal(after) {
				t.Errorf("product: limit %d, window %s..%s", *p.MaxPerCustomer, p.SaleStartsAt, p.SaleEndsAt)
			}
		})
	})
}

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

// TestOwnership: a customer's holds and orders are NOT_FOUND to other
// customers and anonymous callers, for acting and reading; the operator
// reads them; anonymous holds are reached by ID by anyone. A customer's
// holds and orders page newest first.
func TestOwnership(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		alice, bob := stock.Caller{Customer: "alice"}, stock.Caller{Customer: "bob"}
		operator := stock.Caller{Operator: true}

		t.Run("reads and acts", func(t *testing.T) {
			e := e.with(t)
			p := e.cuProduct(50, nil, nil, nil)
			held := e.cuHold(e.svc, p.ID, 2, "alice", "")
			ordered := e.cuOrder(e.svc, e.cuHold(e.svc, p.ID, 3, "alice", "").ID, alice)
			anon := e.cuHold(e.svc, p.ID, 1, "", "")
			missing := uuid.Must(uuid.NewV7())

			for _, x := range []struct {
				name  string
				by    stock.Caller
				reads bool
			}{
				{"owner", alice, true},
				{"another customer", bob, false},
				{"anonymous", stock.Anonymous, false},
				{"operator", operator, true},
			} {
				h, err := e.svc.Hold(e.ctx, held.ID, x.by)
				if x.reads && (err != nil || h.ID != held.ID) {
					t.Errorf("%s: Hold = %v, %v; want alice's hold", x.name, h, err)
				}
				if !x.reads && (!errors.Is(err, stock.ErrNotFound) || h != nil) {
					t.Errorf("%s: Hold = %v, %v; want ErrNotFound", x.name, h, err)
				}
				o, err := e.svc.Order(e.ctx, ordered.ID, x.by)
				if x.reads && (err != nil || o.ID != ordered.ID) {
					t.Errorf("%s: Order = %v, %v; want alice's order", x.name, o, err)
				}
				if !x.reads && (!errors.Is(err, stock.ErrNotFound) || o != nil) {
					t.Errorf("%s: Order = %v, %v; want ErrNotFound", x.name, o, err)
				}
				if h, err := e.svc.Hold(e.ctx, anon.ID, x.by); err != nil || h.ID != anon.ID {
					t.Errorf("%s: Hold of the anonymous hold = %v, %v", x.name, h, err)
				}
				if _, err := e.svc.Hold(e.ctx, missing, x.by); !errors.Is(err, stock.ErrNotFound) {
					t.Errorf("%s: Hold of no hold: %v, want ErrNotFound", x.name, err)
				}
				if _, err := e.svc.Order(e.ctx, missing, x.by); !errors.Is(err, stock.ErrNotFound) {
					t.Errorf("%s: Order of no order: %v, want ErrNotFound", x.name, err)
				}
				if x.by == alice || x.by == operator {
					continue
				}
				// Acting on alice's hold: as if it did not exist, and nothing changes.
				if o, err := e.svc.CreateOrder(e.ctx, held.ID, x.by); !errors.Is(err, stock.ErrNotFound) {
					t.Errorf("%s: CreateOrder on alice's hold = %v, %v; want ErrNotFound", x.name, o, err)
				}
				if r, err := e.svc.ReleaseHold(e.ctx, held.ID, x.by); !errors.Is(err, stock.ErrNotFound) {
					t.Errorf("%s: ReleaseHold on alice's hold = %v, %v; want ErrNotFound", x.name, r, err)
				}
				if r, err := e.svc.ReleaseHold(e.ctx, ordered.HoldID, x.by); !errors.Is(err, stock.ErrNotFound) {
					t.Errorf("%s: ReleaseHold on alice's redeemed hold = %v, %v; want ErrNotFound", x.name, r, err)
				}
				e.wantHoldStatus(held.ID, hold.StatusACTIVE)
				e.wantStock(p.ID, 50, 6)
			}
			// An anonymous hold is anyone's who knows its ID.
			o := e.cuOrder(e.svc, anon.ID, bob)
			if o.CustomerID != "" {
				t.Errorf("order of an anonymous hold belongs to %q", o.CustomerID)
			}
			for _, by := range []stock.Caller{alice, stock.Anonymous, operator} {
				if got, err := e.svc.Order(e.ctx, o.ID, by); err != nil || got.ID != o.ID {
					t.Errorf("%+v: Order of an anonymous order = %v, %v", by, got, err)
				}
			}
			anon2 := e.cuHold(e.svc, p.ID, 1, "", "")
			if r, err := e.svc.ReleaseHold(e.ctx, anon2.ID, bob); err != nil || r.Status != hold.StatusRELEASED {
				t.Errorf("ReleaseHold of an anonymous hold by bob = %v, %v", r, err)
			}
			// The owner still can.
			if r, err := e.svc.ReleaseHold(e.ctx, held.ID, alice); err != nil || r.Status != hold.StatusRELEASED {
				t.Errorf("ReleaseHold by the owner = %v, %v", r, err)
			}
			e.wantStock(p.ID, 50, 4)
			e.cuCheck()
		})

		t.Run("strangers race the owner", func(t *testing.T) {
			e := e.with(t)
			const holds = 20
			p := e.cuProduct(100, nil, nil, nil)
			hs := make([]*ent.Hold, holds)
			for i := range hs {
				hs[i] = e.cuHold(e.svc, p.ID, 1, "alice", "")
			}
			callers := []stock.Caller{bob, alice, stock.Anonymous, {Customer: "carol"}, bob}
			type answer struct {
				o   *ent.Order
				err error
			}
			answers := make([][]answer, holds)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, h := range hs {
				answers[i] = make([]answer, len(callers))
				for j, by := range callers {
					wg.Go(func() {
						<-start
						answers[i][j].o, answers[i][j].err = e.svc.CreateOrder(e.ctx, h.ID, by)
					})
				}
			}
			close(start)
			wg.Wait()
			for i, h := range hs {
				for j, by := range callers {
					a := answers[i][j]
					if by == alice {
						if a.err != nil || a.o.HoldID != h.ID || a.o.CustomerID != "alice" {
							t.Errorf("owner's CreateOrder: %v, %v", a.o, a.err)
						}
					} else if !errors.Is(a.err, stock.ErrNotFound) {
						t.Errorf("%+v: CreateOrder on alice's hold = %v, %v; want ErrNotFound", by, a.o, a.err)
					}
				}
				e.wantHoldStatus(h.ID, hold.StatusREDEEMED)
			}
			if n, err := e.db.Ent.Order.Query().Where(order.ProductID(p.ID)).Count(e.ctx); err != nil || n != holds {
				t.Errorf("%d orders (err %v), want %d", n, err, holds)
			}
			e.wantStock(p.ID, 100, holds)
			e.cuCheck()
		})

		t.Run("pages newest first", func(t *testing.T) {
			e := e.with(t)
			p1, p2 := e.cuProduct(100, nil, nil, nil), e.cuProduct(100, nil, nil, nil)
			var mine []*ent.Hold // in creation order
			for i := range 23 {
				p := []*ent.Product{p1, p2}[i%2]
				mine = append(mine, e.cuHold(e.svc, p.ID, 1, "pat", ""))
				e.cuHold(e.svc, p.ID, 1, "quinn", "")
				e.cuHold(e.svc, p.ID, 1, "", "")
			}
			var myOrders []*ent.Order
			for _, h := range mine[:10] {
				myOrders = append(myOrders, e.cuOrder(e.svc, h.ID, stock.Caller{Customer: "pat"}))
			}
			e.cuOrder(e.svc, e.cuHold(e.svc, p1.ID, 1, "quinn", "").ID, stock.Caller{Customer: "quinn"})

			wantHolds := make([]uuid.UUID, len(mine))
			for i, h := range mine {
				wantHolds[len(mine)-1-i] = h.ID
			}
			wantOrders := make([]uuid.UUID, len(myOrders))
			for i, o := range myOrders {
				wantOrders[len(myOrders)-1-i] = o.ID
			}
			holdPage := func(first int, before uuid.UUID) ([]uuid.UUID, bool, error) {
				hs, more, err := e.svc.CustomerHolds(e.ctx, "pat", first, before)
				ids := make([]uuid.UUID, len(hs))
				for i, h := range hs {
					ids[i] = h.ID
					if h.CustomerID != "pat" {
						t.Errorf("CustomerHolds(pat) listed %s of %q", h.ID, h.CustomerID)
					}
				}
				return ids, more, err
			}
			orderPage := func(first int, before uuid.UUID) ([]uuid.UUID, bool, error) {
				os, more, err := e.svc.CustomerOrders(e.ctx, "pat", first, before)
				ids := make([]uuid.UUID, len(os))
				for i, o := range os {
					ids[i] = o.ID
					if o.CustomerID != "pat" {
						t.Errorf("CustomerOrders(pat) listed %s of %q", o.ID, o.CustomerID)
					}
				}
				return ids, more, err
			}
			for _, x := range []struct {
				name  string
				page  func(int, uuid.UUID) ([]uuid.UUID, bool, error)
				first int
				want  []uuid.UUID
			}{
				{"holds by 5", holdPage, 5, wantHolds},
				{"holds by 23", holdPage, 23, wantHolds},
				{"holds by 100", holdPage, 100, wantHolds},
				{"holds by 1", holdPage, 1, wantHolds},
				{"orders by 5", orderPage, 5, wantOrders},
				{"orders by 3", orderPage, 3, wantOrders},
				{"orders by 10", orderPage, 10, wantOrders},
			} {
				var got []uuid.UUID
				before := uuid.Nil
				seen := map[uuid.UUID]bool{}
				for pages := 0; ; pages++ {
					ids, more, err := x.page(x.first, before)
					if err != nil {
						t.Fatalf("%s: %v", x.name, err)
					}
					if len(ids) > x.first || (more && len(ids) != x.first) {
						t.Errorf("%s: page %d has %d rows (more %v)", x.name, pages, len(ids), more)
					}
					for _, id := range ids {
						if seen[id] {
							t.Errorf("%s: %s on two pages", x.name, id)
						}
						seen[id] = true
					}
					got = append(got, ids...)
					if wantMore := len(got) < len(x.want); more != wantMore {
						t.Errorf("%s: after %d rows, hasMore %v, want %v", x.name, len(got), more, wantMore)
					}
					if !more || len(ids) == 0 || pages > len(x.want) {
						break
					}
					before = ids[len(ids)-1]
				}
				if fmt.Sprint(got) != fmt.Sprint(x.want) {
					t.Errorf("%s: listed\n%v\nwant, newest first\n%v", x.name, got, x.want)
				}
				// After the last row: an empty page.
				if ids, more, err := x.page(x.first, x.want[len(x.want)-1]); err != nil || len(ids) != 0 || more {
					t.Errorf("%s: page after the oldest: %v, %v, %v", x.name, ids, more, err)
				}
			}
			for _, first := range []int{0, 101} {
				if _, _, err := e.svc.CustomerHolds(e.ctx, "pat", first, uuid.Nil); !errors.Is(err, stock.ErrInvalidInput) {
					t.Errorf("CustomerHolds(first %d): %v, want ErrInvalidInput", first, err)
				}
				if _, _, err := e.svc.CustomerOrders(e.ctx, "pat", first, uuid.Nil); !errors.Is(err, stock.ErrInvalidInput) {
					t.Errorf("CustomerOrders(first %d): %v, want ErrInvalidInput", first, err)
				}
			}
			if hs, more, err := e.svc.CustomerHolds(e.ctx, "nobody", 10, uuid.Nil); err != nil || len(hs) != 0 || more {
				t.Errorf("CustomerHolds(nobody) = %v, %v, %v", hs, more, err)
			}
			e.cuCheck()
		})
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

// Known bugs: each test below fails against the current domain code and is
// skipped with a description; remove the t.Skip once it is fixed.

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

// TestHoldKeyRetryAnswersCommittedState: a keyed retry is answered with the
// hold as read before the batch releases lapsed stock; when that batch
// expires the very hold, the caller is told ACTIVE while it is EXPIRED.
func TestHoldKeyRetryAnswersCommittedState(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		short := e.service(stock.Config{HoldTTL: time.Second})
		p := e.cuProduct(1, nil, nil, nil)
		h := e.cuHold(short, p.ID, 1, "alice", "k")
		e.waitPast(h.ExpiresAt)
		got := e.cuHold(e.svc, p.ID, 1, "alice", "k")
		if stored := e.getHold(h.ID); got.ID != h.ID || got.Status != stored.Status {
			t.Errorf("retry answered hold %s %s; the database has it %s after the retry", got.ID, got.Status, stored.Status)
		}
		e.cuCheck()
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

// TestCreateProductReturnsStoredSaleWindow: MySQL stores sale times to the
// microsecond, but CreateProduct returns (and caches for reads) the input
// with its nanoseconds, so the new product's saleStartsAt differs from what
// later reads and SALE_NOT_STARTED's extensions.saleStartsAt say.
func TestCreateProductReturnsStoredSaleWindow(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		starts := e.dbNow().Add(time.Hour + 789)
		ends := starts.Add(time.Hour + 1)
		p := e.cuProduct(10, nil, &starts, &ends)
		stored := e.getProduct(p.ID)
		cached, err := e.svc.Product(e.ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
		var notYet *stock.SaleNotStartedError
		if !errors.As(err, &notYet) {
			t.Fatalf("CreateHold before the sale: %v", err)
		}
		for _, x := range []struct {
			name       string
			start, end *time.Time
		}{{"CreateProduct", p.SaleStartsAt, p.SaleEndsAt}, {"Product", cached.SaleStartsAt, cached.SaleEndsAt}} {
			if !x.start.Equal(*stored.SaleStartsAt) || !x.end.Equal(*stored.SaleEndsAt) {
				t.Errorf("%s: window %s..%s, stored %s..%s", x.name, x.start, x.end, stored.SaleStartsAt, stored.SaleEndsAt)
			}
		}
		if !notYet.StartsAt.Equal(*p.SaleStartsAt) {
			t.Errorf("SaleNotStartedError.StartsAt %s, CreateProduct said %s", notYet.StartsAt, p.SaleStartsAt)
		}
	})
}
