package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The order events run: three server processes deliver order events to a
// webhook receiver in the test; one of them is killed (kill -9) while
// deliveries are in flight; the survivors must take its deliveries over.
const (
	eventsVictim       = 1   // the server killed
	eventsBuyers       = 8   // concurrent buyers
	eventsKillAfter    = 250 // requests received before the kill
	eventsConcurrency  = 4   // EVENTS_CONCURRENCY
	eventsTargetOrders = 300 // orders before the traffic stops
	eventsAfterKill    = 5 * time.Second
	eventsMaxTraffic   = 60 * time.Second
	eventsDrainLimit   = 90 * time.Second // after the traffic: the dead server's leases lapse after 25 s
	eventsTakeover     = 30 * time.Second // the contract: another process takes an event over within 30 s
	eventsMinEvents    = 300
)

// TestEventsSurviveKill: order events through three server processes
// with one killed (kill -9) mid-delivery. Every event is delivered, each
// order's sequences are contiguous and arrive in order, an event arrives
// twice only with the same id and body and only when the answer to an
// earlier attempt was lost (the kill), every signature verifies, and the
// events agree with the orders' final statuses. CLUSTER_LOG_DIR keeps the
// servers' logs; CLUSTER_REPORT gets a line of figures.
func TestEventsSurviveKill(t *testing.T) {
	testStart := time.Now()
	bin := filepath.Join(t.TempDir(), "flashsale")
	built := make(chan error, 1)
	var buildTook time.Duration
	go func() {
		var err error
		buildTook, err = buildBinary(bin)
		built <- err
	}()
	db := startMariaDB(t)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	t.Logf("built the server (race detector %v) in %s", raceEnabled, buildTook.Round(time.Millisecond))

	paySecret, eventsSecret := newWebhookSecret(), newWebhookSecret()
	rcv, err := newHookReceiver(eventsSecret, 20*time.Millisecond, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.close) // after the servers' cleanups (LIFO): nobody sends any more

	servers := make([]*server, serverCount)
	for i := range servers {
		settings := serverSettings(db.url(), paySecret)
		settings["EVENTS_WEBHOOK_URL"] = rcv.url(i) // one receiver; the path tells the sender
		settings["EVENTS_WEBHOOK_SECRET"] = eventsSecret
		settings["EVENTS_RETRY_MIN"] = "200ms"
		settings["EVENTS_RETRY_MAX"] = "2s"
		settings["EVENTS_CONCURRENCY"] = strconv.Itoa(eventsConcurrency)
		settings["EVENTS_TIMEOUT"] = "5s"
		servers[i] = startServerLog(t, bin, i, settings, fmt.Sprintf("events-server%d.log", i))
	}
	for _, s := range servers {
		if err := s.waitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newClient(servers, paySecret, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()

	tr := &orderTraffic{c: c}
	for _, p := range []struct {
		name  string
		stock int
	}{{"Plenty", 100_000}, {"Scarce", 40}} {
		var out struct{ CreateProduct struct{ ID string } }
		if o := c.gql("createProduct", `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`,
			map[string]any{"in": map[string]any{"name": p.name, "priceCents": 1999, "stock": p.stock}}, true, &out); o != outOK {
			t.Fatalf("createProduct %s: %s", p.name, o)
		}
		tr.products = append(tr.products, out.CreateProduct.ID)
	}

	// The traffic, through all three servers.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	trafficStart := time.Now()
	var buyers sync.WaitGroup
	for range eventsBuyers {
		buyers.Go(func() {
			for ctx.Err() == nil {
				tr.buyer(ctx)
			}
		})
	}

	// The kill: once some events were received, hold the victim's
	// deliveries back at the receiver until a few are in flight, then
	// kill -9 it.
	victim := servers[eventsVictim]
	waitFor(t, 45*time.Second, time.Millisecond, func() bool {
		n, _, _ := rcv.stats(eventsVictim)
		return n >= eventsKillAfter
	}, func() string {
		n, _, _ := rcv.stats(eventsVictim)
		return fmt.Sprintf("the receiver got %d requests, not %d, in 45 s of traffic (%d orders)", n, eventsKillAfter, tr.orders.Load())
	})
	rcv.holdBack(eventsVictim)
	for holding := time.Now(); ; time.Sleep(time.Millisecond) {
		_, held, _ := rcv.stats(eventsVictim)
		waited := time.Since(holding)
		if held >= eventsConcurrency || held >= 1 && waited > 2*time.Second || waited > 4*time.Second {
			break
		}
	}
	// Every worker of its lane is busy: give its claimer a moment to queue
	// more deliveries, claimed but not yet sent when it dies.
	time.Sleep(300 * time.Millisecond)
	receivedAtKill, heldAtKill, _ := rcv.stats(eventsVictim)
	killAt := time.Now()
	victim.current().kill()
	killed := time.Now()
	rcv.releaseHeld()
	ordersAtKill := tr.orders.Load()
	t.Logf("killed server %d (kill -9) %s into the traffic: %d orders so far, %d requests received, %d of its deliveries in flight",
		eventsVictim, killAt.Sub(trafficStart).Round(time.Millisecond), ordersAtKill, receivedAtKill, heldAtKill)

	// More traffic, through the survivors, then let every order end.
	for tr.orders.Load() < eventsTargetOrders || time.Since(killed) < eventsAfterKill {
		if time.Since(trafficStart) > eventsMaxTraffic {
			t.Errorf("only %d orders in %s of traffic", tr.orders.Load(), eventsMaxTraffic)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	buyers.Wait()
	tr.late.Wait()
	trafficEnd := time.Now()

	// Drain: every order final, every delivery DELIVERED, every event
	// answered 2xx at the receiver, nothing in flight.
	ck := newChecker(t, db.url(), "")
	defer ck.close()
	var st drainState
	drained := false
	for deadline := trafficEnd.Add(eventsDrainLimit); ; {
		st = drainStatus(ck, rcv)
		if st.done() {
			drained = true
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	drainedAt := time.Now()
	if !drained {
		t.Errorf("not drained %s after the traffic stopped (%s after the kill): %s",
			eventsDrainLimit, drainedAt.Sub(killAt).Round(time.Millisecond), st)
	}

	// Stop the survivors (SIGTERM) so the database is quiet for the checks.
	var survivors []*server
	for i, s := range servers {
		if i != eventsVictim {
			survivors = append(survivors, s)
		}
	}
	stopServers(t, survivors)
	if race := dataRace(victim.logPath); race != "" {
		t.Errorf("server %d (killed): the race detector found a data race before the kill:\n%s", eventsVictim, race)
	}
	if p := panics(victim.logPath); len(p) > 0 {
		t.Errorf("server %d (killed) logged %d panics: %s", eventsVictim, len(p), examples(p))
	}

	fig := checkOrderEvents(t, ck, rcv.all(), tr.all(),
		eventRun{servers: serverCount, lost: killedServerLost(eventsVictim, killAt), victim: eventsVictim, killAt: killAt})
	text := fmt.Sprintf("events run: %d events (%s) of %d orders (%s); %d requests, %d duplicates (same id and body), "+
		"%d in flight at server %d when killed (kill after %d orders, %d requests), %d deliveries claimed more than once; "+
		"takeover of the in-flight ones %s after the kill; drained %s after the kill, %s after the traffic (%s of traffic); "+
		"first attempt after the event: p50 %s, p99 %s, max %s; test took %s",
		fig.events, fig.byType, fig.orders, fig.byStatus, fig.requests, fig.duplicates,
		fig.inflightAtKill, eventsVictim, ordersAtKill, receivedAtKill, fig.reclaimed,
		fig.takeover.Round(time.Millisecond), drainedAt.Sub(killAt).Round(time.Millisecond),
		drainedAt.Sub(trafficEnd).Round(time.Millisecond), trafficEnd.Sub(trafficStart).Round(time.Millisecond),
		fig.firstP50.Round(time.Millisecond), fig.firstP99.Round(time.Millisecond), fig.firstMax.Round(time.Millisecond),
		time.Since(testStart).Round(time.Second))
	t.Log(text)
	appendReport(t, "\n== "+text+"\n")
	if fig.events < eventsMinEvents {
		t.Errorf("only %d events: the run did not exercise delivery enough (want at least %d)", fig.events, eventsMinEvents)
	}
	if fig.inflightAtKill == 0 {
		t.Errorf("no delivery of server %d was in flight when it was killed: the kill tested nothing", eventsVictim)
	}
}

// waitFor polls cond every step until it holds; after timeout it fails the
// test with what msg says.
func waitFor(t *testing.T, timeout, step time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(step)
	}
}

// drainState is how far the delivery of every event is.
type drainState struct {
	pendingOrders int // PENDING_PAYMENT: more events to come
	undelivered   int // event_deliveries not DELIVERED
	events        int
	unanswered    int // events no request of which was answered 2xx to its sender
	inflight      int // requests the receiver is answering
}

func (s drainState) done() bool {
	return s.pendingOrders == 0 && s.undelivered == 0 && s.unanswered == 0 && s.inflight == 0 && s.events > 0
}

func (s drainState) String() string {
	return fmt.Sprintf("%d orders PENDING_PAYMENT, %d of %d events' deliveries not DELIVERED, %d events not answered 2xx at the receiver, %d requests in flight",
		s.pendingOrders, s.undelivered, s.events, s.unanswered, s.inflight)
}

func drainStatus(ck *checker, rcv *hookReceiver) drainState {
	var s drainState
	ck.rows(`SELECT
			(SELECT COUNT(*) FROM orders WHERE status = 'PENDING_PAYMENT'),
			(SELECT COUNT(*) FROM event_deliveries WHERE status <> 'DELIVERED')`,
		func() []any { return []any{&s.pendingOrders, &s.undelivered} }, func() {})
	answered := rcv.answeredIDs()
	var id string
	ck.rows(`SELECT id FROM order_events`, func() []any { return []any{&id} }, func() {
		s.events++
		if !answered[id] {
			s.unanswered++
		}
	})
	_, _, s.inflight = rcv.stats(-1)
	return s
}

// purchase is one order the traffic made, and what it did about paying.
type purchase struct {
	orderID string
	plan    string   // paid, failed, late (a success after PAYMENT_TIMEOUT), silent
	acks    []string // order_status of the payment webhook's 200 answers
}

// orderTraffic buys: hold, order, then a signed payment webhook (success
// or failure, now or after the payment timed out) or nothing.
type orderTraffic struct {
	c        *client
	products []string // plenty, scarce (sells out: late successes become refunds)
	orders   atomic.Int64
	late     sync.WaitGroup

	mu        sync.Mutex
	purchases []*purchase
}

func (o *orderTraffic) all() []purchase {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]purchase, len(o.purchases))
	for i, p := range o.purchases {
		out[i] = *p
		out[i].acks = append([]string(nil), p.acks...)
	}
	return out
}

func (o *orderTraffic) buyer(ctx context.Context) {
	pid := o.products[0]
	if rand.IntN(6) == 0 {
		pid = o.products[1]
	}
	var h struct{ CreateHold struct{ ID string } }
	if out := o.c.gql("createHold", `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`,
		map[string]any{"p": pid}, false, &h); out != outOK {
		pause(ctx, 20*time.Millisecond, 80*time.Millisecond)
		return
	}
	var orderID string
	for range 3 {
		var r struct{ CreateOrder struct{ ID string } }
		out := o.c.gql("createOrder", `mutation($h: ID!) { createOrder(holdId: $h) { id } }`, map[string]any{"h": h.CreateHold.ID}, false, &r)
		if out == outOK {
			orderID = r.CreateOrder.ID
			break
		}
		if out != "UNAVAILABLE" && !isTransport(out) {
			return
		}
		time.Sleep(100*time.Millisecond + rand.N(200*time.Millisecond))
	}
	if orderID == "" {
		return
	}
	o.orders.Add(1)
	p := &purchase{orderID: orderID}
	switch r := rand.Float64(); {
	case r < 0.40:
		p.plan = "paid"
	case r < 0.65:
		p.plan = "failed"
	case r < 0.80:
		p.plan = "late"
	default:
		p.plan = "silent"
	}
	o.mu.Lock()
	o.purchases = append(o.purchases, p)
	o.mu.Unlock()
	switch p.plan {
	case "paid":
		time.Sleep(rand.N(150 * time.Millisecond))
		o.pay(p, "success")
	case "failed":
		time.Sleep(rand.N(150 * time.Millisecond))
		o.pay(p, "failure")
	case "late":
		o.late.Go(func() {
			time.Sleep(paymentTimeout + 4*sweepInterval + rand.N(500*time.Millisecond))
			o.pay(p, "success")
		})
	}
}

// pay sends the payment webhook, retrying as a provider does while the
// answer is 503 or none.
func (o *orderTraffic) pay(p *purchase, status string) {
	key := "pay_" + p.orderID + "_" + status
	for range 8 {
		out, ack := o.c.webhook("webhook", "msg_"+key, key, p.orderID, status)
		if out == outOK {
			o.mu.Lock()
			p.acks = append(p.acks, ack.OrderStatus)
			o.mu.Unlock()
			return
		}
		if out != "HTTP 503" && !isTransport(out) && out != outTimeout {
			return
		}
		time.Sleep(200*time.Millisecond + rand.N(300*time.Millisecond))
	}
}
