package stock

import (
	"context"
	"fmt"

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
// It reads without locks, so run it when no stock transaction is in flight.
func (s *Service) Audit(ctx context.Context) ([]string, error) {
	type sum struct {
		ProductID int `json:"product_id"`
		Sum       int `json:"sum"`
	}
	var active, pending, paid []sum
	if err := s.client.Hold.Query().Where(hold.StatusEQ(hold.StatusACTIVE)).
		GroupBy(hold.FieldProductID).Aggregate(ent.Sum(hold.FieldQty)).Scan(ctx, &active); err != nil {
		return nil, classify("audit", err)
	}
	if err := s.client.Order.Query().Where(order.StatusEQ(order.StatusPENDING_PAYMENT)).
		GroupBy(order.FieldProductID).Aggregate(ent.Sum(order.FieldQty)).Scan(ctx, &pending); err != nil {
		return nil, classify("audit", err)
	}
	if err := s.client.Order.Query().Where(order.StatusEQ(order.StatusPAID)).
		GroupBy(order.FieldProductID).Aggregate(ent.Sum(order.FieldQty)).Scan(ctx, &paid); err != nil {
		return nil, classify("audit", err)
	}
	reserved := map[int]int{}
	for _, r := range append(active, pending...) {
		reserved[r.ProductID] += r.Sum
	}
	sold := map[int]int{}
	for _, r := range paid {
		sold[r.ProductID] += r.Sum
	}
	var adjusted []sum
	if err := s.client.StockAdjustment.Query().
		GroupBy(stockadjustment.FieldProductID).Aggregate(ent.Sum(stockadjustment.FieldDelta)).Scan(ctx, &adjusted); err != nil {
		return nil, classify("audit", err)
	}
	received := map[int]int{}
	for _, r := range adjusted {
		received[r.ProductID] = r.Sum
	}
	products, err := s.client.Product.Query().All(ctx)
	if err != nil {
		return nil, classify("audit", err)
	}
	type buyerSum struct {
		ProductID  int    `json:"product_id"`
		CustomerID string `json:"customer_id"`
		Sum        int    `json:"sum"`
	}
	var heldBy, orderedBy []buyerSum
	if err := s.client.Hold.Query().Where(hold.StatusEQ(hold.StatusACTIVE), hold.CustomerIDNEQ("")).
		GroupBy(hold.FieldProductID, hold.FieldCustomerID).Aggregate(ent.Sum(hold.FieldQty)).Scan(ctx, &heldBy); err != nil {
		return nil, classify("audit", err)
	}
	if err := s.client.Order.Query().Where(order.StatusIn(order.StatusPENDING_PAYMENT, order.StatusPAID), order.CustomerIDNEQ("")).
		GroupBy(order.FieldProductID, order.FieldCustomerID).Aggregate(ent.Sum(order.FieldQty)).Scan(ctx, &orderedBy); err != nil {
		return nil, classify("audit", err)
	}
	units := map[buyerOf]int{}
	for _, r := range append(heldBy, orderedBy...) {
		units[buyerOf{r.ProductID, r.CustomerID}] += r.Sum
	}
	limits := map[int]int{}
	for _, p := range products {
		if p.MaxPerCustomer != nil {
			limits[p.ID] = *p.MaxPerCustomer
		}
	}
	var bad []string
	for b, n := range units {
		if limit, ok := limits[b.productID]; ok && n > limit {
			bad = append(bad, fmt.Sprintf("product %d: customer %q has %d units held, pending or paid, over its maxPerCustomer %d", b.productID, truncate(b.customer), n, limit))
		}
	}
	for _, p := range products {
		if p.StockReserved < 0 || p.StockReserved > p.StockAvailable {
			bad = append(bad, fmt.Sprintf("product %d: reserved %d outside 0..available %d", p.ID, p.StockReserved, p.StockAvailable))
		}
		if p.StockReserved != reserved[p.ID] {
			bad = append(bad, fmt.Sprintf("product %d: reserved %d, but active holds + pending orders = %d", p.ID, p.StockReserved, reserved[p.ID]))
		}
		if p.StockReceived != received[p.ID] {
			bad = append(bad, fmt.Sprintf("product %d: received %d, but its stock adjustments add up to %d", p.ID, p.StockReceived, received[p.ID]))
		}
		if want := p.StockReceived - sold[p.ID]; p.StockAvailable != want {
			bad = append(bad, fmt.Sprintf("product %d: available %d, but received %d - paid %d = %d", p.ID, p.StockAvailable, p.StockReceived, sold[p.ID], want))
		}
	}
	return bad, nil
}
