package stock_test

// Tests of the checkout path (createOrder, payment events, the payment
// timeout) under real concurrency. They use only the public API, so they
// hold whatever the implementation batches or locks.
//
// The payment tests check results against a reference model of the
// contract: the observed answers and the final state must be exactly what
// SOME serial order of the same events gives (see coCheck).
//
// The checkout tests are split across these files:
//
//   checkout_checker_test.go   the serial-order checker (coModel, coSearch, coCheck)
//   checkout_harness_test.go   firing calls, sweepers, snapshots, the clock offset
//   checkout_test.go           mixed payment batches; two server processes
//   checkout_deadline_test.go  payments racing the payment timeout; orders racing expiry

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
	"flashsale/stock"
)

// ---------------------------------------------------------------------------
// 1. Mixed payment batches.

// coSend is a key sent times times, all at once with the rest of the storm.
type coSend struct {
	key    string
	order  int // index into the case's orders; -1: an order that does not exist
	status string
	times  int
}

// coPre is what happens to an order before the storm.
type coPre struct {
	order   int
	key     string // a payment applied before the storm
	status  string
	timeout bool // instead: the order is made with a tiny payment timeout and swept
}

var coMixedCases = []struct {
	name   string
	orders []int // the product (0 or 1) of each order
	pre    []coPre
	sends  []coSend
}{
	{name: "one success redelivered", orders: []int{0},
		sends: []coSend{{"s", 0, coS, 5}}},
	{name: "one failure redelivered", orders: []int{0},
		sends: []coSend{{"f", 0, coF, 4}}},
	{name: "success and failure, two keys", orders: []int{0},
		sends: []coSend{{"s", 0, coS, 2}, {"f", 0, coF, 2}}},
	{name: "one key, two statuses", orders: []int{0},
		sends: []coSend{{"k", 0, coS, 3}, {"k", 0, coF, 3}}},
	{name: "one key, two orders", orders: []int{0, 0},
		sends: []coSend{{"k", 0, coS, 2}, {"k", 1, coS, 2}, {"k", 1, coF, 1}, {"f", 1, coF, 2}}},
	{name: "one key, two products", orders: []int{0, 1},
		sends: []coSend{{"k", 0, coS, 2}, {"k", 1, coF, 2}, {"s", 1, coS, 1}}},
	{name: "late success after timeout", orders: []int{0},
		pre:   []coPre{{order: 0, timeout: true}},
		sends: []coSend{{"s", 0, coS, 3}, {"f", 0, coF, 1}}},
	{name: "late success after failure", orders: []int{0},
		pre:   []coPre{{order: 0, key: "f0", status: coF}},
		sends: []coSend{{"s", 0, coS, 2}, {"f0", 0, coF, 2}, {"f0", 0, coS, 1}}},
	{name: "failure after PAID", orders: []int{0},
		pre:   []coPre{{order: 0, key: "s0", status: coS}},
		sends: []coSend{{"f", 0, coF, 3}, {"s0", 0, coS, 1}, {"s0", 0, coF, 1}, {"s1", 0, coS, 1}}},
	{name: "failures and successes after timeout", orders: []int{0},
		pre:   []coPre{{order: 0, timeout: true}},
		sends: []coSend{{"f", 0, coF, 2}, {"s", 0, coS, 2}, {"s", 0, coF, 1}}},
	{name: "everything at once", orders: []int{0},
		sends: []coSend{{"s", 0, coS, 2}, {"f", 0, coF, 2}, {"k", 0, coS, 1}, {"k", 0, coF, 1}, {"s", 0, coF, 1}}},
	{name: "stored key reused by another order", orders: []int{0, 0},
		pre:   []coPre{{order: 0, key: "s0", status: coS}},
		sends: []coSend{{"s0", 1, coS, 2}, {"s0", 0, coS, 1}, {"s", 1, coS, 1}}},
	{name: "no such order", orders: []int{},
		sends: []coSend{{"n", -1, coS, 2}, {"m", -1, coF, 1}}},
}

// coScarceCases run on products whose stock is short: every change to the
// product is in the model, so a late success is decided by sellable stock.
var coScarceCases = []struct {
	name   string
	stock  int
	orders []struct {
		qty    int
		failed bool // cancelled by a failure before the storm; else PENDING_PAYMENT
	}
	lapsed []int // holds that lapse, unswept, before the storm
	active []int // holds that stay ACTIVE
	sends  []coSend
}{
	{name: "late successes compete for freed stock", stock: 6,
		orders: []struct {
			qty    int
			failed bool
		}{{2, true}, {2, true}, {2, true}, {3, false}},
		sends: []coSend{{"a", 0, coS, 2}, {"b", 1, coS, 2}, {"c", 2, coS, 2}, {"d", 3, coS, 1}, {"e", 3, coF, 1}}},
	{name: "a lapsed hold makes room", stock: 6,
		orders: []struct {
			qty    int
			failed bool
		}{{2, true}, {2, true}, {2, true}},
		lapsed: []int{2}, active: []int{2},
		sends: []coSend{{"a", 0, coS, 2}, {"b", 1, coS, 2}, {"c", 2, coS, 1}}},
	{name: "a pending order's failure and success race a late success", stock: 3,
		orders: []struct {
			qty    int
			failed bool
		}{{3, true}, {3, false}},
		sends: []coSend{{"f", 1, coF, 2}, {"a", 0, coS, 2}, {"s", 1, coS, 1}}},
}

// TestCheckoutMixedPaymentBatches fires, all at once on one product (so a
// group-committing implementation puts them in the same batches), a mix of
// redelivered keys, keys reused with other content, other orders or other
// products, successes and failures of one order, late successes after a
// failure or a timeout, failures after PAID, and unknown orders. The
// answers, the stored events and the final state must be exactly what some
// serial order of the same events gives under the contract.
func TestCheckoutMixedPaymentBatches(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute})
		t.Run("ample stock", func(t *testing.T) { coMixedAmple(e.with(t)) })
		t.Run("scarce stock", func(t *testing.T) { coMixedScarce(e.with(t)) })
	})
}

func coMixedAmple(e *env) {
	t := e.t
	const instances = 3
	short := e.service(stock.Config{HoldTTL: time.Minute, PaymentTimeout: 300 * time.Millisecond})
	second := e.service(stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute})
	pids := []int{e.newProduct(1000).ID, e.newProduct(1000).ID}

	labels := map[uuid.UUID]string{}
	var (
		calls    []*coCall
		timeouts []*ent.Order
		pres     []func()
	)
	n := 0
	for ci, c := range coMixedCases {
		for inst := range instances {
			prefix := fmt.Sprintf("c%02di%d-", ci, inst)
			ids := make([]uuid.UUID, len(c.orders))
			for oi, prod := range c.orders {
				svc := e.svc
				timeout := slices.ContainsFunc(c.pre, func(p coPre) bool { return p.order == oi && p.timeout })
				if timeout {
					svc = short
				}
				o := e.order(svc, e.hold(svc, pids[prod], 1+rand.N(3)).ID)
				ids[oi] = o.ID
				labels[o.ID] = fmt.Sprintf("%q#%d/o%d", c.name, inst, oi)
				if timeout {
					timeouts = append(timeouts, o)
				}
			}
			for _, p := range c.pre {
				if !p.timeout {
					pres = append(pres, func() { e.pay(e.svc, prefix+p.key, ids[p.order], p.status) })
				}
			}
			missing := uuid.New()
			for _, s := range c.sends {
				oid := missing
				if s.order >= 0 {
					oid = ids[s.order]
				}
				for range s.times {
					// Two in three to one service, so they share its batches;
					// the rest race them from another.
					svc, via := e.svc, "svc1"
					if n%3 == 2 {
						svc, via = second, "svc2"
					}
					n++
					calls = append(calls, &coCall{pay: stock.Payment{Key: prefix + s.key, OrderID: oid, Status: s.status}, svc: svc, via: via})
				}
			}
		}
	}
	for _, f := range pres {
		f()
	}
	last := time.Time{}
	for _, o := range timeouts {
		last = latest(last, o.PaymentDueAt)
	}
	e.waitPast(last)
	if r := e.sweep(e.svc); r != (stock.SweepResult{OrdersCancelled: len(timeouts)}) {
		t.Fatalf("setup sweep = %+v, want %d orders cancelled", r, len(timeouts))
	}
	orders, keys := coSnapshot(e, labels)
	before := coStocks(e, pids)
	e.audit()

	rand.Shuffle(len(calls), func(i, j int) { calls[i], calls[j] = calls[j], calls[i] })
	began := time.Now()
	coFire(e, calls)
	t.Logf("%d payment calls on %d orders in %v: %s", len(calls), len(orders), time.Since(began).Round(time.Millisecond), coOutcomes(calls))

	v := (&coCheck{e: e, mode: coAmple, orders: orders, keys: keys, calls: calls}).verify()
	for _, pid := range pids {
		d := v.delta[pid]
		e.wantStock(pid, before[pid].available+d.available, before[pid].reserved+d.reserved)
	}
	if n := e.countEvents(); n != v.keys {
		t.Errorf("%d payment events stored, want %d (one per distinct key applied)", n, v.keys)
	}
	statuses := map[order.Status]int{}
	for _, o := range v.orders {
		statuses[o.status]++
	}
	t.Logf("final statuses %v", statuses)
	e.audit()
}

func coMixedScarce(e *env) {
	t := e.t
	const instances = 2
	lapse := e.service(stock.Config{HoldTTL: 300 * time.Millisecond, PaymentTimeout: time.Minute})
	labels := map[uuid.UUID]string{}
	lapsed := map[uuid.UUID]coLapsed{}
	var (
		calls       []*coCall
		pids        []int
		lastExpires time.Time
	)
	second := e.service(stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute})
	for ci, c := range coScarceCases {
		for inst := range instances {
			prefix := fmt.Sprintf("x%02di%d-", ci, inst)
			p := e.newProduct(c.stock)
			pids = append(pids, p.ID)
			ids := make([]uuid.UUID, len(c.orders))
			for oi, spec := range c.orders {
				o := e.order(e.svc, e.hold(e.svc, p.ID, spec.qty).ID)
				ids[oi] = o.ID
				labels[o.ID] = fmt.Sprintf("%q#%d/o%d", c.name, inst, oi)
				if spec.failed {
					e.pay(e.svc, prefix+"pre-fail-"+fmt.Sprint(oi), o.ID, coF)
				}
			}
			for li, q := range c.lapsed {
				h := e.hold(lapse, p.ID, q)
				lapsed[h.ID] = coLapsed{label: fmt.Sprintf("%q#%d/lapsed%d", c.name, inst, li), product: p.ID, qty: q}
				lastExpires = latest(lastExpires, h.ExpiresAt)
			}
			for _, q := range c.active {
				e.hold(e.svc, p.ID, q)
			}
			n := 0
			for _, s := range c.sends {
				for range s.times {
					svc, via := e.svc, "svc1"
					if n%3 == 2 {
						svc, via = second, "svc2"
					}
					n++
					calls = append(calls, &coCall{pay: stock.Payment{Key: prefix + s.key, OrderID: ids[s.order], Status: s.status}, svc: svc, via: via})
				}
			}
		}
	}
	if !lastExpires.IsZero() {
		e.waitPast(lastExpires)
	}
	orders, keys := coSnapshot(e, labels)
	before := coStocks(e, pids)
	e.audit()

	rand.Shuffle(len(calls), func(i, j int) { calls[i], calls[j] = calls[j], calls[i] })
	coFire(e, calls)
	t.Logf("%d payment calls on %d scarce products: %s", len(calls), len(pids), coOutcomes(calls))

	v := (&coCheck{e: e, mode: coExact, orders: orders, keys: keys, lapsed: lapsed, stock: before, calls: calls}).verify()
	statuses := map[order.Status]int{}
	for _, o := range v.orders {
		statuses[o.status]++
	}
	t.Logf("final statuses %v", statuses)
	e.audit()
}

// ---------------------------------------------------------------------------
// 4. Two server processes on one product.

// TestCheckoutTwoServers runs whole lifecycles (hold, order, payments with
// redeliveries to both servers, late payments, reused keys, timeouts) from
// two services over two connection pools, as two server processes would, on
// one product with little stock, with a sweeper on each. Afterwards: no
// oversell, every key stored at most once, every order where some serial
// order of its events and its timeout leads, exact stock, a clean audit.
func TestCheckoutTwoServers(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const initial, buyers = 24, 64
		e, db2 := newTwoServerEnv(t, d)
		cfg := stock.Config{HoldTTL: 2 * time.Second, PaymentTimeout: 600 * time.Millisecond}
		servers := []*stock.Service{newService(e.db, cfg), newService(db2, cfg)}
		e.svc = servers[0]
		p := e.newProduct(initial)

		type send struct {
			key, status string
			server      int // 2: either, at random
			late        bool
		}
		type plan struct {
			name  string
			sends []send
		}
		plans := []plan{
			{"success, to both servers", []send{{"s", coS, 0, false}, {"s", coS, 1, false}, {"s", coS, 2, false}}},
			{"failure, to both servers", []send{{"f", coF, 0, false}, {"f", coF, 1, false}}},
			{"success and failure race", []send{{"s", coS, 0, false}, {"f", coF, 1, false}, {"s", coS, 1, false}, {"f", coF, 0, false}}},
			{"never paid", nil},
			{"late success", []send{{"s", coS, 0, true}, {"s", coS, 1, true}}},
			{"failure, then late success", []send{{"f", coF, 2, false}, {"s", coS, 0, true}, {"s", coS, 1, true}}},
			{"one key, two statuses", []send{{"k", coS, 0, false}, {"k", coF, 1, false}}},
			{"success, then late failure", []send{{"s", coS, 0, false}, {"s", coS, 1, false}, {"f", coF, 0, true}, {"f", coF, 1, true}}},
		}

		type buyerState struct {
			hold      *ent.Hold
			holdErrs  []error
			order     *ent.Order
			orderErrs []error
			plan      int
		}
		bs := make([]*buyerState, buyers)
		var (
			mu        sync.Mutex
			calls     []*coCall
			made      atomic.Int64
			buyersWG  sync.WaitGroup
			paymentWG sync.WaitGroup
			start     = make(chan struct{})
		)
		stop := make(chan struct{})
		sweepTotal := coSweepers(e, servers, stop)
		for i := range bs {
			b := &buyerState{}
			bs[i] = b
			buyersWG.Go(func() {
				<-start
				home := servers[i%2]
				for try := range 3 {
					if try > 0 {
						time.Sleep(100*time.Millisecond + rand.N(300*time.Millisecond))
					}
					h, err := home.CreateHold(e.ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1 + rand.N(3)})
					if err == nil {
						b.hold = h
						break
					}
					if !errors.Is(err, stock.ErrInsufficientStock) {
						b.holdErrs = append(b.holdErrs, err)
						return
					}
				}
				if b.hold == nil || i%10 == 9 { // no stock, or abandoned
					return
				}
				if i%4 == 0 {
					// The buyer's retry lands on the other server at once.
					var wg sync.WaitGroup
					os := make([]*ent.Order, 2)
					errs := make([]error, 2)
					for s := range 2 {
						wg.Go(func() { os[s], errs[s] = servers[s].CreateOrder(e.ctx, b.hold.ID, stock.Anonymous) })
					}
					wg.Wait()
					for s := range 2 {
						if errs[s] == nil {
							if b.order != nil {
								b.orderErrs = append(b.orderErrs, fmt.Errorf("both servers made an order: %s and %s", b.order.ID, os[s].ID))
							}
							b.order = os[s]
						} else if !errors.Is(errs[s], stock.ErrHoldNotActive) {
							b.orderErrs = append(b.orderErrs, errs[s])
						}
					}
				} else {
					o, err := servers[(i+1)%2].CreateOrder(e.ctx, b.hold.ID, stock.Anonymous)
					if err != nil {
						b.orderErrs = append(b.orderErrs, err)
					}
					b.order = o
				}
				if b.order == nil {
					return
				}
				b.plan = int((made.Add(1) - 1) % int64(len(plans)))
				for _, s := range plans[b.plan].sends {
					server := s.server
					if server == 2 {
						server = rand.N(2)
					}
					delay := rand.N(100 * time.Millisecond)
					if s.late {
						delay += cfg.PaymentTimeout + 150*time.Millisecond + rand.N(300*time.Millisecond)
					}
					c := &coCall{pay: stock.Payment{Key: fmt.Sprintf("b%02d-%s", i, s.key), OrderID: b.order.ID, Status: s.status},
						svc: servers[server], via: fmt.Sprintf("server%d", server)}
					mu.Lock()
					calls = append(calls, c)
					mu.Unlock()
					paymentWG.Go(func() {
						time.Sleep(delay)
						c.res, c.err = c.svc.ApplyPayment(e.ctx, c.pay)
					})
				}
			})
		}
		began := time.Now()
		close(start)
		coWait(t, &buyersWG, "buyers")
		coWait(t, &paymentWG, "payments")
		close(stop)
		swept := sweepTotal()
		elapsed := time.Since(began)

		last := e.dbNow()
		labels := map[uuid.UUID]string{}
		for i, b := range bs {
			for _, err := range b.holdErrs {
				t.Errorf("buyer %d: CreateHold: %v", i, err)
			}
			for _, err := range b.orderErrs {
				t.Errorf("buyer %d: CreateOrder: %v", i, err)
			}
			if b.hold != nil {
				last = latest(last, b.hold.ExpiresAt)
			}
			if b.order != nil {
				last = latest(last, b.order.PaymentDueAt)
				labels[b.order.ID] = fmt.Sprintf("buyer%02d(%s)", i, plans[b.plan].name)
			}
		}
		e.waitPast(last)
		final := e.sweep(servers[1])
		swept.HoldsExpired += final.HoldsExpired
		swept.OrdersCancelled += final.OrdersCancelled

		// Every order started PENDING_PAYMENT with its hold REDEEMED, and no key was stored.
		orders := map[uuid.UUID]coOrder{}
		for i, b := range bs {
			if b.order != nil {
				orders[b.order.ID] = coOrder{label: labels[b.order.ID], product: p.ID, holdID: b.hold.ID, qty: b.order.Qty,
					status: order.StatusPENDING_PAYMENT, holdSt: hold.StatusREDEEMED}
				if b.order.Qty != b.hold.Qty || b.order.HoldID != b.hold.ID {
					t.Errorf("buyer %d: order %s has qty %d hold %s; want %d, %s", i, b.order.ID, b.order.Qty, b.order.HoldID, b.hold.Qty, b.hold.ID)
				}
			}
		}
		v := (&coCheck{e: e, mode: coUnknown, orders: orders, keys: map[string]coKey{}, calls: calls, timeouts: true}).verify()

		if n := e.countOrders(); n != len(orders) {
			t.Errorf("%d orders exist, buyers were answered with %d", n, len(orders))
		}
		if n := e.countEvents(); n != v.keys {
			t.Errorf("%d payment events stored, want %d", n, v.keys)
		}
		if swept.OrdersCancelled > v.timedOut {
			t.Errorf("sweeps cancelled %d orders, but only %d timed out in any serial order", swept.OrdersCancelled, v.timedOut)
		}
		paid := 0
		statuses := map[order.Status]int{}
		for id := range orders {
			o := e.getOrder(id)
			statuses[o.Status]++
			if o.Status == order.StatusPAID {
				paid += o.Qty
			}
		}
		if paid > initial {
			t.Errorf("oversold: %d units paid of %d", paid, initial)
		}
		e.wantStock(p.ID, initial-paid, 0)
		if n := e.countHolds(hold.StatusACTIVE); n != 0 {
			t.Errorf("%d holds still ACTIVE after the final sweep", n)
		}
		t.Logf("%v: %d buyers, %d orders, %d payment calls (%s); final %v; %d units paid of %d; %d orders timed out",
			elapsed.Round(time.Millisecond), buyers, len(orders), len(calls), coOutcomes(calls), statuses, paid, initial, v.timedOut)
		e.audit()
	})
}
