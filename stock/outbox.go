package stock

import (
	"context"
	"time"

	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/ent/order"
	"flashsale/ent/orderevent"
)

// The transactional outbox.
//
// Every transaction that changes an order writes the order's event in the
// same transaction (package events delivers it later): a committed change
// always has its event, a rolled-back one never. Each transaction attempt
// collects its events in an outbox and writes them with flush, in one
// INSERT of events and one of their deliveries (one per configured sink),
// however many orders the batch moved.
//
// An order's events are numbered by its event_seq column, advanced in the
// same transaction under the order row's lock (every change of an order
// locks or inserts its row), so the numbers follow commit order.

// outbox collects one transaction attempt's order events.
type outbox struct {
	s          *Service
	tx         *ent.Tx
	events     []*ent.OrderEventCreate
	deliveries []*ent.EventDeliveryCreate
	counts     map[orderevent.Type]int
}

func (s *Service) newOutbox(tx *ent.Tx) *outbox {
	return &outbox{s: s, tx: tx}
}

// add records order o's newest event: o is as the change left it, and
// o.EventSeq is the event's number (the caller advanced it and writes it).
// reason is data.reason, "" for none.
func (ob *outbox) add(o *ent.Order, t orderevent.Type, reason string, at time.Time) {
	id := NewEventID(time.Now())
	body := NewEventBody(id, t, reason, o.EventSeq, o, at).Marshal()
	ob.events = append(ob.events, ob.tx.OrderEvent.Create().
		SetID(id).SetOrderID(o.ID).SetSequence(o.EventSeq).SetType(t).SetOccurredAt(at).SetPayload(string(body)))
	for _, sink := range ob.s.cfg.EventSinks {
		ob.deliveries = append(ob.deliveries, ob.tx.EventDelivery.Create().
			SetEventID(id).SetSink(eventdelivery.Sink(sink)).SetOrderID(o.ID).SetSequence(o.EventSeq).
			SetNextAttemptAt(at).SetCreatedAt(at))
	}
	if ob.counts == nil {
		ob.counts = map[orderevent.Type]int{}
	}
	ob.counts[t]++
}

// moved is add for an order whose status this transaction changed to
// o.Status (PAID, CANCELLED or REFUND_REQUIRED; a new order's event is
// added by add): it advances o.EventSeq and picks the event's type.
// A timed-out order is cancelled with reason payment_timeout, a failed
// payment's with payment_failed.
func (ob *outbox) moved(o *ent.Order, reason string, at time.Time) {
	o.EventSeq++
	t := orderevent.TypeOrderPaid
	switch o.Status {
	case order.StatusCANCELLED:
		t = orderevent.TypeOrderCancelled
	case order.StatusREFUND_REQUIRED:
		t = orderevent.TypeOrderRefundRequired
	}
	ob.add(o, t, reason, at)
}

// flush writes the collected events and deliveries. Once the transaction
// commits, the events are counted and the relays woken (OnEvents).
func (ob *outbox) flush(ctx context.Context) error {
	if len(ob.events) == 0 {
		return nil
	}
	if err := ob.tx.OrderEvent.CreateBulk(ob.events...).Exec(ctx); err != nil {
		return err
	}
	if len(ob.deliveries) > 0 {
		if err := ob.tx.EventDelivery.CreateBulk(ob.deliveries...).Exec(ctx); err != nil {
			return err
		}
	}
	counts, s := ob.counts, ob.s
	afterCommit(ob.tx, func() {
		for t, n := range counts {
			s.observer.EventsWritten(t.String(), n)
		}
		if f := s.onEvents.Load(); f != nil {
			(*f)()
		}
	})
	return nil
}

// OnEvents sets f to be called after every commit that wrote order events
// (the relays wake up on it rather than waiting for their next poll). f
// must not block. Call it before serving.
func (s *Service) OnEvents(f func()) { s.onEvents.Store(&f) }
