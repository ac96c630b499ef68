package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The waiting-room scenarios (docs/api.md, "Waiting room"):
//
//   - queue-join: every client joins one product's waiting room in a loop,
//     each join a new ticket: in customers mode each join carries the token
//     of a customer of its own, minted for it (a customer has one ticket per
//     product, ever), anonymous joins make a new ticket each anyway. Its
//     product has a large stock (it never sells out) and admits slowly.
//     Compared with hot-hold, what a buyer sends instead of a hold.
//   - queue-position: one ticket per client, made before any scenario runs
//     (as the client's own customer in customers mode), on a product that
//     admits one ticket a minute, so they wait; each client then reads its
//     ticket's status, position and estimated admission in a loop, as its
//     owner. Compared with read, the product's stock.
//   - queue-subscribers (named only, alone): -queue-subscribers tickets join
//     a product whose sale has not started (the pre-queue), each is watched
//     over graphql-transport-ws, then the tool opens the sale and the
//     server admits them at -queue-admit-per-minute. For each ticket it
//     measures the delay from its admittedAt (the server's time, taken in
//     the admitting transaction) to the receipt of its ADMITTED event:
//     server, database and tool share this machine's clock.

// Queries of the waiting-room scenarios.
const (
	qJoinQueue   = `mutation($p: ID!) { joinQueue(productId: $p) { id status } }`
	qQueueTicket = `query($t: ID!) { queueTicket(id: $t) { status position estimatedAdmissionAt } }`
	qOpenSale    = `mutation($p: ID!) { updateProduct(id: $p, input: {saleStartsAt: null}) { id } }`
	qQueueStats  = `query($p: ID!) { product(id: $p) { queue { waiting admitted } } }`
	// ticketSubscription is what a storefront's waiting page asks for.
	ticketSubscription = `subscription($t: ID!) { queueTicket(id: $t) { status position admittedAt } }`
)

// Settings of the waiting-room scenarios.
const (
	// queueJoinAdmitPerMinute is queue-join's admission rate: a ticket a
	// second, so admission adds little to what is measured.
	queueJoinAdmitPerMinute = 60
	// queuePositionAdmitPerMinute is queue-position's: its tickets wait.
	queuePositionAdmitPerMinute = 1
	// queueSalePending is how far ahead queue-subscribers' sale starts when
	// its product is made: far enough that only the tool opens it.
	queueSalePending = 24 * time.Hour
	// queueSettle is how long queue-subscribers waits for ADMITTED events
	// after the server shows no ticket waiting: the contract's second and
	// room to see how late a late one is.
	queueSettle       = 5 * time.Second
	maxQueuePerConn   = 1000
	maxAdmitPerMinute = 1_000_000 // the server's bound on queueAdmitPerMinute
	setupJoins        = 64        // joins at once while making tickets up front
)

// stepAdmitted names queue-subscribers' delivery delay in its row.
const stepAdmitted = "ADMITTED (admittedAt → receipt)"

func isQueueScenario(name string) bool {
	return name == scQueueJoin || name == scQueuePosition || name == scQueueSubscribers
}

// queueSubsFigures is what queue-subscribers measured beyond its row.
type queueSubsFigures struct {
	Server           string           `json:"server"` // every subscription goes here
	Subscriptions    int              `json:"subscriptions"`
	PerConnection    int              `json:"per_connection"`
	AdmitPerMinute   int              `json:"admit_per_minute"`
	Tickets          int              `json:"tickets"`      // joined
	JoinSeconds      float64          `json:"join_seconds"` // to make them
	Connections      int              `json:"connections"`  // opened
	Subscribed       int              `json:"subscribed"`   // first event (WAITING) received
	ConnectFailed    map[string]int64 `json:"connect_failed,omitempty"`
	ConnectSeconds   float64          `json:"connect_seconds"`
	Told             int              `json:"told_admitted"` // subscriptions whose ADMITTED event arrived
	NotTold          int              `json:"not_told"`      // subscribed, never told ADMITTED, not ended by the server
	Early            int              `json:"admitted_before_sale"`
	NoAdmittedAt     int              `json:"admitted_without_admitted_at,omitempty"`
	Delay            latency          `json:"delay"`             // admittedAt to receipt
	AdmissionSeconds float64          `json:"admission_seconds"` // sale opened to the last ADMITTED received
	Events           int64            `json:"events"`            // every event received
	Ended            map[string]int64 `json:"ended,omitempty"`   // subscriptions the server (or a lost connection) ended, by why
	ServerAdmitted   int              `json:"server_admitted"`   // Product.queue when the tool stopped
	ServerWaiting    int              `json:"server_waiting"`
	StatsError       string           `json:"stats_error,omitempty"`
	Deadline         bool             `json:"stopped_at_deadline,omitempty"`
	ServerPID        int              `json:"server_pid,omitempty"`
	RSSBefore        int64            `json:"rss_before_bytes,omitempty"`
	RSSAfter         int64            `json:"rss_after_bytes,omitempty"`
	BytesPerSub      float64          `json:"bytes_per_subscription,omitempty"`
}

// queueSide is what the waiting-room scenarios share with the run.
type queueSide struct {
	positionTickets []string          // queue-position's: client w reads positionTickets[w]
	subs            *queueSubsFigures // queue-subscribers'; nil: it did not run
}

// createQueueProduct makes a waiting-room scenario's product, as operator,
// with its admission rate (queue-subscribers': its sale not yet started),
// and queue-position's tickets.
func (st *state) createQueueProduct(ctx context.Context, sc string, stock int) (string, error) {
	in := map[string]any{"name": fmt.Sprintf("loadtest %s %s", st.runID, sc), "priceCents": 100, "stock": stock}
	switch sc {
	case scQueueJoin:
		in["queueAdmitPerMinute"] = queueJoinAdmitPerMinute
	case scQueuePosition:
		in["queueAdmitPerMinute"] = queuePositionAdmitPerMinute
	case scQueueSubscribers:
		in["queueAdmitPerMinute"] = queueSubsRate(st.opts)
		in["saleStartsAt"] = time.Now().Add(queueSalePending).UTC().Format(time.RFC3339)
	}
	var out struct {
		CreateProduct struct {
			ID string `json:"id"`
		} `json:"createProduct"`
	}
	if c := st.api.post(ctx, st.api.token, gqlBody(qCreateProduct, map[string]any{"in": in}), &out); c != "" {
		if c == "UNAUTHENTICATED" {
			return "", errors.New("createProduct: UNAUTHENTICATED: -token does not match the server's ADMIN_TOKEN")
		}
		return "", fmt.Errorf("createProduct (%s, with a waiting room): %s", sc, c)
	}
	id := out.CreateProduct.ID
	if id == "" {
		return "", errors.New("createProduct returned no id")
	}
	if sc == scQueuePosition {
		tickets, rec, _ := st.joinMany(id, st.opts.Clients, st.buyerToken)
		if len(rec.errs) > 0 {
			return id, fmt.Errorf("%s: joining its tickets: %s", sc, fmtErrors(rec.errs))
		}
		st.queue.positionTickets = tickets
	}
	return id, nil
}

// queueSubsRate is queue-subscribers' admission rate, tickets a minute:
// -queue-admit-per-minute, or all -queue-subscribers over -duration.
func queueSubsRate(o options) int {
	if o.QueueAdmitPerMinute > 0 {
		return o.QueueAdmitPerMinute
	}
	r := math.Ceil(float64(o.QueueSubscribers) * 60 / o.Duration.Seconds())
	return int(min(max(r, 1), maxAdmitPerMinute))
}

// ticketOf decodes a joinQueue answer.
type joinAnswer struct {
	JoinQueue struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"joinQueue"`
}

// joinMany makes n tickets on product id, setupJoins at a time, ticket k
// joined with token(k) ("": anonymous). It returns the tickets' IDs (""
// where a join failed), the joins' tally and how long they took.
func (st *state) joinMany(id string, n int, token func(k int) string) ([]string, *recorder, time.Duration) {
	tickets := make([]string, n)
	body := gqlBody(qJoinQueue, map[string]any{"p": id})
	workers := min(n, setupJoins)
	recs := make([]*recorder, workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := range workers {
		recs[g] = newRecorder()
		wg.Go(func() {
			r := recs[g]
			for {
				k := int(next.Add(1)) - 1
				if k >= n || st.stop.Err() != nil {
					return
				}
				var out joinAnswer
				ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
				start := time.Now()
				c := st.api.post(ctx, token(k), body, &out)
				r.request(start)
				cancel()
				if c == "" && out.JoinQueue.ID == "" {
					c = "ticket without id"
				}
				if c == "" {
					tickets[k] = out.JoinQueue.ID
					r.extra[out.JoinQueue.Status]++
				}
				r.tally(c)
			}
		})
	}
	wg.Wait()
	took := time.Since(t0)
	all := newRecorder()
	for _, r := range recs {
		all.lat = append(all.lat, r.lat...)
		all.requests += r.requests
		all.ok += r.ok
		all.refused += r.refused
		for k, v := range r.errs {
			all.errs[k] += v
		}
		for k, v := range r.extra {
			all.extra[k] += v
		}
	}
	return tickets, all, took
}

// joinTokensPerClient is how many tokens queue-join mints per client
// before it starts: about what a client joins in a 10 s run on this
// machine, so minting (on the same CPUs as the server) mostly stays out of
// the measured run.
const joinTokensPerClient = 400

// joinTokens mints queue-join's first joinTokensPerClient tokens of each
// client up front.
func (st *state) joinTokens() ([][]string, error) {
	o := st.opts
	tokens := make([][]string, o.Clients)
	for w := range tokens {
		tokens[w] = make([]string, joinTokensPerClient)
		for i := range tokens[w] {
			var err error
			if tokens[w][i], err = mintToken(o.CustomerSecret, o.CustomerIssuer, o.CustomerAudience,
				st.joinCustomer(w, i), time.Now(), tokenTTL(o, len(o.Scenarios))); err != nil {
				return nil, err
			}
		}
	}
	return tokens, nil
}

// joinToken is the token of queue-join's i-th join by client w: a
// customer of its own, so that the join makes a new ticket; minted up
// front, or now past those.
func (st *state) joinToken(pre [][]string, w, i int) (string, error) {
	if i < len(pre[w]) {
		return pre[w][i], nil
	}
	o := st.opts
	return mintToken(o.CustomerSecret, o.CustomerIssuer, o.CustomerAudience, st.joinCustomer(w, i), time.Now(), o.Timeout+tokenMargin)
}

func (st *state) joinCustomer(w, i int) string {
	return "lt-" + st.runID + "-j" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
}

// runQueueJoin runs queue-join: joinQueue on its product in a loop, each
// join a new ticket.
func (st *state) runQueueJoin() (scenarioResult, error) {
	id, stock, err := st.productOf(scQueueJoin)
	if err != nil {
		return scenarioResult{}, err
	}
	how := "anonymous, every join a new ticket"
	var pre [][]string
	if st.cust != nil {
		how = fmt.Sprintf("every join as a new customer, with a token of its own (%d per client minted before the run)", joinTokensPerClient)
		if pre, err = st.joinTokens(); err != nil {
			return scenarioResult{}, err
		}
	}
	st.progress("%s: product %s (stock %d, waiting room admitting %d/min), %d clients for %s, %s",
		scQueueJoin, id, stock, queueJoinAdmitPerMinute, st.opts.Clients, st.opts.Duration, how)
	body := gqlBody(qJoinQueue, map[string]any{"p": id})
	res := st.drive(scQueueJoin, id, func(ctx context.Context, w, i int, r *recorder) {
		tok := ""
		if st.cust != nil {
			var err error
			if tok, err = st.joinToken(pre, w, i); err != nil {
				r.fail("minting a token")
				return
			}
		}
		var out joinAnswer
		t0 := time.Now()
		c := st.api.post(ctx, tok, body, &out)
		r.request(t0)
		if c == "" && out.JoinQueue.ID == "" {
			c = "ticket without id"
		}
		if c == "" {
			r.extra[out.JoinQueue.Status]++
		}
		r.tally(c)
	})
	res.Notes = append(res.Notes, fmt.Sprintf("%d tickets made, %s (%s); tokens are minted before a request is timed",
		res.OK, how, statusCounts(res.Extra)))
	return res, nil
}

// runQueuePosition runs queue-position: each client reads its own ticket,
// made before any scenario ran.
func (st *state) runQueuePosition() (scenarioResult, error) {
	id, _, err := st.productOf(scQueuePosition)
	if err != nil {
		return scenarioResult{}, err
	}
	tickets := st.queue.positionTickets
	if len(tickets) != st.opts.Clients {
		return scenarioResult{}, fmt.Errorf("%d tickets made for %d clients", len(tickets), st.opts.Clients)
	}
	how := "anonymous (an anonymous ticket is whoever has its ID's)"
	if st.cust != nil {
		how = "each as its ticket's customer, with its token"
	}
	st.progress("%s: product %s (waiting room admitting %d/min), %d clients each reading its own ticket for %s, %s",
		scQueuePosition, id, queuePositionAdmitPerMinute, st.opts.Clients, st.opts.Duration, how)
	bodies := make([][]byte, len(tickets))
	for w, t := range tickets {
		bodies[w] = gqlBody(qQueueTicket, map[string]any{"t": t})
	}
	res := st.drive(scQueuePosition, id, func(ctx context.Context, w, _ int, r *recorder) {
		var out struct {
			QueueTicket *struct {
				Status   string `json:"status"`
				Position *int   `json:"position"`
			} `json:"queueTicket"`
		}
		t0 := time.Now()
		c := st.api.post(ctx, st.buyerToken(w), bodies[w], &out)
		r.request(t0)
		if c == "" && out.QueueTicket == nil {
			c = "ticket null"
		}
		if c == "" {
			r.extra[out.QueueTicket.Status]++
		}
		r.tally(c)
	})
	res.Notes = append(res.Notes, fmt.Sprintf("%d tickets read, %s; answers by status: %s", len(tickets), how, statusCounts(res.Extra)))
	return res, nil
}

// statusCounts lists the tickets' statuses counted in extra.
func statusCounts(extra map[string]int64) string {
	var parts []string
	for _, s := range []string{"WAITING", "ADMITTED", "USED", "EXPIRED", "SOLD_OUT"} {
		if n := extra[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// runQueueSubscribers runs queue-subscribers and returns its row.
func (st *state) runQueueSubscribers() ([]scenarioResult, error) {
	id, _, err := st.productOf(scQueueSubscribers)
	if err != nil {
		return nil, err
	}
	o := st.opts
	n := o.QueueSubscribers
	fig := &queueSubsFigures{Server: st.api.base, Subscriptions: n, PerConnection: o.QueuePerConn,
		AdmitPerMinute: queueSubsRate(o), ConnectFailed: map[string]int64{}, Ended: map[string]int64{}, ServerPID: o.ServerPID}
	expected := time.Duration(float64(n) / float64(fig.AdmitPerMinute) * float64(time.Minute))

	tokenOf, how, err := st.queueSubTokens(n, expected, fig)
	if err != nil {
		return nil, err
	}
	st.progress("%s: product %s, its sale not started: %d tickets join the pre-queue (%s)", scQueueSubscribers, id, n, how)
	tickets, joins, took := st.joinMany(id, n, tokenOf)
	fig.JoinSeconds = took.Seconds()
	var idx []int // the tickets made
	for k, t := range tickets {
		if t != "" {
			idx = append(idx, k)
		}
	}
	fig.Tickets = len(idx)
	if fig.ServerPID != 0 {
		fig.RSSBefore, _ = rss(fig.ServerPID)
	}

	st.progress("%s: %d tickets in %.1fs; opening their subscriptions to %s, %d per connection",
		scQueueSubscribers, fig.Tickets, fig.JoinSeconds, st.api.base, fig.PerConnection)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws := st.openTicketSubs(ctx, tickets, idx, tokenOf, fig)
	fig.measureMemory()

	if st.stop.Err() != nil { // Ctrl-C: report what was set up
		ws.closeAll(cancel)
		ws.tally(fig, time.Now())
		st.queue.subs = fig
		return []scenarioResult{fig.row(id, joins, took, true)}, nil
	}
	st.progress("%s: %d subscribed in %.1fs; opening the sale: admission at %d/min (%s for all)",
		scQueueSubscribers, fig.Subscribed, fig.ConnectSeconds, fig.AdmitPerMinute, expected.Round(100*time.Millisecond))
	opened := time.Now()
	octx, ocancel := context.WithTimeout(context.Background(), o.Timeout)
	var out struct {
		UpdateProduct struct {
			ID string `json:"id"`
		} `json:"updateProduct"`
	}
	c := st.api.post(octx, st.api.token, gqlBody(qOpenSale, map[string]any{"p": id}), &out)
	ocancel()
	if c != "" {
		ws.closeAll(cancel)
		return nil, fmt.Errorf("opening the sale (updateProduct): %s", c)
	}
	st.waitAdmitted(id, ws, opened, expected, fig)
	ws.closeAll(cancel)
	ws.tally(fig, opened)
	st.queue.subs = fig
	return []scenarioResult{fig.row(id, joins, took, st.stop.Err() != nil)}, nil
}

// queueSubTokens is the token of ticket k's subscriber: in customers mode
// one customer each, whose token its subscription's connection carries
// (so one ticket per connection); else none. how says which.
func (st *state) queueSubTokens(n int, expected time.Duration, fig *queueSubsFigures) (tokenOf func(k int) string, how string, err error) {
	if st.cust == nil {
		return func(int) string { return "" }, "anonymous tickets", nil
	}
	o := st.opts
	fig.PerConnection = 1
	tokens := make([]string, n)
	ttl := tokenTTL(o, 1) + 3*expected + time.Hour
	for k := range tokens {
		if tokens[k], err = mintToken(o.CustomerSecret, o.CustomerIssuer, o.CustomerAudience,
			"lt-"+st.runID+"-s"+strconv.Itoa(k), time.Now(), ttl); err != nil {
			return nil, "", err
		}
	}
	return func(k int) string { return tokens[k] }, "one customer each, its token in connection_init", nil
}

// measureMemory takes the server's memory per subscription, when its PID
// is known.
func (fig *queueSubsFigures) measureMemory() {
	if fig.ServerPID == 0 {
		return
	}
	time.Sleep(time.Second) // let the server's allocations settle
	fig.RSSAfter, _ = rss(fig.ServerPID)
	if fig.Subscribed > 0 && fig.RSSAfter > 0 {
		fig.BytesPerSub = float64(fig.RSSAfter-fig.RSSBefore) / float64(fig.Subscribed)
	}
}

// row is queue-subscribers' row of the report: the joins that made its
// tickets as its requests, the tickets told ADMITTED as its ok, and the
// delay as its step.
func (fig *queueSubsFigures) row(id string, joins *recorder, took time.Duration, interrupted bool) scenarioResult {
	if len(fig.ConnectFailed) == 0 {
		fig.ConnectFailed = nil
	}
	if len(fig.Ended) == 0 {
		fig.Ended = nil
	}
	res := scenarioResult{Name: scQueueSubscribers, ProductID: id, Clients: min(fig.Subscriptions, setupJoins),
		ElapsedSeconds: fig.AdmissionSeconds, Requests: joins.requests, OK: int64(fig.Told), Refused: joins.refused,
		Errors: map[string]int64{}, Extra: joins.extra, Latency: summarize(joins.lat),
		Steps: []stepLatency{{Step: stepAdmitted, Latency: fig.Delay}}, QueueSubs: fig, Interrupted: interrupted}
	for k, v := range joins.errs {
		res.Errors["joinQueue: "+k] += v
	}
	for k, v := range fig.ConnectFailed {
		res.Errors["subscribe: "+k] += v
	}
	if took > 0 {
		res.RequestsPerSec = float64(joins.requests) / took.Seconds()
	}
	if fig.AdmissionSeconds > 0 {
		res.OKPerSec = float64(fig.Told) / fig.AdmissionSeconds
	}
	res.Notes = fig.notes()
	return res
}

// ticketSub is one ticket subscription, owned by its connection's reader.
type ticketSub struct {
	seen     bool   // its first event arrived
	status   string // of the last event
	early    bool   // its first event was already ADMITTED: not measured
	admitted bool   // told ADMITTED
	noTime   bool   // ADMITTED without admittedAt
	delay    time.Duration
	received time.Time
	events   int64
	ended    string // why the server ended it; "": it did not
}

// ticketConn is one WebSocket with its subscriptions: "k" is subs[k].
type ticketConn struct {
	conn    *websocket.Conn
	subs    []*ticketSub
	pending int           // subscriptions without a first event yet
	ready   chan struct{} // closed once none is pending, or the connection ended
	once    sync.Once
}

func (c *ticketConn) markReady() { c.once.Do(func() { close(c.ready) }) }

// ticketWatchers is queue-subscribers' open connections and their readers.
type ticketWatchers struct {
	conns   []*ticketConn
	subs    []*ticketSub // by ticket index; nil: not subscribed
	readers sync.WaitGroup
	// Counters the tool waits on while admission runs.
	subscribed atomic.Int64 // first events
	settled    atomic.Int64 // subscribed ones told ADMITTED, or ended
	closing    atomic.Bool  // the tool is closing the connections
}

// openTicketSubs subscribes to each ticket of idx, fig.PerConnection per
// connection, dialParallelism connections being set up at once, each
// counted once every subscription on it has had its first event.
func (st *state) openTicketSubs(ctx context.Context, tickets []string, idx []int, tokenOf func(int) string, fig *queueSubsFigures) *ticketWatchers {
	per := fig.PerConnection
	groups := make([][]int, 0, (len(idx)+per-1)/per)
	for i := 0; i < len(idx); i += per {
		groups = append(groups, idx[i:min(i+per, len(idx))])
	}
	ws := &ticketWatchers{subs: make([]*ticketSub, len(tickets)), conns: make([]*ticketConn, len(groups))}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		next     atomic.Int64
		t0       = time.Now()
		wsClient = st.wsClient()
	)
	failed := func(class string, n int) {
		mu.Lock()
		fig.ConnectFailed[class] += int64(n)
		mu.Unlock()
	}
	for range min(dialParallelism, len(groups)) {
		wg.Go(func() {
			for {
				g := int(next.Add(1)) - 1
				if g >= len(groups) || st.stop.Err() != nil {
					return
				}
				ids := make([]string, len(groups[g]))
				for j, k := range groups[g] {
					ids[j] = tickets[k]
				}
				c, err := dialTickets(ctx, wsClient, st.api.base, tokenOf(groups[g][0]), ids, st.opts.Timeout)
				if err != nil {
					failed(errClass(err), len(ids))
					continue
				}
				for j, k := range groups[g] {
					ws.subs[k] = c.subs[j]
				}
				ws.conns[g] = c
				ws.readers.Go(func() { c.read(ctx, ws) })
				select {
				case <-c.ready:
				case <-time.After(st.opts.Timeout):
					failed("no first event", c.pendingNow())
				}
			}
		})
	}
	wg.Wait()
	fig.ConnectSeconds = time.Since(t0).Seconds()
	for _, c := range ws.conns {
		if c != nil {
			fig.Connections++
		}
	}
	fig.Subscribed = int(ws.subscribed.Load())
	return ws
}

// pendingNow is a racy look at how many subscriptions still wait for a
// first event, for the failure count only.
func (c *ticketConn) pendingNow() int {
	n := 0
	for _, s := range c.subs {
		if !s.seen {
			n++
		}
	}
	return n
}

// dialTickets opens one graphql-transport-ws connection (with token in
// connection_init, as a signed-in storefront sends it) and subscribes to
// each ticket on it, subscription "k" to ids[k].
func dialTickets(ctx context.Context, client *http.Client, base, token string, ids []string, timeout time.Duration) (*ticketConn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialGraphQLWS(dctx, client, base, token)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*ticketConn, error) {
		conn.CloseNow()
		return nil, err
	}
	c := &ticketConn{conn: conn, subs: make([]*ticketSub, len(ids)), pending: len(ids), ready: make(chan struct{})}
	for k, id := range ids {
		c.subs[k] = &ticketSub{}
		sub, _ := json.Marshal(map[string]any{"id": strconv.Itoa(k), "type": "subscribe",
			"payload": map[string]any{"query": ticketSubscription, "variables": map[string]any{"t": id}}})
		if err := conn.Write(dctx, websocket.MessageText, sub); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

// ticketEvent is one "next" of ticketSubscription.
type ticketEvent struct {
	sub        int
	status     string
	admittedAt time.Time // zero: null
}

// read takes the connection's messages until it ends, answering pings; as
// in the subscribers scenario, each read gets a context that never ends
// (the connection ends with ctx) and an event is read without a JSON
// decode.
func (c *ticketConn) read(ctx context.Context, ws *ticketWatchers) {
	defer c.markReady()
	stop := context.AfterFunc(ctx, func() { c.conn.CloseNow() })
	defer stop()
	rctx := context.WithoutCancel(ctx)
	var buf bytes.Buffer
	for {
		_, r, err := c.conn.Reader(rctx)
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			if ctx.Err() == nil && !ws.closing.Load() && websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				why := "connection lost: " + errClass(err)
				for k := range c.subs {
					c.end(k, why, ws)
				}
			}
			return
		}
		now := time.Now()
		b := buf.Bytes()
		if ev, ok := parseTicketEvent(b); ok {
			c.event(ev, now, ws)
			continue
		}
		var m struct {
			ID      string          `json:"id"`
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		k, err := strconv.Atoi(m.ID)
		if m.Type != "ping" && (err != nil || k < 0 || k >= len(c.subs)) {
			continue
		}
		switch m.Type {
		case "ping":
			_ = c.conn.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`))
		case "next":
			ev, why := decodeTicketNext(m.Payload)
			if why != "" {
				c.end(k, why, ws)
				continue
			}
			ev.sub = k
			c.event(ev, now, ws)
		case "error":
			c.end(k, "error "+errorCode(m.Payload), ws)
		case "complete":
			c.end(k, "complete", ws)
		}
	}
}

// event records one ticket event received at now.
func (c *ticketConn) event(ev ticketEvent, now time.Time, ws *ticketWatchers) {
	if ev.sub < 0 || ev.sub >= len(c.subs) {
		return
	}
	s := c.subs[ev.sub]
	if s.ended != "" {
		return
	}
	s.events++
	first := !s.seen
	if first {
		s.seen = true
		ws.subscribed.Add(1)
		if c.pending--; c.pending == 0 {
			c.markReady()
		}
	}
	s.status = ev.status
	if ev.status != "ADMITTED" || s.admitted {
		return
	}
	s.admitted = true
	ws.settled.Add(1)
	switch {
	case first:
		s.early = true
	case ev.admittedAt.IsZero():
		s.noTime = true
	default:
		s.delay, s.received = now.Sub(ev.admittedAt), now
	}
}

// end records that subscription k ended (the server's error or complete,
// or the connection lost) before the tool closed it.
func (c *ticketConn) end(k int, why string, ws *ticketWatchers) {
	s := c.subs[k]
	if s.ended != "" {
		return
	}
	s.ended = why
	if !s.seen {
		if c.pending--; c.pending == 0 {
			c.markReady()
		}
		return
	}
	if !s.admitted {
		ws.settled.Add(1)
	}
}

// decodeTicketNext reads a "next" payload the long way; why is set when it
// carries errors instead of a ticket.
func decodeTicketNext(p json.RawMessage) (ticketEvent, string) {
	var pl struct {
		Data *struct {
			QueueTicket *struct {
				Status     string     `json:"status"`
				AdmittedAt *time.Time `json:"admittedAt"`
			} `json:"queueTicket"`
		} `json:"data"`
		Errors json.RawMessage `json:"errors"`
	}
	if json.Unmarshal(p, &pl) != nil {
		return ticketEvent{}, "bad event"
	}
	if pl.Data == nil || pl.Data.QueueTicket == nil {
		return ticketEvent{}, "error " + errorCode(pl.Errors)
	}
	ev := ticketEvent{status: pl.Data.QueueTicket.Status}
	if pl.Data.QueueTicket.AdmittedAt != nil {
		ev.admittedAt = *pl.Data.QueueTicket.AdmittedAt
	}
	return ev, ""
}

// errorCode is the first GraphQL error's extensions.code in a list.
func errorCode(raw json.RawMessage) string {
	var errs []struct {
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	}
	if json.Unmarshal(raw, &errs) != nil || len(errs) == 0 || errs[0].Extensions.Code == "" {
		return "without code"
	}
	return errs[0].Extensions.Code
}

// parseTicketEvent reads a "next" of ticketSubscription the cheap way: its
// subscription, status and admittedAt. ok is false for anything else (the
// caller then decodes it in full).
func parseTicketEvent(b []byte) (ev ticketEvent, ok bool) {
	next := bytes.HasSuffix(b, []byte(`"type":"next"}`)) || bytes.Contains(b[:min(len(b), 40)], []byte(`"type":"next"`))
	if !bytes.HasPrefix(b, []byte(`{"`)) || !next || !bytes.Contains(b, []byte(`{"queueTicket":{`)) {
		return ev, false
	}
	id, ok1 := after(b, `"id":"`, `"`)
	status, ok2 := after(b, `"status":"`, `"`)
	at, ok3 := after(b, `"admittedAt":`, ",}")
	if !ok1 || !ok2 || !ok3 {
		return ev, false
	}
	k, err := strconv.Atoi(string(id))
	if err != nil {
		return ev, false
	}
	ev.sub, ev.status = k, string(status)
	if string(at) != "null" {
		t, err := time.Parse(`"`+time.RFC3339Nano+`"`, string(at))
		if err != nil {
			return ev, false
		}
		ev.admittedAt = t
	}
	return ev, true
}

// waitAdmitted waits, once the sale opened, until every open subscription
// was told ADMITTED (or ended), or queueSettle after the server shows no
// ticket waiting, or a deadline well past the expected admission, or
// Ctrl-C; then it reads the waiting room's final counters.
func (st *state) waitAdmitted(id string, ws *ticketWatchers, opened time.Time, expected time.Duration, fig *queueSubsFigures) {
	deadline := opened.Add(3*expected + 30*time.Second)
	body := gqlBody(qQueueStats, map[string]any{"p": id})
	var drained time.Time
	var lastPoll time.Time
	for {
		now := time.Now()
		if ws.settled.Load() >= ws.subscribed.Load() || st.stop.Err() != nil {
			break
		}
		if now.After(deadline) {
			fig.Deadline = true
			break
		}
		if !drained.IsZero() && now.Sub(drained) > queueSettle {
			break
		}
		if drained.IsZero() && now.Sub(lastPoll) >= 500*time.Millisecond {
			lastPoll = now
			if w, _, err := st.queueStats(body); err == nil && w == 0 {
				drained = now
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	w, a, err := st.queueStats(body)
	if err != nil {
		fig.StatsError = err.Error()
	}
	fig.ServerWaiting, fig.ServerAdmitted = w, a
}

// queueStats reads a product's Product.queue: tickets waiting and admitted.
func (st *state) queueStats(body []byte) (waiting, admitted int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
	defer cancel()
	var out struct {
		Product *struct {
			Queue *struct {
				Waiting  int `json:"waiting"`
				Admitted int `json:"admitted"`
			} `json:"queue"`
		} `json:"product"`
	}
	if c := st.api.post(ctx, "", body, &out); c != "" {
		return 0, 0, errors.New(c)
	}
	if out.Product == nil || out.Product.Queue == nil {
		return 0, 0, errors.New("product or its queue is null")
	}
	return out.Product.Queue.Waiting, out.Product.Queue.Admitted, nil
}

// closeAll closes every connection, dialParallelism at a time, then ends
// the readers (cancel) and waits for them.
func (ws *ticketWatchers) closeAll(cancel context.CancelFunc) {
	ws.closing.Store(true)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range dialParallelism {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ws.conns) {
					return
				}
				if c := ws.conns[i]; c != nil {
					_ = c.conn.Close(websocket.StatusNormalClosure, "load test done")
				}
			}
		})
	}
	wg.Wait()
	cancel()
	ws.readers.Wait()
}

// tally adds up what the subscriptions received, once their readers ended.
func (ws *ticketWatchers) tally(fig *queueSubsFigures, opened time.Time) {
	var delays []time.Duration
	var last time.Time
	fig.Subscribed = 0
	for _, s := range ws.subs {
		if s == nil {
			continue
		}
		if s.seen {
			fig.Subscribed++
		}
		fig.Events += s.events
		if s.ended != "" {
			fig.Ended[s.ended]++
		}
		switch {
		case !s.admitted:
			if s.seen && s.ended == "" {
				fig.NotTold++
			}
		case s.early:
			fig.Early++
		case s.noTime:
			fig.NoAdmittedAt++
			fig.Told++
		default:
			fig.Told++
			delays = append(delays, s.delay)
			if s.received.After(last) {
				last = s.received
			}
		}
	}
	fig.Delay = summarize(delays)
	if !last.IsZero() {
		fig.AdmissionSeconds = last.Sub(opened).Seconds()
	}
}

// notes are queue-subscribers' notes.
func (fig *queueSubsFigures) notes() []string {
	notes := []string{
		fmt.Sprintf("%d tickets joined the pre-queue in %.1fs (the row's requests, req/s and latencies); %d of %d subscriptions "+
			"open on %d connections (%d per connection) in %.1fs; the sale opened, admission at %d/min",
			fig.Tickets, fig.JoinSeconds, fig.Subscribed, fig.Subscriptions, fig.Connections, fig.PerConnection,
			fig.ConnectSeconds, fig.AdmitPerMinute),
		fmt.Sprintf("%d of %d subscriptions told ADMITTED (the row's ok; ok/s over the %.1fs from opening the sale to the last one), "+
			"delay from admittedAt to receipt p50 %s, p99 %s, max %s; %d events received in all; the server counts %d admitted, %d waiting at the end",
			fig.Told, fig.Subscribed, fig.AdmissionSeconds, fmtDur(fig.Delay.P50), fmtDur(fig.Delay.P99), fmtDur(fig.Delay.Max),
			fig.Events, fig.ServerAdmitted, fig.ServerWaiting),
		"admittedAt is the server's time (the database clock in the admitting transaction), the receipt the tool's: " +
			"server, database and tool share this machine's clock",
	}
	switch {
	case fig.BytesPerSub > 0:
		notes = append(notes, fmt.Sprintf("server memory (RSS of PID %d): %.1f MiB before the subscriptions, %.1f MiB with them: %.1f KiB per subscription",
			fig.ServerPID, float64(fig.RSSBefore)/(1<<20), float64(fig.RSSAfter)/(1<<20), fig.BytesPerSub/1024))
	case fig.ServerPID == 0:
		notes = append(notes, "server memory per subscription not measured: give -server-pid")
	}
	if len(fig.ConnectFailed) > 0 {
		notes = append(notes, "subscriptions that could not be opened: "+fmtErrors(fig.ConnectFailed)+
			" (the server's MAX_SUBSCRIPTIONS and MAX_SUBSCRIPTIONS_PER_CONNECTION must allow -queue-subscribers and -queue-per-conn)")
	}
	if len(fig.Ended) > 0 {
		notes = append(notes, "subscriptions the server ended before the tool closed them: "+fmtErrors(fig.Ended))
	}
	if fig.NotTold > 0 {
		notes = append(notes, fmt.Sprintf("%d open subscriptions were never told ADMITTED", fig.NotTold))
	}
	if fig.Early > 0 {
		notes = append(notes, fmt.Sprintf("%d tickets were ADMITTED before their subscription's first event: not measured", fig.Early))
	}
	if fig.NoAdmittedAt > 0 {
		notes = append(notes, fmt.Sprintf("%d ADMITTED events came without admittedAt: not measured", fig.NoAdmittedAt))
	}
	if fig.Deadline {
		notes = append(notes, "the tool stopped waiting at its deadline (3 × the expected admission time + 30 s)")
	}
	if fig.StatsError != "" {
		notes = append(notes, "could not read the waiting room's counters: "+fig.StatsError)
	}
	return notes
}

// checkQueueSubscribers checks, when queue-subscribers ran, that every
// open ticket subscription was told ADMITTED once the server had admitted
// every ticket (the contract: within a second).
func (st *state) checkQueueSubscribers(c *checkResult) {
	fig := st.queue.subs
	if fig == nil {
		return
	}
	missed := fig.NotTold
	switch {
	case missed == 0:
		c.line("queue-subscribers: all %d open ticket subscriptions were told ADMITTED: ok", fig.Subscribed)
	case fig.StatsError != "" || fig.ServerWaiting > 0:
		c.line("queue-subscribers: %d of %d open ticket subscriptions were not told ADMITTED, but the server had not admitted "+
			"every ticket when the tool stopped (%d waiting): not checked", missed, fig.Subscribed, fig.ServerWaiting)
	default:
		c.violation("queue-subscribers: %d of %d open ticket subscriptions were not told ADMITTED within %s of the server's last admission",
			missed, fig.Subscribed, queueSettle)
	}
}
