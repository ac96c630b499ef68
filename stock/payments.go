package stock

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
	"flashsale/ent/product"
)

// Payment statuses the provider reports.
const (
	PaymentSuccess = "success"
	PaymentFailure = "failure"
)

// Payment is one webhook event.
type Payment struct {
	Key     string // the provider's idempotency key
	OrderID uuid.UUID
	Status  string // PaymentSuccess or PaymentFailure
}

// PaymentResult is what a payment event left the order as.
type PaymentResult struct {
	OrderID     uuid.UUID
	OrderStatus order.Status
	// Duplicate: the key was seen before with the same content; nothing changed.
	Duplicate bool
	// Outcome of this event (for a duplicate, of the first delivery).
	Outcome paymentevent.Outcome
}

const maxKeyLen = 255

// transition is what one payment event does to an order, per the contract's table.
type transition struct {
	to          order.Status
	outcome     paymentevent.Outcome
	available   int  // change to stock_available
	reserved    int  // change to stock_reserved
	releaseHold bool // mark the order's hold RELEASED
}

// decide applies the contract's transition table. sellable is what the
// order's buyer may be sold at the time, under the product's lock: the
// product's sellable stock, capped by what maxPerCustomer leaves the
// customer (see roomFor).
func decide(status order.Status, payment string, qty, sellable int) transition {
	ignore := transition{to: status, outcome: paymentevent.OutcomeIGNORED}
	switch payment {
	case PaymentSuccess:
		switch status {
		case order.StatusPENDING_PAYMENT:
			return transition{to: order.StatusPAID, outcome: paymentevent.OutcomeAPPLIED, available: -qty, reserved: -qty}
		case order.StatusCANCELLED:
			// Paid after we gave up on it: sell it again if the stock is still there.
			if sellable >= qty {
				return transition{to: order.StatusPAID, outcome: paymentevent.OutcomeAPPLIED, available: -qty}
			}
			return transition{to: order.StatusREFUND_REQUIRED, outcome: paymentevent.OutcomeREFUND_REQUIRED}
		}
	case PaymentFailure:
		if status == order.StatusPENDING_PAYMENT {
			return transition{to: order.StatusCANCELLED, outcome: paymentevent.OutcomeAPPLIED, reserved: -qty, releaseHold: true}
		}
	}
	// PAID and REFUND_REQUIRED are final; a failure after cancellation changes nothing.
	return ignore
}

// ApplyPayment applies one payment event exactly once per idempotency key.
//
// A key seen before with the same order and status is a duplicate: nothing
// changes and the result says Duplicate. A key seen before with other content
// is ErrKeyReused. Events that arrive out of order are recorded and handled
// as the contract's table says (a late success can still sell the order, a
// late failure is ignored).
//
// Concurrent events are committed together (paymentBatch), each with the
// outcome it would have had arriving alone at its turn.
func (s *Service) ApplyPayment(ctx context.Context, pay Payment) (PaymentResult, error) {
	// MySQL ignores trailing spaces in comparisons, so "k" and "k " would be
	// one key there and two on SQLite: refuse such keys outright.
	if pay.Key == "" || len(pay.Key) > maxKeyLen || strings.TrimSpace(pay.Key) != pay.Key || !utf8.ValidString(pay.Key) {
		return PaymentResult{}, InvalidInput("idempotency_key must be 1 to %d bytes of UTF-8 without surrounding spaces", maxKeyLen)
	}
	if pay.Status != PaymentSuccess && pay.Status != PaymentFailure {
		return PaymentResult{}, InvalidInput("status must be %q or %q", PaymentSuccess, PaymentFailure)
	}
	return s.payments.do(ctx, 0, pay)
}

// seenEvent is what a batch knows of a key: stored before, or applied
// earlier in the same batch.
type seenEvent struct {
	orderID uuid.UUID
	status  string
	outcome paymentevent.Outcome
}

// paymentBatch is one transaction for concurrent payment events. It locks,
// in the package's lock order, the events' products (reading the database
// clock once they are held), the holds a failure may release, and the
// orders; then decides every event in arrival order against the state the
// earlier ones left, and writes: each product's counters once, the orders
// and holds by new status, and all new events in one statement.
func (s *Service) paymentBatch(ctx context.Context, _ int, pays []Payment, _ func()) []result[PaymentResult] {
	var (
		results []result[PaymentResult]
		changed []*ent.Product
		err     error
	)
	err = s.txUnique(ctx, "apply payment", func(tx *ent.Tx) error {
		results, changed = make([]result[PaymentResult], len(pays)), nil
		return s.applyPayments(ctx, tx, pays, results, &changed)
	})
	if err != nil {
		return fail[PaymentResult](len(pays), err)
	}
	for _, r := range results {
		if r.err == nil && !r.out.Duplicate && r.out.Outcome != paymentevent.OutcomeIGNORED {
			s.observer.OrdersReached(string(r.out.OrderStatus), 1)
		}
	}
	for _, p := range changed {
		s.productChanged(p)
	}
	return results
}

func (s *Service) applyPayments(ctx context.Context, tx *ent.Tx, pays []Payment, results []result[PaymentResult], changed *[]*ent.Product) error {
	orderIDs := make([]uuid.UUID, 0, len(pays))
	keys := make([]string, 0, len(pays))
	for _, pay := range pays {
		orderIDs = append(orderIDs, pay.OrderID)
		keys = append(keys, pay.Key)
	}
	// Which products and holds: fixed when an order is made, so a plain read
	// tells which rows to lock.
	var refs []*ent.Order
	if err := tx.Order.Query().Where(order.IDIn(sortedIDs(orderIDs)...)).
		Select(order.FieldID, order.FieldProductID, order.FieldHoldID).Scan(ctx, &refs); err != nil {
		return err
	}
	pids := make([]int, 0, len(refs))
	refOf := make(map[uuid.UUID]*ent.Order, len(refs))
	for _, o := range refs {
		pids = append(pids, o.ProductID)
		refOf[o.ID] = o
	}
	products := map[int]*ent.Product{}
	var now time.Time
	if len(pids) > 0 {
		ps, clock, err := s.lockProducts(ctx, tx, pids...)
		if err != nil {
			return err
		}
		now = clock
		for _, p := range ps {
			products[p.ID] = p
		}
	}
	// A failure may release its order's hold: lock those before the orders.
	var mayRelease []uuid.UUID
	for _, pay := range pays {
		if o := refOf[pay.OrderID]; o != nil && pay.Status == PaymentFailure {
			mayRelease = append(mayRelease, o.HoldID)
		}
	}
	if len(mayRelease) > 0 {
		if _, _, err := s.lockHolds(ctx, tx, mayRelease); err != nil {
			return err
		}
	}
	os, err := s.lockOrders(ctx, tx, orderIDs)
	if err != nil {
		return err
	}
	orders := make(map[uuid.UUID]*ent.Order, len(os))
	for _, o := range os {
		orders[o.ID] = o
	}
	stored, err := tx.PaymentEvent.Query().Where(paymentevent.IdempotencyKeyIn(keys...)).All(ctx)
	if err != nil {
		return err
	}
	seen := make(map[string]seenEvent, len(stored)+len(pays))
	for _, ev := range stored {
		seen[ev.IdempotencyKey] = seenEvent{orderID: ev.OrderID, status: string(ev.Status), outcome: ev.Outcome}
	}

	// counted: how this batch's decisions, not written yet, change what
	// counts against a buyer's maxPerCustomer.
	counted := map[buyerOf]int{}
	type delta struct{ available, reserved int }
	deltas := map[int]*delta{}
	released := map[int]bool{} // products whose lapsed stock was released
	var (
		newEvents   []*ent.PaymentEventCreate
		eventKeys   []string
		freedHolds  []uuid.UUID
		statusAfter = map[uuid.UUID]order.Status{} // orders this batch moved, by final status
	)
	for i, pay := range pays {
		if ev, ok := seen[pay.Key]; ok {
			if ev.orderID != pay.OrderID || ev.status != pay.Status {
				results[i].err = fmt.Errorf("%w: key %q was used for order %s with status %s",
					ErrKeyReused, truncate(pay.Key), ev.orderID, ev.status)
				continue
			}
			if o := orders[pay.OrderID]; o != nil { // always: the event's order exists
				results[i].out = PaymentResult{OrderID: o.ID, OrderStatus: o.Status, Duplicate: true, Outcome: ev.outcome}
				continue
			}
		}
		o := orders[pay.OrderID]
		if o == nil {
			results[i].err = fmt.Errorf("%w: no order with ID %s", ErrNotFound, pay.OrderID)
			continue
		}
		p := products[o.ProductID]
		if p == nil {
			return fmt.Errorf("order %s: product %d is missing", o.ID, o.ProductID)
		}
		room := Sellable(p)
		if pay.Status == PaymentSuccess && o.Status == order.StatusCANCELLED {
			// A late success sells the order again only if the stock, and
			// the buyer's maxPerCustomer, still have room for it.
			if room, err = s.roomFor(ctx, tx, p, o, counted); err != nil {
				return err
			}
			if room < o.Qty && !released[p.ID] {
				// Lapsed holds may be what stands in the way: release them.
				released[p.ID] = true
				// The orders this batch already decided are not released:
				// their stored status is stale until the batch writes it.
				_, cancelled, err := s.releaseOverdue(ctx, tx, p, now, s.cfg.SweepBatch, slices.Collect(maps.Keys(statusAfter))...)
				if err != nil {
					return err
				}
				for _, id := range cancelled {
					if c := orders[id]; c != nil {
						c.Status = order.StatusCANCELLED
					}
				}
				if room, err = s.roomFor(ctx, tx, p, o, counted); err != nil {
					return err
				}
			}
		}
		t := decide(o.Status, pay.Status, o.Qty, room)
		if p.MaxPerCustomer != nil && o.CustomerID != "" {
			counted[buyerOf{p.ID, o.CustomerID}] += countedUnits(t.to, o.Qty) - countedUnits(o.Status, o.Qty)
		}
		if t.available != 0 || t.reserved != 0 {
			d := deltas[p.ID]
			if d == nil {
				d = &delta{}
				deltas[p.ID] = d
			}
			d.available += t.available
			d.reserved += t.reserved
			p.StockAvailable += t.available
			p.StockReserved += t.reserved
			p.UpdatedAt = now
		}
		if t.releaseHold {
			freedHolds = append(freedHolds, o.HoldID)
		}
		before := o.Status
		if t.to != o.Status {
			o.Status = t.to
			statusAfter[o.ID] = t.to
		}
		seen[pay.Key] = seenEvent{orderID: o.ID, status: pay.Status, outcome: t.outcome}
		eventKeys = append(eventKeys, pay.Key)
		newEvents = append(newEvents, tx.PaymentEvent.Create().
			SetIdempotencyKey(pay.Key).SetOrderID(o.ID).SetStatus(paymentevent.Status(pay.Status)).
			SetOutcome(t.outcome).SetOrderStatusBefore(string(before)).SetOrderStatusAfter(string(t.to)).
			SetCreatedAt(now))
		results[i].out = PaymentResult{OrderID: o.ID, OrderStatus: t.to, Outcome: t.outcome}
	}

	for _, pid := range slices.Sorted(maps.Keys(deltas)) {
		d := deltas[pid]
		if d.available == 0 && d.reserved == 0 {
			continue
		}
		if err := tx.Product.Update().Where(product.ID(pid)).AddStockAvailable(d.available).AddStockReserved(d.reserved).
			SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
	}
	if len(freedHolds) > 0 {
		if err := tx.Hold.Update().Where(hold.IDIn(freedHolds...)).
			SetStatus(hold.StatusRELEASED).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
	}
	byStatus := map[order.Status][]uuid.UUID{}
	for id, st := range statusAfter {
		byStatus[st] = append(byStatus[st], id)
	}
	for st, ids := range byStatus {
		if err := tx.Order.Update().Where(order.IDIn(ids...)).SetStatus(st).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
	}
	if len(newEvents) > 0 {
		// In key order, so two batches that share keys wait for each
		// other in one order. The unique key makes a delivery that another
		// batch stored meanwhile fail here; paymentBatch then retries.
		idx := make([]int, len(newEvents))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int { return strings.Compare(eventKeys[a], eventKeys[b]) })
		sorted := make([]*ent.PaymentEventCreate, len(idx))
		for j, i := range idx {
			sorted[j] = newEvents[i]
		}
		if err := tx.PaymentEvent.CreateBulk(sorted...).Exec(ctx); err != nil {
			return err
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(products)) {
		if deltas[pid] != nil || released[pid] {
			*changed = append(*changed, products[pid])
		}
	}
	return nil
}

// buyerOf is a customer of a product.
type buyerOf struct {
	productID int
	customer  string
}

// countedUnits is what an order in status st counts against its buyer's
// maxPerCustomer.
func countedUnits(st order.Status, qty int) int {
	if st == order.StatusPENDING_PAYMENT || st == order.StatusPAID {
		return qty
	}
	return 0
}

// roomFor is how many units order o's buyer may still be sold now: the
// product's sellable stock, and under maxPerCustomer what the customer's
// ACTIVE holds, pending and paid orders (as stored, plus this batch's
// decisions in counted) leave of it.
func (s *Service) roomFor(ctx context.Context, tx *ent.Tx, p *ent.Product, o *ent.Order, counted map[buyerOf]int) (int, error) {
	room := Sellable(p)
	if p.MaxPerCustomer == nil || o.CustomerID == "" {
		return room, nil
	}
	used, err := s.unitsOfCustomers(ctx, tx, p, []string{o.CustomerID})
	if err != nil {
		return 0, err
	}
	return min(room, *p.MaxPerCustomer-used[o.CustomerID]-counted[buyerOf{p.ID, o.CustomerID}]), nil
}
