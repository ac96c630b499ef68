package stock_test

// Tests of the checkout path (createOrder, payment events, the payment
// timeout) under real concurrency. They use only the public API, so they
// hold whatever the implementation batches or locks.
//
// The payment tests check results against a reference model of the
// contract: the observed answers and the final state must be exactly what
// SOME serial order of the same events gives (see coCheck).

import (
	"errors"
	"fmt"
	"maps"
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
// Reference model: the contract's transition table and idempotency rules,
// applied one event at a time.

// coStockMode says what the model knows about a product's sellable stock,
// which decides a success that arrives after its order was cancelled.
type coStockMode int

const (
	// coAmple: far more stock than the test can use, so a late success is PAID.
	coAmple coStockMode = iota
	// coExact: every change to the product is in the model, so sellable is computed.
	coExact
	// coUnknown: other buyers compete for the stock; a late success may be
	// PAID or REFUND_REQUIRED, and the call's answer says which.
	coUnknown
)

// coOrder is the model's view of an order and its hold.
type coOrder struct {
	label   string
	product int
	holdID  uuid.UUID
	qty     int
	status  order.Status
	holdSt  hold.Status
}

// coKey is what the first delivery of an idempotency key stored.
type coKey struct {
	order   uuid.UUID
	status  string
	outcome paymentevent.Outcome
}

// coLapsed is an ACTIVE hold past its expires_at that nothing released yet.
type coLapsed struct {
	label   string
	product int
	qty     int
}

type coStock struct{ available, reserved int }

// coStocks reads the products' counters now.
func coStocks(e *env, pids []int) map[int]coStock {
	out := make(map[int]coStock, len(pids))
	for _, pid := range pids {
		p := e.getProduct(pid)
		out[pid] = coStock{p.StockAvailable, p.StockReserved}
	}
	return out
}

// coCall is one ApplyPayment call and what it returned.
type coCall struct {
	pay stock.Payment
	svc *stock.Service
	via string
	at  time.Time // when to send it (zero: at the start barrier)
	res stock.PaymentResult
	err error
}

// coModel is the state the contract's rules act on: a group's orders (with
// their holds), the keys stored, lapsed holds and the products' counters.
type coModel struct {
	mode     coStockMode
	orders   map[uuid.UUID]coOrder
	keys     map[string]coKey
	lapsed   map[uuid.UUID]coLapsed
	stock    map[int]coStock // absolute under coExact, otherwise changes from the start
	timedOut int             // orders the payment timeout cancelled
}

func (m *coModel) clone() *coModel {
	c := *m
	c.orders, c.keys, c.lapsed, c.stock = maps.Clone(m.orders), maps.Clone(m.keys), maps.Clone(m.lapsed), maps.Clone(m.stock)
	return &c
}

func coSortedKeys[K interface{ ~string | ~[16]byte | ~int }, V any](m map[K]V) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b K) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return ks
}

func (m *coModel) fingerprint() string {
	var b strings.Builder
	for _, id := range coSortedKeys(m.orders) {
		o := m.orders[id]
		fmt.Fprintf(&b, "%s=%s/%s;", id, o.status, o.holdSt)
	}
	for _, k := range coSortedKeys(m.keys) {
		fmt.Fprintf(&b, "%s=%v;", k, m.keys[k])
	}
	for _, h := range coSortedKeys(m.lapsed) {
		fmt.Fprintf(&b, "L%s;", h)
	}
	for _, p := range coSortedKeys(m.stock) {
		fmt.Fprintf(&b, "P%d=%v;", p, m.stock[p])
	}
	return b.String()
}

// expireLapsed releases the product's lapsed holds, as the sweeper, or a
// transaction that finds them overdue, does.
func (m *coModel) expireLapsed(product int) {
	for _, id := range coSortedKeys(m.lapsed) {
		if l := m.lapsed[id]; l.product == product {
			st := m.stock[product]
			st.reserved -= l.qty
			m.stock[product] = st
			delete(m.lapsed, id)
		}
	}
}

func (m *coModel) expireHold(id uuid.UUID) {
	l := m.lapsed[id]
	st := m.stock[l.product]
	st.reserved -= l.qty
	m.stock[l.product] = st
	delete(m.lapsed, id)
}

// timeout is the payment timeout (the sweeper, or a transaction that finds
// the order overdue): a no-op unless the order is still PENDING_PAYMENT.
func (m *coModel) timeout(id uuid.UUID) {
	o := m.orders[id]
	if o.status != order.StatusPENDING_PAYMENT {
		return
	}
	o.status, o.holdSt = order.StatusCANCELLED, hold.StatusRELEASED
	m.orders[id] = o
	st := m.stock[o.product]
	st.reserved -= o.qty
	m.stock[o.product] = st
	m.timedOut++
}

// applyCall applies one delivery to the model and returns "" if the call's
// answer (and, for the delivery that applied a key, the stored event) is
// what the contract gives in this state, or why not.
func (m *coModel) applyCall(c *coCall, stored map[string]*ent.PaymentEvent) string {
	got := coErrName(c.err)
	if k, seen := m.keys[c.pay.Key]; seen {
		if k.order != c.pay.OrderID || k.status != c.pay.Status {
			if got != "ErrKeyReused" {
				return fmt.Sprintf("want ErrKeyReused: the key was first used with %s for order %s", k.status, m.orders[k.order].label)
			}
			return ""
		}
		want := stock.PaymentResult{OrderID: k.order, OrderStatus: m.orders[k.order].status, Duplicate: true, Outcome: k.outcome}
		if got != "" || c.res != want {
			return "want " + coResString(want, nil)
		}
		return ""
	}
	o, ok := m.orders[c.pay.OrderID]
	if !ok {
		if got != "ErrNotFound" {
			return "want ErrNotFound: no such order"
		}
		return ""
	}
	before := o.status
	to, outcome := before, paymentevent.OutcomeIGNORED
	switch {
	case c.pay.Status == stock.PaymentSuccess && before == order.StatusPENDING_PAYMENT:
		to, outcome = order.StatusPAID, paymentevent.OutcomeAPPLIED
		st := m.stock[o.product]
		st.available -= o.qty
		st.reserved -= o.qty
		m.stock[o.product] = st
	case c.pay.Status == stock.PaymentSuccess && before == order.StatusCANCELLED:
		paid := true
		switch m.mode {
		case coExact:
			if st := m.stock[o.product]; st.available-st.reserved < o.qty {
				// Lapsed holds may be what stands between this buyer and the stock.
				m.expireLapsed(o.product)
			}
			st := m.stock[o.product]
			paid = st.available-st.reserved >= o.qty
		case coUnknown:
			paid = c.res.OrderStatus != order.StatusREFUND_REQUIRED
		}
		if paid {
			to, outcome = order.StatusPAID, paymentevent.OutcomeAPPLIED
			st := m.stock[o.product]
			st.available -= o.qty
			m.stock[o.product] = st
		} else {
			to, outcome = order.StatusREFUND_REQUIRED, paymentevent.OutcomeREFUND_REQUIRED
		}
	case c.pay.Status == stock.PaymentFailure && before == order.StatusPENDING_PAYMENT:
		to, outcome = order.StatusCANCELLED, paymentevent.OutcomeAPPLIED
		o.holdSt = hold.StatusRELEASED
		st := m.stock[o.product]
		st.reserved -= o.qty
		m.stock[o.product] = st
	}
	want := stock.PaymentResult{OrderID: c.pay.OrderID, OrderStatus: to, Outcome: outcome}
	if got != "" || c.res != want {
		return fmt.Sprintf("want %s (order %s)", coResString(want, nil), before)
	}
	ev := stored[c.pay.Key]
	if ev == nil {
		return fmt.Sprintf("applied (%s on %s), but no event is stored for the key", outcome, before)
	}
	if ev.OrderID != c.pay.OrderID || string(ev.Status) != c.pay.Status || ev.Outcome != outcome ||
		ev.OrderStatusBefore != string(before) || ev.OrderStatusAfter != string(to) {
		return fmt.Sprintf("applied as %s %s→%s, but the stored event says %s", outcome, before, to, coEventString(ev, nil))
	}
	o.status = to
	m.orders[c.pay.OrderID] = o
	m.keys[c.pay.Key] = coKey{order: c.pay.OrderID, status: c.pay.Status, outcome: outcome}
	return ""
}

// coFinal is the database's state after the storm, for one group.
type coFinal struct {
	orders map[uuid.UUID][2]string   // order status, hold status
	lapsed map[uuid.UUID]hold.Status // ACTIVE or EXPIRED
	stock  map[int]coStock           // coExact only
}

func (m *coModel) diff(f coFinal) string {
	var d []string
	for _, id := range coSortedKeys(m.orders) {
		o := m.orders[id]
		if got := f.orders[id]; got != [2]string{string(o.status), string(o.holdSt)} {
			d = append(d, fmt.Sprintf("order %s is %s (hold %s), model %s (hold %s)", o.label, got[0], got[1], o.status, o.holdSt))
		}
	}
	for id, st := range f.lapsed {
		_, active := m.lapsed[id]
		if active != (st == hold.StatusACTIVE) {
			d = append(d, fmt.Sprintf("lapsed hold %s is %s, model active=%v", id, st, active))
		}
	}
	for p, st := range f.stock {
		if m.stock[p] != st {
			d = append(d, fmt.Sprintf("product %d is %+v, model %+v", p, st, m.stock[p]))
		}
	}
	return strings.Join(d, "; ")
}

// coOp is a step of a serial order: a delivery, or an order's payment timeout.
type coOp struct {
	call    *coCall
	timeout uuid.UUID
	class   int // interchangeable steps share a class
}

// coSearch looks for a serial order of the ops that explains every answer
// and ends in the database's final state (depth-first, pruned as soon as an
// answer disagrees, failed states memoized).
type coSearch struct {
	ops     []coOp
	stored  map[string]*ent.PaymentEvent
	final   coFinal
	name    func(*coOp) string
	failed  map[string]bool
	seq     []string
	best    []string
	bestWhy []string
	nodes   int
}

const coMaxNodes = 2_000_000

func (s *coSearch) run(m *coModel, used uint64) *coModel {
	s.nodes++
	if s.nodes > coMaxNodes {
		return nil
	}
	memo := fmt.Sprintf("%x|%s", used, m.fingerprint())
	if s.failed[memo] {
		return nil
	}
	var why []string
	if used == uint64(1)<<len(s.ops)-1 {
		d := m.diff(s.final)
		if d == "" {
			return m
		}
		why = append(why, "final state differs: "+d)
	}
	for i := range s.ops {
		op := &s.ops[i]
		if used&(1<<i) != 0 {
			continue
		}
		twin := false
		for j := range i {
			if used&(1<<j) == 0 && s.ops[j].class == op.class {
				twin = true
				break
			}
		}
		if twin {
			continue
		}
		m2 := m.clone()
		if op.call != nil {
			if r := m2.applyCall(op.call, s.stored); r != "" {
				why = append(why, fmt.Sprintf("%s: %s", s.name(op), r))
				continue
			}
		} else {
			m2.timeout(op.timeout)
		}
		s.seq = append(s.seq, s.name(op))
		if r := s.run(m2, used|1<<i); r != nil {
			return r
		}
		s.seq = s.seq[:len(s.seq)-1]
	}
	for _, h := range coSortedKeys(m.lapsed) {
		m2 := m.clone()
		m2.expireHold(h)
		s.seq = append(s.seq, fmt.Sprintf("[lapsed hold %s expires]", m.lapsed[h].label))
		if r := s.run(m2, used); r != nil {
			return r
		}
		s.seq = s.seq[:len(s.seq)-1]
	}
	if len(s.seq) >= len(s.best) {
		s.best = slices.Clone(s.seq)
		s.bestWhy = why
	}
	s.failed[memo] = true
	return nil
}

func coErrName(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, stock.ErrKeyReused):
		return "ErrKeyReused"
	case errors.Is(err, stock.ErrNotFound):
		return "ErrNotFound"
	}
	return "unexpected error: " + err.Error()
}

func coResString(r stock.PaymentResult, err error) string {
	if err != nil {
		return coErrName(err)
	}
	if r.Duplicate {
		return fmt.Sprintf("duplicate (order %s, outcome %s)", r.OrderStatus, r.Outcome)
	}
	return fmt.Sprintf("applied (order %s, outcome %s)", r.OrderStatus, r.Outcome)
}

func coEventString(ev *ent.PaymentEvent, label func(uuid.UUID) string) string {
	o := ev.OrderID.String()
	if label != nil {
		o = label(ev.OrderID)
	}
	return fmt.Sprintf("{%s for %s, %s, %s→%s}", ev.Status, o, ev.Outcome, ev.OrderStatusBefore, ev.OrderStatusAfter)
}

// coCheck describes a storm of payment calls and the state before it.
type coCheck struct {
	e        *env
	mode     coStockMode
	orders   map[uuid.UUID]coOrder  // before the storm
	keys     map[string]coKey       // stored before the storm
	lapsed   map[uuid.UUID]coLapsed // lapsed holds before the storm (coExact only)
	stock    map[int]coStock        // product counters before the storm (coExact)
	calls    []*coCall              // the storm
	timeouts bool                   // each order's payment timeout may strike during the storm
}

// coVerdict is what the serial orders found add up to.
type coVerdict struct {
	orders   map[uuid.UUID]coOrder // final, per the model
	timedOut int
	keys     int             // distinct keys stored
	delta    map[int]coStock // change of each product's counters (not coExact)
}

func (c *coCheck) label(id uuid.UUID) string {
	if o, ok := c.orders[id]; ok {
		return o.label
	}
	return "no-such-order-" + id.String()[:8]
}

// verify groups the orders that share keys (or, under coExact, a product)
// and, for each group, finds a serial order of its calls and timeouts that
// gives every observed answer and the database's final state.
func (c *coCheck) verify() coVerdict {
	e, t := c.e, c.e.t
	t.Helper()
	for _, call := range c.calls {
		if strings.HasPrefix(coErrName(call.err), "unexpected") {
			t.Errorf("ApplyPayment(%q, %s, %s) via %s: %v", call.pay.Key, call.pay.Status, c.label(call.pay.OrderID), call.via, call.err)
		}
	}
	stored := map[string]*ent.PaymentEvent{}
	keyOrder := map[string]uuid.UUID{}
	for k, v := range c.keys {
		keyOrder[k] = v.order
	}
	for _, call := range c.calls {
		if _, ok := stored[call.pay.Key]; ok {
			continue
		}
		evs := e.eventsOfKey(call.pay.Key)
		if len(evs) > 1 {
			t.Errorf("key %q stored %d times, want at most once", call.pay.Key, len(evs))
		}
		stored[call.pay.Key] = nil
		if len(evs) > 0 {
			stored[call.pay.Key] = evs[0]
		}
		if _, ok := keyOrder[call.pay.Key]; !ok {
			keyOrder[call.pay.Key] = call.pay.OrderID
		}
	}

	// Union-find over orders.
	parent := map[uuid.UUID]uuid.UUID{}
	var find func(uuid.UUID) uuid.UUID
	find = func(x uuid.UUID) uuid.UUID {
		if p, ok := parent[x]; ok && p != x {
			r := find(p)
			parent[x] = r
			return r
		}
		parent[x] = x
		return x
	}
	union := func(a, b uuid.UUID) { parent[find(a)] = find(b) }
	for id := range c.orders {
		find(id)
	}
	for _, call := range c.calls {
		union(call.pay.OrderID, keyOrder[call.pay.Key])
	}
	byProduct := map[int]uuid.UUID{}
	if c.mode == coExact {
		for _, id := range coSortedKeys(c.orders) {
			p := c.orders[id].product
			if first, ok := byProduct[p]; ok {
				union(id, first)
			} else {
				byProduct[p] = id
			}
		}
	} else if len(c.lapsed) > 0 {
		t.Fatalf("test bug: lapsed holds are modelled only with exact stock")
	}
	groups := map[uuid.UUID][]uuid.UUID{}
	for _, id := range coSortedKeys(parent) {
		groups[find(id)] = append(groups[find(id)], id)
	}

	v := coVerdict{orders: map[uuid.UUID]coOrder{}, delta: map[int]coStock{}}
	for _, root := range coSortedKeys(groups) {
		members := groups[root]
		in := map[uuid.UUID]bool{}
		for _, id := range members {
			in[id] = true
		}
		m := &coModel{mode: c.mode, orders: map[uuid.UUID]coOrder{}, keys: map[string]coKey{},
			lapsed: map[uuid.UUID]coLapsed{}, stock: map[int]coStock{}}
		final := coFinal{orders: map[uuid.UUID][2]string{}, lapsed: map[uuid.UUID]hold.Status{}}
		products := map[int]bool{}
		var ops []coOp
		for _, id := range members {
			o, ok := c.orders[id]
			if !ok {
				continue
			}
			m.orders[id] = o
			products[o.product] = true
			now := e.getOrder(id)
			final.orders[id] = [2]string{string(now.Status), string(e.getHold(o.holdID).Status)}
			if c.timeouts {
				ops = append(ops, coOp{timeout: id})
			}
		}
		for k, kv := range c.keys {
			if in[kv.order] {
				m.keys[k] = kv
			}
		}
		for p := range products {
			m.stock[p] = coStock{}
			if c.mode == coExact {
				m.stock[p] = c.stock[p]
				pr := e.getProduct(p)
				if final.stock == nil {
					final.stock = map[int]coStock{}
				}
				final.stock[p] = coStock{pr.StockAvailable, pr.StockReserved}
			}
		}
		for h, l := range c.lapsed {
			if products[l.product] {
				m.lapsed[h] = l
				final.lapsed[h] = e.getHold(h).Status
			}
		}
		classes := map[string]int{}
		var calls []*coCall
		for _, call := range c.calls {
			if !in[call.pay.OrderID] {
				continue
			}
			calls = append(calls, call)
			cls := fmt.Sprintf("%s|%s|%s|%+v|%s", call.pay.Key, call.pay.OrderID, call.pay.Status, call.res, coErrName(call.err))
			if _, ok := classes[cls]; !ok {
				classes[cls] = len(classes)
			}
			ops = append(ops, coOp{call: call, class: classes[cls]})
		}
		for i := range ops {
			if ops[i].call == nil {
				ops[i].class = len(classes) + i
			}
		}
		if len(ops) > 63 {
			t.Fatalf("test bug: a group of %d steps is too large to search", len(ops))
		}
		name := func(op *coOp) string {
			if op.call == nil {
				return fmt.Sprintf("[payment timeout of %s]", c.label(op.timeout))
			}
			k := op.call
			return fmt.Sprintf("%q %s for %s via %s → %s", k.pay.Key, k.pay.Status, c.label(k.pay.OrderID), k.via, coResString(k.res, k.err))
		}
		s := &coSearch{ops: ops, stored: stored, final: final, name: name, failed: map[string]bool{}}
		res := s.run(m, 0)
		if res == nil {
			var b strings.Builder
			fmt.Fprintf(&b, "no serial order of these %d events explains what was observed", len(ops))
			if s.nodes > coMaxNodes {
				fmt.Fprintf(&b, " (search gave up after %d states)", coMaxNodes)
			}
			b.WriteString("\n  orders (before the storm → after):")
			for _, id := range members {
				o, ok := c.orders[id]
				if !ok {
					continue
				}
				f := final.orders[id]
				fmt.Fprintf(&b, "\n    %s (%s) qty %d product %d: %s, hold %s → %s, hold %s", o.label, id, o.qty, o.product, o.status, o.holdSt, f[0], f[1])
			}
			for h, l := range m.lapsed {
				fmt.Fprintf(&b, "\n    lapsed hold %s (%s) qty %d → %s", l.label, h, l.qty, final.lapsed[h])
			}
			for p, st := range m.stock {
				if c.mode == coExact {
					fmt.Fprintf(&b, "\n    product %d: before %+v, after %+v", p, st, final.stock[p])
				}
			}
			for _, k := range coSortedKeys(m.keys) {
				fmt.Fprintf(&b, "\n    key %q stored before: %s for %s, %s", k, m.keys[k].status, c.label(m.keys[k].order), m.keys[k].outcome)
			}
			b.WriteString("\n  calls:")
			for _, call := range calls {
				fmt.Fprintf(&b, "\n    %q %s for %s via %s → %s", call.pay.Key, call.pay.Status, c.label(call.pay.OrderID), call.via, coResString(call.res, call.err))
				if call.err != nil {
					fmt.Fprintf(&b, " (%v)", call.err)
				}
			}
			b.WriteString("\n  stored events:")
			seen := map[string]bool{}
			for _, call := range calls {
				if ev := stored[call.pay.Key]; ev != nil && !seen[call.pay.Key] {
					seen[call.pay.Key] = true
					fmt.Fprintf(&b, "\n    %q: %s", call.pay.Key, coEventString(ev, c.label))
				}
			}
			b.WriteString("\n  longest serial order consistent with the answers:")
			for _, x := range s.best {
				fmt.Fprintf(&b, "\n    %s", x)
			}
			b.WriteString("\n  after it, nothing fits:")
			for _, x := range s.bestWhy {
				fmt.Fprintf(&b, "\n    %s", x)
			}
			t.Error(b.String())
			continue
		}
		for id, o := range res.orders {
			v.orders[id] = o
		}
		v.timedOut += res.timedOut
		v.keys += len(res.keys)
		if c.mode != coExact {
			for p, st := range res.stock {
				d := v.delta[p]
				d.available += st.available
				d.reserved += st.reserved
				v.delta[p] = d
			}
		}
	}
	return v
}

// coSnapshot reads the orders and stored keys the model starts from.
func coSnapshot(e *env, labels map[uuid.UUID]string) (map[uuid.UUID]coOrder, map[string]coKey) {
	e.t.Helper()
	orders := map[uuid.UUID]coOrder{}
	for id, l := range labels {
		o := e.getOrder(id)
		orders[id] = coOrder{label: l, product: o.ProductID, holdID: o.HoldID, qty: o.Qty,
			status: o.Status, holdSt: e.getHold(o.HoldID).Status}
	}
	return orders, coStoredKeys(e)
}

// coStoredKeys reads every payment event stored so far.
func coStoredKeys(e *env) map[string]coKey {
	e.t.Helper()
	evs, err := e.db.Ent.PaymentEvent.Query().All(e.ctx)
	if err != nil {
		e.t.Fatalf("payment events: %v", err)
	}
	keys := map[string]coKey{}
	for _, ev := range evs {
		keys[ev.IdempotencyKey] = coKey{order: ev.OrderID, status: string(ev.Status), outcome: ev.Outcome}
	}
	return keys
}

// coFire runs the calls concurrently: those without a time all at once
// behind a start barrier, the others each at its time.
func coFire(e *env, calls []*coCall) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() {
			<-start
			if !c.at.IsZero() {
				time.Sleep(time.Until(c.at))
			}
			c.res, c.err = c.svc.ApplyPayment(e.ctx, c.pay)
		})
	}
	close(start)
	coWait(e.t, &wg, "payment calls")
}

// coWait waits for wg, failing the test if that takes a minute (a hang).
func coWait(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s still running after a minute: something hangs", what)
	}
}

// coSweepers runs Sweep in a loop on each service until stop is closed and
// returns what they released in total once they have stopped.
func coSweepers(e *env, svcs []*stock.Service, stop <-chan struct{}) func() stock.SweepResult {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total stock.SweepResult
	)
	for i, svc := range svcs {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := svc.Sweep(e.ctx)
				if err != nil {
					e.t.Errorf("sweeper %d: %v", i, err)
					return
				}
				mu.Lock()
				total.HoldsExpired += r.HoldsExpired
				total.OrdersCancelled += r.OrdersCancelled
				mu.Unlock()
				time.Sleep(time.Duration(1+rand.N(3)) * time.Millisecond)
			}
		})
	}
	return func() stock.SweepResult {
		coWait(e.t, &wg, "sweepers")
		return total
	}
}

// coClockOffset is the database clock minus this process's, to schedule
// calls at database times.
func coClockOffset(e *env) time.Duration {
	before := time.Now()
	db := e.dbNow()
	return db.Sub(before.Add(time.Since(before) / 2))
}

// coOutcomes counts the answers, for the log.
func coOutcomes(calls []*coCall) string {
	n := map[string]int{}
	for _, c := range calls {
		switch {
		case c.err != nil:
			n[coErrName(c.err)]++
		case c.res.Duplicate:
			n["duplicate"]++
		default:
			n[string(c.res.Outcome)]++
		}
	}
	var parts []string
	for _, k := range coSortedKeys(n) {
		parts = append(parts, fmt.Sprintf("%s %d", k, n[k]))
	}
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------------------
// 1. Mixed payment batches.

const (
	coS = stock.PaymentSuccess
	coF = stock.PaymentFailure
)

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
