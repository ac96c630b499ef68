package stock_test

// Checkout tests at a deadline (see checkout_test.go): payments racing
// their orders' payment timeout, and CreateOrder racing its hold's expiry,
// while sweepers run.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
	"flashsale/stock"
)

// ---------------------------------------------------------------------------
// 2. Payments racing the payment timeout.

// TestCheckoutPaymentsRaceTimeout delivers successes and failures (some
// redelivered, some to another service) within a few tens of milliseconds of
// their orders' payment deadline, while two services sweep in a loop. Every
// order must end where some serial order of its events and its timeout
// leads, no order is cancelled twice, and the stock counts are exact. With
// contested stock, other buyers take the stock that timeouts free, so a late
// success may find none left (REFUND_REQUIRED).
func TestCheckoutPaymentsRaceTimeout(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		cfg := stock.Config{HoldTTL: time.Minute, PaymentTimeout: 500 * time.Millisecond}
		e := newEnv(t, d, cfg)
		for _, tc := range []struct {
			name      string
			contested bool
		}{{"ample stock", false}, {"contested stock", true}} {
			t.Run(tc.name, func(t *testing.T) { coRaceTimeout(e.with(t), cfg, tc.contested) })
		}
	})
}

func coRaceTimeout(e *env, cfg stock.Config, contested bool) {
	t := e.t
	const n = 36
	qtys := make([]int, n)
	total := 0
	for i := range qtys {
		qtys[i] = 1 + rand.N(3)
		total += qtys[i]
	}
	initial := 1000
	mode := coAmple
	if contested {
		initial, mode = total, coUnknown
	}
	p := e.newProduct(initial)
	servers := []*stock.Service{e.service(cfg), e.service(cfg)}

	// Made at once, so they fall due together.
	orders := make([]*ent.Order, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			svc := servers[i%2]
			h, err := svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: qtys[i]})
			if err != nil {
				t.Errorf("CreateHold: %v", err)
				return
			}
			if orders[i], err = svc.CreateOrder(e.ctx, h.ID, stock.Anonymous); err != nil {
				t.Errorf("CreateOrder: %v", err)
			}
		})
	}
	coWait(t, &wg, "orders")
	if t.Failed() {
		t.FailNow()
	}
	offset := coClockOffset(e)
	orderSnap := map[uuid.UUID]coOrder{}
	plans := []string{"success x2", "failure x2", "success+failure", "none", "success, redelivered late", "failure+success"}
	var calls []*coCall
	lastDue, firstDue := time.Time{}, orders[0].PaymentDueAt
	for i, o := range orders {
		plan := plans[i%len(plans)]
		orderSnap[o.ID] = coOrder{label: fmt.Sprintf("o%02d(%s)", i, plan), product: p.ID, holdID: o.HoldID, qty: o.Qty,
			status: order.StatusPENDING_PAYMENT, holdSt: hold.StatusREDEEMED}
		lastDue = latest(lastDue, o.PaymentDueAt)
		if o.PaymentDueAt.Before(firstDue) {
			firstDue = o.PaymentDueAt
		}
		due := o.PaymentDueAt.Add(-offset)
		send := func(key, status string, server int, extra time.Duration) {
			at := due.Add(time.Duration(rand.N(120)-60)*time.Millisecond + extra)
			calls = append(calls, &coCall{pay: stock.Payment{Key: fmt.Sprintf("p%d-t%02d-%s", p.ID, i, key), OrderID: o.ID, Status: status},
				svc: servers[server], via: fmt.Sprintf("server%d", server), at: at})
		}
		switch i % len(plans) {
		case 0:
			send("s", coS, 0, 0)
			send("s", coS, 1, 0)
		case 1:
			send("f", coF, 0, 0)
			send("f", coF, 1, 0)
		case 2:
			send("s", coS, 0, 0)
			send("f", coF, 1, 0)
		case 3:
		case 4:
			send("s", coS, i%2, 0)
			send("s", coS, (i+1)%2, 150*time.Millisecond)
		case 5:
			send("f", coF, i%2, 0)
			send("s", coS, (i+1)%2, 0)
		}
	}
	keys := coStoredKeys(e)

	stop := make(chan struct{})
	sweepTotal := coSweepers(e, servers, stop)
	// Other buyers, when the stock is contested, from just before the first
	// deadline: they take whatever failures and timeouts free.
	var (
		buyersWG  sync.WaitGroup
		boughtQty atomic.Int64
		bought    atomic.Int64
	)
	if contested {
		for i := range 2 {
			buyersWG.Go(func() {
				time.Sleep(time.Until(firstDue.Add(-offset - 100*time.Millisecond)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := servers[i].CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
					switch {
					case err == nil:
						bought.Add(1)
						boughtQty.Add(1)
					case errors.Is(err, stock.ErrInsufficientStock):
						time.Sleep(2 * time.Millisecond)
					default:
						t.Errorf("competing CreateHold: %v", err)
						return
					}
				}
			})
		}
	}
	coFire(e, calls)
	close(stop)
	swept := sweepTotal()
	coWait(t, &buyersWG, "competing buyers")
	e.waitPast(lastDue)
	final := e.sweep(e.svc)
	swept.HoldsExpired += final.HoldsExpired
	swept.OrdersCancelled += final.OrdersCancelled

	v := (&coCheck{e: e, mode: mode, orders: orderSnap, keys: keys, calls: calls, timeouts: true}).verify()

	if swept.HoldsExpired != 0 {
		t.Errorf("sweeps expired %d holds; every hold here was redeemed or outlives the test", swept.HoldsExpired)
	}
	// The sweeper is not the only one that may time an order out (a
	// transaction that finds it overdue may too), but none may do it twice.
	if swept.OrdersCancelled > v.timedOut {
		t.Errorf("sweeps cancelled %d orders, but only %d timed out in any serial order of the events", swept.OrdersCancelled, v.timedOut)
	}
	paid, pending := 0, 0
	var late, lateRefund int
	for id := range orderSnap {
		o := e.getOrder(id)
		switch o.Status {
		case order.StatusPAID:
			paid += o.Qty
		case order.StatusPENDING_PAYMENT:
			pending++
		}
	}
	for _, c := range calls {
		if c.err == nil && !c.res.Duplicate && c.pay.Status == coS {
			if ev := e.eventsOfKey(c.pay.Key); len(ev) == 1 && ev[0].OrderStatusBefore == string(order.StatusCANCELLED) {
				late++
				if ev[0].Outcome == paymentevent.OutcomeREFUND_REQUIRED {
					lateRefund++
				}
			}
		}
	}
	if pending != 0 {
		t.Errorf("%d orders still PENDING_PAYMENT after the final sweep", pending)
	}
	if paid+int(boughtQty.Load()) > initial {
		t.Errorf("sold %d units in paid orders and %d in new holds, of %d", paid, boughtQty.Load(), initial)
	}
	e.wantStock(p.ID, initial-paid, int(boughtQty.Load()))
	if got, err := e.db.Ent.Hold.Query().Where(hold.ProductID(p.ID), hold.StatusEQ(hold.StatusACTIVE)).Count(e.ctx); err != nil || got != int(bought.Load()) {
		t.Errorf("%d ACTIVE holds (err %v), want the %d competing buyers took", got, err, bought.Load())
	}
	t.Logf("%d orders, %d calls around the deadline: %s; %d timed out (sweepers cancelled %d); %d late successes (%d REFUND_REQUIRED); %d units paid, %d taken by competing holds",
		n, len(calls), coOutcomes(calls), v.timedOut, swept.OrdersCancelled, late, lateRefund, paid, boughtQty.Load())
	e.audit()
}

// ---------------------------------------------------------------------------
// 3. Orders racing expiry.

type coOrderCall struct {
	svc        *stock.Service
	via        string
	at         time.Duration // relative to the hold's expires_at
	start, end time.Time     // this process's clock
	o          *ent.Order
	err        error
}

// TestCheckoutOrdersRaceExpiry calls CreateOrder within a few tens of
// milliseconds of each hold's expires_at, some holds several times at once
// from two services, while two services sweep in a loop and other buyers'
// CreateHold batches (on a product with no sellable stock, so they release
// lapsed holds themselves) run. Each hold must end REDEEMED with exactly one
// order, the one CreateOrder returned, made before it expired (and every
// other call on it ErrHoldNotActive), or EXPIRED with no order and every
// call ErrHoldExpired.
func TestCheckoutOrdersRaceExpiry(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		cfg := stock.Config{HoldTTL: 500 * time.Millisecond, PaymentTimeout: time.Minute}
		e := newEnv(t, d, cfg)
		t.Run("at the deadline", func(t *testing.T) { coOrdersAtDeadline(e.with(t), cfg) })
		t.Run("duplicate calls", func(t *testing.T) { coDuplicateOrders(e.with(t)) })
	})
}

func coOrdersAtDeadline(e *env, cfg stock.Config) {
	t := e.t
	sqlite := e.db.Dialect == dialect.SQLite
	// Calls land from early before to 40 ms after expiry. SQLite commits
	// one transaction at a time (and slowly under -race), so there fewer
	// calls spread wider keep them from queueing past the deadline.
	n, early := 40, 80*time.Millisecond
	if sqlite {
		n, early = 24, 250*time.Millisecond
	}
	long := stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute}
	qtys := make([]int, n)
	initial := 0
	for i := range qtys {
		qtys[i] = 1 + rand.N(2)
		initial += qtys[i]
	}
	// Exactly the holds' stock: sellable is 0 until they lapse.
	p := e.newProduct(initial)
	servers := []*stock.Service{e.service(cfg), e.service(cfg)}
	// The embedded SQLite database serves one process: one Service, whose
	// write transactions queue in the process rather than in SQLite's busy
	// handler (which would make every call miss its instant).
	if sqlite {
		servers[1] = servers[0]
	}

	// In four waves, so the holds expire at a few different instants.
	holds := make([]*ent.Hold, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			time.Sleep(time.Duration(i%4) * 25 * time.Millisecond)
			h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: qtys[i]})
			if err != nil {
				t.Errorf("CreateHold: %v", err)
				return
			}
			holds[i] = h
		})
	}
	coWait(t, &wg, "holds")
	if t.Failed() {
		t.FailNow()
	}
	offset := coClockOffset(e)
	calls := make([][]*coOrderCall, n)
	firstExp, lastExp := holds[0].ExpiresAt, time.Time{}
	for i, h := range holds {
		if h.ExpiresAt.Before(firstExp) {
			firstExp = h.ExpiresAt
		}
		lastExp = latest(lastExp, h.ExpiresAt)
		k := 1
		if i%3 == 0 {
			k = 2 + i%2
		}
		for range k {
			s := rand.N(2)
			calls[i] = append(calls[i], &coOrderCall{svc: servers[s], via: fmt.Sprintf("server%d", s), at: rand.N(early+40*time.Millisecond) - early})
		}
	}

	stop := make(chan struct{})
	sweepTotal := coSweepers(e, servers, stop)
	// Other buyers: each round a fresh service (no sold-out memory), whose
	// batch finds sellable 0 and releases the lapsed holds itself (on
	// SQLite, the one service, whose memory sweeps that free stock clear).
	var (
		buyersWG sync.WaitGroup
		boughtMu sync.Mutex
		bought   []*ent.Hold
	)
	buyersWG.Go(func() {
		time.Sleep(time.Until(firstExp.Add(-offset - 60*time.Millisecond)))
		for {
			select {
			case <-stop:
				return
			default:
			}
			svc := servers[0]
			if !sqlite {
				svc = e.service(long)
			}
			var round sync.WaitGroup
			for range 3 {
				round.Go(func() {
					h, err := svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
					switch {
					case err == nil:
						boughtMu.Lock()
						bought = append(bought, h)
						boughtMu.Unlock()
					case !errors.Is(err, stock.ErrInsufficientStock):
						t.Errorf("competing CreateHold: %v", err)
					}
				})
			}
			round.Wait()
			time.Sleep(3 * time.Millisecond)
		}
	})

	var callsWG sync.WaitGroup
	for i, h := range holds {
		exp := h.ExpiresAt.Add(-offset)
		for _, c := range calls[i] {
			callsWG.Go(func() {
				time.Sleep(time.Until(exp.Add(c.at)))
				c.start = time.Now()
				c.o, c.err = c.svc.CreateOrder(e.ctx, h.ID, stock.Anonymous)
				c.end = time.Now()
			})
		}
	}
	coWait(t, &callsWG, "CreateOrder calls")
	close(stop)
	swept := sweepTotal()
	coWait(t, &buyersWG, "competing buyers")
	e.waitPast(lastExp)
	final := e.sweep(e.svc)
	swept.HoldsExpired += final.HoldsExpired
	swept.OrdersCancelled += final.OrdersCancelled

	var redeemed, expired, redeemedQty, expiredQty, before, after int
	var took []time.Duration
	for _, cs := range calls {
		for _, c := range cs {
			took = append(took, c.end.Sub(c.start))
		}
	}
	slices.Sort(took)
	t.Logf("CreateOrder took %v (median), %v (max)", took[len(took)/2], took[len(took)-1])
	for i, h := range holds {
		got := e.getHold(h.ID)
		os, err := e.db.Ent.Order.Query().Where(order.HoldID(h.ID)).All(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var wins []*coOrderCall
		for _, c := range calls[i] {
			if c.at < 0 {
				before++
			} else {
				after++
			}
			if c.err == nil {
				wins = append(wins, c)
			}
		}
		describe := func() string {
			var b strings.Builder
			fmt.Fprintf(&b, "hold %d (%s) qty %d expires %s: now %s, %d orders", i, h.ID, h.Qty, h.ExpiresAt.Format(time.RFC3339Nano), got.Status, len(os))
			for _, o := range os {
				fmt.Fprintf(&b, "\n    order %s created %s status %s", o.ID, o.CreatedAt.Format(time.RFC3339Nano), o.Status)
			}
			for _, c := range calls[i] {
				fmt.Fprintf(&b, "\n    CreateOrder via %s, scheduled at expiry%+v, ran from expiry%+v to expiry%+v: ", c.via, c.at,
					c.start.Add(offset).Sub(h.ExpiresAt).Round(time.Microsecond), c.end.Add(offset).Sub(h.ExpiresAt).Round(time.Microsecond))
				if c.err != nil {
					fmt.Fprintf(&b, "%v", c.err)
				} else {
					fmt.Fprintf(&b, "order %s created %s", c.o.ID, c.o.CreatedAt.Format(time.RFC3339Nano))
				}
			}
			return b.String()
		}
		ok := true
		switch got.Status {
		case hold.StatusREDEEMED:
			redeemed++
			redeemedQty += h.Qty
			if len(wins) != 1 || len(os) != 1 || wins[0].o.ID != os[0].ID {
				ok = false
				break
			}
			o := os[0]
			if o.HoldID != h.ID || o.ProductID != p.ID || o.Qty != h.Qty || o.Status != order.StatusPENDING_PAYMENT {
				ok = false
			}
			for _, c := range calls[i] {
				if c.err != nil && !errors.Is(c.err, stock.ErrHoldNotActive) {
					ok = false
				}
			}
		case hold.StatusEXPIRED:
			expired++
			expiredQty += h.Qty
			if len(wins) != 0 || len(os) != 0 {
				ok = false
			}
			for _, c := range calls[i] {
				if !errors.Is(c.err, stock.ErrHoldExpired) {
					ok = false
				}
			}
		default:
			ok = false
		}
		// Whatever the batching, a call decides between its start and its
		// end: one that began after expires_at cannot make an order, one that
		// ended before it cannot find the hold expired. (The margin covers
		// reading the database clock through this process's.)
		const margin = 10 * time.Millisecond
		for _, c := range calls[i] {
			if c.err == nil && c.start.Add(offset).After(h.ExpiresAt.Add(margin)) {
				ok = false
			}
			if errors.Is(c.err, stock.ErrHoldExpired) && c.end.Add(offset).Before(h.ExpiresAt.Add(-margin)) {
				ok = false
			}
		}
		if !ok {
			t.Errorf("want REDEEMED with one order made before expiry that one call returned (the others ErrHoldNotActive), or EXPIRED with no order (every call ErrHoldExpired):\n  %s", describe())
		}
	}
	boughtQty := 0
	for _, h := range bought {
		boughtQty += h.Qty
		if got := e.getHold(h.ID); got.Status != hold.StatusACTIVE {
			t.Errorf("competing hold %s is %s, want ACTIVE", h.ID, got.Status)
		}
	}
	if swept.HoldsExpired > expired {
		t.Errorf("sweeps expired %d holds, but only %d expired", swept.HoldsExpired, expired)
	}
	if swept.OrdersCancelled != 0 {
		t.Errorf("sweeps cancelled %d orders, want none (payment timeout 1 min)", swept.OrdersCancelled)
	}
	if n := e.countOrders(); n != redeemed {
		t.Errorf("%d orders exist, want %d (one per redeemed hold)", n, redeemed)
	}
	if boughtQty > expiredQty {
		t.Errorf("competing buyers got %d units, but expired holds freed only %d", boughtQty, expiredQty)
	}
	e.wantStock(p.ID, initial, redeemedQty+boughtQty)
	t.Logf("%d holds: %d redeemed, %d expired; CreateOrder calls %d before and %d after expiry; competing buyers took %d units; sweepers expired %d",
		n, redeemed, expired, before, after, boughtQty, swept.HoldsExpired)
	e.audit()
}

// coDuplicateOrders: concurrent CreateOrder calls on one live hold, from two
// services, make exactly one order; every other call is ErrHoldNotActive.
func coDuplicateOrders(e *env) {
	t := e.t
	const holdsN, callsPer = 12, 6
	long := stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute}
	svcs := []*stock.Service{e.service(long), e.service(long)}
	p := e.newProduct(100)
	holds := make([]*ent.Hold, holdsN)
	qty := 0
	for i := range holds {
		holds[i] = e.hold(svcs[0], p.ID, 1+i%3)
		qty += holds[i].Qty
	}
	type result struct {
		via int
		o   *ent.Order
		err error
	}
	results := make([][]result, holdsN)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, h := range holds {
		results[i] = make([]result, callsPer)
		for j := range callsPer {
			wg.Go(func() {
				<-start
				o, err := svcs[j%2].CreateOrder(e.ctx, h.ID, stock.Anonymous)
				results[i][j] = result{j % 2, o, err}
			})
		}
	}
	close(start)
	coWait(t, &wg, "CreateOrder calls")
	for i, h := range holds {
		var wins []*ent.Order
		bad := false
		for _, r := range results[i] {
			switch {
			case r.err == nil:
				wins = append(wins, r.o)
			case !errors.Is(r.err, stock.ErrHoldNotActive):
				bad = true
			}
		}
		os, err := e.db.Ent.Order.Query().Where(order.HoldID(h.ID)).All(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if bad || len(wins) != 1 || len(os) != 1 || os[0].ID != wins[0].ID || os[0].Qty != h.Qty {
			var b strings.Builder
			for _, r := range results[i] {
				if r.err != nil {
					fmt.Fprintf(&b, "\n    via service %d: %v", r.via, r.err)
				} else {
					fmt.Fprintf(&b, "\n    via service %d: order %s", r.via, r.o.ID)
				}
			}
			t.Errorf("hold %s: %d calls returned an order, %d orders exist; want exactly one, the others ErrHoldNotActive:%s", h.ID, len(wins), len(os), b.String())
		}
		e.wantHoldStatus(h.ID, hold.StatusREDEEMED)
	}
	if n, err := e.db.Ent.Order.Query().Where(order.ProductID(p.ID)).Count(e.ctx); err != nil || n != holdsN {
		t.Errorf("%d orders (err %v), want %d", n, err, holdsN)
	}
	e.wantStock(p.ID, 100, qty)
	e.audit()
}
