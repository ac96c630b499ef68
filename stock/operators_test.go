package stock_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/order"
	"flashsale/stock"
)

// The operator's controls: updateProduct, adjustStock and the orders list.

func TestUpdateProduct(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		start := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
		end := start.Add(time.Hour)
		long := strings.Repeat("x", 201)
		for _, tc := range []struct {
			name    string
			before  stock.NewProduct
			in      stock.ProductUpdate
			wantErr string // a substring of the BAD_USER_INPUT message; "" for success
			check   func(t *testing.T, p *ent.Product)
		}{
			{name: "nothing given changes nothing", in: stock.ProductUpdate{},
				check: func(t *testing.T, p *ent.Product) {
					if p.Name != "base" || p.PriceCents != 500 || p.MaxPerCustomer != nil || p.SaleStartsAt != nil {
						t.Errorf("changed: %+v", p)
					}
				}},
			{name: "name and price", in: stock.ProductUpdate{Name: stock.To("  renamed  "), PriceCents: stock.To[int64](750)},
				check: func(t *testing.T, p *ent.Product) {
					if p.Name != "renamed" || p.PriceCents != 750 {
						t.Errorf("got %q %d", p.Name, p.PriceCents)
					}
				}},
			{name: "set limit and window", in: stock.ProductUpdate{MaxPerCustomer: stock.To(3), SaleStartsAt: stock.To(start), SaleEndsAt: stock.To(end)},
				check: func(t *testing.T, p *ent.Product) {
					if p.MaxPerCustomer == nil || *p.MaxPerCustomer != 3 || p.SaleStartsAt == nil || !p.SaleStartsAt.Equal(start) || !p.SaleEndsAt.Equal(end) {
						t.Errorf("got %+v", p)
					}
				}},
			{name: "explicit null clears", before: stock.NewProduct{MaxPerCustomer: cuInt(2), SaleStartsAt: &start, SaleEndsAt: &end},
				in: stock.ProductUpdate{MaxPerCustomer: stock.Cleared[int](), SaleStartsAt: stock.Cleared[time.Time](), SaleEndsAt: stock.Cleared[time.Time]()},
				check: func(t *testing.T, p *ent.Product) {
					if p.MaxPerCustomer != nil || p.SaleStartsAt != nil || p.SaleEndsAt != nil {
						t.Errorf("not cleared: %+v", p)
					}
				}},
			{name: "end checked against the stored start", before: stock.NewProduct{SaleStartsAt: &start},
				in: stock.ProductUpdate{SaleEndsAt: stock.To(start.Add(-time.Minute))}, wantErr: "saleEndsAt must be after saleStartsAt"},
			{name: "null name", in: stock.ProductUpdate{Name: stock.Cleared[string]()}, wantErr: "name cannot be null"},
			{name: "null price", in: stock.ProductUpdate{PriceCents: stock.Cleared[int64]()}, wantErr: "priceCents cannot be null"},
			{name: "long name", in: stock.ProductUpdate{Name: stock.To(long)}, wantErr: "name must be"},
			{name: "negative price", in: stock.ProductUpdate{PriceCents: stock.To[int64](-1)}, wantErr: "priceCents must be"},
			{name: "zero limit", in: stock.ProductUpdate{MaxPerCustomer: stock.To(0)}, wantErr: "maxPerCustomer must be"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				in := tc.before
				in.Name, in.PriceCents, in.Stock = "base", 500, 10
				p, err := e.svc.CreateProduct(e.ctx, nil, in)
				if err != nil {
					t.Fatal(err)
				}
				got, err := e.svc.UpdateProduct(e.ctx, nil, p.ID, tc.in)
				stored := e.with(t).getProduct(p.ID)
				if tc.wantErr != "" {
					if !errors.Is(err, stock.ErrInvalidInput) || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("err %v, want invalid input %q", err, tc.wantErr)
					}
					if !stored.UpdatedAt.Equal(p.UpdatedAt) || stored.Name != p.Name {
						t.Fatalf("a refused update changed the row: %+v", stored)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, got)
				tc.check(t, stored) // what it returned is what is stored
				if stored.StockAvailable != 10 || stored.StockReceived != 10 {
					t.Errorf("stock changed: %+v", stored)
				}
			})
		}
		t.Run("unknown product", func(t *testing.T) {
			if _, err := e.svc.UpdateProduct(e.ctx, nil, 1<<30, stock.ProductUpdate{Name: stock.To("x")}); !errors.Is(err, stock.ErrNotFound) {
				t.Fatalf("err %v, want not found", err)
			}
		})
		e.audit()
	})
}

// A new price applies to orders made after it; earlier orders keep theirs.
func TestUpdateProductPrice(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newPricedProduct(10, 100)
		before := e.order(e.svc, e.hold(e.svc, p.ID, 2).ID)
		if _, err := e.svc.UpdateProduct(e.ctx, nil, p.ID, stock.ProductUpdate{PriceCents: stock.To[int64](300)}); err != nil {
			t.Fatal(err)
		}
		after := e.order(e.svc, e.hold(e.svc, p.ID, 2).ID)
		if e.getOrder(before.ID).AmountCents != 200 || after.AmountCents != 600 {
			t.Fatalf("amounts %d and %d, want 200 (old price) and 600 (new price)", e.getOrder(before.ID).AmountCents, after.AmountCents)
		}
		e.audit()
	})
}

// Lowering maxPerCustomer below what a customer already has would break
// the per-customer invariant; it is refused, naming the minimum.
func TestUpdateProductLimitBelowHoldings(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.cuProduct(20, cuInt(5), nil, nil)
		h := e.cuHold(e.svc, p.ID, 2, "alice", "")
		e.cuOrder(e.svc, h.ID, stock.Caller{Customer: "alice"})
		e.cuHold(e.svc, p.ID, 2, "alice", "")
		e.cuHold(e.svc, p.ID, 3, "bob", "")
		e.cuHold(e.svc, p.ID, 3, "", "") // anonymous: its own buyer
		e.cuHold(e.svc, p.ID, 3, "", "")

		_, err := e.svc.UpdateProduct(e.ctx, nil, p.ID, stock.ProductUpdate{MaxPerCustomer: stock.To(3)})
		if !errors.Is(err, stock.ErrInvalidInput) || !strings.Contains(err.Error(), "at least 4") {
			t.Fatalf("err %v, want invalid input naming 4", err)
		}
		if got := e.getProduct(p.ID).MaxPerCustomer; got == nil || *got != 5 {
			t.Fatalf("limit after a refused update: %v", got)
		}
		if _, err := e.svc.UpdateProduct(e.ctx, nil, p.ID, stock.ProductUpdate{MaxPerCustomer: stock.To(4)}); err != nil {
			t.Fatalf("lowering to exactly the most a customer has: %v", err)
		}
		if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1, Customer: "alice"}); !errors.Is(err, stock.ErrPurchaseLimit) {
			t.Fatalf("alice at the new limit got %v, want purchase limit", err)
		}
		e.cuHold(e.svc, p.ID, 1, "bob", "")
		// An anonymous hold is its own buyer: one of 4 keeps the limit at 4 or more.
		e.cuHold(e.svc, p.ID, 4, "", "")
		if _, err := e.svc.UpdateProduct(e.ctx, nil, p.ID, stock.ProductUpdate{MaxPerCustomer: stock.To(3)}); err == nil || !strings.Contains(err.Error(), "at least 4") {
			t.Fatalf("limit 3 under an anonymous hold of 4: %v", err)
		}
		e.cuCheck()
	})
}

// An expired hold does not count against a new limit: it is released first.
func TestUpdateProductLimitReleasesOverdue(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: 300 * time.Millisecond})
		p := e.cuProduct(20, nil, nil, nil)
		h := e.cuHold(e.svc, p.ID, 5, "alice", "")
		e.waitPast(h.ExpiresAt)
		if _, err := e.svc.UpdateProduct(e.ctx, nil, p.ID, stock.ProductUpdate{MaxPerCustomer: stock.To(2)}); err != nil {
			t.Fatalf("a limit below an expired hold: %v", err)
		}
		e.wantStock(p.ID, 20, 0)
		e.cuCheck()
	})
}

func TestAdjustStock(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newProduct(10)
		e.hold(e.svc, p.ID, 4) // 6 sellable

		for _, tc := range []struct {
			name       string
			delta      int
			reason     string
			want       error
			wantAvail  int
			wantReason string
		}{
			{name: "restock", delta: 5, reason: " late delivery ", wantAvail: 15, wantReason: "late delivery"},
			{name: "withdraw sellable", delta: -11, reason: "damaged in the warehouse", wantAvail: 4},
			{name: "withdraw held units", delta: -1, reason: "x", want: stock.ErrInsufficientStock},
			{name: "zero", delta: 0, reason: "x", want: stock.ErrInvalidInput},
			{name: "empty reason", delta: 1, reason: " \t ", want: stock.ErrInvalidInput},
			{name: "long reason", delta: 1, reason: strings.Repeat("é", 2001), want: stock.ErrInvalidInput},
			{name: "control character", delta: 1, reason: "a\x00b", want: stock.ErrInvalidInput},
			{name: "invalid UTF-8", delta: 1, reason: "a\xffb", want: stock.ErrInvalidInput},
			{name: "too large", delta: 2_000_000_000, reason: "x", want: stock.ErrInvalidInput},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := e.with(t).getProduct(p.ID)
				got, err := e.svc.AdjustStock(e.ctx, nil, p.ID, tc.delta, tc.reason)
				after := e.with(t).getProduct(p.ID)
				if tc.want != nil {
					if !errors.Is(err, tc.want) {
						t.Fatalf("err %v, want %v", err, tc.want)
					}
					if after.StockAvailable != before.StockAvailable || after.StockReceived != before.StockReceived {
						t.Fatalf("a refused adjustment changed stock: %+v", after)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got.StockAvailable != tc.wantAvail || after.StockAvailable != tc.wantAvail || after.StockReserved != 4 {
					t.Fatalf("available returned %d, stored %d (reserved %d), want %d", got.StockAvailable, after.StockAvailable, after.StockReserved, tc.wantAvail)
				}
				adj, err := e.svc.Adjustments(e.ctx, p.ID)
				if err != nil {
					t.Fatal(err)
				}
				last := adj[len(adj)-1]
				if last.Delta != tc.delta || (tc.wantReason != "" && last.Reason != tc.wantReason) || last.CreatedAt.Before(before.UpdatedAt) {
					t.Fatalf("last adjustment %+v", last)
				}
			})
		}
		adj, err := e.svc.Adjustments(e.ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		var deltas []string
		for _, a := range adj {
			deltas = append(deltas, fmt.Sprintf("%+d %s", a.Delta, a.Reason))
		}
		if got, want := strings.Join(deltas, "; "), "+10 initial stock; +5 late delivery; -11 damaged in the warehouse"; got != want {
			t.Fatalf("adjustments %q, want %q", got, want)
		}
		if _, err := e.svc.AdjustStock(e.ctx, nil, 1<<30, 1, "x"); !errors.Is(err, stock.ErrNotFound) {
			t.Fatalf("unknown product: %v", err)
		}
		e.audit()
	})
}

// A withdrawal may take units whose holds have expired: they are released
// first.
func TestAdjustStockReleasesOverdue(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: 300 * time.Millisecond})
		p := e.newProduct(10)
		h := e.hold(e.svc, p.ID, 10)
		e.waitPast(h.ExpiresAt)
		if _, err := e.svc.AdjustStock(e.ctx, nil, p.ID, -10, "recall"); err != nil {
			t.Fatalf("withdrawing units of an expired hold: %v", err)
		}
		e.wantStock(p.ID, 0, 0)
		e.audit()
	})
}

// Restocks and withdrawals race holds, orders and payments on one product;
// nothing is oversold, every answer is consistent with the others, and the
// books balance.
func TestAdjustStockUnderConcurrency(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newProduct(50)
		const workers = 24
		var (
			wg                 sync.WaitGroup
			mu                 sync.Mutex
			held, adjusted     int
			refusedWithdrawals int
			unexpected         []error
		)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 6 {
					var err error
					switch (w + i) % 3 {
					case 0: // a buyer: hold, order, pay
						var h *ent.Hold
						if h, err = e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2}); err == nil {
							var o *ent.Order
							if o, err = e.svc.CreateOrder(e.ctx, h.ID, stock.Anonymous); err == nil {
								_, err = e.svc.ApplyPayment(e.ctx, stock.Payment{Key: uuid.NewString(), OrderID: o.ID, Status: "success"})
							}
							mu.Lock()
							held += 2
							mu.Unlock()
						}
					case 1: // restock
						if _, err = e.svc.AdjustStock(e.ctx, nil, p.ID, 3, "restock"); err == nil {
							mu.Lock()
							adjusted += 3
							mu.Unlock()
						}
					case 2: // withdraw
						if _, err = e.svc.AdjustStock(e.ctx, nil, p.ID, -4, "withdraw"); err == nil {
							mu.Lock()
							adjusted -= 4
							mu.Unlock()
						} else if errors.Is(err, stock.ErrInsufficientStock) {
							mu.Lock()
							refusedWithdrawals++
							mu.Unlock()
							err = nil
						}
					}
					if err != nil && !errors.Is(err, stock.ErrInsufficientStock) {
						mu.Lock()
						unexpected = append(unexpected, err)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if len(unexpected) > 0 {
			t.Fatalf("%d unexpected errors, first: %v", len(unexpected), unexpected[0])
		}
		got := e.getProduct(p.ID)
		if got.StockReceived != 50+adjusted || got.StockAvailable != 50+adjusted-held || got.StockReserved != 0 {
			t.Fatalf("product %+v; want received %d, available %d (held and paid %d)", got, 50+adjusted, 50+adjusted-held, held)
		}
		t.Logf("%d units sold, net adjustment %+d, %d withdrawals refused", held, adjusted, refusedWithdrawals)
		e.audit()
	})
}

func TestOrdersList(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		a, b := e.newProduct(20), e.newProduct(20)
		var all []uuid.UUID
		paidOfA := map[uuid.UUID]bool{}
		for i := range 7 {
			pid := a.ID
			if i%2 == 1 {
				pid = b.ID
			}
			o := e.order(e.svc, e.hold(e.svc, pid, 1).ID)
			all = append(all, o.ID)
			if pid == a.ID && i%3 != 0 {
				e.pay(e.svc, "evt_"+o.ID.String(), o.ID, "success")
				paidOfA[o.ID] = true
			}
		}
		paid := order.StatusPAID
		for _, tc := range []struct {
			name string
			f    stock.OrderFilter
			want func(o uuid.UUID, pid int) bool
		}{
			{"all", stock.OrderFilter{}, func(uuid.UUID, int) bool { return true }},
			{"product", stock.OrderFilter{ProductID: &b.ID}, func(_ uuid.UUID, pid int) bool { return pid == b.ID }},
			{"product and status", stock.OrderFilter{ProductID: &a.ID, Status: &paid}, func(o uuid.UUID, _ int) bool { return paidOfA[o] }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var want []uuid.UUID
				for i, o := range all {
					pid := a.ID
					if i%2 == 1 {
						pid = b.ID
					}
					if tc.want(o, pid) {
						want = append(want, o)
					}
				}
				// Oldest first is ID order: the creation time to the
				// millisecond, then random bits.
				slices.SortFunc(want, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
				// Pages of 2, oldest first, until none follow.
				var got []uuid.UUID
				after := uuid.Nil
				for {
					os, more, err := e.svc.Orders(e.ctx, tc.f, 2, after)
					if err != nil {
						t.Fatal(err)
					}
					for _, o := range os {
						got = append(got, o.ID)
					}
					if !more {
						break
					}
					after = os[len(os)-1].ID
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("got %v\nwant %v", got, want)
				}
			})
		}
		if _, _, err := e.svc.Orders(e.ctx, stock.OrderFilter{}, 101, uuid.Nil); !errors.Is(err, stock.ErrInvalidInput) {
			t.Fatalf("first 101: %v", err)
		}
	})
}
