package stock_test

import (
	"errors"
	"strings"
	"testing"

	"flashsale/stock"
)

// TestInputValidation: out-of-range input is refused with ErrInvalidInput
// and creates nothing.
func TestInputValidation(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{MaxHoldQty: 10})
		p := e.newProduct(100)

		for _, qty := range []int{0, -1, 11, 1 << 40} {
			h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: qty})
			if !errors.Is(err, stock.ErrInvalidInput) {
				t.Errorf("CreateHold(qty %d) = %v, %v; want ErrInvalidInput", qty, h, err)
			}
		}
		if n, err := e.db.Ent.Hold.Query().Count(e.ctx); err != nil || n != 0 {
			t.Errorf("%d holds after refused CreateHold (err %v), want 0", n, err)
		}
		e.wantStock(p.ID, 100, 0)

		// The bounds themselves are valid.
		e.hold(e.svc, p.ID, 10)
		e.hold(e.svc, p.ID, 1)
		e.wantStock(p.ID, 100, 11)

		if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID + 1000, Qty: 1}); !errors.Is(err, stock.ErrNotFound) {
			t.Errorf("CreateHold on an unknown product: %v, want ErrNotFound", err)
		}

		for _, in := range []stock.NewProduct{
			{Name: "", PriceCents: 100, Stock: 1},
			{Name: "   ", PriceCents: 100, Stock: 1},
			{Name: strings.Repeat("n", 201), PriceCents: 100, Stock: 1},
			{Name: "bad\xffname", PriceCents: 100, Stock: 1},
			{Name: "x", PriceCents: -1, Stock: 1},
			{Name: "x", PriceCents: 100, Stock: -1},
		} {
			got, err := e.svc.CreateProduct(e.ctx, nil, in)
			if !errors.Is(err, stock.ErrInvalidInput) {
				t.Errorf("CreateProduct(%+v) = %v, %v; want ErrInvalidInput", in, got, err)
			}
		}
		if n, err := e.svc.CountProducts(e.ctx); err != nil || n != 1 {
			t.Errorf("%d products after refused CreateProduct (err %v), want 1", n, err)
		}

		// Zero price and zero stock are valid; nothing can be held of the latter.
		empty, err := e.svc.CreateProduct(e.ctx, nil, stock.NewProduct{Name: "  free  ", PriceCents: 0, Stock: 0})
		if err != nil {
			t.Fatalf("CreateProduct(price 0, stock 0): %v", err)
		}
		if empty.Name != "free" || empty.StockAvailable != 0 || empty.StockReserved != 0 {
			t.Errorf("product: name %q available %d reserved %d; want \"free\", 0, 0", empty.Name, empty.StockAvailable, empty.StockReserved)
		}
		if _, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: empty.ID, Qty: 1}); !errors.Is(err, stock.ErrInsufficientStock) {
			t.Errorf("CreateHold on a product with no stock: %v, want ErrInsufficientStock", err)
		}
		e.audit()
	})
}
