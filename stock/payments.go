package stock

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
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

// decide applies the contract's transition table. sellable is the product's
// sellable stock at the time, under its lock.
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
func (s *Service) ApplyPayment(ctx context.Context, pay Payment) (PaymentResult, error) {
	// MySQL ignores trailing spaces in comparisons, so "k" and "k " would be
	// one key there and two on SQLite: refuse such keys outright.
	if pay.Key == "" || len(pay.Key) > maxKeyLen || strings.TrimSpace(pay.Key) != pay.Key || !utf8.ValidString(pay.Key) {
		return PaymentResult{}, InvalidInput("idempotency_key must be 1 to %d bytes of UTF-8 without surrounding spaces", maxKeyLen)
	}
	if pay.Status != PaymentSuccess && pay.Status != PaymentFailure {
		return PaymentResult{}, InvalidInput("status must be %q or %q", PaymentSuccess, PaymentFailure)
	}
	if res, ok, err := s.seenPayment(ctx, pay); ok || err != nil {
		return res, err
	}
	o0, err := s.client.Order.Get(ctx, pay.OrderID)
	if ent.IsNotFound(err) {
		return PaymentResult{}, fmt.Errorf("%w: no order with ID %s", ErrNotFound, pay.OrderID)
	}
	if err != nil {
		return PaymentResult{}, classify("apply payment", err)
	}
	var (
		res     PaymentResult
		product *ent.Product
	)
	err = s.tx(ctx, "apply payment", func(tx *ent.Tx) error {
		p, now, err := s.lockProduct(ctx, tx, o0.ProductID)
		if err != nil {
			return err
		}
		o, err := s.lockOrder(tx.Order.Query().Where(order.ID(pay.OrderID))).Only(ctx)
		if err != nil {
			return err
		}
		if pay.Status == PaymentSuccess && o.Status == order.StatusCANCELLED && Sellable(p) < o.Qty {
			// Lapsed holds may be what stands between this buyer and the stock.
			if _, _, err := s.releaseOverdue(ctx, tx, p, now, s.cfg.SweepBatch); err != nil {
				return err
			}
		}
		t := decide(o.Status, pay.Status, o.Qty, Sellable(p))
		if t.available != 0 || t.reserved != 0 {
			if err := tx.Product.UpdateOneID(p.ID).
				AddStockAvailable(t.available).AddStockReserved(t.reserved).
				SetUpdatedAt(now).Exec(ctx); err != nil {
				return err
			}
			p.StockAvailable += t.available
			p.StockReserved += t.reserved
			p.UpdatedAt = now
		}
		if t.to != o.Status {
			if err := tx.Order.UpdateOneID(o.ID).SetStatus(t.to).SetUpdatedAt(now).Exec(ctx); err != nil {
				return err
			}
		}
		if t.releaseHold {
			if err := tx.Hold.UpdateOneID(o.HoldID).SetStatus(hold.StatusRELEASED).SetUpdatedAt(now).Exec(ctx); err != nil {
				return err
			}
		}
		// The unique key makes a concurrent delivery of the same event fail
		// here and roll back everything above.
		if err := tx.PaymentEvent.Create().
			SetIdempotencyKey(pay.Key).SetOrderID(o.ID).SetStatus(paymentevent.Status(pay.Status)).
			SetOutcome(t.outcome).SetOrderStatusBefore(string(o.Status)).SetOrderStatusAfter(string(t.to)).
			SetCreatedAt(now).
			Exec(ctx); err != nil {
			return err
		}
		res = PaymentResult{OrderID: o.ID, OrderStatus: t.to, Outcome: t.outcome}
		product = p
		return nil
	})
	if err != nil && ent.IsConstraintError(err) {
		// Lost the race to another delivery of the same key.
		if res, ok, serr := s.seenPayment(ctx, pay); ok || serr != nil {
			return res, serr
		}
	}
	if err != nil {
		return PaymentResult{}, err
	}
	s.productChanged(product)
	return res, nil
}

// seenPayment looks the key up; ok is true when it was seen before.
func (s *Service) seenPayment(ctx context.Context, pay Payment) (res PaymentResult, ok bool, err error) {
	ev, err := s.client.PaymentEvent.Query().Where(paymentevent.IdempotencyKey(pay.Key)).Only(ctx)
	if ent.IsNotFound(err) {
		return PaymentResult{}, false, nil
	}
	if err != nil {
		return PaymentResult{}, false, classify("look up payment event", err)
	}
	if ev.OrderID != pay.OrderID || string(ev.Status) != pay.Status {
		return PaymentResult{}, true, fmt.Errorf("%w: key %q was used for order %s with status %s",
			ErrKeyReused, truncate(pay.Key), ev.OrderID, ev.Status)
	}
	o, err := s.client.Order.Get(ctx, ev.OrderID)
	if err != nil {
		return PaymentResult{}, true, classify("look up payment event", err)
	}
	return PaymentResult{OrderID: o.ID, OrderStatus: o.Status, Duplicate: true, Outcome: ev.Outcome}, true, nil
}
