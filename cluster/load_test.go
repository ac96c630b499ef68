package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// product is a hot product of the sale and the stock it was created with.
type product struct {
	id    string
	stock int
}

// event is one payment event the provider sends, and what came of it.
type event struct {
	key, orderID, status string
	// reused: another event shares this key with the other status, so 409
	// is a right answer for either.
	reused bool

	mu       sync.Mutex
	acks     []webhookAck // the 200 answers to its deliveries
	answered bool         // some delivery got a final answer (200, or 409 when reused)
}

// load is the flash sale: buyers going through holds and orders, and the
// payment provider delivering webhooks (duplicated, shuffled, late,
// retried on 503 like a real provider).
type load struct {
	c       *client
	holdTTL time.Duration
	payTO   time.Duration
	sweep   time.Duration

	mu       sync.Mutex
	products []product         // every drop's, oldest first
	holds    map[string]string // acknowledged holds: ID → product ID
	orders   map[string]string // acknowledged orders: ID → hold ID
	acks     map[string]ack    // who acknowledged each of those holds and orders
	events   []*event
	apiStock []string // inconsistent stock numbers the API showed

	deliveries sync.WaitGroup
	inflight   chan struct{} // bounds concurrent webhook requests
	keys       atomic.Int64
	stopRetry  atomic.Bool // set when draining gives up
}

func newLoad(c *client, holdTTL, payTO, sweep time.Duration) *load {
	return &load{c: c, holdTTL: holdTTL, payTO: payTO, sweep: sweep,
		holds: map[string]string{}, orders: map[string]string{}, acks: map[string]ack{}, inflight: make(chan struct{}, 16)}
}

// drop puts a new drop on sale: one product per entry of initialStock.
// The operator retries while the answer is UNAVAILABLE or none; drop gives
// up (returning the last outcome) when ctx ends.
func (l *load) drop(ctx context.Context, n int) string {
	for i, stock := range initialStock {
		for {
			var out struct{ CreateProduct struct{ ID string } }
			o := l.c.gql("createProduct", `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`,
				map[string]any{"in": map[string]any{"name": fmt.Sprintf("Drop %d, item %d", n, i+1), "priceCents": 1000 * (i + 1), "stock": stock}},
				true, &out)
			if o == outOK {
				l.mu.Lock()
				l.products = append(l.products, product{id: out.CreateProduct.ID, stock: stock})
				l.mu.Unlock()
				break
			}
			if o != "UNAVAILABLE" && !isTransport(o) || ctx.Err() != nil {
				return o
			}
			pause(ctx, 500*time.Millisecond, 500*time.Millisecond)
		}
	}
	return outOK
}

// pick chooses the product a buyer goes for: mostly one of the latest
// drop, sometimes any (sold out ones included).
func (l *load) pick() product {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.products)
	if rand.IntN(4) > 0 {
		return l.products[n-len(initialStock)+rand.IntN(len(initialStock))]
	}
	return l.products[rand.IntN(n)]
}

// allProducts returns every product put on sale.
func (l *load) allProducts() []product {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]product(nil), l.products...)
}

// run runs n buyers until ctx is done, with a new drop every dropEvery
// (the first must already be on sale), so stock is contested throughout.
func (l *load) run(ctx context.Context, n int) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 2; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(dropEvery):
			}
			l.drop(ctx, i)
		}
	}()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				l.buyer(ctx)
			}
		}()
	}
	wg.Wait()
}

// pause sleeps for a random time in [lo, hi) unless ctx ends first.
func pause(ctx context.Context, lo, hi time.Duration) {
	d := lo
	if hi > lo {
		d += rand.N(hi - lo)
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// buyer is one buyer's lifecycle: hold, maybe order, maybe pay.
func (l *load) buyer(ctx context.Context) {
	p := l.pick()
	var h struct{ CreateHold struct{ ID, Status string } }
	out, a := l.c.gqlAck("createHold", `mutation($p: ID!, $q: Int!) { createHold(productId: $p, qty: $q) { id status } }`,
		map[string]any{"p": p.id, "q": 1 + rand.IntN(3)}, false, &h)
	switch out {
	case outOK:
	case "INSUFFICIENT_STOCK":
		pause(ctx, 20*time.Millisecond, 100*time.Millisecond)
		return
	default:
		pause(ctx, 100*time.Millisecond, 300*time.Millisecond)
		return
	}
	l.mu.Lock()
	l.holds[h.CreateHold.ID] = p.id
	l.acks[h.CreateHold.ID] = a
	l.mu.Unlock()

	switch r := rand.Float64(); {
	case r < 0.15: // abandoned: the hold expires
		pause(ctx, 0, 100*time.Millisecond)
		return
	case r < 0.20: // too slow: createOrder after the hold lapsed
		pause(ctx, l.holdTTL+100*time.Millisecond, l.holdTTL+500*time.Millisecond)
	default:
		pause(ctx, 0, 300*time.Millisecond)
	}
	if ctx.Err() != nil {
		return // the sale is over
	}
	orderID := l.createOrder(h.CreateHold.ID)
	if orderID != "" {
		l.pay(orderID)
	}
	if rand.IntN(10) == 0 {
		l.readProduct(p)
	}
	pause(ctx, 0, 50*time.Millisecond)
}

// createOrder orders the hold, retrying (up to three times) an UNAVAILABLE
// or an unanswered request as a buyer would; it returns the order ID or "".
func (l *load) createOrder(holdID string) string {
	op := "createOrder"
	for range 3 {
		var o struct{ CreateOrder struct{ ID string } }
		out, a := l.c.gqlAck(op, `mutation($h: ID!) { createOrder(holdId: $h) { id status } }`, map[string]any{"h": holdID}, false, &o)
		switch out {
		case outOK:
			l.mu.Lock()
			l.orders[o.CreateOrder.ID] = holdID
			l.acks[o.CreateOrder.ID] = a
			l.mu.Unlock()
			return o.CreateOrder.ID
		case "UNAVAILABLE", outRefused, outReset, outEOF, outTransErr:
			time.Sleep(200*time.Millisecond + rand.N(300*time.Millisecond))
			op = "createOrder (retry)"
		default:
			return ""
		}
	}
	return ""
}

// readProduct checks the stock numbers the API shows.
func (l *load) readProduct(p product) {
	var r struct {
		Product struct{ StockAvailable, StockReserved, StockSellable int }
	}
	if l.c.gql("product", `query($id: ID!) { product(id: $id) { stockAvailable stockReserved stockSellable } }`,
		map[string]any{"id": p.id}, false, &r) != outOK {
		return
	}
	s := r.Product
	if s.StockReserved < 0 || s.StockReserved > s.StockAvailable || s.StockSellable != s.StockAvailable-s.StockReserved || s.StockAvailable > p.stock {
		l.mu.Lock()
		l.apiStock = append(l.apiStock, fmt.Sprintf("product %s (stock %d): %+v", p.id, p.stock, s))
		l.mu.Unlock()
	}
}

// pay decides what the payment provider reports for the order and
// schedules its webhook deliveries.
func (l *load) pay(orderID string) {
	late := l.payTO + 2*l.sweep // the sweeper has cancelled the order by then
	normal := func() time.Duration {
		if rand.IntN(10) < 7 {
			return rand.N(300 * time.Millisecond)
		}
		return rand.N(4 * time.Second) // some after PAYMENT_TIMEOUT
	}
	lateDelay := func() time.Duration { return late + rand.N(time.Second) }
	switch r := rand.Float64(); {
	case r < 0.40:
		l.send(l.newEvent(orderID, "success", false), normal)
	case r < 0.60:
		l.send(l.newEvent(orderID, "failure", false), normal)
	case r < 0.75: // silence: the payment times out
	case r < 0.85: // a failure and a success with different keys, in any order
		l.send(l.newEvent(orderID, "failure", false), normal)
		l.send(l.newEvent(orderID, "success", false), normal)
	case r < 0.95: // a success after the order was cancelled
		l.send(l.newEvent(orderID, "success", false), lateDelay)
	default: // one key sent with both statuses: one wins, the other is 409
		ev := l.newEvent(orderID, "success", true)
		l.send(ev, normal)
		l.send(&event{key: ev.key, orderID: orderID, status: "failure", reused: true}, normal)
	}
}

func (l *load) newEvent(orderID, status string, reused bool) *event {
	return &event{key: "evt_" + strconv.FormatInt(l.keys.Add(1), 10), orderID: orderID, status: status, reused: reused}
}

// send delivers ev 1–3 times, each delivery after its own delay, in the
// background.
func (l *load) send(ev *event, delay func() time.Duration) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
	for range 1 + rand.IntN(3) {
		l.deliveries.Add(1)
		go func() {
			defer l.deliveries.Done()
			time.Sleep(delay())
			l.deliver(ev)
		}()
	}
}

// deliver is one delivery, retried like a provider does while the answer is
// 503 or none at all, for up to a minute.
func (l *load) deliver(ev *event) {
	op, msgID := "webhook", "msg_"+ev.key
	if ev.reused {
		op, msgID = "webhook (reused key)", "msg_"+ev.key+"_"+ev.status
	}
	deadline := time.Now().Add(time.Minute)
	for {
		l.inflight <- struct{}{}
		out, ack := l.c.webhook(op, msgID, ev.key, ev.orderID, ev.status)
		<-l.inflight
		switch {
		case out == outOK:
			ev.mu.Lock()
			ev.acks = append(ev.acks, *ack)
			ev.answered = true
			ev.mu.Unlock()
			return
		case out == "HTTP 409" && ev.reused:
			ev.mu.Lock()
			ev.answered = true
			ev.mu.Unlock()
			return
		case out == "HTTP 503" || out == outRefused || out == outReset || out == outEOF || out == outTransErr || out == outTimeout:
			if time.Now().After(deadline) || l.stopRetry.Load() {
				return
			}
			time.Sleep(300*time.Millisecond + rand.N(700*time.Millisecond))
			op = "webhook (retry)"
			if ev.reused {
				op = "webhook (reused key, retry)"
			}
		default:
			return // a wrong answer; the checks report it
		}
	}
}

// drain waits for the deliveries in flight, at most timeout.
func (l *load) drain(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { l.deliveries.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		l.stopRetry.Store(true)
		<-done
		return false
	}
}
