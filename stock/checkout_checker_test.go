package stock_test

// The serial-order checker of the checkout tests.
//
// A storm of concurrent ApplyPayment calls (and, optionally, each order's
// payment timeout striking in the middle of it) is accepted when it is
// equivalent to SOME serial order of the same events: replayed one at a time
// through a reference model of the contract, that order gives every answer
// the calls observed, the events the database stored, and the database's
// final state.
//
// The model (coModel) holds a group's orders with their holds, the
// idempotency keys stored, holds that lapsed unswept, and the products'
// counters. applyCall applies one delivery by the contract's transition
// table and idempotency rules (a key seen before: duplicate with the stored
// outcome, or ErrKeyReused if it came with another order or status; an
// unknown order: ErrNotFound; success on PENDING_PAYMENT: PAID; failure on
// PENDING_PAYMENT: CANCELLED and the hold released; success on CANCELLED:
// PAID or REFUND_REQUIRED by sellable stock; anything else: IGNORED) and
// says why, if the observed answer or stored event differs. timeout and
// expireHold model the payment timeout and a lapsed hold's release. What the
// model knows about stock is the coStockMode: coAmple (a late success is
// always PAID), coExact (every change to the product is modelled, so
// sellable stock is computed) or coUnknown (other buyers compete; the call's
// answer says whether a late success was PAID or REFUND_REQUIRED).
//
// coCheck.verify decides. It reads the event stored for each key (at most
// one per key), splits the orders into independent groups with a
// union-find (orders linked by a shared key and, under coExact, by a shared
// product), and for each group runs coSearch: a depth-first search over the
// orders of the group's steps (each call, each order's timeout when
// coCheck.timeouts is set, and a lapsed hold expiring at any point),
// applying each to a clone of the model and pruning a branch as soon as an
// answer disagrees. Identical calls with identical answers are
// interchangeable and tried in one order only, failed (steps used, model
// state) pairs are memoized, and the search gives up after coMaxNodes
// states; a group may have at most 63 steps. A full order is accepted only
// if the model's end state equals the database's (coFinal: order and hold
// statuses, lapsed holds, and the counters under coExact). When no order
// fits, the test fails with the group's orders, calls and stored events,
// the longest serial order consistent with the answers and why nothing
// fits after it. The coVerdict returned (final orders, timeouts, distinct
// keys stored, counter changes) lets the caller check the rest.
//
// Used by TestCheckoutMixedPaymentBatches (coAmple and coExact) and
// TestCheckoutTwoServers (coUnknown, with timeouts) in checkout_test.go, and
// TestCheckoutPaymentsRaceTimeout (coAmple or coUnknown, with timeouts) in
// checkout_deadline_test.go. The helpers that build a storm and its
// starting snapshot are in checkout_harness_test.go.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

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
