package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"flashsale/internal/testkit"
	"flashsale/internal/testnats"
	"flashsale/sink"
)

// testEventsSecret signs the order events the server sends (not
// testSecret: the payment provider must not be able to forge them).
const testEventsSecret = "whsec_" + "ZXZlbnRzLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"

// eventReceiver is the shop's endpoint for order events.
type eventReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []map[string]any
	raw  []string // the bodies as sent
	ids  []string
	fail bool // answer 500
}

func newEventReceiver(t *testing.T) *eventReceiver {
	rc := &eventReceiver{}
	// Verified as the docs tell a shop to (docs/events.md).
	verifier, err := standardwebhooks.NewWebhook(testEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := verifier.Verify(body, r.Header); err != nil {
			t.Errorf("event signature: %v", err)
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("event body %q: %v", body, err)
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if rc.fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		rc.got = append(rc.got, ev)
		rc.raw = append(rc.raw, string(body))
		rc.ids = append(rc.ids, r.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *eventReceiver) received() []map[string]any {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]map[string]any(nil), rc.got...)
}

func (rc *eventReceiver) setFailing(f bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.fail = f
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// payWith delivers a signed payment event with the optional fields.
func (ts *testServer) payWith(t *testing.T, fields map[string]any) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(fields)
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/payments/webhook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if err := testSigner.Sign(req.Header, fmt.Sprint("msg_", fields["idempotency_key"]), time.Now(), body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

type eventJSON struct {
	ID         string
	Type       string
	Sequence   int
	Payload    string
	Order      struct{ ID, Status string }
	Deliveries []struct {
		Sink, Status string
		Attempts     int
		LastError    *string
		DeliveredAt  *string
	}
}

const eventFields = `id type sequence payload order { id status } deliveries { sink status attempts lastError deliveredAt }`

// TestOrderEventsOverHTTP: a purchase through the real server reaches the
// shop's webhook (signed) and NATS, and operators see and replay it. On
// SQLite it runs on the embedded default database.
func TestOrderEventsOverHTTP(t *testing.T) {
	for _, d := range []string{dialect.MySQL, dialect.SQLite} {
		t.Run(d, func(t *testing.T) {
			rc := newEventReceiver(t)
			ns := testnats.Start(t)
			metricsAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
			env := map[string]string{
				"EVENTS_WEBHOOK_URL": rc.URL + "/flashsale/events", "EVENTS_WEBHOOK_SECRET": testEventsSecret,
				"EVENTS_NATS_URL": ns.URL(), "EVENTS_RETRY_MIN": "100ms", "EVENTS_RETRY_MAX": "200ms",
				"METRICS_ADDR": metricsAddr,
			}
			if d == dialect.SQLite {
				t.Chdir(t.TempDir())
				env["DATABASE_URL"], env["WEBHOOK_SECRET"] = "", "" // the embedded default
			}
			ts := startServer(t, d, env)
			checkEventsFlow(t, ts, rc, ns)
			checkEventsMetrics(t, metricsAddr)
		})
	}
}

func checkEventsFlow(t *testing.T, ts *testServer, rc *eventReceiver, ns *testnats.Server) {
	p := ts.createProduct(t, 5)
	o := ts.createOrder(t, ts.createHold(t, p.ID, 2))
	pay := map[string]any{"idempotency_key": "evt_e2e", "order_id": o, "status": "success", "payment_reference": "pay_42", "amount_cents": 2500}
	if status, body := ts.payWith(t, pay); status != 200 || body["outcome"] != "APPLIED" {
		t.Fatalf("webhook: %d %v", status, body)
	}
	waitFor(t, "2 events at the webhook", func() bool { return len(rc.received()) == 2 })
	got := rc.received()
	if got[0]["type"] != "order.created" || got[1]["type"] != "order.paid" {
		t.Fatalf("received %v", got)
	}
	order := got[1]["data"].(map[string]any)["order"].(map[string]any)
	if order["id"] != o || order["paymentReference"] != "pay_42" || order["customerId"] != nil {
		t.Errorf("order.paid carries %v", order)
	}

	var out struct {
		Order       struct{ CustomerID, PaymentReference *string }
		OrderEvents struct {
			Edges []struct {
				Cursor string
				Node   eventJSON
			}
			PageInfo struct {
				HasNextPage bool
				EndCursor   string
			}
		}
	}
	waitFor(t, "both sinks DELIVERED", func() bool {
		ts.gql(t, testAdminToken, `query($o: ID!) { order(id: $o) { customerId paymentReference }
			orderEvents(orderId: $o, status: PENDING) { edges { cursor node { id } } } }`, map[string]any{"o": o}).must(t, &out)
		return len(out.OrderEvents.Edges) == 0
	})
	// Delivered to NATS means acknowledged by JetStream: both are stored
	// (the stream itself is made by the first send, so not read before).
	if n := len(testnats.StreamMessages(t, testnats.JetStream(t, ns.URL()), sink.DefaultNATSStream)); n != 2 {
		t.Errorf("%d events in the stream, want 2", n)
	}
	if out.Order.CustomerID != nil || out.Order.PaymentReference == nil || *out.Order.PaymentReference != "pay_42" {
		t.Errorf("order customerId %v paymentReference %v", out.Order.CustomerID, out.Order.PaymentReference)
	}
	// Oldest first, a page of one, then the next.
	ts.gql(t, testAdminToken, `query($o: ID!) { orderEvents(orderId: $o, first: 1) { edges { cursor node { `+eventFields+` } } pageInfo { hasNextPage endCursor } } }`,
		map[string]any{"o": o}).must(t, &out)
	first := out.OrderEvents.Edges[0].Node
	if first.Type != "order.created" || first.Sequence != 1 || first.Order.ID != o || !out.OrderEvents.PageInfo.HasNextPage ||
		len(first.Deliveries) != 2 || first.Deliveries[0].Status != "DELIVERED" || first.Deliveries[1].Status != "DELIVERED" {
		t.Fatalf("first page %+v", out.OrderEvents)
	}
	if first.Payload != rc.raw[0] {
		t.Errorf("payload %s is not the body sent %s", first.Payload, rc.raw[0])
	}
	ts.gql(t, testAdminToken, `query($o: ID!, $a: String) { orderEvents(orderId: $o, first: 1, after: $a) { edges { cursor node { `+eventFields+` } } pageInfo { hasNextPage endCursor } } }`,
		map[string]any{"o": o, "a": out.OrderEvents.PageInfo.EndCursor}).must(t, &out)
	if n := out.OrderEvents.Edges; len(n) != 1 || n[0].Node.Type != "order.paid" || out.OrderEvents.PageInfo.HasNextPage {
		t.Fatalf("second page %+v", out.OrderEvents)
	}

	// Replay: the same id again, to both sinks.
	var re struct{ RedeliverEvents []eventJSON }
	ts.gql(t, testAdminToken, `mutation($ids: [ID!]!) { redeliverEvents(ids: $ids) { `+eventFields+` } }`,
		map[string]any{"ids": []string{first.ID}}).must(t, &re)
	if len(re.RedeliverEvents) != 1 || re.RedeliverEvents[0].Deliveries[0].Status != "PENDING" {
		t.Errorf("redeliverEvents answered %+v", re.RedeliverEvents)
	}
	waitFor(t, "the replay", func() bool { return len(rc.received()) == 3 })
	if rc.ids[2] != first.ID {
		t.Errorf("replayed %s, want %s", rc.ids[2], first.ID)
	}
	for _, tc := range []struct{ token, query, code string }{
		{"", `{ orderEvents { edges { cursor } } }`, "UNAUTHENTICATED"},
		{"", `mutation { redeliverFailedEvents }`, "UNAUTHENTICATED"},
		{testAdminToken, `mutation { redeliverEvents(ids: ["evt_00000000000000000000000000000000"]) { id } }`, "NOT_FOUND"},
		{testAdminToken, `mutation { redeliverEvents(ids: ["nope"]) { id } }`, "BAD_USER_INPUT"},
		{testAdminToken, `mutation { redeliverEvents(ids: []) { id } }`, "BAD_USER_INPUT"},
		{testAdminToken, `{ orderEvents(after: "bm9wZQ") { edges { cursor } } }`, "BAD_USER_INPUT"},
		{testAdminToken, `{ orderEvents(first: 101) { edges { cursor } } }`, "BAD_USER_INPUT"},
		{testAdminToken, `{ orderEvents(orderId: "x") { edges { cursor } } }`, "BAD_USER_INPUT"},
	} {
		if r := ts.gql(t, tc.token, tc.query, nil); r.code() != tc.code {
			t.Errorf("%s: %s %+v, want %s", tc.query, r.Data, r.Errors, tc.code)
		}
	}
	var n struct{ RedeliverFailedEvents int }
	ts.gql(t, testAdminToken, `mutation { redeliverFailedEvents }`, nil).must(t, &n)
	if n.RedeliverFailedEvents != 0 {
		t.Errorf("redeliverFailedEvents = %d with nothing FAILED", n.RedeliverFailedEvents)
	}
}

func checkEventsMetrics(t *testing.T, addr string) {
	t.Helper()
	want := []struct {
		family string
		labels []string
		min    float64
	}{
		{"flashsale_events_total", []string{"type", "order.created"}, 1},
		{"flashsale_events_total", []string{"type", "order.paid"}, 1},
		{"flashsale_event_attempts_total", []string{"sink", "webhook", "outcome", "delivered"}, 3},
		{"flashsale_event_attempts_total", []string{"sink", "nats", "outcome", "delivered"}, 3},
		{"flashsale_webhook_deliveries_total", []string{"outcome", "APPLIED"}, 1},
	}
	// An attempt is counted once its outcome is written, a moment after
	// the receiver answered it: scrape until the counts are there.
	var fams testkit.Metrics
	reached := func() bool {
		fams = testkit.Scrape(t, addr)
		for _, tc := range want {
			if got, ok := fams.Labeled(tc.family, tc.labels...); !ok || got < tc.min {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for !reached() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, tc := range want {
		if got, ok := fams.Labeled(tc.family, tc.labels...); !ok || got < tc.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", tc.family, tc.labels, got, ok, tc.min)
		}
	}
	for _, sinkName := range []string{"webhook", "nats"} {
		for _, f := range []string{"flashsale_events_pending", "flashsale_events_oldest_pending_seconds"} {
			if _, ok := fams.Labeled(f, "sink", sinkName); !ok {
				t.Errorf("no %s{sink=%q}", f, sinkName)
			}
		}
	}
}

// TestEventsConfigRefused: the EVENTS_* settings refuse to start, naming
// the variable, when a sink is half set, unsigned, signed with a secret the
// payment provider knows, or malformed; no secret is quoted.
func TestEventsConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"URL without secret", map[string]string{"EVENTS_WEBHOOK_URL": "https://shop.example/events"}, []string{"EVENTS_WEBHOOK_SECRET is required"}},
		{"secret without URL", map[string]string{"EVENTS_WEBHOOK_SECRET": testEventsSecret}, []string{"EVENTS_WEBHOOK_URL is not"}},
		{"secret is WEBHOOK_SECRET", map[string]string{"EVENTS_WEBHOOK_URL": "https://shop.example/events", "EVENTS_WEBHOOK_SECRET": testSecret},
			[]string{"EVENTS_WEBHOOK_SECRET must not be the same as WEBHOOK_SECRET"}},
		{"secret is one of WEBHOOK_SECRET's", map[string]string{"EVENTS_WEBHOOK_URL": "https://shop.example/events", "EVENTS_WEBHOOK_SECRET": testSecret,
			"WEBHOOK_SECRET": testEventsSecret + " " + testSecret}, []string{"EVENTS_WEBHOOK_SECRET must not be the same as WEBHOOK_SECRET"}},
		{"malformed secret", map[string]string{"EVENTS_WEBHOOK_URL": "https://shop.example/events", "EVENTS_WEBHOOK_SECRET": "whsec_%%%secret%%%"}, []string{"EVENTS_WEBHOOK_SECRET"}},
		{"ftp URL", map[string]string{"EVENTS_WEBHOOK_URL": "ftp://shop.example/events", "EVENTS_WEBHOOK_SECRET": testEventsSecret}, []string{"EVENTS_WEBHOOK_URL", "http or https"}},
		{"URL without host", map[string]string{"EVENTS_WEBHOOK_URL": "https:///events", "EVENTS_WEBHOOK_SECRET": testEventsSecret}, []string{"EVENTS_WEBHOOK_URL"}},
		{"malformed NATS URL", map[string]string{"EVENTS_NATS_URL": "nats//127.0.0.1:4222"}, []string{"EVENTS_NATS_URL"}},
		{"NATS subject with a wildcard", map[string]string{"EVENTS_NATS_URL": "nats://127.0.0.1:4222", "EVENTS_NATS_SUBJECT": "shop.*"}, []string{"EVENTS_NATS_SUBJECT"}},
		{"timeout past the lease", map[string]string{"EVENTS_TIMEOUT": "30s"}, []string{"EVENTS_TIMEOUT"}},
		{"retry min over max", map[string]string{"EVENTS_RETRY_MIN": "2h"}, []string{"EVENTS_RETRY_MIN", "EVENTS_RETRY_MAX"}},
		{"no attempts", map[string]string{"EVENTS_MAX_ATTEMPTS": "0"}, []string{"EVENTS_MAX_ATTEMPTS"}},
		{"admin token is the events secret", map[string]string{"EVENTS_WEBHOOK_URL": "https://shop.example/events",
			"EVENTS_WEBHOOK_SECRET": testEventsSecret, "ADMIN_TOKEN": testEventsSecret}, []string{"ADMIN_TOKEN", "EVENTS_WEBHOOK_SECRET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"DATABASE_URL": "sqlite://" + t.TempDir() + "/x.db", "PORT": "0", "WEBHOOK_SECRET": testSecret}
			for k, v := range tc.env {
				env[k] = v
			}
			err := run(context.Background(), []string{"flashsale"}, func(k string) string { return env[k] }, io.Discard)
			if err == nil {
				t.Fatal("run started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, secret := range []string{testEventsSecret[6:], testSecret[6:], "%%%secret%%%"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error quotes a secret: %v", err)
				}
			}
			if _, statErr := os.Stat(strings.TrimPrefix(env["DATABASE_URL"], "sqlite://")); statErr == nil {
				t.Errorf("the refused server created its database")
			}
		})
	}
}
