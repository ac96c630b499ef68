package stock_test

// Sale windows (saleStartsAt, saleEndsAt). Helpers in customers_test.go.

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/stock"
)

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
				if p, err := e.svc.CreateProduct(e.ctx, nil, x.in); !errors.Is(err, stock.ErrInvalidInput) {
					t.Errorf("%s: CreateProduct = %v, %v; want ErrInvalidInput", x.name, p, err)
				}
			}
			if n := count(); n != n0 {
				t.Errorf("refused CreateProduct calls made %d products", n-n0)
			}
			p, err := e.svc.CreateProduct(e.ctx, nil, stock.NewProduct{Name: "ok", PriceCents: 100, Stock: 5, MaxPerCustomer: cuInt(1), SaleStartsAt: &at, SaleEndsAt: &after})
			if err != nil {
				t.Fatalf("the smallest window and limit: %v", err)
			}
			if *p.MaxPerCustomer != 1 || !p.SaleStartsAt.Equal(at) || !p.SaleEndsAt.Equal(after) {
				t.Errorf("product: limit %d, window %s..%s", *p.MaxPerCustomer, p.SaleStartsAt, p.SaleEndsAt)
			}
		})
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
