package stock_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
	"flashsale/stock"
)

// wantResult checks a payment's result.
func (e *env) wantResult(r stock.PaymentResult, orderID uuid.UUID, status order.Status, outcome paymentevent.Outcome, duplicate bool) {
	e.t.Helper()
	want := stock.PaymentResult{OrderID: orderID, OrderStatus: status, Outcome: outcome, Duplicate: duplicate}
	if r != want {
		e.t.Errorf("payment result %+v, want %+v", r, want)
	}
}

// TestPaymentTimeout: the sweeper cancels unpaid orders, and a success that
// arrives afterwards sells the order again only if the stock is still there.
func TestPaymentTimeout(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		short := stock.Config{HoldTTL: time.Second, PaymentTimeout: time.Second}
		e := newEnv(t, d, short)
		// A second server with long limits: what it does cannot time out mid-case.
		long := e.service(stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute})

		// timedOut makes an order of qty 2 on a new product of stock 2 and
		// lets the sweeper cancel it.
		timedOut := func(e *env) (productID int, holdID, orderID uuid.UUID) {
			e.t.Helper()
			p := e.newProduct(2)
			h := e.hold(e.svc, p.ID, 2)
			o := e.order(e.svc, h.ID)
			e.waitPast(o.CreatedAt.Add(short.PaymentTimeout))
			if r := e.sweep(e.svc); r != (stock.SweepResult{OrdersCancelled: 1}) {
				e.t.Errorf("Sweep = %+v, want one order cancelled", r)
			}
			e.wantOrderStatus(o.ID, order.StatusCANCELLED)
			e.wantHoldStatus(h.ID, hold.StatusRELEASED)
			e.wantStock(p.ID, 2, 0)
			e.audit()
			return p.ID, h.ID, o.ID
		}

		t.Run("late success, stock still there", func(t *testing.T) {
			e := e.with(t)
			pid, hid, oid := timedOut(e)
			// A late failure on a CANCELLED order changes nothing.
			e.wantResult(e.pay(long, "a-fail-1", oid, stock.PaymentFailure), oid, order.StatusCANCELLED, paymentevent.OutcomeIGNORED, false)
			e.wantStock(pid, 2, 0)

			e.wantResult(e.pay(long, "a-ok-1", oid, stock.PaymentSuccess), oid, order.StatusPAID, paymentevent.OutcomeAPPLIED, false)
			e.wantOrderStatus(oid, order.StatusPAID)
			e.wantHoldStatus(hid, hold.StatusRELEASED)
			e.wantStock(pid, 0, 0)
			e.audit()

			// Late failure and a second success on PAID: ignored, sold once.
			e.wantResult(e.pay(long, "a-fail-2", oid, stock.PaymentFailure), oid, order.StatusPAID, paymentevent.OutcomeIGNORED, false)
			e.wantResult(e.pay(long, "a-ok-2", oid, stock.PaymentSuccess), oid, order.StatusPAID, paymentevent.OutcomeIGNORED, false)
			e.wantOrderStatus(oid, order.StatusPAID)
			e.wantStock(pid, 0, 0)
			e.audit()
		})

		t.Run("late success, stock sold to another buyer", func(t *testing.T) {
			e := e.with(t)
			pid, _, oid := timedOut(e)
			hB := e.hold(long, pid, 2)
			oB := e.order(long, hB.ID)
			e.wantStock(pid, 2, 2)

			e.wantResult(e.pay(long, "b-ok-1", oid, stock.PaymentSuccess), oid, order.StatusREFUND_REQUIRED, paymentevent.OutcomeREFUND_REQUIRED, false)
			e.wantOrderStatus(oid, order.StatusREFUND_REQUIRED)
			e.wantOrderStatus(oB.ID, order.StatusPENDING_PAYMENT)
			e.wantStock(pid, 2, 2)
			e.audit()

			// Late failure and another success on REFUND_REQUIRED: ignored.
			e.wantResult(e.pay(long, "b-fail-1", oid, stock.PaymentFailure), oid, order.StatusREFUND_REQUIRED, paymentevent.OutcomeIGNORED, false)
			e.wantResult(e.pay(long, "b-ok-2", oid, stock.PaymentSuccess), oid, order.StatusREFUND_REQUIRED, paymentevent.OutcomeIGNORED, false)
			e.wantStock(pid, 2, 2)

			e.wantResult(e.pay(long, "b-ok-B", oB.ID, stock.PaymentSuccess), oB.ID, order.StatusPAID, paymentevent.OutcomeAPPLIED, false)
			e.wantOrderStatus(oid, order.StatusREFUND_REQUIRED)
			e.wantStock(pid, 0, 0)
			e.audit()
		})

		t.Run("late success, stock held by a lapsed hold", func(t *testing.T) {
			e := e.with(t)
			pid, _, oid := timedOut(e)
			hB := e.hold(e.svc, pid, 2)
			e.waitPast(hB.ExpiresAt)
			// hB is overdue but unswept: the payment releases it first.
			e.wantResult(e.pay(e.svc, "c-ok-1", oid, stock.PaymentSuccess), oid, order.StatusPAID, paymentevent.OutcomeAPPLIED, false)
			e.wantHoldStatus(hB.ID, hold.StatusEXPIRED)
			e.wantStock(pid, 0, 0)
			e.audit()
		})

		t.Run("success on an overdue order not yet swept", func(t *testing.T) {
			e := e.with(t)
			p := e.newProduct(2)
			h := e.hold(e.svc, p.ID, 2)
			o := e.order(e.svc, h.ID)
			e.waitPast(o.CreatedAt.Add(short.PaymentTimeout))
			// Still PENDING_PAYMENT, its stock still reserved for it: it is paid.
			e.wantResult(e.pay(e.svc, "d-ok-1", o.ID, stock.PaymentSuccess), o.ID, order.StatusPAID, paymentevent.OutcomeAPPLIED, false)
			e.wantHoldStatus(h.ID, hold.StatusREDEEMED)
			e.wantStock(p.ID, 0, 0)
			if r := e.sweep(e.svc); r != (stock.SweepResult{}) {
				t.Errorf("Sweep after payment = %+v, want nothing", r)
			}
			e.wantOrderStatus(o.ID, order.StatusPAID)
			e.audit()
		})
	})
}

// TestIdempotency: a key applies once; redeliveries are duplicates, reuse
// with other content is refused, and malformed keys are invalid.
func TestIdempotency(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.newProduct(10)
		newOrder := func() uuid.UUID { return e.order(e.svc, e.hold(e.svc, p.ID, 1).ID).ID }
		o1, o2, o3 := newOrder(), newOrder(), newOrder()

		e.wantResult(e.pay(e.svc, "evt_1", o1, stock.PaymentSuccess), o1, order.StatusPAID, paymentevent.OutcomeAPPLIED, false)
		e.wantStock(p.ID, 9, 2)
		if n := e.countEvents(); n != 1 {
			t.Fatalf("%d payment events, want 1", n)
		}

		t.Run("same key, same content", func(t *testing.T) {
			e := e.with(t)
			for range 2 {
				e.wantResult(e.pay(e.svc, "evt_1", o1, stock.PaymentSuccess), o1, order.StatusPAID, paymentevent.OutcomeAPPLIED, true)
			}
			e.wantStock(p.ID, 9, 2)
			if n := e.countEvents(); n != 1 {
				t.Errorf("%d payment events, want 1", n)
			}
		})

		t.Run("same key, other content", func(t *testing.T) {
			e := e.with(t)
			for _, pay := range []stock.Payment{
				{Key: "evt_1", OrderID: o1, Status: stock.PaymentFailure},
				{Key: "evt_1", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: "evt_1", OrderID: o2, Status: stock.PaymentFailure},
			} {
				r, err := e.svc.ApplyPayment(e.ctx, pay)
				if !errors.Is(err, stock.ErrKeyReused) {
					t.Errorf("ApplyPayment(%+v) = %+v, %v; want ErrKeyReused", pay, r, err)
				}
			}
			e.wantOrderStatus(o1, order.StatusPAID)
			e.wantOrderStatus(o2, order.StatusPENDING_PAYMENT)
			e.wantStock(p.ID, 9, 2)
			if n := e.countEvents(); n != 1 {
				t.Errorf("%d payment events, want 1", n)
			}
		})

		t.Run("invalid keys and statuses", func(t *testing.T) {
			e := e.with(t)
			for _, pay := range []stock.Payment{
				{Key: "", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: " evt_2", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: "evt_2 ", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: "\tevt_2", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: "evt_2\n", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: " ", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: strings.Repeat("k", 256), OrderID: o2, Status: stock.PaymentSuccess},
				{Key: strings.Repeat("€", 256), OrderID: o2, Status: stock.PaymentSuccess}, // 256 characters
				{Key: "evt_\x00", OrderID: o2, Status: stock.PaymentSuccess},               // not printable
				{Key: "evt_\xff", OrderID: o2, Status: stock.PaymentSuccess},
				{Key: "evt_2", OrderID: o2, Status: "refunded"},
				{Key: "evt_2", OrderID: o2, Status: "SUCCESS"},
				{Key: "evt_2", OrderID: o2, Status: ""},
				// The key is checked before the order is looked up.
				{Key: "evt_1 ", OrderID: o1, Status: stock.PaymentSuccess},
			} {
				r, err := e.svc.ApplyPayment(e.ctx, pay)
				if !errors.Is(err, stock.ErrInvalidInput) {
					t.Errorf("ApplyPayment(%q, %q) = %+v, %v; want ErrInvalidInput", pay.Key, pay.Status, r, err)
				}
			}
			e.wantOrderStatus(o2, order.StatusPENDING_PAYMENT)
			e.wantStock(p.ID, 9, 2)
			if n := e.countEvents(); n != 1 {
				t.Errorf("%d payment events, want 1", n)
			}
			if _, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: "evt_unknown", OrderID: uuid.New(), Status: stock.PaymentSuccess}); !errors.Is(err, stock.ErrNotFound) {
				t.Errorf("ApplyPayment on an unknown order: %v, want ErrNotFound", err)
			}
		})

		t.Run("longest keys, case-sensitive keys", func(t *testing.T) {
			e := e.with(t)
			k255 := strings.Repeat("k", 255)
			e.wantResult(e.pay(e.svc, k255, o2, stock.PaymentSuccess), o2, order.StatusPAID, paymentevent.OutcomeAPPLIED, false)
			e.wantResult(e.pay(e.svc, k255, o2, stock.PaymentSuccess), o2, order.StatusPAID, paymentevent.OutcomeAPPLIED, true)
			if evs := e.eventsOfKey(k255); len(evs) != 1 || evs[0].IdempotencyKey != k255 {
				t.Errorf("255-character key stored as %d rows", len(evs))
			}
			// 255 three-byte characters: counted as characters (765 bytes),
			// the one rule of every key and ID (stock.validKey).
			kEuro := strings.Repeat("€", 255)
			e.wantResult(e.pay(e.svc, kEuro, o3, stock.PaymentFailure), o3, order.StatusCANCELLED, paymentevent.OutcomeAPPLIED, false)
			e.wantResult(e.pay(e.svc, kEuro, o3, stock.PaymentFailure), o3, order.StatusCANCELLED, paymentevent.OutcomeAPPLIED, true)
			// Keys are opaque: a key differing only in case is another event.
			e.wantResult(e.pay(e.svc, "EVT_1", o3, stock.PaymentFailure), o3, order.StatusCANCELLED, paymentevent.OutcomeIGNORED, false)
			if n := e.countEvents(); n != 4 {
				t.Errorf("%d payment events, want 4", n)
			}
			e.wantStock(p.ID, 8, 0)
			e.audit()
		})

		t.Run("concurrent deliveries", func(t *testing.T) {
			e := e.with(t)
			oA, oB := newOrder(), newOrder()
			type delivery struct {
				pay stock.Payment
				res stock.PaymentResult
				err error
			}
			var ds []*delivery
			for range 10 {
				ds = append(ds, &delivery{pay: stock.Payment{Key: "evt_same", OrderID: oA, Status: stock.PaymentSuccess}})
			}
			// One key, two contents racing: whichever lands first wins.
			for i := range 10 {
				st := stock.PaymentSuccess
				if i%2 == 1 {
					st = stock.PaymentFailure
				}
				ds = append(ds, &delivery{pay: stock.Payment{Key: "evt_mixed", OrderID: oB, Status: st}})
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for _, dl := range ds {
				wg.Go(func() {
					<-start
					dl.res, dl.err = e.svc.ApplyPayment(e.ctx, dl.pay)
				})
			}
			close(start)
			wg.Wait()

			applied := map[string][]*delivery{}
			for _, dl := range ds {
				switch {
				case dl.err == nil && !dl.res.Duplicate:
					applied[dl.pay.Key] = append(applied[dl.pay.Key], dl)
				case dl.err == nil, errors.Is(dl.err, stock.ErrKeyReused):
				default:
					t.Errorf("ApplyPayment(%s %s): %v", dl.pay.Key, dl.pay.Status, dl.err)
				}
			}
			for _, key := range []string{"evt_same", "evt_mixed"} {
				if len(applied[key]) != 1 {
					t.Fatalf("%s applied by %d deliveries, want exactly 1", key, len(applied[key]))
				}
				if evs := e.eventsOfKey(key); len(evs) != 1 {
					t.Errorf("%s stored %d times, want once", key, len(evs))
				}
			}
			for _, dl := range ds {
				if dl.pay.Key == "evt_same" && dl.err != nil {
					t.Errorf("delivery of evt_same: %v", dl.err)
				}
			}
			win := applied["evt_mixed"][0].pay.Status
			wantB := order.StatusPAID
			if win == stock.PaymentFailure {
				wantB = order.StatusCANCELLED
			}
			for _, dl := range ds {
				if dl.pay.Key != "evt_mixed" {
					continue
				}
				if same := dl.pay.Status == win; same != (dl.err == nil) || (same && dl.res.OrderStatus != wantB) {
					t.Errorf("evt_mixed %s (winner %s): %+v, %v", dl.pay.Status, win, dl.res, dl.err)
				}
			}
			e.wantOrderStatus(oA, order.StatusPAID)
			e.wantOrderStatus(oB, wantB)
			if wantB == order.StatusPAID {
				e.wantStock(p.ID, 6, 0)
			} else {
				e.wantStock(p.ID, 7, 0)
			}
			e.audit()
			t.Logf("evt_mixed was won by %s", win)
		})
	})
}
