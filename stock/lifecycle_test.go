package stock_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
	"flashsale/stock"
)

// What the payment provider does with an order.
type payPlan int

const (
	planSuccess            payPlan = iota // one success, soon
	planFailure                           // one failure, soon
	planNone                              // never paid: the sweeper times it out
	planFailThenSuccess                   // failure (key A) and success (key B), failure usually first
	planSuccessThenFail                   // success (key A) and failure (key B), success usually first
	planLateSuccess                       // a success after the payment timeout
	planLateSuccessAndFail                // a late success and a late failure, in random order
	numPlans
)

func (p payPlan) String() string {
	return [...]string{"success", "failure", "none", "fail+success", "success+fail", "late-success", "late-success+fail"}[p]
}

type delivery struct {
	delay time.Duration
	res   stock.PaymentResult
	err   error
}

type payEvent struct {
	key        string
	status     string
	deliveries []*delivery
}

type buyer struct {
	qty      int
	abandon  bool // takes a hold but never orders
	hold     *ent.Hold
	holdErrs []error
	refusals int
	order    *ent.Order
	orderErr error
	plan     payPlan
	events   []*payEvent
}

// TestInterleavedLifecycle runs buyers, a payment provider that redelivers
// events and sends them out of order, and a sweeper, all at once; afterwards
// every order must have followed the contract's transition table.
func TestInterleavedLifecycle(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const (
			initial = 30
			buyers  = 100
		)
		cfg := stock.Config{HoldTTL: 2 * time.Second, PaymentTimeout: time.Second}
		e := newEnv(t, d, cfg)
		p := e.newProduct(initial)

		// The sweeper runs throughout, as the server's scheduler would.
		stop := make(chan struct{})
		var sweeperWG sync.WaitGroup
		var swept stock.SweepResult
		sweeps := 0
		sweeperWG.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				r, err := e.svc.Sweep(e.ctx)
				if err != nil {
					t.Errorf("Sweep: %v", err)
					return
				}
				sweeps++
				swept.HoldsExpired += r.HoldsExpired
				swept.OrdersCancelled += r.OrdersCancelled
			}
		})

		bs := make([]*buyer, buyers)
		for i := range bs {
			bs[i] = &buyer{qty: 1 + rand.N(2), abandon: i%10 == 9}
		}
		var (
			buyersWG, deliveriesWG sync.WaitGroup
			ordersMade             atomic.Int64
			start                  = make(chan struct{})
		)
		for i, b := range bs {
			buyersWG.Go(func() {
				<-start
				// Up to three tries, so stock freed by failures and timeouts
				// is bought again while late payments are still coming.
				for try := range 3 {
					if try > 0 {
						time.Sleep(200*time.Millisecond + rand.N(500*time.Millisecond))
					}
					h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: b.qty})
					if err == nil {
						b.hold = h
						break
					}
					if !errors.Is(err, stock.ErrInsufficientStock) {
						b.holdErrs = append(b.holdErrs, err)
						return
					}
					b.refusals++
				}
				if b.hold == nil || b.abandon {
					return
				}
				b.order, b.orderErr = e.svc.CreateOrder(e.ctx, b.hold.ID, stock.Anonymous)
				if b.orderErr != nil {
					return
				}
				// Deal the plans out in turn so that each one is used.
				b.plan = payPlan((ordersMade.Add(1) - 1) % int64(numPlans))
				b.events = planEvents(i, b.plan)
				for _, ev := range b.events {
					for _, dl := range ev.deliveries {
						deliveriesWG.Go(func() {
							time.Sleep(dl.delay)
							dl.res, dl.err = e.svc.ApplyPayment(e.ctx, stock.Payment{Key: ev.key, OrderID: b.order.ID, Status: ev.status})
						})
					}
				}
			})
		}
		began := time.Now()
		close(start)
		buyersWG.Wait()
		deliveriesWG.Wait()
		close(stop)
		sweeperWG.Wait()
		elapsed := time.Since(began)

		// Let whatever is still pending fall due, and sweep it.
		last := e.dbNow()
		for _, b := range bs {
			if b.hold != nil {
				last = latest(last, b.hold.ExpiresAt)
			}
			if b.order != nil {
				last = latest(last, b.order.PaymentDueAt)
			}
		}
		e.waitPast(last)
		final := e.sweep(e.svc)

		// Calls: only the refusals the contract allows.
		var holdsN, refusals, ordersN, abandoned, deliveriesN int
		keys := map[string]*payEvent{}
		for _, b := range bs {
			refusals += b.refusals
			for _, err := range b.holdErrs {
				t.Errorf("CreateHold: %v", err)
			}
			if b.hold == nil {
				continue
			}
			holdsN++
			if b.abandon {
				abandoned++
			}
			if b.orderErr != nil {
				// Only a hold that outlived its TTL before CreateOrder may be refused.
				if !errors.Is(b.orderErr, stock.ErrHoldExpired) {
					t.Errorf("CreateOrder: %v", b.orderErr)
				} else {
					t.Logf("CreateOrder refused: %v", b.orderErr)
				}
			}
			if b.order == nil {
				continue
			}
			ordersN++
			for _, ev := range b.events {
				keys[ev.key] = ev
				for _, dl := range ev.deliveries {
					deliveriesN++
					if dl.err != nil {
						t.Errorf("ApplyPayment(%s %s): %v", ev.key, ev.status, dl.err)
					}
				}
			}
		}

		// One stored event per distinct key, with the content that was sent.
		all, err := e.db.Ent.PaymentEvent.Query().Order(ent.Asc(paymentevent.FieldID)).All(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]*ent.PaymentEvent{}
		byOrder := map[uuid.UUID][]*ent.PaymentEvent{}
		for _, ev := range all {
			if stored[ev.IdempotencyKey] != nil {
				t.Errorf("key %s stored twice", ev.IdempotencyKey)
			}
			stored[ev.IdempotencyKey] = ev
			byOrder[ev.OrderID] = append(byOrder[ev.OrderID], ev)
		}
		if len(all) != len(keys) {
			t.Errorf("%d payment_events rows for %d distinct keys", len(all), len(keys))
		}

		statuses := map[order.Status]int{}
		outcomes := map[paymentevent.Outcome]int{}
		plans := map[payPlan]int{}
		var lateOnCancelled, lateRefund, duplicates, paidQty int
		for _, b := range bs {
			if b.order == nil {
				if b.hold != nil {
					// Abandoned, or refused as expired: the sweeper took it back.
					e.wantHoldStatus(b.hold.ID, hold.StatusEXPIRED)
				}
				continue
			}
			plans[b.plan]++
			o := e.getOrder(b.order.ID)
			statuses[o.Status]++
			if o.Status == order.StatusPAID {
				paidQty += o.Qty
			}

			// Each delivery: exactly one applied it, the others were duplicates
			// that report the stored outcome and a status the order really had.
			for _, ev := range b.events {
				st := stored[ev.key]
				if st == nil {
					t.Errorf("key %s (%s for order %s) was not stored", ev.key, ev.status, o.ID)
					continue
				}
				if st.OrderID != o.ID || string(st.Status) != ev.status {
					t.Errorf("key %s stored as %s for order %s; sent %s for %s", ev.key, st.Status, st.OrderID, ev.status, o.ID)
				}
				outcomes[st.Outcome]++
				firsts := 0
				for _, dl := range ev.deliveries {
					if dl.err != nil {
						continue
					}
					if dl.res.OrderID != o.ID || dl.res.Outcome != st.Outcome {
						t.Errorf("delivery of %s: order %s outcome %s; stored order %s outcome %s",
							ev.key, dl.res.OrderID, dl.res.Outcome, o.ID, st.Outcome)
					}
					if !dl.res.Duplicate {
						firsts++
						if string(dl.res.OrderStatus) != st.OrderStatusAfter {
							t.Errorf("applying delivery of %s reported %s; stored %s", ev.key, dl.res.OrderStatus, st.OrderStatusAfter)
						}
						continue
					}
					duplicates++
					// The status may have moved on since the event was applied,
					// but only to the order's final status.
					if s := string(dl.res.OrderStatus); s != st.OrderStatusAfter && dl.res.OrderStatus != o.Status {
						t.Errorf("duplicate of %s reported %s; the event left %s and the order ended %s",
							ev.key, s, st.OrderStatusAfter, o.Status)
					}
				}
				if firsts != 1 {
					t.Errorf("key %s: %d deliveries applied it, want exactly 1 (the rest duplicates)", ev.key, firsts)
				}
			}

			// Replay the stored events through the contract's table.
			cur := order.StatusPENDING_PAYMENT
			paidFromPending, hadSuccess, onlyFailures := false, false, len(byOrder[o.ID]) > 0
			for _, ev := range decisionOrder(byOrder[o.ID]) {
				before := order.Status(ev.OrderStatusBefore)
				if before != cur {
					// The only change no event records: the sweeper's timeout.
					if cur == order.StatusPENDING_PAYMENT && before == order.StatusCANCELLED {
						cur = order.StatusCANCELLED
					} else {
						t.Errorf("order %s: event %s found it %s, but it was %s", o.ID, ev.IdempotencyKey, before, cur)
						cur = before
					}
				}
				after := order.Status(ev.OrderStatusAfter)
				if !allowedTransition(cur, string(ev.Status), after, ev.Outcome) {
					t.Errorf("order %s: %s on %s gave %s (%s), which the contract does not allow",
						o.ID, ev.Status, cur, after, ev.Outcome)
				}
				if ev.Status == paymentevent.StatusSuccess {
					hadSuccess = true
					onlyFailures = false
					if cur == order.StatusCANCELLED {
						lateOnCancelled++
						if after == order.StatusREFUND_REQUIRED {
							lateRefund++
						}
					}
				}
				if cur == order.StatusPENDING_PAYMENT && after == order.StatusPAID {
					paidFromPending = true
				}
				cur = after
			}
			if cur == order.StatusPENDING_PAYMENT {
				cur = order.StatusCANCELLED // timed out, and swept at the end at the latest
			}
			if o.Status != cur {
				t.Errorf("order %s (%s) is %s; its events lead to %s", o.ID, b.plan, o.Status, cur)
			}
			switch {
			case hadSuccess && o.Status != order.StatusPAID && o.Status != order.StatusREFUND_REQUIRED:
				t.Errorf("order %s (%s) got a success but is %s", o.ID, b.plan, o.Status)
			case !hadSuccess && o.Status != order.StatusCANCELLED:
				t.Errorf("order %s (%s) got no success (only failures: %v) but is %s", o.ID, b.plan, onlyFailures, o.Status)
			}
			wantHold := hold.StatusRELEASED
			if o.Status == order.StatusPAID && paidFromPending {
				wantHold = hold.StatusREDEEMED
			}
			e.wantHoldStatus(o.HoldID, wantHold)
		}

		t.Logf("%v: %d buyers, %d holds (%d abandoned), %d refusals, %d orders, %d distinct events, %d deliveries (%d duplicates)",
			elapsed.Round(time.Millisecond), buyers, holdsN, abandoned, refusals, ordersN, len(keys), deliveriesN, duplicates)
		t.Logf("plans %v; final statuses %v; outcomes %v", plans, statuses, outcomes)
		t.Logf("late successes on CANCELLED orders: %d (%d REFUND_REQUIRED); sweeper: %d sweeps released %+v, final sweep %+v",
			lateOnCancelled, lateRefund, sweeps, swept, final)

		if ordersN < int(numPlans) {
			t.Errorf("only %d orders were made; the test needs at least %d to use every plan", ordersN, numPlans)
		}
		// Late successes arrive 1.4 s or more after the order, with a 1 s
		// timeout and a sweep every 20 ms: at least one must find its order CANCELLED.
		if lateOnCancelled == 0 {
			t.Errorf("no success arrived after its order was cancelled; the test did not exercise late payments")
		}
		if paidQty > initial {
			t.Errorf("PAID orders sold %d units of %d", paidQty, initial)
		}
		e.wantStock(p.ID, initial-paidQty, 0)
		if n := e.countHolds(hold.StatusACTIVE); n != 0 {
			t.Errorf("%d holds still ACTIVE after the final sweep", n)
		}
		e.audit()
	})
}

// planEvents returns the events the provider sends for an order, each to be
// delivered 2 or 3 times with its own delay.
func planEvents(buyer int, plan payPlan) []*payEvent {
	const soon, later, late = 0, 100 * time.Millisecond, 1400 * time.Millisecond
	type spec struct {
		status string
		base   time.Duration
	}
	var specs []spec
	switch plan {
	case planSuccess:
		specs = []spec{{stock.PaymentSuccess, soon}}
	case planFailure:
		specs = []spec{{stock.PaymentFailure, soon}}
	case planFailThenSuccess:
		specs = []spec{{stock.PaymentFailure, soon}, {stock.PaymentSuccess, later}}
	case planSuccessThenFail:
		specs = []spec{{stock.PaymentSuccess, soon}, {stock.PaymentFailure, later}}
	case planLateSuccess:
		specs = []spec{{stock.PaymentSuccess, late}}
	case planLateSuccessAndFail:
		specs = []spec{{stock.PaymentSuccess, late}, {stock.PaymentFailure, late}}
	}
	var evs []*payEvent
	for i, s := range specs {
		ev := &payEvent{key: fmt.Sprintf("evt_%03d_%d_%s", buyer, i, s.status), status: s.status}
		for range 2 + rand.N(2) {
			delay := s.base + rand.N(150*time.Millisecond)
			if rand.N(4) == 0 {
				delay += 100*time.Millisecond + rand.N(300*time.Millisecond) // a slow redelivery
			}
			ev.deliveries = append(ev.deliveries, &delivery{delay: delay})
		}
		evs = append(evs, ev)
	}
	// Shuffle which event's deliveries are launched first.
	rand.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	return evs
}

// allowedTransition reports whether the contract's table lets a payment
// event with this status take an order from `from` to `to` with this outcome.
func allowedTransition(from order.Status, status string, to order.Status, outcome paymentevent.Outcome) bool {
	type result struct {
		to      order.Status
		outcome paymentevent.Outcome
	}
	var allowed []result
	switch {
	case from == order.StatusPENDING_PAYMENT && status == stock.PaymentSuccess:
		allowed = []result{{order.StatusPAID, paymentevent.OutcomeAPPLIED}}
	case from == order.StatusPENDING_PAYMENT && status == stock.PaymentFailure:
		allowed = []result{{order.StatusCANCELLED, paymentevent.OutcomeAPPLIED}}
	case from == order.StatusCANCELLED && status == stock.PaymentSuccess:
		allowed = []result{{order.StatusPAID, paymentevent.OutcomeAPPLIED}, {order.StatusREFUND_REQUIRED, paymentevent.OutcomeREFUND_REQUIRED}}
	default: // failure on CANCELLED, anything on PAID or REFUND_REQUIRED
		allowed = []result{{from, paymentevent.OutcomeIGNORED}}
	}
	return slices.Contains(allowed, result{to, outcome})
}

// decisionOrder puts one order's events, stored in ID order, in the order
// they were decided. Events of one batch share created_at and are stored
// in key order (the package's lock order), not in the order the batch
// decided them: within such a run, each next event is the one that found
// the order as the previous one left it.
func decisionOrder(evs []*ent.PaymentEvent) []*ent.PaymentEvent {
	out := make([]*ent.PaymentEvent, 0, len(evs))
	cur := string(order.StatusPENDING_PAYMENT)
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].CreatedAt.Equal(evs[i].CreatedAt) {
			j++
		}
		run := slices.Clone(evs[i:j])
		for len(run) > 0 {
			k := nextDecided(run, cur)
			if k < 0 && cur == string(order.StatusPENDING_PAYMENT) {
				// The one change no event records: the sweeper's timeout.
				cur = string(order.StatusCANCELLED)
				k = nextDecided(run, cur)
			}
			if k < 0 {
				k = 0 // a bug the replay reports
			}
			out = append(out, run[k])
			cur = run[k].OrderStatusAfter
			run = slices.Delete(run, k, k+1)
		}
		i = j
	}
	return out
}

// nextDecided is the event of run decided next when the order is cur: one
// that found it so, a no-op first (a late failure left a CANCELLED order
// CANCELLED before a late success in its batch made it PAID; the table
// never moves an order back, so a no-op that found cur came before any
// change away from it). IDs do not tell: a batch inserts its rows in key
// order. -1: none.
func nextDecided(run []*ent.PaymentEvent, cur string) int {
	found := func(noop bool) func(*ent.PaymentEvent) bool {
		return func(ev *ent.PaymentEvent) bool {
			return ev.OrderStatusBefore == cur && (ev.OrderStatusAfter == cur) == noop
		}
	}
	if k := slices.IndexFunc(run, found(true)); k >= 0 {
		return k
	}
	return slices.IndexFunc(run, found(false))
}
