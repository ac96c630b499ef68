package stock

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"flashsale/ent"
	"flashsale/ent/orderevent"
)

// EventTypes lists every order event type (the body's "type"; NATS
// subjects end with it), for metrics.
var EventTypes = []string{orderevent.TypeOrderCreated.String(), orderevent.TypeOrderPaid.String(),
	orderevent.TypeOrderCancelled.String(), orderevent.TypeOrderRefundRequired.String()}

// Why an order.cancelled event's order was cancelled (data.reason).
const (
	ReasonPaymentFailed  = "payment_failed"
	ReasonPaymentTimeout = "payment_timeout"
)

// EventBody is an order event's JSON body, exactly as every sink is sent it.
type EventBody struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	OccurredAt time.Time `json:"occurredAt"`
	Data       EventData `json:"data"`
}

// EventData is the body's "data".
type EventData struct {
	Sequence int        `json:"sequence"`
	Reason   *string    `json:"reason"`
	Order    EventOrder `json:"order"`
}

// EventOrder is the order as an event tells it: as it was right after the
// change.
type EventOrder struct {
	ID               string    `json:"id"`
	Status           string    `json:"status"`
	ProductID        string    `json:"productId"`
	CustomerID       *string   `json:"customerId"` // null: an anonymous buyer
	HoldID           string    `json:"holdId"`
	Qty              int       `json:"qty"`
	AmountCents      int64     `json:"amountCents"`
	PaymentReference *string   `json:"paymentReference"`
	CreatedAt        time.Time `json:"createdAt"`
	PaymentDueAt     time.Time `json:"paymentDueAt"`
}

// NewEventBody is the body of event id of type t about order o (as it is after
// the change), numbered seq, that happened at the database time at.
func NewEventBody(id string, t orderevent.Type, reason string, seq int, o *ent.Order, at time.Time) EventBody {
	b := EventBody{
		ID: id, Type: t.String(), OccurredAt: at.UTC(),
		Data: EventData{Sequence: seq, Order: EventOrder{
			ID: o.ID.String(), Status: o.Status.String(), ProductID: strconv.Itoa(o.ProductID),
			HoldID: o.HoldID.String(), Qty: o.Qty, AmountCents: o.AmountCents,
			PaymentReference: o.PaymentReference,
			CreatedAt:        o.CreatedAt.UTC(), PaymentDueAt: o.PaymentDueAt.UTC(),
		}},
	}
	if reason != "" {
		b.Data.Reason = &reason
	}
	if o.CustomerID != "" {
		c := o.CustomerID
		b.Data.Order.CustomerID = &c
	}
	return b
}

// Marshal returns the body's JSON.
func (b EventBody) Marshal() []byte {
	out, err := json.Marshal(b)
	if err != nil {
		// Only strings, integers and times: encoding cannot fail.
		panic("stock: marshal event body: " + err.Error())
	}
	return out
}

// NewEventID returns a new event ID: "evt_" and 32 hex digits, 48 bits of the
// time in milliseconds then 80 random bits. The time prefix keeps new rows
// at the end of the primary key and lets operators page oldest first; the
// random bits make IDs unguessable, since a receiver deduplicates on them.
func NewEventID(now time.Time) string {
	var b [16]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(b[:6], ms[2:])
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails
	return "evt_" + hex.EncodeToString(b[:])
}
