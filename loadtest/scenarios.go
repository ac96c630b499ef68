package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// state is what the scenarios share: options, the HTTP client, and the
// products the tool created (for the checks afterwards).
type state struct {
	opts     options
	api      *api
	base     *baseline // nil without a MySQL -db
	runID    string
	progress func(format string, a ...any)
	stop     context.Context // done on Ctrl-C: start no more requests

	products  []createdProduct
	selloutOK int64     // successful holds on the sellout product
	started   time.Time // when the scenarios began: holds made since may have lapsed

	cust         *customers // customers mode; nil: anonymous buyers
	limitHolds   limitLog   // the holds limit was answered with
	limitRefused int64      // limit's PURCHASE_LIMIT_EXCEEDED answers

	subs *subscribersInfo // what the subscribers scenario saw; nil: it did not run

	queue queueSide // the waiting-room scenarios' tickets and figures (queue.go)

	turns *turns // the scenarios taking turns; nil: one after another

	events    *eventsSide    // -events-url and the receiver; nil: lifecycle-events does not run
	eventsFig *eventsFigures // what lifecycle-events measured; nil: it did not run
}

// createdProduct is one product the tool made, for the checks.
type createdProduct struct {
	Scenario       string `json:"scenario"`
	ID             string `json:"id"`
	Stock          int    `json:"stock"`
	MaxPerCustomer int    `json:"max_per_customer,omitempty"` // 0: no limit (every product but limit's)
	// Server is the server whose database has it, when not -url's: the
	// events server (lifecycle-events').
	Server string `json:"server,omitempty"`
}

// apiFor is the server a scenario runs against.
func (st *state) apiFor(scenario string) *api {
	if scenario == scLifecycleEvents && st.events != nil {
		return st.events.api
	}
	return st.api
}

// apiOf is the server that has product p.
func (st *state) apiOf(p createdProduct) *api {
	if p.Server != "" && st.events != nil {
		return st.events.api
	}
	return st.api
}

// recorder is one worker's tally; workers never share one, and the
// harness merges them when all have stopped.
type recorder struct {
	lat      []time.Duration // every request's duration: no sampling
	requests int64
	ok       int64 // successful operations (see the report's footnote)
	refused  int64 // INSUFFICIENT_STOCK answers
	errs     map[string]int64
	extra    map[string]int64
	steps    map[string][]time.Duration // lifecycle: latencies by step
}

func newRecorder() *recorder {
	return &recorder{lat: make([]time.Duration, 0, 1024), errs: map[string]int64{}, extra: map[string]int64{}}
}

// request records one request's duration since start.
func (r *recorder) request(start time.Time) {
	r.lat = append(r.lat, time.Since(start))
	r.requests++
}

// Steps of a lifecycle, whose latencies are also reported apart.
const (
	stepHold    = "createHold"
	stepOrder   = "createOrder"
	stepWebhook = "webhook"
)

var lifecycleSteps = []string{stepHold, stepOrder, stepWebhook}

// Steps of a db-lifecycle, one transaction each.
const (
	stepHoldTx    = "hold tx"
	stepOrderTx   = "order tx"
	stepPaymentTx = "payment tx"
)

var dbLifecycleSteps = []string{stepHoldTx, stepOrderTx, stepPaymentTx}

// paymentOf is the payment a worker's i-th lifecycle ends with, the same in
// lifecycle and db-lifecycle: three in four succeed (the order is PAID),
// the rest fail (the order is CANCELLED and its units released). Either
// completes the lifecycle.
func paymentOf(i int) (status, want string) {
	if i%4 == 3 {
		return "failure", "CANCELLED"
	}
	return "success", "PAID"
}

// step records one request of a multi-request operation, also under its
// step's name.
func (r *recorder) step(name string, start time.Time) {
	d := time.Since(start)
	r.lat = append(r.lat, d)
	r.requests++
	if r.steps == nil {
		r.steps = map[string][]time.Duration{}
	}
	r.steps[name] = append(r.steps[name], d)
}

// opFunc runs one operation (one request, or one lifecycle) of worker w's
// i-th iteration, tallying into r.
type opFunc func(ctx context.Context, w, i int, r *recorder)

// turns interleaves the scenarios of one run. The machine's speed drifts
// by tens of percent within a minute on a shared VM, so a scenario measured
// in one 10 s block and its baseline (typename) in another can differ by
// the drift alone: the same code gave read ÷ typename 0.67 in one run and
// 0.98 in the next. Instead each scenario runs in slices, the scenarios
// taking turns slice by slice, so every scenario samples the whole run and
// a ratio compares like with like. One scenario runs at a time, as before.
type turns struct {
	slices int
	order  []string
	grant  map[string]chan struct{} // a scenario's drive waits here for its next slice
	left   map[string]chan struct{} // closed when a scenario's goroutine has ended
	done   chan struct{}            // a slice is over
}

func newTurns(order []string, slices int) *turns {
	t := &turns{slices: slices, order: order, grant: map[string]chan struct{}{},
		left: map[string]chan struct{}{}, done: make(chan struct{})}
	for _, name := range order {
		t.grant[name] = make(chan struct{})
		t.left[name] = make(chan struct{})
	}
	return t
}

// run hands out the turns, round after round, in order.
func (t *turns) run() {
	for range t.slices {
		for _, name := range t.order {
			t.take(name)
		}
	}
}

// take gives name one slice and waits until it is over; a scenario that
// ended (or failed before it drove) is skipped.
func (t *turns) take(name string) {
	select {
	case t.grant[name] <- struct{}{}:
		<-t.done
	case <-t.left[name]:
	}
}

// slicesFor is how many slices name's drive runs in: its turns' count when
// it takes turns, else one.
func (st *state) slicesFor(name string) (int, *turns) {
	if t := st.turns; t != nil && t.grant[name] != nil {
		return t.slices, t
	}
	return 1, nil
}

// drive runs op in clients workers, each in a closed loop, until the
// scenario's time is up, the operation budget is spent, or Ctrl-C. It then
// merges the workers' tallies. Taking turns, it runs its time in slices
// (see turns); the workers' tallies and iteration counts carry over.
func (st *state) drive(name, productID string, op opFunc) scenarioResult {
	clients := st.opts.Clients
	recs := make([]*recorder, clients)
	iters := make([]int, clients)
	for w := range recs {
		recs[w] = newRecorder()
	}
	var claimed atomic.Int64
	ctx := context.Background() // requests are bounded by the client's timeout, not Ctrl-C
	n, t := st.slicesFor(name)
	var elapsed time.Duration
	var ended time.Time
	for range n {
		if t != nil {
			<-t.grant[name]
		}
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(st.opts.Duration / time.Duration(n))
		for w := range clients {
			wg.Go(func() {
				for ; ; iters[w]++ {
					if st.stop.Err() != nil || !time.Now().Before(deadline) || claimed.Add(1) > st.opts.MaxRequests {
						return
					}
					op(ctx, w, iters[w], recs[w])
				}
			})
		}
		wg.Wait()
		ended = time.Now()
		elapsed += ended.Sub(start)
		if t != nil {
			t.done <- struct{}{}
		}
	}

	res := scenarioResult{Name: name, ProductID: productID, Clients: clients, ElapsedSeconds: elapsed.Seconds(),
		Errors: map[string]int64{}, Extra: map[string]int64{}, ended: ended}
	total := 0
	for _, r := range recs {
		total += len(r.lat)
	}
	all := make([]time.Duration, 0, total)
	for _, r := range recs {
		all = append(all, r.lat...)
		res.Requests += r.requests
		res.OK += r.ok
		res.Refused += r.refused
		for k, v := range r.errs {
			res.Errors[k] += v
		}
		for k, v := range r.extra {
			res.Extra[k] += v
		}
	}
	if claimed.Load() > st.opts.MaxRequests {
		res.Capped = true
	}
	res.Interrupted = st.stop.Err() != nil && elapsed < st.opts.Duration
	res.Latency = summarize(all)
	for _, name := range slices.Concat(lifecycleSteps, dbLifecycleSteps) {
		var d []time.Duration
		for _, r := range recs {
			d = append(d, r.steps[name]...)
		}
		if len(d) > 0 {
			res.Steps = append(res.Steps, stepLatency{Step: name, Latency: summarize(d)})
		}
	}
	secs := elapsed.Seconds()
	res.RequestsPerSec = float64(res.Requests) / secs
	res.OKPerSec = float64(res.OK) / secs
	res.RefusedPerSec = float64(res.Refused) / secs
	return res
}

// stockFor is the stock of each scenario's own product; typename and
// typename-customer have none.
func (st *state) stockFor(scenario string) int {
	switch scenario {
	case scTypename, scTypenameCustomer:
		return 0
	case scSellout:
		return st.opts.SelloutStock
	case scRead:
		return 1000
	}
	return bigStock
}

// createProducts makes each scenario's own product before any scenario
// runs, so a wrong -token stops the tool at once.
func (st *state) createProducts(scenarios []string) error {
	for _, sc := range scenarios {
		stock := st.stockFor(sc)
		if stock == 0 {
			continue
		}
		// Only limit's product has a maxPerCustomer; the others set none,
		// so no limit ever refuses their holds.
		limit := 0
		if sc == scLimit {
			limit = limitMax
		}
		a, server := st.apiFor(sc), ""
		if a != st.api {
			server = a.base
		}
		ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
		var id string
		var err error
		if isQueueScenario(sc) {
			id, err = st.createQueueProduct(ctx, sc, stock) // with a waiting room
		} else {
			id, err = a.createProduct(ctx, fmt.Sprintf("loadtest %s %s", st.runID, sc), stock, limit)
		}
		cancel()
		if err != nil {
			if server != "" {
				return fmt.Errorf("events server %s: %w", server, err)
			}
			return err
		}
		st.products = append(st.products, createdProduct{Scenario: sc, ID: id, Stock: stock, MaxPerCustomer: limit, Server: server})
	}
	return nil
}

// productOf returns the ID and stock of a scenario's product.
func (st *state) productOf(scenario string) (string, int, error) {
	for _, p := range st.products {
		if p.Scenario == scenario {
			return p.ID, p.Stock, nil
		}
	}
	return "", 0, fmt.Errorf("no product was created for %s", scenario)
}

// runScenario sets up and runs one scenario, and says when the server
// turned buyers away for want of a customer token, or refused the tool's.
func (st *state) runScenario(name string) (scenarioResult, error) {
	res, err := st.runOne(name)
	if n := res.Errors["UNAUTHENTICATED"] + res.Errors["createHold: UNAUTHENTICATED"] + res.Errors["createOrder: UNAUTHENTICATED"]; n > 0 {
		if st.cust == nil {
			res.Notes = append(res.Notes, fmt.Sprintf("%d requests UNAUTHENTICATED: the server needs customer tokens "+
				"(it has CUSTOMER_JWT_SECRET or CUSTOMER_JWKS_URL); give the tool -customer-secret", n))
		} else {
			res.Notes = append(res.Notes, fmt.Sprintf("%d requests UNAUTHENTICATED with a customer token: did the tokens expire?", n))
		}
	}
	return res, err
}

// runOne runs one scenario by its kind.
func (st *state) runOne(name string) (scenarioResult, error) {
	switch name {
	case scTypename, scTypenameCustomer:
		return st.runTypename(name), nil
	case scHotHold, scSellout:
		return st.runHold(name)
	case scRead:
		return st.runRead(name)
	case scQueueJoin:
		return st.runQueueJoin()
	case scQueuePosition:
		return st.runQueuePosition()
	case scLifecycle, scLifecycleEvents:
		return st.runLifecycle(name)
	case scLimit:
		return st.runLimit()
	case scDBForUpdate:
		return st.runDBForUpdate(name)
	case scDBLifecycle:
		return st.runDBLifecycle(name)
	}
	return scenarioResult{}, fmt.Errorf("unknown scenario %q", name)
}

// runTypename runs typename (anonymous) or typename-customer (each client
// with its customer's token): the cheapest query, the baseline of ratios.
func (st *state) runTypename(name string) scenarioResult {
	a := st.api
	how := "anonymous"
	if name == scTypenameCustomer {
		how = "each with its customer's token"
	}
	st.progress("%s: %d clients for %s, %s", name, st.opts.Clients, st.opts.Duration, how)
	body := gqlBody(qTypename, nil)
	return st.drive(name, "", func(ctx context.Context, w, _ int, r *recorder) {
		tok := ""
		if name == scTypenameCustomer {
			tok = st.cust.tokens[w]
		}
		t0 := time.Now()
		c := a.post(ctx, tok, body, nil)
		r.request(t0)
		r.tally(c)
	})
}

// runHold runs hot-hold or sellout: holds of qty 1 on the scenario's
// product; sellout's successful holds are kept for the checks.
func (st *state) runHold(name string) (scenarioResult, error) {
	id, stock, err := st.productOf(name)
	if err != nil {
		return scenarioResult{}, err
	}
	st.progress("%s: product %s (stock %d), %d clients for %s", name, id, stock, st.opts.Clients, st.opts.Duration)
	body := gqlBody(qCreateHold, map[string]any{"p": id})
	res := st.drive(name, id, st.holdOp(body))
	if name == scSellout {
		st.selloutOK = res.OK
	}
	return res, nil
}

// runRead runs read: the product's stock, as a storefront reads it.
func (st *state) runRead(name string) (scenarioResult, error) {
	a := st.api
	id, _, err := st.productOf(name)
	if err != nil {
		return scenarioResult{}, err
	}
	st.progress("%s: product %s, %d clients for %s", name, id, st.opts.Clients, st.opts.Duration)
	body := gqlBody(qProduct, map[string]any{"p": id})
	return st.drive(name, id, func(ctx context.Context, _, _ int, r *recorder) {
		var out struct {
			Product *productStock `json:"product"`
		}
		t0 := time.Now()
		c := a.post(ctx, "", body, &out)
		r.request(t0)
		if c == "" && out.Product == nil {
			c = "product null"
		}
		r.tally(c)
	}), nil
}

// runLifecycle runs lifecycle or lifecycle-events, which does exactly
// lifecycle's work against the events server (see events.go) and also
// counts the orders made.
func (st *state) runLifecycle(name string) (scenarioResult, error) {
	events := name == scLifecycleEvents
	a := st.apiFor(name)
	id, _, err := st.productOf(name)
	if err != nil {
		return scenarioResult{}, err
	}
	signed := "signed"
	if a.signer == nil {
		signed = "unsigned"
	}
	on := ""
	if events {
		on = " on " + a.base + ", its order events to the tool's receiver on " + st.events.recv.addr()
	}
	st.progress("%s: product %s%s, %d clients for %s, %s webhooks", name, id, on, st.opts.Clients, st.opts.Duration, signed)
	keyPrefix := "lt_"
	if events {
		keyPrefix = "lte_" // its own keys, should both servers share a database after all
	}
	res := st.drive(name, id, st.lifecycleOp(a, gqlBody(qCreateHold, map[string]any{"p": id}), keyPrefix, events))
	res.Notes = append(res.Notes, fmt.Sprintf("%d PAID, %d CANCELLED by a payment failure; %s webhooks",
		res.Extra["PAID"], res.Extra["CANCELLED"], signed))
	if res.Errors["webhook HTTP 401"] > 0 {
		res.Notes = append(res.Notes, "webhooks refused with 401: -secret must be the server's WEBHOOK_SECRET "+
			"(their orders stay PENDING_PAYMENT until PAYMENT_TIMEOUT)")
	}
	if events {
		st.measureEvents(&res)
		st.eventsFig = res.Events
	}
	return res, nil
}

// lifecycleOp is one lifecycle on a: a hold, its order by the hold's
// customer, then the payment's webhook, which must leave the order as
// paymentOf says. events: count the orders made.
func (st *state) lifecycleOp(a *api, holdBody []byte, keyPrefix string, events bool) opFunc {
	return func(ctx context.Context, w, i int, r *recorder) {
		tok := st.buyerToken(w) // the hold's customer orders it
		holdID, ok := lifecycleHold(ctx, a, tok, holdBody, r)
		if !ok {
			return
		}
		orderID, ok := lifecycleOrder(ctx, a, tok, holdID, r)
		if !ok {
			return
		}
		if events {
			r.extra[extraOrders]++
		}
		status, want := paymentOf(i)
		key := keyPrefix + st.runID + "_" + strconv.Itoa(w) + "_" + strconv.Itoa(i)
		t0 := time.Now()
		ans, c := a.webhook(ctx, key, orderID, status)
		r.step(stepWebhook, t0)
		if c == "" && (ans.OrderStatus != want || ans.Duplicate || ans.OrderID != orderID) {
			c = "webhook: order " + ans.OrderStatus + ", want " + want
		}
		if c != "" {
			r.fail(c)
			return
		}
		r.ok++
		r.extra[want]++
	}
}

// lifecycleHold is a lifecycle's createHold step; false: it failed.
func lifecycleHold(ctx context.Context, a *api, tok string, body []byte, r *recorder) (string, bool) {
	var h struct {
		CreateHold struct {
			ID string `json:"id"`
		} `json:"createHold"`
	}
	t0 := time.Now()
	c := a.post(ctx, tok, body, &h)
	r.step(stepHold, t0)
	if c == "" && h.CreateHold.ID == "" {
		c = "hold without id"
	}
	if c != "" {
		r.fail("createHold: " + c)
		return "", false
	}
	return h.CreateHold.ID, true
}

// lifecycleOrder is a lifecycle's createOrder step; false: it failed.
func lifecycleOrder(ctx context.Context, a *api, tok, holdID string, r *recorder) (string, bool) {
	var o struct {
		CreateOrder struct {
			ID string `json:"id"`
		} `json:"createOrder"`
	}
	t0 := time.Now()
	c := a.post(ctx, tok, gqlBody(qCreateOrder, map[string]any{"h": holdID}), &o)
	r.step(stepOrder, t0)
	if c == "" && o.CreateOrder.ID == "" {
		c = "order without id"
	}
	if c != "" {
		r.fail("createOrder: " + c)
		return "", false
	}
	return o.CreateOrder.ID, true
}

// runDBForUpdate runs db-forupdate: hot-hold's work straight in SQL, one
// transaction locking the product row per hold.
func (st *state) runDBForUpdate(name string) (scenarioResult, error) {
	id, pid, err := st.dbProduct(name)
	if err != nil {
		return scenarioResult{}, err
	}
	b := st.base
	res := st.drive(name, id, func(_ context.Context, _, _ int, r *recorder) {
		ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
		defer cancel()
		t0 := time.Now()
		_, err := b.hold(ctx, pid, 1)
		r.request(t0)
		switch {
		case errors.Is(err, errInsufficientStock):
			r.refused++
		case err != nil:
			r.fail(dbErrClass(err))
		default:
			r.ok++
		}
	})
	res.Notes = append(res.Notes, b.note(name))
	return res, nil
}

// runDBLifecycle runs db-lifecycle: lifecycle's work straight in SQL, one
// transaction per step.
func (st *state) runDBLifecycle(name string) (scenarioResult, error) {
	id, pid, err := st.dbProduct(name)
	if err != nil {
		return scenarioResult{}, err
	}
	b := st.base
	res := st.drive(name, id, func(_ context.Context, w, i int, r *recorder) {
		var holdID, orderID, got string
		if st.dbStep(r, stepHoldTx, func(ctx context.Context) (err error) {
			holdID, err = b.hold(ctx, pid, 1)
			return err
		}) != nil {
			return
		}
		if st.dbStep(r, stepOrderTx, func(ctx context.Context) (err error) {
			orderID, err = b.order(ctx, pid, holdID)
			return err
		}) != nil {
			return
		}
		status, want := paymentOf(i)
		// Not lifecycle's "lt_" keys: both may run against one database.
		key := "ltdb_" + st.runID + "_" + strconv.Itoa(w) + "_" + strconv.Itoa(i)
		if st.dbStep(r, stepPaymentTx, func(ctx context.Context) (err error) {
			got, err = b.pay(ctx, pid, orderID, key, status)
			return err
		}) != nil {
			return
		}
		if got != want {
			r.fail("payment tx: order " + got + ", want " + want)
			return
		}
		r.ok++
		r.extra[want]++
	})
	res.Notes = append(res.Notes, fmt.Sprintf("%d PAID, %d CANCELLED by a payment failure", res.Extra["PAID"], res.Extra["CANCELLED"]),
		b.note(name))
	return res, nil
}

// dbStep runs one transaction of a db-lifecycle and records it under its
// step's name. Each step gets the per-request timeout, as each HTTP
// request does.
func (st *state) dbStep(r *recorder, name string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
	defer cancel()
	t0 := time.Now()
	err := fn(ctx)
	r.step(name, t0)
	if err != nil {
		r.fail(name + ": " + dbErrClass(err))
	}
	return err
}

// dbProduct returns a db-* scenario's product ID, also as an integer, and
// says the scenario is starting.
func (st *state) dbProduct(name string) (string, int64, error) {
	id, _, err := st.productOf(name)
	if err != nil {
		return "", 0, err
	}
	pid, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("product id %q is not an integer", id)
	}
	st.progress("%s: product %s, %d goroutines over %d database connections for %s", name, id, st.opts.Clients, st.base.pool, st.opts.Duration)
	return id, pid, nil
}

// tally counts a single-request operation: success, an INSUFFICIENT_STOCK
// refusal, or an error of class c.
func (r *recorder) tally(c string) {
	switch c {
	case "":
		r.ok++
	case "INSUFFICIENT_STOCK":
		r.refused++
	default:
		r.errs[c]++
	}
}

func (r *recorder) fail(c string) { r.errs[c]++ }
