package events_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maps"

	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/ent/orderevent"
	"flashsale/events"
	"flashsale/internal/testdb"
	"flashsale/internal/testkit"
	"flashsale/internal/testnats"
	"flashsale/sink"
	"flashsale/stock"
)

// deliveryOf reads the delivery of event id on the webhook sink.
func (e *env) deliveryOf(id string) *ent.EventDelivery {
	e.t.Helper()
	d, err := e.db.Ent.EventDelivery.Query().Where(eventdelivery.EventID(id)).Only(e.ctx)
	if err != nil {
		e.t.Fatalf("delivery of %s: %v", id, err)
	}
	return d
}

// firstEvent returns an order's first event.
func (e *env) firstEvent(o *ent.Order) *ent.OrderEvent {
	e.t.Helper()
	ev, err := e.db.Ent.OrderEvent.Query().Where(orderevent.OrderID(o.ID), orderevent.Sequence(1)).Only(e.ctx)
	if err != nil {
		e.t.Fatalf("first event of %s: %v", o.ID, err)
	}
	return ev
}

func TestDeliversEveryEventSigned(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			rc := newReceiver(t, nil)
			e := newEnv(t, d, events.Config{}, rc.sink(t))
			e.run()
			o := e.order(2)
			e.pay(o, stock.PaymentSuccess)
			eventually(t, 10*time.Second, "2 deliveries", func() bool { return len(rc.deliveries()) >= 2 })
			got := rc.deliveries()
			if len(got) != 2 || got[0].parsed.Type != "order.created" || got[1].parsed.Type != "order.paid" {
				t.Fatalf("got %d deliveries: %v", len(got), got)
			}
			for _, dl := range got {
				verify(t, testSecret, dl)
				if ct := dl.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				if dl.parsed.ID != dl.id || dl.parsed.Data.Order.ID != o.ID.String() {
					t.Errorf("webhook-id %q, body %+v", dl.id, dl.parsed)
				}
				eventually(t, 5*time.Second, "DELIVERED", func() bool { return e.deliveryOf(dl.id).Status == eventdelivery.StatusDELIVERED })
				if dv := e.deliveryOf(dl.id); dv.Attempts != 1 || dv.DeliveredAt == nil || dv.Lease != nil || dv.LastError != nil {
					t.Errorf("delivery %+v", dv)
				}
			}
		})
	}
}

// TestRetriesUntilDelivered: each kind of failed attempt is recorded with
// its reason and retried until the receiver takes the event.
func TestRetriesUntilDelivered(t *testing.T) {
	redirected := false
	cases := []struct {
		name   string
		answer func(w http.ResponseWriter) int
		reason string
	}{
		{"HTTP 500", func(http.ResponseWriter) int { return 500 }, "HTTP 500"},
		{"timeout", func(http.ResponseWriter) int { time.Sleep(700 * time.Millisecond); return 204 }, "timeout"},
		{"redirect", func(w http.ResponseWriter) int {
			w.Header().Set("Location", "/elsewhere")
			return http.StatusFound
		}, "redirect (HTTP 302), not followed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, d delivery, n int) int {
				if strings.HasSuffix(d.path, "/elsewhere") {
					redirected = true
				}
				if n <= 2 {
					return tc.answer(w)
				}
				return 204
			})
			s, err := sink.NewWebhook(sink.WebhookConfig{URL: rc.URL + "/events", Secret: testSecret, Timeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, "sqlite3", events.Config{}, s)
			e.run()
			o := e.order(1)
			id := e.firstEvent(o).ID
			eventually(t, 10*time.Second, "a failed attempt recorded", func() bool { return e.deliveryOf(id).LastError != nil })
			if dv := e.deliveryOf(id); *dv.LastError != tc.reason {
				t.Errorf("lastError %q, want %q", *dv.LastError, tc.reason)
			}
			eventually(t, 10*time.Second, "delivered", func() bool { return e.deliveryOf(id).Status == eventdelivery.StatusDELIVERED })
			if dv := e.deliveryOf(id); dv.Attempts != 3 {
				t.Errorf("%d attempts, want 3", dv.Attempts)
			}
		})
	}
	if redirected {
		t.Error("a redirect was followed")
	}
}

// TestRetriesRefusedConnection: nothing listens at first; the event goes
// out once something does.
func TestRetriesRefusedConnection(t *testing.T) {
	port := testkit.FreePort(t)
	s, err := sink.NewWebhook(sink.WebhookConfig{URL: fmt.Sprintf("http://127.0.0.1:%d/events", port), Secret: testSecret, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "sqlite3", events.Config{}, s)
	e.run()
	o := e.order(1)
	id := e.firstEvent(o).ID
	eventually(t, 10*time.Second, "a refused attempt", func() bool { dv := e.deliveryOf(id); return dv.LastError != nil })
	if dv := e.deliveryOf(id); *dv.LastError != "connection refused" || dv.Status != eventdelivery.StatusPENDING {
		t.Fatalf("delivery %+v", dv)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	eventually(t, 10*time.Second, "delivered", func() bool { return e.deliveryOf(id).Status == eventdelivery.StatusDELIVERED })
}

// TestRetryAfter: a 429's Retry-After is honoured even when the backoff
// would retry sooner, and capped at RetryMax.
func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name, retryAfter string
		min, max         time.Duration // next attempt after the failed one
	}{
		{"honoured", "2", 2 * time.Second, 2*time.Second + 100*time.Millisecond},
		{"capped at RetryMax", "3600", 3 * time.Second, 3*time.Second + 100*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, d delivery, n int) int {
				if n == 1 {
					w.Header().Set("Retry-After", tc.retryAfter)
					return http.StatusTooManyRequests
				}
				return 204
			})
			e := newEnv(t, "sqlite3", events.Config{RetryMin: 50 * time.Millisecond, RetryMax: 3 * time.Second}, rc.sink(t))
			e.run()
			id := e.firstEvent(e.order(1)).ID
			eventually(t, 10*time.Second, "the 429 recorded", func() bool { return e.deliveryOf(id).LastError != nil })
			dv := e.deliveryOf(id)
			if wait := dv.NextAttemptAt.Sub(*dv.LastAttemptAt); *dv.LastError != "HTTP 429" || wait < tc.min || wait > tc.max {
				t.Fatalf("after %s: next attempt %s later, want %s..%s", *dv.LastError, wait, tc.min, tc.max)
			}
			if tc.min > 3*time.Second {
				return
			}
			eventually(t, 10*time.Second, "delivered", func() bool { return len(rc.deliveries()) == 2 })
			got := rc.deliveries()
			if gap := got[1].at.Sub(got[0].at); gap < tc.min {
				t.Errorf("retried %s after a Retry-After of %ss", gap, tc.retryAfter)
			}
		})
	}
}

// TestOrderWaitsForItsEarlierEvent: while an order's first event fails,
// its second is not sent; other orders' events go out meanwhile.
func TestOrderWaitsForItsEarlierEvent(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			var blocked string
			var mu sync.Mutex
			rc := newReceiver(t, func(w http.ResponseWriter, dl delivery, n int) int {
				mu.Lock()
				defer mu.Unlock()
				if dl.parsed.Data.Order.ID == blocked && dl.parsed.Data.Sequence == 1 && n < 6 {
					return 503
				}
				return 204
			})
			e := newEnv(t, d, events.Config{}, rc.sink(t))
			a := e.order(1)
			mu.Lock()
			blocked = a.ID.String()
			mu.Unlock()
			e.pay(a, stock.PaymentSuccess)
			b := e.order(1)
			e.pay(b, stock.PaymentSuccess)
			e.run()
			eventually(t, 20*time.Second, "4 events delivered", func() bool {
				n := 0
				for _, es := range e.allEvents() {
					if es.Edges.Deliveries[0].Status == eventdelivery.StatusDELIVERED {
						n++
					}
				}
				return n == 4
			})
			checkOrderPerOrder(t, rc.deliveries())
			// b went out while a's first event was failing.
			got := rc.deliveries()
			lastA1 := slices.IndexFunc(got, func(x delivery) bool { return x.status == 204 && x.parsed.Data.Order.ID == a.ID.String() })
			firstB := slices.IndexFunc(got, func(x delivery) bool { return x.parsed.Data.Order.ID == b.ID.String() })
			if firstB > lastA1 {
				t.Errorf("order b waited for order a (b first sent at %d, a's first delivered at %d)", firstB, lastA1)
			}
		})
	}
}

// checkOrderPerOrder fails if a receiver was sent an order's event n+1
// before event n was delivered to it (answered 2xx).
func checkOrderPerOrder(t *testing.T, got []delivery) {
	t.Helper()
	delivered := map[string]int{} // order → highest sequence delivered
	for i, d := range got {
		o, seq := d.parsed.Data.Order.ID, d.parsed.Data.Sequence
		if seq > delivered[o]+1 {
			t.Errorf("request %d: order %s event %d sent before event %d was delivered", i, o, seq, delivered[o]+1)
		}
		if d.status/100 == 2 && seq > delivered[o] {
			delivered[o] = seq
		}
	}
}

// TestDeadLetterThenRedeliver: after EVENTS_MAX_ATTEMPTS failures an event
// is FAILED (its order's next event then goes out), an operator finds it
// and sends it again; a delivered event can be replayed.
func TestDeadLetterThenRedeliver(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			var mu sync.Mutex
			down := true
			rc := newReceiver(t, func(w http.ResponseWriter, dl delivery, n int) int {
				mu.Lock()
				defer mu.Unlock()
				if down && dl.parsed.Type == "order.created" {
					return 500
				}
				return 204
			})
			m := &recMetrics{}
			e := newEnv(t, d, events.Config{MaxAttempts: 2, Metrics: m}, rc.sink(t))
			e.run()
			o := e.order(1)
			e.pay(o, stock.PaymentSuccess)
			created := e.firstEvent(o).ID
			eventually(t, 10*time.Second, "FAILED", func() bool { return e.deliveryOf(created).Status == eventdelivery.StatusFAILED })
			if dv := e.deliveryOf(created); dv.Attempts != 2 || *dv.LastError != "HTTP 500" {
				t.Errorf("dead delivery %+v", dv)
			}
			eventually(t, 10*time.Second, "order.paid delivered after its FAILED predecessor", func() bool { return len(rc.deliveries()) == 3 })
			status := eventdelivery.StatusFAILED
			failed, _, err := e.relay.List(e.ctx, events.Filter{Status: &status}, 10, "")
			if err != nil || len(failed) != 1 || failed[0].ID != created {
				t.Fatalf("FAILED events %v, %v", failed, err)
			}
			if m.count("webhook/dead") != 1 || m.count("webhook/failed") != 1 || m.count("webhook/delivered") != 1 {
				t.Errorf("attempt metrics %v", m.snapshot())
			}

			mu.Lock()
			down = false
			mu.Unlock()
			n, err := e.relay.RedeliverFailed(e.ctx, nil)
			if err != nil || n != 1 {
				t.Fatalf("RedeliverFailed: %d, %v", n, err)
			}
			eventually(t, 10*time.Second, "redelivered", func() bool { return e.deliveryOf(created).Status == eventdelivery.StatusDELIVERED })
			if failed, _, _ := e.relay.List(e.ctx, events.Filter{Status: &status}, 10, ""); len(failed) != 0 {
				t.Errorf("still FAILED: %v", failed)
			}

			// Replay a delivered event: the same id again.
			before := len(rc.deliveries())
			es, err := e.relay.Redeliver(e.ctx, nil, []string{created})
			if err != nil || len(es) != 1 || es[0].ID != created {
				t.Fatalf("Redeliver: %v, %v", es, err)
			}
			eventually(t, 10*time.Second, "replayed", func() bool { return len(rc.deliveries()) == before+1 })
			if got := rc.deliveries()[before]; got.id != created {
				t.Errorf("replayed %s, want %s", got.id, created)
			}

			// Unknown and malformed IDs change nothing.
			if _, err := e.relay.Redeliver(e.ctx, nil, []string{created, "evt_" + strings.Repeat("0", 32)}); !errors.Is(err, stock.ErrNotFound) {
				t.Errorf("unknown ID: %v", err)
			}
			if _, err := e.relay.Redeliver(e.ctx, nil, []string{"nope"}); !errors.Is(err, stock.ErrInvalidInput) {
				t.Errorf("malformed ID: %v", err)
			}
		})
	}
}

// TestLapsedLeaseIsTakenOver: a relay that hangs mid-attempt (as a dead
// process would) loses its claim when the lease lapses; another relay
// delivers the event, and the first one's late outcome is not recorded.
func TestLapsedLeaseIsTakenOver(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			hung := &hangingSink{release: make(chan struct{}), started: make(chan struct{}, 10)}
			cfg := events.Config{Lease: 2 * time.Second}
			e := newEnv(t, d, cfg, hung)
			rc := newReceiver(t, nil)
			second := events.New(e.db.Ent, e.db.Dialect, e.svc, []sink.Sink{rc.sink(t)}, fastRetries(cfg))
			first := e.relay
			e.run()
			o := e.order(1)
			<-hung.started
			// The second relay starts only now, so the first one claimed.
			e.relay = second
			e.run()
			id := e.firstEvent(o).ID
			eventually(t, 10*time.Second, "taken over and delivered", func() bool { return e.deliveryOf(id).Status == eventdelivery.StatusDELIVERED })
			if dv := e.deliveryOf(id); dv.Attempts != 2 {
				t.Errorf("%d attempts, want 2 (the hung one and the takeover)", dv.Attempts)
			}
			// The hung attempt now "succeeds" late: nothing changes.
			close(hung.release)
			time.Sleep(200 * time.Millisecond)
			if dv := e.deliveryOf(id); dv.Status != eventdelivery.StatusDELIVERED || dv.Lease != nil || dv.Attempts != 2 {
				t.Errorf("after the late outcome: %+v", dv)
			}
			first.Close()
		})
	}
}

// hangingSink's attempts hang until release, whatever their context says
// (a process that stopped running).
type hangingSink struct {
	release chan struct{}
	started chan struct{}
}

func (h *hangingSink) Name() string { return sink.NameWebhook }
func (h *hangingSink) Close() error { return nil }
func (h *hangingSink) Send(ctx context.Context, m sink.Message) error {
	h.started <- struct{}{}
	<-h.release
	return nil
}

// TestManyRelaysDeliverOnce: relays of several processes share the work;
// with no failure every event reaches the receiver exactly once, in order
// per order.
func TestManyRelaysDeliverOnce(t *testing.T) {
	rc := newReceiver(t, nil)
	e := newEnv(t, "mysql", events.Config{}, rc.sink(t))
	const orders = 150
	for range orders {
		o := e.order(1)
		e.pay(o, stock.PaymentSuccess)
	}
	for range 3 {
		e.relay = events.New(e.db.Ent, e.db.Dialect, e.svc, []sink.Sink{rc.sink(t)}, fastRetries(events.Config{Concurrency: 4}))
		e.run()
	}
	eventually(t, 30*time.Second, "every event delivered", func() bool { return len(rc.deliveries()) >= 2*orders })
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	got := rc.deliveries()
	seen := map[string]int{}
	for _, d := range got {
		seen[d.id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if len(got) != 2*orders || len(seen) != 2*orders {
		t.Errorf("%d deliveries of %d events, want %d", len(got), len(seen), 2*orders)
	}
	checkOrderPerOrder(t, got)
}

// TestShutdownGivesBackClaims: a relay that stops lets its attempt in
// flight finish and gives back what it claimed but did not start, at once
// due again and with no attempt counted.
func TestShutdownGivesBackClaims(t *testing.T) {
	started := make(chan struct{}, 10)
	rc := newReceiver(t, func(w http.ResponseWriter, d delivery, n int) int {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		return 204
	})
	e := newEnv(t, "mysql", events.Config{Concurrency: 1}, rc.sink(t))
	for range 5 {
		e.order(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.relay.Run(ctx) }()
	<-started
	cancel()
	<-done
	ds, err := e.db.Ent.EventDelivery.Query().All(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for _, dv := range ds {
		switch {
		case dv.Lease != nil:
			t.Errorf("delivery %d still leased after shutdown", dv.ID)
		case dv.Status == eventdelivery.StatusDELIVERED:
			delivered++
		case dv.Attempts != 0:
			t.Errorf("delivery %d given back with %d attempts", dv.ID, dv.Attempts)
		}
	}
	if delivered != 1 || len(rc.deliveries()) != 1 {
		t.Errorf("%d delivered, %d sent; want the one in flight", delivered, len(rc.deliveries()))
	}
}

// TestRetention: events every sink delivered (or written with no sink) are
// deleted once old enough; FAILED and PENDING ones stay.
func TestRetention(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, dl delivery, n int) int {
				if dl.parsed.Data.Order.Qty == 2 {
					return 500
				}
				return 204
			})
			e := newEnv(t, d, events.Config{MaxAttempts: 1}, rc.sink(t))
			e.run()
			delivered, failed := e.order(1), e.order(2)
			eventually(t, 10*time.Second, "settled", func() bool {
				return e.deliveryOf(e.firstEvent(delivered).ID).Status == eventdelivery.StatusDELIVERED &&
					e.deliveryOf(e.firstEvent(failed).ID).Status == eventdelivery.StatusFAILED
			})
			// Written with no sink: nothing to deliver.
			noSink := stock.New(e.db.Ent, e.db.Dialect, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 10}, quiet)
			h, _ := noSink.CreateHold(e.ctx, stock.HoldRequest{ProductID: e.product, Qty: 3})
			unsent, err := noSink.CreateOrder(e.ctx, h.ID, stock.Anonymous)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := e.relay.Retain(e.ctx, time.Hour); err != nil || n != 0 {
				t.Fatalf("Retain(1h) deleted %d, %v", n, err)
			}
			time.Sleep(20 * time.Millisecond)
			if n, err := e.relay.Retain(e.ctx, 10*time.Millisecond); err != nil || n != 2 {
				t.Fatalf("Retain deleted %d, %v; want the delivered and the unsent one", n, err)
			}
			var left []string
			for _, ev := range e.allEvents() {
				left = append(left, ev.OrderID.String())
			}
			if !slices.Equal(left, []string{failed.ID.String()}) {
				t.Errorf("left %v, want only the FAILED order's (%s); unsent %s", left, failed.ID, unsent.ID)
			}
		})
	}
}

// TestNATSDownAndBack: events written while NATS is down are retried and
// all reach the stream once it is back, each exactly once.
func TestNATSDownAndBack(t *testing.T) {
	ns := testnats.Start(t)
	n, err := sink.NewNATS(context.Background(), sink.NATSConfig{URL: ns.URL(), Timeout: time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e := newEnv(t, "mysql", events.Config{MaxAttempts: 1000, Timeout: time.Second}, n)
	e.run()
	before := e.order(1) // goes out while NATS is up
	eventually(t, 10*time.Second, "first event in the stream", func() bool {
		return e.deliveryOf(e.firstEvent(before).ID).Status == eventdelivery.StatusDELIVERED
	})
	ns.Stop()
	for range 5 {
		e.pay(e.order(1), stock.PaymentSuccess)
	}
	eventually(t, 10*time.Second, "failed attempts while NATS is down", func() bool {
		ds, _ := e.db.Ent.EventDelivery.Query().Where(eventdelivery.LastErrorNotNil()).All(e.ctx)
		return len(ds) > 0
	})
	ns.Restart()
	eventually(t, 30*time.Second, "every event delivered", func() bool {
		n, _ := e.db.Ent.EventDelivery.Query().Where(eventdelivery.StatusNEQ(eventdelivery.StatusDELIVERED)).Count(e.ctx)
		return n == 0
	})
	msgs := testnats.StreamMessages(t, testnats.JetStream(t, ns.URL()), sink.DefaultNATSStream)
	ids := testnats.MsgIDs(msgs)
	want := e.allEvents()
	if len(ids) != len(want) || len(want) != 11 {
		t.Fatalf("%d messages in the stream for %d events, want 11", len(ids), len(want))
	}
	for _, ev := range want {
		if c := strings.Count(strings.Join(ids, " "), ev.ID); c != 1 {
			t.Errorf("event %s is in the stream %d times", ev.ID, c)
		}
	}
	for _, m := range msgs {
		if !strings.HasPrefix(m.Subject, sink.DefaultNATSSubject+".order.") {
			t.Errorf("subject %s", m.Subject)
		}
	}
}

// TestSinksKeepTheirOwnState: a webhook that is down does not hold back
// the NATS sink.
func TestSinksKeepTheirOwnState(t *testing.T) {
	ns := testnats.Start(t)
	n, err := sink.NewNATS(context.Background(), sink.NATSConfig{URL: ns.URL(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	rc := newReceiver(t, func(http.ResponseWriter, delivery, int) int { return 500 })
	e := newEnv(t, "sqlite3", events.Config{}, rc.sink(t), n)
	e.run()
	e.pay(e.order(1), stock.PaymentSuccess)
	eventually(t, 10*time.Second, "both events on NATS", func() bool {
		c, _ := e.db.Ent.EventDelivery.Query().Where(eventdelivery.SinkEQ(eventdelivery.SinkNats), eventdelivery.StatusEQ(eventdelivery.StatusDELIVERED)).Count(e.ctx)
		return c == 2
	})
	pending, _ := e.db.Ent.EventDelivery.Query().Where(eventdelivery.SinkEQ(eventdelivery.SinkWebhook), eventdelivery.StatusEQ(eventdelivery.StatusPENDING)).Count(e.ctx)
	if pending != 2 {
		t.Errorf("%d webhook deliveries pending, want 2", pending)
	}
}

// recMetrics records what the relay reports.
type recMetrics struct {
	mu sync.Mutex
	m  map[string]int
}

func (r *recMetrics) EventAttempt(s, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]int{}
	}
	r.m[s+"/"+outcome]++
}
func (r *recMetrics) EventsPending(string, int, time.Duration) {}
func (r *recMetrics) count(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[k]
}
func (r *recMetrics) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.m)
}
