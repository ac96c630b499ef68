package stock_test

// Tests of customers in the stock domain: maxPerCustomer, hold idempotency
// keys, sale windows, releaseHold and ownership.
//
// This file holds the helpers they share (cu*); the tests are in:
//
//   customers_limit_test.go        maxPerCustomer, under concurrency and across servers
//   customers_idempotency_test.go  hold idempotency keys
//   customers_salewindow_test.go   sale windows
//   customers_release_test.go      releaseHold
//   customers_ownership_test.go    who may see and act on holds and orders

import (
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/product"
	"flashsale/stock"
)

func cuInt(n int) *int { return &n }

// cuProduct creates a product with an optional limit and sale window.
func (e *env) cuProduct(stockN int, limit *int, starts, ends *time.Time) *ent.Product {
	e.t.Helper()
	p, err := e.svc.CreateProduct(e.ctx, nil, stock.NewProduct{
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
