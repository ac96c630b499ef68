package stock_test

// Hold idempotency keys: one hold per customer's key, however often and
// wherever it is sent. Helpers in customers_test.go.

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/stock"
)

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
