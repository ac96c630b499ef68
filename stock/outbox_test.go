package stock_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/ent/order"
	"flashsale/ent/orderevent"
	"flashsale/stock"
)

// eventsOf returns an order's events in sequence order, with deliveries.
func (e *env) eventsOf(orderID uuid.UUID) []*ent.OrderEvent {
	e.t.Helper()
	es, err := e.db.Ent.OrderEvent.Query().Where(orderevent.OrderID(orderID)).
		Order(orderevent.BySequence()).WithDeliveries().All(e.ctx)
	if err != nil {
		e.t.Fatalf("events of %s: %v", orderID, err)
	}
	return es
}

// story is an order's events as "type/reason" strings, checking that they
// are numbered 1, 2, 3... and that each body says what its row says.
func (e *env) story(orderID uuid.UUID) []string {
	e.t.Helper()
	var out []string
	for i, ev := range e.eventsOf(orderID) {
		if ev.Sequence != i+1 {
			e.t.Errorf("order %s: event %d has sequence %d", orderID, i+1, ev.Sequence)
		}
		var b stock.EventBody
		if err := json.Unmarshal([]byte(ev.Payload), &b); err != nil {
			e.t.Fatalf("event %s: payload: %v", ev.ID, err)
		}
		if b.ID != ev.ID || b.Type != ev.Type.String() || b.Data.Sequence != ev.Sequence || b.Data.Order.ID != orderID.String() {
			e.t.Errorf("event %s: body %+v does not match its row", ev.ID, b)
		}
		s := ev.Type.String()
		if b.Data.Reason != nil {
			s += "/" + *b.Data.Reason
		}
		out = append(out, s)
	}
	return out
}

func (e *env) wantStory(orderID uuid.UUID, want ...string) {
	e.t.Helper()
	if got := e.story(orderID); !slices.Equal(got, want) {
		e.t.Errorf("order %s events: %q, want %q", orderID, got, want)
	}
}

// TestEventPerTransition: each transition of the contract's table writes
// its event, numbered in order, in the same transaction; calls that change
// nothing write none.
func TestEventPerTransition(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{PaymentTimeout: time.Second})
		p := e.newProduct(3)
		buy := func(qty int) *ent.Order { return e.order(e.svc, e.hold(e.svc, p.ID, qty).ID) }

		paid := buy(1)
		e.pay(e.svc, "paid-1", paid.ID, stock.PaymentSuccess)
		e.pay(e.svc, "paid-1", paid.ID, stock.PaymentSuccess) // duplicate: nothing
		e.pay(e.svc, "paid-2", paid.ID, stock.PaymentFailure) // late failure: ignored
		e.wantStory(paid.ID, "order.created", "order.paid")

		failed := buy(1)
		e.pay(e.svc, "failed-1", failed.ID, stock.PaymentFailure)
		e.pay(e.svc, "failed-2", failed.ID, stock.PaymentFailure) // after CANCELLED: ignored
		e.wantStory(failed.ID, "order.created", "order.cancelled/payment_failed")

		// Both time out; one is paid late while stock is left, then the
		// other finds none.
		late, refunded := buy(1), buy(1)
		e.waitPast(latest(late.PaymentDueAt, refunded.PaymentDueAt))
		if r := e.sweep(e.svc); r.OrdersCancelled != 2 {
			t.Fatalf("sweep cancelled %d orders, want 2", r.OrdersCancelled)
		}
		e.pay(e.svc, "late-1", late.ID, stock.PaymentSuccess)
		e.wantStory(late.ID, "order.created", "order.cancelled/payment_timeout", "order.paid")
		// Take the last sellable units, then pay the other late.
		e.hold(e.svc, p.ID, 1)
		if r := e.pay(e.svc, "refund-1", refunded.ID, stock.PaymentSuccess); r.OrderStatus != order.StatusREFUND_REQUIRED {
			t.Fatalf("late success without stock: %s", r.OrderStatus)
		}
		e.wantStory(refunded.ID, "order.created", "order.cancelled/payment_timeout", "order.refund_required")
		e.audit()
	})
}

// TestEventBody: every field of the contract's example is there, null
// where it does not apply, with the order as the change left it.
func TestEventBody(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newPricedProduct(5, 19900)
		h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 2, Customer: "cust-42"})
		if err != nil {
			t.Fatal(err)
		}
		o, err := e.svc.CreateOrder(e.ctx, h.ID, stock.Caller{Customer: "cust-42"})
		if err != nil {
			t.Fatal(err)
		}
		amount := int64(39800)
		if _, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: "k", OrderID: o.ID, Status: stock.PaymentSuccess,
			Reference: "pay_123", AmountCents: &amount}); err != nil {
			t.Fatal(err)
		}
		es := e.eventsOf(o.ID)
		if len(es) != 2 {
			t.Fatalf("%d events, want 2", len(es))
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(es[1].Payload), &body); err != nil {
			t.Fatal(err)
		}
		data := body["data"].(map[string]any)
		got := data["order"].(map[string]any)
		want := map[string]any{
			"id": o.ID.String(), "status": "PAID", "productId": fmt.Sprint(p.ID), "customerId": "cust-42",
			"holdId": h.ID.String(), "qty": 2.0, "amountCents": 39800.0, "paymentReference": "pay_123",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("order.%s = %#v, want %#v", k, got[k], v)
			}
		}
		for _, k := range []string{"createdAt", "paymentDueAt"} {
			if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got[k])); err != nil {
				t.Errorf("order.%s = %v: %v", k, got[k], err)
			}
		}
		if body["id"] != es[1].ID || body["type"] != "order.paid" || data["sequence"] != 2.0 {
			t.Errorf("body %v", body)
		}
		if r, ok := data["reason"]; !ok || r != nil {
			t.Errorf("data.reason = %v (present %v), want null", r, ok)
		}
		if at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(body["occurredAt"])); err != nil || !at.Equal(es[1].OccurredAt) {
			t.Errorf("occurredAt %v (%v), want %s", body["occurredAt"], err, es[1].OccurredAt)
		}
		// The created event shows the order as it was then.
		var first stock.EventBody
		_ = json.Unmarshal([]byte(es[0].Payload), &first)
		if first.Data.Order.Status != "PENDING_PAYMENT" || first.Data.Order.PaymentReference != nil {
			t.Errorf("order.created shows %+v", first.Data.Order)
		}
		// An anonymous buyer's customerId is null.
		anon := e.order(e.svc, e.hold(e.svc, p.ID, 1).ID)
		var ab map[string]any
		_ = json.Unmarshal([]byte(e.eventsOf(anon.ID)[0].Payload), &ab)
		if c, ok := ab["data"].(map[string]any)["order"].(map[string]any)["customerId"]; !ok || c != nil {
			t.Errorf("anonymous customerId = %v (present %v), want null", c, ok)
		}
	})
}

// TestPaymentReferenceKeptOnce: the first event that carries a reference
// sets it; later ones do not change it.
func TestPaymentReferenceKeptOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newProduct(5)
		o := e.order(e.svc, e.hold(e.svc, p.ID, 1).ID)
		for i, ref := range []string{"", "first", "second"} {
			if _, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: fmt.Sprint("k", i), OrderID: o.ID,
				Status: stock.PaymentSuccess, Reference: ref}); err != nil {
				t.Fatal(err)
			}
		}
		if got := e.getOrder(o.ID).PaymentReference; got == nil || *got != "first" {
			t.Fatalf("paymentReference %v, want first", got)
		}
	})
}

// TestRefusedPaymentWritesNothing: a wrong amount, a reused key and an
// unknown order change nothing and write no event.
func TestRefusedPaymentWritesNothing(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newPricedProduct(5, 100)
		o := e.order(e.svc, e.hold(e.svc, p.ID, 2).ID)
		wrong := int64(199)
		_, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: "a", OrderID: o.ID, Status: stock.PaymentSuccess, AmountCents: &wrong})
		if !errors.Is(err, stock.ErrAmountMismatch) {
			t.Fatalf("wrong amount: %v", err)
		}
		e.wantOrderStatus(o.ID, order.StatusPENDING_PAYMENT)
		e.wantStock(p.ID, 5, 2)
		if n := len(e.eventsOfKey("a")); n != 0 {
			t.Errorf("a refused payment stored %d audit rows", n)
		}
		e.wantStory(o.ID, "order.created")
		// The same key with the right amount is then applied.
		right := int64(200)
		if _, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: "a", OrderID: o.ID, Status: stock.PaymentSuccess, AmountCents: &right}); err != nil {
			t.Fatal(err)
		}
		e.wantStory(o.ID, "order.created", "order.paid")
	})
}

// TestDeliveriesPerSink: an event gets one PENDING delivery per sink
// configured when it was written, none without sinks.
func TestDeliveriesPerSink(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newProduct(5)
		both := e.service(stock.Config{EventSinks: []string{"webhook", "nats"}})
		o1 := e.order(both, e.hold(both, p.ID, 1).ID)
		o2 := e.order(e.svc, e.hold(e.svc, p.ID, 1).ID)
		ds := e.eventsOf(o1.ID)[0].Edges.Deliveries
		var sinks []string
		for _, dl := range ds {
			sinks = append(sinks, dl.Sink.String())
			if dl.Status != eventdelivery.StatusPENDING || dl.Attempts != 0 || dl.Sequence != 1 || dl.OrderID != o1.ID {
				t.Errorf("delivery %+v", dl)
			}
		}
		slices.Sort(sinks)
		if !slices.Equal(sinks, []string{"nats", "webhook"}) {
			t.Errorf("sinks %v", sinks)
		}
		if n := len(e.eventsOf(o2.ID)[0].Edges.Deliveries); n != 0 {
			t.Errorf("%d deliveries without sinks", n)
		}
	})
}

// TestRolledBackBatchWritesNoEvent: when a payment batch's transaction
// fails after deciding (here a trigger refuses its order update), neither
// the change nor its event is committed.
func TestRolledBackBatchWritesNoEvent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newProduct(5)
		o := e.order(e.svc, e.hold(e.svc, p.ID, 1).ID)
		trigger := map[string]string{
			dialect.MySQL: "CREATE TRIGGER refuse_paid BEFORE UPDATE ON orders FOR EACH ROW " +
				"BEGIN IF NEW.status = 'PAID' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test'; END IF; END",
			dialect.SQLite: "CREATE TRIGGER refuse_paid BEFORE UPDATE ON orders FOR EACH ROW " +
				"WHEN NEW.status = 'PAID' BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
		}[d]
		if _, err := e.db.SQL.ExecContext(e.ctx, trigger); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: "k", OrderID: o.ID, Status: stock.PaymentSuccess}); err == nil {
			t.Fatal("the payment committed despite the trigger")
		}
		e.wantOrderStatus(o.ID, order.StatusPENDING_PAYMENT)
		e.wantStock(p.ID, 5, 1)
		e.wantStory(o.ID, "order.created")
		if n, _ := e.db.Ent.EventDelivery.Query().Count(e.ctx); n != 0 {
			t.Errorf("%d deliveries", n)
		}
	})
}

// TestConcurrentEventsInOrder: many orders made, paid and failed at once
// (group-committed batches, several per kind) each end with events numbered
// 1, 2 with no gap or repeat, matching where the order ended.
func TestConcurrentEventsInOrder(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{EventSinks: []string{"webhook"}})
		p := e.newProduct(1000)
		const n = 200
		ids := make([]uuid.UUID, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
				if err != nil {
					t.Error(err)
					return
				}
				o, err := e.svc.CreateOrder(e.ctx, h.ID, stock.Anonymous)
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = o.ID
				status := stock.PaymentSuccess
				if i%3 == 0 {
					status = stock.PaymentFailure
				}
				// Twice: the duplicate must add nothing.
				for range 2 {
					if _, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: o.ID.String(), OrderID: o.ID, Status: status}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for i, id := range ids {
			want := "order.paid"
			if i%3 == 0 {
				want = "order.cancelled/payment_failed"
			}
			e.wantStory(id, "order.created", want)
		}
		if b := e.svc.PaymentBatches(); b.Batches >= b.Calls {
			t.Logf("payments were not batched (%d batches for %d calls)", b.Batches, b.Calls)
		}
		total, _ := e.db.Ent.OrderEvent.Query().Count(e.ctx)
		dels, _ := e.db.Ent.EventDelivery.Query().Count(e.ctx)
		if total != 2*n || dels != 2*n {
			t.Errorf("%d events and %d deliveries, want %d each", total, dels, 2*n)
		}
		e.audit()
	})
}
