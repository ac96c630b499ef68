package stock_test

// Ownership of holds and orders. Helpers in customers_test.go.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/stock"
)

// TestOwnership: a customer's holds and orders are NOT_FOUND to other
// customers and anonymous callers, for acting and reading; the operator
// reads them; anonymous holds are reached by ID by anyone. A customer's
// holds and orders page newest first.
func TestOwnership(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		alice, bob := stock.Caller{Customer: "alice"}, stock.Caller{Customer: "bob"}
		operator := stock.Caller{Operator: "admin"}

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
			// Newest first is ID order: the creation time to the millisecond,
			// then random bits, so rows made in one millisecond come in any
			// order.
			newestFirst := func(a, b uuid.UUID) int { return bytes.Compare(b[:], a[:]) }
			slices.SortStableFunc(wantHolds, newestFirst)
			slices.SortStableFunc(wantOrders, newestFirst)
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
