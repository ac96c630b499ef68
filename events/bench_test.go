package events_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/database"
	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/ent/order"
	"flashsale/ent/orderevent"
	"flashsale/events"
	"flashsale/internal/testdb"
	"flashsale/sink"
	"flashsale/stock"
)

// benchOrders is how many orders the relay benchmark's backlog holds, two
// events each (order.created, then order.paid or order.cancelled, as the
// load tool's lifecycle writes them): 20,000 events, whatever b.N is.
const benchOrders = 10_000

// BenchmarkRelay measures how fast one relay (the default Concurrency,
// 16) delivers a backlog of order events to a local receiver that answers
// 204: it claims them in batches, POSTs each signed, and records the
// outcomes. Each iteration writes the backlog afresh (not timed), then
// times the relay from its start until the receiver got every event and
// the relay, stopped, recorded every outcome. It needs MySQL/MariaDB
// (TEST_MYSQL_URL, default root@127.0.0.1:3306):
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime 1x ./events/
func BenchmarkRelay(b *testing.B) {
	db := testdb.Open(b, dialect.MySQL, database.Options{MaxConns: 20})
	ctx := b.Context()
	// The clock: the relay judges leases by the database's time.
	svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 10,
		EventSinks: []string{sink.NameWebhook}}, quiet)
	rc := newCountingReceiver(b)
	wh, err := sink.NewWebhook(sink.WebhookConfig{URL: rc.URL + "/events", Secret: testSecret})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { wh.Close() })

	const total = 2 * benchOrders
	var timed time.Duration
	for b.Loop() {
		b.StopTimer()
		writeBacklog(ctx, b, db.Ent, svc)
		all := rc.expect(total)
		relay := events.New(db.Ent, db.Dialect, svc, []sink.Sink{wh}, events.Config{Logger: quiet})
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		b.StartTimer()

		start := time.Now()
		go func() { defer close(done); relay.Run(runCtx) }()
		select {
		case <-all:
		case <-time.After(5 * time.Minute):
			b.Fatalf("the receiver got %d of %d events in 5 minutes", rc.distinct(), total)
		}
		stop()
		<-done // Run records the outcomes in flight before it returns
		timed += time.Since(start)

		b.StopTimer()
		left, err := db.Ent.EventDelivery.Query().Where(eventdelivery.StatusNEQ(eventdelivery.StatusDELIVERED)).Count(ctx)
		if err != nil || left != 0 {
			b.Fatalf("%d deliveries not DELIVERED after the run (%v)", left, err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total*b.N)/timed.Seconds(), "events/s")
	b.ReportMetric(float64(rc.requests()-int64(total*b.N)), "duplicates")
}

// writeBacklog replaces every order event with a fresh backlog of
// benchOrders orders' events, as the outbox writes them: order i's
// order.created a quarter millisecond after order i-1's (4,000 orders a
// second), its second event 100 ms later, all due, one webhook delivery
// each. Rows are inserted in large batches (setup, not timed).
func writeBacklog(ctx context.Context, b *testing.B, client *ent.Client, clock events.Clock) {
	b.Helper()
	if _, err := client.EventDelivery.Delete().Exec(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := client.OrderEvent.Delete().Exec(ctx); err != nil {
		b.Fatal(err)
	}
	now, err := clock.Now(ctx)
	if err != nil {
		b.Fatal(err)
	}
	base := now.Add(-time.Minute)
	type ev struct {
		id    string
		order *ent.Order
		seq   int
		typ   orderevent.Type
		at    time.Time
	}
	evs := make([]ev, 0, 2*benchOrders)
	for i := range benchOrders {
		created := base.Add(time.Duration(i) * 250 * time.Microsecond)
		o := &ent.Order{ID: uuid.New(), HoldID: uuid.New(), ProductID: 1, Qty: 1, AmountCents: 100,
			Status: order.StatusPENDING_PAYMENT, CreatedAt: created, PaymentDueAt: created.Add(15 * time.Minute)}
		evs = append(evs, ev{stock.NewEventID(created), o, 1, orderevent.TypeOrderCreated, created})
		paid := *o
		paid.Status, paid.EventSeq = order.StatusPAID, 2
		at := created.Add(100 * time.Millisecond)
		evs = append(evs, ev{stock.NewEventID(at), &paid, 2, orderevent.TypeOrderPaid, at})
	}
	const chunk = 1000
	for from := 0; from < len(evs); from += chunk {
		part := evs[from:min(from+chunk, len(evs))]
		es := make([]*ent.OrderEventCreate, len(part))
		ds := make([]*ent.EventDeliveryCreate, len(part))
		for i, e := range part {
			body := stock.NewEventBody(e.id, e.typ, "", e.seq, e.order, e.at).Marshal()
			es[i] = client.OrderEvent.Create().SetID(e.id).SetOrderID(e.order.ID).SetSequence(e.seq).SetType(e.typ).
				SetOccurredAt(e.at).SetPayload(string(body))
			ds[i] = client.EventDelivery.Create().SetEventID(e.id).SetSink(eventdelivery.SinkWebhook).SetOrderID(e.order.ID).
				SetSequence(e.seq).SetNextAttemptAt(e.at).SetCreatedAt(e.at)
		}
		if err := client.OrderEvent.CreateBulk(es...).Exec(ctx); err != nil {
			b.Fatal(err)
		}
		if err := client.EventDelivery.CreateBulk(ds...).Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// countingReceiver is a webhook endpoint that answers 204 at once and
// counts requests and distinct webhook-ids; it keeps nothing else, so the
// benchmark measures the relay, not the receiver.
type countingReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	n    int64
	ids  map[string]struct{}
	want int
	all  chan struct{}
}

func newCountingReceiver(b *testing.B) *countingReceiver {
	rc := &countingReceiver{ids: map[string]struct{}{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		rc.mu.Lock()
		rc.n++
		if _, seen := rc.ids[id]; !seen && id != "" {
			rc.ids[id] = struct{}{}
			if len(rc.ids) == rc.want {
				close(rc.all)
			}
		}
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(rc.Close)
	return rc
}

// expect forgets the IDs seen so far and returns a channel closed when n
// distinct events have arrived.
func (rc *countingReceiver) expect(n int) <-chan struct{} {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.ids, rc.want, rc.all = map[string]struct{}{}, n, make(chan struct{})
	return rc.all
}

func (rc *countingReceiver) distinct() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.ids)
}

func (rc *countingReceiver) requests() int64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n
}
