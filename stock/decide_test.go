package stock

import (
	"testing"

	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
)

// TestDecide checks every row of the contract's transition table for
// payment events, and that nothing else changes an order.
func TestDecide(t *testing.T) {
	const qty = 3
	var (
		pending  = order.StatusPENDING_PAYMENT
		paid     = order.StatusPAID
		canceled = order.StatusCANCELLED
		refund   = order.StatusREFUND_REQUIRED
		applied  = paymentevent.OutcomeAPPLIED
		ignored  = paymentevent.OutcomeIGNORED
	)
	ignore := func(s order.Status) transition { return transition{to: s, outcome: ignored} }
	tests := []struct {
		name     string
		status   order.Status
		payment  string
		sellable int
		want     transition
	}{
		// payment success | PENDING_PAYMENT → PAID | available -= qty, reserved -= qty
		// (the units are already reserved for the order, so sellable does not matter)
		{"success on pending", pending, PaymentSuccess, 0, transition{to: paid, outcome: applied, available: -qty, reserved: -qty}},
		{"success on pending, stock to spare", pending, PaymentSuccess, 100, transition{to: paid, outcome: applied, available: -qty, reserved: -qty}},
		// payment failure | PENDING_PAYMENT → CANCELLED, hold RELEASED | reserved -= qty
		{"failure on pending", pending, PaymentFailure, 0, transition{to: canceled, outcome: applied, reserved: -qty, releaseHold: true}},
		{"failure on pending, stock to spare", pending, PaymentFailure, 100, transition{to: canceled, outcome: applied, reserved: -qty, releaseHold: true}},
		// payment success, late | CANCELLED → PAID if sellable >= qty (available -= qty), else REFUND_REQUIRED
		{"late success, sellable = qty", canceled, PaymentSuccess, qty, transition{to: paid, outcome: applied, available: -qty}},
		{"late success, sellable > qty", canceled, PaymentSuccess, qty + 5, transition{to: paid, outcome: applied, available: -qty}},
		{"late success, sellable = qty-1", canceled, PaymentSuccess, qty - 1, transition{to: refund, outcome: paymentevent.OutcomeREFUND_REQUIRED}},
		{"late success, nothing sellable", canceled, PaymentSuccess, 0, transition{to: refund, outcome: paymentevent.OutcomeREFUND_REQUIRED}},
		// payment failure, late | PAID or REFUND_REQUIRED → unchanged | none
		{"late failure on paid", paid, PaymentFailure, 10, ignore(paid)},
		{"late failure on refund required", refund, PaymentFailure, 10, ignore(refund)},
		// Not in the table, so nothing changes: a failure on a cancelled
		// order, and a second success on a final status.
		{"failure on cancelled", canceled, PaymentFailure, 10, ignore(canceled)},
		{"success on paid", paid, PaymentSuccess, 10, ignore(paid)},
		{"success on paid, nothing sellable", paid, PaymentSuccess, 0, ignore(paid)},
		{"success on refund required", refund, PaymentSuccess, 10, ignore(refund)},
		{"unknown payment status", pending, "refunded", 10, ignore(pending)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.status, tt.payment, qty, tt.sellable); got != tt.want {
				t.Errorf("decide(%s, %s, qty %d, sellable %d) = %+v, want %+v", tt.status, tt.payment, qty, tt.sellable, got, tt.want)
			}
		})
	}
}
