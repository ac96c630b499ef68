package events_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"flashsale/database"
	"flashsale/ent"
	"flashsale/events"
	"flashsale/internal/testdb"
	"flashsale/sink"
	"flashsale/stock"
)

// testSecret signs the test receivers' events.
const testSecret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// quiet discards logs.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is one test's database, stock service and relay.
type env struct {
	t       *testing.T
	ctx     context.Context
	db      *database.DB
	svc     *stock.Service
	relay   *events.Relay
	product int
}

// fastRetries are retry settings that keep tests short.
func fastRetries(cfg events.Config) events.Config {
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Poll == 0 {
		cfg.Poll = 50 * time.Millisecond
	}
	cfg.Logger = quiet
	return cfg
}

// newEnv opens a fresh database of dialect d with a stock service that
// writes deliveries for sinks, and a relay over them (not running: see run).
func newEnv(t *testing.T, d string, cfg events.Config, sinks ...sink.Sink) *env {
	t.Helper()
	db := testdb.Open(t, d, database.Options{MaxConns: 10})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	names := make([]string, len(sinks))
	for i, s := range sinks {
		names[i] = s.Name()
	}
	svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 10, EventSinks: names}, quiet)
	relay := events.New(db.Ent, db.Dialect, svc, sinks, fastRetries(cfg))
	svc.OnEvents(relay.Wake)
	p, err := svc.CreateProduct(ctx, nil, stock.NewProduct{Name: "events test", PriceCents: 250, Stock: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, db: db, svc: svc, relay: relay, product: p.ID}
}

// run runs the relay until the test ends.
func (e *env) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := e.relay
	go func() { defer close(done); r.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

// order makes a PENDING_PAYMENT order of qty units.
func (e *env) order(qty int) *ent.Order {
	e.t.Helper()
	h, err := e.svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: e.product, Qty: qty})
	if err != nil {
		e.t.Fatalf("CreateHold: %v", err)
	}
	o, err := e.svc.CreateOrder(e.ctx, h.ID, stock.Anonymous)
	if err != nil {
		e.t.Fatalf("CreateOrder: %v", err)
	}
	return o
}

// pay applies a payment event to o.
func (e *env) pay(o *ent.Order, status string) stock.PaymentResult {
	e.t.Helper()
	res, err := e.svc.ApplyPayment(e.ctx, stock.Payment{Key: fmt.Sprintf("%s-%s", o.ID, status), OrderID: o.ID, Status: status})
	if err != nil {
		e.t.Fatalf("ApplyPayment: %v", err)
	}
	return res
}

// delivery is one request a receiver got, and how it answered.
type delivery struct {
	id     string
	path   string
	header http.Header
	body   []byte
	parsed stock.EventBody
	at     time.Time
	status int
}

// receiver is a webhook endpoint that records what it gets and answers
// with answer(n), n counting requests from 1 (nil: 204).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	n      int
	got    []delivery
	answer func(w http.ResponseWriter, d delivery, n int) int
}

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, d delivery, n int) int) *receiver {
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d := delivery{id: r.Header.Get("webhook-id"), path: r.URL.Path, header: r.Header.Clone(), body: body, at: time.Now()}
		_ = json.Unmarshal(body, &d.parsed)
		rc.mu.Lock()
		rc.n++ // numbered on arrival: attempts may overlap a slow answer
		n := rc.n
		rc.mu.Unlock()
		d.status = http.StatusNoContent
		if rc.answer != nil {
			d.status = rc.answer(w, d, n)
		}
		// Recorded with its answer, before the relay can see it.
		rc.mu.Lock()
		rc.got = append(rc.got, d)
		rc.mu.Unlock()
		w.WriteHeader(d.status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// deliveries returns what the receiver got so far.
func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// webhookSink is a webhook sink to the receiver.
func (rc *receiver) sink(t *testing.T) sink.Sink {
	s, err := sink.NewWebhook(sink.WebhookConfig{URL: rc.URL + "/events", Secret: testSecret, Timeout: 2 * time.Second, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allEvents lists every event in the database, oldest first.
func (e *env) allEvents() []*ent.OrderEvent {
	e.t.Helper()
	var out []*ent.OrderEvent
	after := ""
	for {
		es, more, err := e.relay.List(e.ctx, events.Filter{}, 100, after)
		if err != nil {
			e.t.Fatalf("List: %v", err)
		}
		out = append(out, es...)
		if !more {
			return out
		}
		after = es[len(es)-1].ID
	}
}

// verify checks a delivery's Standard Webhooks signature independently of
// the library the server signs with: HMAC-SHA256 over "id.timestamp.body"
// with the secret's key, base64, among the "v1," signatures.
func verify(t *testing.T, secret string, d delivery) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	ts := d.header.Get("webhook-timestamp")
	if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Errorf("webhook-timestamp %q is not now", ts)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", d.header.Get("webhook-id"), ts)
	mac.Write(d.body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !slices.Contains(strings.Fields(d.header.Get("webhook-signature")), want) {
		t.Errorf("webhook-signature %q does not sign the delivery (want %q)", d.header.Get("webhook-signature"), want)
	}
}
