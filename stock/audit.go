package stock

import (
	"context"
	stdsql "database/sql"
	"fmt"

	"entgo.io/ent/dialect"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/stockadjustment"
)

// Audit checks the contract's stock invariants for every product and returns
// one line per violation (none when all hold):
//
//	0 <= stock_reserved <= stock_available
//	stock_reserved  = qty of ACTIVE holds + qty of PENDING_PAYMENT orders
//	stock_available = stock_received - qty of PAID orders
//	stock_received  = sum of its stock adjustments (initial stock, restocks, withdrawals)
//	per customer, with max_per_customer set: ACTIVE holds + PENDING_PAYMENT and PAID orders <= max_per_customer
//
// It reads everything in one read-only transaction, from one snapshot
// (REPEATABLE READ on MySQL), taking no locks: it is safe, and exact, while
// traffic and the sweeper run.
func (s *Service) Audit(ctx context.Context) ([]string, error) {
	var opts *stdsql.TxOptions
	if s.dialect == dialect.MySQL {
		opts = &stdsql.TxOptions{Isolation: stdsql.LevelRepeatableRead, ReadOnly: true}
	}
	tx, err := s.client.BeginTx(ctx, opts)
	if err != nil {
		return nil, classify("audit", err)
	}
	defer func() { _ = tx.Rollback() }() // it wrote nothing
	f, err := readAuditFacts(ctx, tx)
	if err != nil {
		return nil, classify("audit", err)
	}
	return f.violations(), nil
}

// auditFacts are the sums Audit compares, by product (and customer).
type auditFacts struct {
	products                 []*ent.Product
	reserved, sold, received map[int]int
	units                    map[buyerOf]int // a customer's ACTIVE holds, PENDING_PAYMENT and PAID orders
}

type productSum struct {
	ProductID int `json:"product_id"`
	Sum       int `json:"sum"`
}

type buyerSum struct {
	ProductID  int    `json:"product_id"`
	CustomerID string `json:"customer_id"`
	Sum        int    `json:"sum"`
}

// readAuditFacts reads the sums in tx.
func readAuditFacts(ctx context.Context, tx *ent.Tx) (*auditFacts, error) {
	f := &auditFacts{reserved: map[int]int{}, sold: map[int]int{}, received: map[int]int{}, units: map[buyerOf]int{}}
	var active, pending, paid, adjusted []productSum
	var heldBy, orderedBy []buyerSum
	for _, q := range []func() error{
		func() error {
			return tx.Hold.Query().Where(hold.StatusEQ(hold.StatusACTIVE)).
				GroupBy(hold.FieldProductID).Aggregate(ent.Sum(hold.FieldQty)).Scan(ctx, &active)
		},
		func() error {
			return tx.Order.Query().Where(order.StatusEQ(order.StatusPENDING_PAYMENT)).
				GroupBy(order.FieldProductID).Aggregate(ent.Sum(order.FieldQty)).Scan(ctx, &pending)
		},
		func() error {
			return tx.Order.Query().Where(order.StatusEQ(order.StatusPAID)).
				GroupBy(order.FieldProductID).Aggregate(ent.Sum(order.FieldQty)).Scan(ctx, &paid)
		},
		func() error {
			return tx.StockAdjustment.Query().
				GroupBy(stockadjustment.FieldProductID).Aggregate(ent.Sum(stockadjustment.FieldDelta)).Scan(ctx, &adjusted)
		},
		func() error {
			return tx.Hold.Query().Where(hold.StatusEQ(hold.StatusACTIVE), hold.CustomerIDNEQ("")).
				GroupBy(hold.FieldProductID, hold.FieldCustomerID).Aggregate(ent.Sum(hold.FieldQty)).Scan(ctx, &heldBy)
		},
		func() error {
			return tx.Order.Query().Where(order.StatusIn(order.StatusPENDING_PAYMENT, order.StatusPAID), order.CustomerIDNEQ("")).
				GroupBy(order.FieldProductID, order.FieldCustomerID).Aggregate(ent.Sum(order.FieldQty)).Scan(ctx, &orderedBy)
		},
		func() (err error) { f.products, err = tx.Product.Query().All(ctx); return err },
	} {
		if err := q(); err != nil {
			return nil, err
		}
	}
	for _, r := range append(active, pending...) {
		f.reserved[r.ProductID] += r.Sum
	}
	for _, r := range paid {
		f.sold[r.ProductID] += r.Sum
	}
	for _, r := range adjusted {
		f.received[r.ProductID] = r.Sum
	}
	for _, r := range append(heldBy, orderedBy...) {
		f.units[buyerOf{r.ProductID, r.CustomerID}] += r.Sum
	}
	return f, nil
}

// violations compares the facts with the invariants.
func (f *auditFacts) violations() []string {
	var bad []string
	limits := map[int]int{}
	for _, p := range f.products {
		if p.MaxPerCustomer != nil {
			limits[p.ID] = *p.MaxPerCustomer
		}
	}
	for b, n := range f.units {
		if limit, ok := limits[b.productID]; ok && n > limit {
			bad = append(bad, fmt.Sprintf("product %d: customer %q has %d units held, pending or paid, over its maxPerCustomer %d", b.productID, truncate(b.customer), n, limit))
		}
	}
	for _, p := range f.products {
		if p.StockReserved < 0 || p.StockReserved > p.StockAvailable {
			bad = append(bad, fmt.Sprintf("product %d: reserved %d outside 0..available %d", p.ID, p.StockReserved, p.StockAvailable))
		}
		if p.StockReserved != f.reserved[p.ID] {
			bad = append(bad, fmt.Sprintf("product %d: reserved %d, but active holds + pending orders = %d", p.ID, p.StockReserved, f.reserved[p.ID]))
		}
		if p.StockReceived != f.received[p.ID] {
			bad = append(bad, fmt.Sprintf("product %d: received %d, but its stock adjustments add up to %d", p.ID, p.StockReceived, f.received[p.ID]))
		}
		if want := p.StockReceived - f.sold[p.ID]; p.StockAvailable != want {
			bad = append(bad, fmt.Sprintf("product %d: available %d, but received %d - paid %d = %d", p.ID, p.StockAvailable, p.StockReceived, f.sold[p.ID], want))
		}
	}
	return bad
}
