package stock

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

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
	// Optional: the provider's payment ID (kept on the order from the
	// first event that carries one), and what the provider charged (a
	// payment of another amount than the order's is refused whole).
	Reference   string
	AmountCents *int64
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

// transition is what one payment event does to an order, per the
// contract's table (docs/api.md, "The stock model").
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
	if !validKey(pay.Key) || strings.TrimSpace(pay.Key) != pay.Key {
		return PaymentResult{}, InvalidInput("idempotency_key must be 1 to %d printable characters without surrounding spaces", maxKeyRunes)
	}
	if pay.Status != PaymentSuccess && pay.Status != PaymentFailure {
		return PaymentResult{}, InvalidInput("status must be %q or %q", PaymentSuccess, PaymentFailure)
	}
	if pay.Reference != "" && !validKey(pay.Reference) {
		return PaymentResult{}, InvalidInput("payment_reference must be 1 to %d printable characters", maxKeyRunes)
	}
	if pay.AmountCents != nil && *pay.AmountCents < 0 {
		return PaymentResult{}, InvalidInput("amount_cents must not be negative")
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

// paymentBatch is one transaction for concurrent payment events: lock
// what they touch (payBatch.lock), decide every event in arrival order
// against the state the earlier ones left (decide), then write it all
// (write). Concurrent batches and stores of a key are sorted out by
// txUnique.
func (s *Service) paymentBatch(ctx context.Context, _ int, pays []Payment, _ func()) []result[PaymentResult] {
	var b *payBatch
	err := s.txUnique(ctx, "apply payment", func(tx *ent.Tx) error {
		b = &payBatch{s: s, tx: tx, ob: s.newOutbox(tx), pays: pays, results: make([]result[PaymentResult], len(pays))}
		if err := b.lock(ctx); err != nil {
			return err
		}
		for i := range pays {
			if err := b.decide(ctx, i); err != nil {
				return err
			}
		}
		return b.write(ctx)
	})
	if err != nil {
		return fail[PaymentResult](len(pays), err)
	}
	for _, r := range b.results {
		if r.err == nil && !r.out.Duplicate && r.out.Outcome != paymentevent.OutcomeIGNORED {
			s.observer.OrdersReached(string(r.out.OrderStatus), 1)
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(b.products)) {
		if b.deltas[pid] != nil || b.released[pid] {
			s.productChanged(b.products[pid])
		}
	}
	return b.results
}

// payBatch is one attempt of a payment batch's transaction.
type payBatch struct {
	s       *Service
	tx      *ent.Tx
	ob      *outbox
	pays    []Payment
	results []result[PaymentResult]

	// Read and locked by lock.
	now      time.Time
	products map[int]*ent.Product
	orders   map[uuid.UUID]*ent.Order
	seen     map[string]seenEvent // keys stored before, and decided in this batch

	// Decided, to be written.
	counted  map[buyerOf]int // this batch's changes to what counts against maxPerCustomer
	deltas   map[int]*stockDelta
	released map[int]bool // products whose lapsed stock was released
	freed    []uuid.UUID  // holds a failure released
	changed  map[uuid.UUID]*ent.Order
	stored   []*ent.PaymentEventCreate
	keys     []string // of stored
}

type stockDelta struct{ available, reserved int }

// lock locks, in the package's lock order, the events' products (reading
// the database clock once they are held), the holds a failure may release
// and the orders, and reads the events' keys stored before.
func (b *payBatch) lock(ctx context.Context) error {
	s, tx := b.s, b.tx
	orderIDs := make([]uuid.UUID, 0, len(b.pays))
	keys := make([]string, 0, len(b.pays))
	for _, pay := range b.pays {
		orderIDs = append(orderIDs, pay.OrderID)
		keys = append(keys, pay.Key)
	}
	// Which products and holds: fixed when an order is made, so a plain
	// read tells which rows to lock.
	var refs []*ent.Order
	if err := tx.Order.Query().Where(order.IDIn(sortedIDs(orderIDs)...)).
		Select(order.FieldID, order.FieldProductID, order.FieldHoldID).Scan(ctx, &refs); err != nil {
		return err
	}
	pids := make([]int, 0, len(refs))
	holdOf := make(map[uuid.UUID]uuid.UUID, len(refs))
	for _, o := range refs {
		pids = append(pids, o.ProductID)
		holdOf[o.ID] = o.HoldID
	}
	b.products = map[int]*ent.Product{}
	if len(pids) > 0 {
		ps, now, err := s.lockProducts(ctx, tx, pids...)
		if err != nil {
			return err
		}
		b.now = now
		for _, p := range ps {
			b.products[p.ID] = p
		}
	}
	// A failure may release its order's hold: lock those before the orders.
	var mayRelease []uuid.UUID
	for _, pay := range b.pays {
		if h, ok := holdOf[pay.OrderID]; ok && pay.Status == PaymentFailure {
			mayRelease = append(mayRelease, h)
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
	b.orders = make(map[uuid.UUID]*ent.Order, len(os))
	for _, o := range os {
		b.orders[o.ID] = o
	}
	stored, err := tx.PaymentEvent.Query().Where(paymentevent.IdempotencyKeyIn(keys...)).All(ctx)
	if err != nil {
		return err
	}
	b.seen = make(map[string]seenEvent, len(stored)+len(b.pays))
	for _, ev := range stored {
		b.seen[ev.IdempotencyKey] = seenEvent{orderID: ev.OrderID, status: string(ev.Status), outcome: ev.Outcome}
	}
	b.counted, b.deltas, b.released, b.changed = map[buyerOf]int{}, map[int]*stockDelta{}, map[int]bool{}, map[uuid.UUID]*ent.Order{}
	return nil
}

// decide decides payment i as if it arrived alone at its turn: a refusal
// (no such order, a wrong amount, a key reused) or a duplicate changes
// nothing; anything else is applied to the batch's state, to be written.
func (b *payBatch) decide(ctx context.Context, i int) error {
	pay := b.pays[i]
	o := b.orders[pay.OrderID]
	if o != nil && pay.AmountCents != nil && *pay.AmountCents != o.AmountCents {
		b.results[i].err = &AmountMismatchError{OrderID: o.ID, Charged: *pay.AmountCents, Amount: o.AmountCents}
		return nil
	}
	if ev, ok := b.seen[pay.Key]; ok {
		if ev.orderID != pay.OrderID || ev.status != pay.Status {
			b.results[i].err = fmt.Errorf("%w: key %q was used for order %s with status %s",
				ErrKeyReused, truncate(pay.Key), ev.orderID, ev.status)
			return nil
		}
		if o != nil { // always: the event's order exists
			b.results[i].out = PaymentResult{OrderID: o.ID, OrderStatus: o.Status, Duplicate: true, Outcome: ev.outcome}
			return nil
		}
	}
	if o == nil {
		b.results[i].err = fmt.Errorf("%w: no order with ID %s", ErrNotFound, pay.OrderID)
		return nil
	}
	p := b.products[o.ProductID]
	if p == nil {
		return fmt.Errorf("order %s: product %d is missing", o.ID, o.ProductID)
	}
	room := Sellable(p)
	if pay.Status == PaymentSuccess && o.Status == order.StatusCANCELLED {
		var err error
		if room, err = b.roomForLateSuccess(ctx, p, o); err != nil {
			return err
		}
	}
	b.apply(pay, o, p, decide(o.Status, pay.Status, o.Qty, room))
	b.results[i].out = PaymentResult{OrderID: o.ID, OrderStatus: o.Status, Outcome: b.seen[pay.Key].outcome}
	return nil
}

// roomForLateSuccess is what a late success's buyer may be sold: the
// stock, and their maxPerCustomer, may still have room for it. Lapsed
// holds and orders may be what stands in the way: they are released
// first (once per product and batch).
func (b *payBatch) roomForLateSuccess(ctx context.Context, p *ent.Product, o *ent.Order) (int, error) {
	room, err := b.s.roomFor(ctx, b.tx, p, o, b.counted)
	if err != nil || room >= o.Qty || b.released[p.ID] {
		return room, err
	}
	b.released[p.ID] = true
	// The orders this batch already changed are left alone: their stored
	// status is stale until the batch writes it.
	_, cancelled, err := b.s.releaseOverdue(ctx, b.tx, b.ob, p, b.now, b.s.cfg.SweepBatch, slices.Collect(maps.Keys(b.changed))...)
	if err != nil {
		return 0, err
	}
	for _, id := range cancelled {
		if c := b.orders[id]; c != nil {
			// releaseOverdue wrote this order and its event: keep the
			// batch's copy in step, in case a later payment moves it.
			c.Status, c.UpdatedAt = order.StatusCANCELLED, b.now
			c.EventSeq++
		}
	}
	return b.s.roomFor(ctx, b.tx, p, o, b.counted)
}

// apply makes transition t of order o (product p) by payment pay part of
// the batch's state: counters, the order and its event, its hold, and the
// payment's own record.
func (b *payBatch) apply(pay Payment, o *ent.Order, p *ent.Product, t transition) {
	if p.MaxPerCustomer != nil && o.CustomerID != "" {
		b.counted[buyerOf{p.ID, o.CustomerID}] += countedUnits(t.to, o.Qty) - countedUnits(o.Status, o.Qty)
	}
	if t.available != 0 || t.reserved != 0 {
		d := b.deltas[p.ID]
		if d == nil {
			d = &stockDelta{}
			b.deltas[p.ID] = d
		}
		d.available += t.available
		d.reserved += t.reserved
		p.StockAvailable += t.available
		p.StockReserved += t.reserved
		p.UpdatedAt = b.now
	}
	if t.releaseHold {
		b.freed = append(b.freed, o.HoldID)
	}
	if pay.Reference != "" && o.PaymentReference == nil {
		// Kept from the first event that carries one, before the order's
		// event is made, so that the event shows it.
		ref := pay.Reference
		o.PaymentReference = &ref
		o.UpdatedAt = b.now
		b.changed[o.ID] = o
	}
	before := o.Status
	if t.to != before {
		o.Status, o.UpdatedAt = t.to, b.now
		reason := ""
		if t.to == order.StatusCANCELLED {
			reason = ReasonPaymentFailed
		}
		b.ob.moved(o, reason, b.now)
		b.changed[o.ID] = o
	}
	b.seen[pay.Key] = seenEvent{orderID: o.ID, status: pay.Status, outcome: t.outcome}
	b.keys = append(b.keys, pay.Key)
	b.stored = append(b.stored, b.tx.PaymentEvent.Create().
		SetIdempotencyKey(pay.Key).SetOrderID(o.ID).SetStatus(paymentevent.Status(pay.Status)).
		SetOutcome(t.outcome).SetOrderStatusBefore(string(before)).SetOrderStatusAfter(string(t.to)).
		SetNillablePaymentReference(nonEmpty(pay.Reference)).SetCreatedAt(b.now))
}

// write writes what the batch decided: each product's counters once, the
// released holds, the changed orders in one statement, the payment events
// in one, and the order events.
func (b *payBatch) write(ctx context.Context) error {
	tx, now := b.tx, b.now
	for _, pid := range slices.Sorted(maps.Keys(b.deltas)) {
		d := b.deltas[pid]
		if d.available == 0 && d.reserved == 0 {
			continue
		}
		if err := tx.Product.Update().Where(product.ID(pid)).AddStockAvailable(d.available).AddStockReserved(d.reserved).
			SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
	}
	if len(b.freed) > 0 {
		if err := tx.Hold.Update().Where(hold.IDIn(b.freed...)).
			SetStatus(hold.StatusRELEASED).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
	}
	if err := updateOrders(ctx, tx, now, slices.Collect(maps.Values(b.changed))); err != nil {
		return err
	}
	if len(b.stored) > 0 {
		// In key order, so two batches that share keys wait for each
		// other in one order. The unique key makes a delivery that another
		// batch stored meanwhile fail here; paymentBatch then retries.
		idx := make([]int, len(b.stored))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(x, y int) int { return strings.Compare(b.keys[x], b.keys[y]) })
		sorted := make([]*ent.PaymentEventCreate, len(idx))
		for j, i := range idx {
			sorted[j] = b.stored[i]
		}
		if err := tx.PaymentEvent.CreateBulk(sorted...).Exec(ctx); err != nil {
			return err
		}
	}
	return b.ob.flush(ctx)
}

// updateOrders writes the status, event count and payment reference that
// orders have in memory, in one statement however many there are (each
// may have its own of all three). The caller holds their rows' locks.
func updateOrders(ctx context.Context, tx *ent.Tx, now time.Time, os []*ent.Order) error {
	if len(os) == 0 {
		return nil
	}
	var q strings.Builder
	args := make([]any, 0, 6*len(os)+1+len(os))
	q.WriteString("UPDATE `" + order.Table + "` SET ")
	for _, col := range []struct {
		name  string
		value func(*ent.Order) any
	}{
		{order.FieldStatus, func(o *ent.Order) any { return string(o.Status) }},
		{order.FieldEventSeq, func(o *ent.Order) any { return o.EventSeq }},
		{order.FieldPaymentReference, func(o *ent.Order) any { return o.PaymentReference }},
	} {
		q.WriteString("`" + col.name + "` = CASE `" + order.FieldID + "`")
		for _, o := range os {
			q.WriteString(" WHEN ? THEN ?")
			args = append(args, o.ID, col.value(o))
		}
		q.WriteString(" END, ")
	}
	q.WriteString("`" + order.FieldUpdatedAt + "` = ? WHERE `" + order.FieldID + "` IN (?" + strings.Repeat(", ?", len(os)-1) + ")")
	args = append(args, now)
	for _, o := range os {
		args = append(args, o.ID)
	}
	_, err := tx.ExecContext(ctx, q.String(), args...)
	return err
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
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
