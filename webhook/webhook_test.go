package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/database"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/internal/testdb"
	"flashsale/internal/testkit"
	"flashsale/signing"
	"flashsale/stock"
	"flashsale/webhook"
)

// Two unrelated 24-byte keys.
const (
	secretKey   = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	testSecret  = "whsec_" + secretKey
	otherSecret = "whsec_3q2+7w0BAgMEBQYHCAkKCwwNDg8QERIT"
)

var testKey = mustParseSecret(testSecret)

func mustParseSecret(s string) []byte {
	key, err := signing.ParseSecret(s)
	if err != nil {
		panic(err)
	}
	return key
}

var stockConfig = stock.Config{HoldTTL: time.Minute, PaymentTimeout: 15 * time.Minute, MaxHoldQty: 10}

// env is one database with a stock service and a webhook handler over it.
type env struct {
	db   *database.DB
	svc  *stock.Service
	h    *webhook.Handler
	logs *testkit.SyncBuffer
}

func newEnv(t *testing.T, dialect string, opts webhook.Options) *env {
	t.Helper()
	db := testdb.Open(t, dialect, database.Options{MaxConns: 10})
	return newEnvOn(t, db, opts)
}

func newEnvOn(t *testing.T, db *database.DB, opts webhook.Options) *env {
	t.Helper()
	e := &env{db: db, logs: &testkit.SyncBuffer{}}
	e.svc = stock.New(db.Ent, db.Dialect, stockConfig, slog.New(slog.DiscardHandler))
	opts.Logger = slog.New(slog.NewJSONHandler(e.logs, nil))
	h, err := webhook.New(e.svc, opts)
	if err != nil {
		t.Fatalf("webhook.New: %v", err)
	}
	e.h = h
	return e
}

// fixture is an order of 3 units of a product with 10 in stock, and an
// idempotency key not used yet.
type fixture struct {
	productID int
	holdID    uuid.UUID
	orderID   uuid.UUID
	key       string
}

func (e *env) newOrder(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	p, err := e.svc.CreateProduct(ctx, nil, stock.NewProduct{Name: "widget", PriceCents: 500, Stock: 10})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.svc.CreateHold(ctx, stock.HoldRequest{ProductID: p.ID, Qty: 3})
	if err != nil {
		t.Fatal(err)
	}
	o, err := e.svc.CreateOrder(ctx, h.ID, stock.Anonymous)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{productID: p.ID, holdID: h.ID, orderID: o.ID, key: "evt_" + uuid.NewString()}
}

// state is everything a delivery may change.
type state struct {
	available, reserved int
	order               order.Status
	hold                hold.Status
	events              int
	reference           string // the order's paymentReference
	orderEvents         int    // the outbox's order events
}

func (e *env) state(t *testing.T, f fixture) state {
	t.Helper()
	ctx := context.Background()
	p, err := e.db.Ent.Product.Get(ctx, f.productID)
	if err != nil {
		t.Fatal(err)
	}
	o, err := e.db.Ent.Order.Get(ctx, f.orderID)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.db.Ent.Hold.Get(ctx, f.holdID)
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.db.Ent.PaymentEvent.Query().Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oe, err := e.db.Ent.OrderEvent.Query().Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref := ""
	if o.PaymentReference != nil {
		ref = *o.PaymentReference
	}
	return state{available: p.StockAvailable, reserved: p.StockReserved, order: o.Status, hold: h.Status, events: n,
		reference: ref, orderEvents: oe}
}

func (e *env) audit(t *testing.T) {
	t.Helper()
	testkit.MustAudit(t, context.Background(), e.svc)
}

// apply records an event directly through the service, as an earlier delivery would.
func (e *env) apply(t *testing.T, key string, orderID uuid.UUID, status string) {
	t.Helper()
	if _, err := e.svc.ApplyPayment(context.Background(), stock.Payment{Key: key, OrderID: orderID, Status: status}); err != nil {
		t.Fatalf("apply %s %s: %v", key, status, err)
	}
}

func eventJSON(key string, orderID any, status string) string {
	return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%v","status":%q}`, key, orderID, status)
}

// signer sets (or leaves out) the signature headers of a request.
type signer func(t *testing.T, h http.Header, body []byte)

func signAt(secret string, offset time.Duration) signer {
	return func(t *testing.T, h http.Header, body []byte) {
		t.Helper()
		sg, err := signing.NewSigner(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := sg.Sign(h, "msg_"+uuid.NewString(), time.Now().Add(offset), body); err != nil {
			t.Fatal(err)
		}
	}
}

var signed = signAt(testSecret, 0)

func unsigned(*testing.T, http.Header, []byte) {}

// then runs s and alters its headers.
func then(s signer, alter func(h http.Header)) signer {
	return func(t *testing.T, h http.Header, body []byte) {
		s(t, h, body)
		alter(h)
	}
}

func newRequest(t *testing.T, method, contentType, body string, sign signer) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, "/api/payments/webhook", strings.NewReader(body))
	r.RemoteAddr = "127.0.0.1:40000" // this machine: an unsigned call is taken only from loopback
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	sign(t, r.Header, []byte(body))
	return r
}

// reply is a decoded answer, checked against the contract's shapes.
type reply struct {
	status    int
	header    http.Header
	ok        okBody
	errorText string
}

type okBody struct {
	OrderID     string `json:"order_id"`
	OrderStatus string `json:"order_status"`
	Duplicate   bool   `json:"duplicate"`
	Outcome     string `json:"outcome"`
}

// decodeReply may run on any goroutine, so it reports with Errorf.
func decodeReply(t *testing.T, status int, header http.Header, body []byte) reply {
	t.Helper()
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	rep := reply{status: status, header: header}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if status == http.StatusOK {
		if err := dec.Decode(&rep.ok); err != nil {
			t.Errorf("200 body %s: %v", body, err)
		}
		return rep
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Errorf("%d body %s: want {\"error\": message} (%v)", status, body, err)
	}
	rep.errorText = e.Error
	return rep
}

func (e *env) do(t *testing.T, r *http.Request) reply {
	t.Helper()
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, r)
	return decodeReply(t, rec.Code, rec.Header(), rec.Body.Bytes())
}

// lastLog returns the handler's last JSON log line, decoded.
func (e *env) lastLog(t *testing.T) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(e.logs.String()), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("log line %q: %v", lines[len(lines)-1], err)
	}
	return m
}

// checkLog asserts the delivery was logged with its answer and without secrets.
func (e *env) checkLog(t *testing.T, status int) {
	t.Helper()
	line := e.lastLog(t)
	for _, k := range []string{"webhook_id", "idempotency_key", "order_id", "payment_status", "http_status", "outcome", "duplicate", "duration"} {
		if _, ok := line[k]; !ok {
			t.Errorf("log line lacks %q: %v", k, line)
		}
	}
	if got, _ := line["http_status"].(float64); int(got) != status {
		t.Errorf("logged http_status %v, want %d", line["http_status"], status)
	}
	if all := e.logs.String(); strings.Contains(all, secretKey) || strings.Contains(all, "v1,") {
		t.Errorf("log shows the secret or a signature:\n%s", all)
	}
}

// pad returns body followed by spaces up to n bytes (still valid JSON).
func pad(body string, n int) string { return body + strings.Repeat(" ", n-len(body)) }

// TestDeliveries runs every answer of the contract's table on both databases.
// Refusals must leave the order, its hold, the product's counters and the
// payment_events table as they were.
func TestDeliveries(t *testing.T) {
	paid := func(s state) state {
		s.available, s.reserved, s.order, s.events = s.available-3, s.reserved-3, order.StatusPAID, s.events+1
		return s
	}
	cancelled := func(s state) state {
		s.reserved, s.order, s.hold, s.events = s.reserved-3, order.StatusCANCELLED, hold.StatusRELEASED, s.events+1
		return s
	}
	ok := func(f fixture) string { return eventJSON(f.key, f.orderID, "success") }

	cases := []struct {
		name        string
		setup       func(t *testing.T, e *env, f fixture) // earlier events
		method      string                                // default POST
		contentType string                                // default application/json; "-" for none
		body        func(f fixture) string                // default ok
		sign        signer                                // default signed
		want        int
		wantErr     string              // part of the error message, for refusals with several possible reasons
		wantOrder   order.Status        // for 200
		wantDup     bool                // for 200
		wantOutcome string              // for 200: default APPLIED, or DUPLICATE with wantDup
		change      func(s state) state // what the delivery changes; nil for nothing
	}{
		{name: "success applied", want: 200, wantOrder: order.StatusPAID, change: paid},
		{name: "failure applied", body: func(f fixture) string { return eventJSON(f.key, f.orderID, "failure") },
			want: 200, wantOrder: order.StatusCANCELLED, change: cancelled},
		{name: "charset parameter", contentType: "application/json; charset=UTF-8", want: 200, wantOrder: order.StatusPAID, change: paid},
		{name: "body of exactly MaxBody", body: func(f fixture) string { return pad(ok(f), webhook.MaxBody) },
			want: 200, wantOrder: order.StatusPAID, change: paid},
		{name: "signature list, second valid",
			sign: then(signed, func(h http.Header) {
				h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))+" "+h.Get("webhook-signature"))
			}),
			want: 200, wantOrder: order.StatusPAID, change: paid},
		{name: "duplicate",
			setup: func(t *testing.T, e *env, f fixture) { e.apply(t, f.key, f.orderID, "success") },
			want:  200, wantOrder: order.StatusPAID, wantDup: true},
		{name: "late failure ignored",
			setup: func(t *testing.T, e *env, f fixture) { e.apply(t, "evt_"+uuid.NewString(), f.orderID, "success") },
			body:  func(f fixture) string { return eventJSON(f.key, f.orderID, "failure") },
			want:  200, wantOrder: order.StatusPAID, wantOutcome: "IGNORED",
			change: func(s state) state { s.events++; return s }},
		{name: "amount and reference given",
			body: func(f fixture) string {
				return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","amount_cents":1500,"payment_reference":"pay_9"}`, f.key, f.orderID)
			},
			want: 200, wantOrder: order.StatusPAID,
			change: func(s state) state { s = paid(s); s.reference = "pay_9"; return s }},
		{name: "optional fields null",
			body: func(f fixture) string {
				return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","amount_cents":null,"payment_reference":null}`, f.key, f.orderID)
			},
			want: 200, wantOrder: order.StatusPAID, change: paid},
		{name: "amount differs",
			body: func(f fixture) string {
				return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","amount_cents":1499}`, f.key, f.orderID)
			},
			want: 422, wantErr: "amount_cents 1499"},
		{name: "amount not whole",
			body: func(f fixture) string {
				return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","amount_cents":15.5}`, f.key, f.orderID)
			},
			want: 400, wantErr: "whole number"},
		{name: "negative amount",
			body: func(f fixture) string {
				return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","amount_cents":-1}`, f.key, f.orderID)
			},
			want: 400, wantErr: "amount_cents"},
		{name: "empty reference",
			body: func(f fixture) string {
				return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","payment_reference":""}`, f.key, f.orderID)
			},
			want: 400, wantErr: "payment_reference"},
		{name: "reference with a newline",
			body: func(f fixture) string {
				return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","payment_reference":"a\nb"}`, f.key, f.orderID)
			},
			want: 400, wantErr: "payment_reference"},
		{name: "late success sells a cancelled order",
			setup: func(t *testing.T, e *env, f fixture) { e.apply(t, "evt_"+uuid.NewString(), f.orderID, "failure") },
			want:  200, wantOrder: order.StatusPAID,
			change: func(s state) state {
				s.available, s.order, s.events = s.available-3, order.StatusPAID, s.events+1
				return s
			}},

		{name: "late success without stock needs a refund",
			setup: func(t *testing.T, e *env, f fixture) {
				e.apply(t, "evt_"+uuid.NewString(), f.orderID, "failure")
				if _, err := e.svc.CreateHold(context.Background(), stock.HoldRequest{ProductID: f.productID, Qty: 10}); err != nil {
					t.Fatal(err)
				}
			},
			want: 200, wantOrder: order.StatusREFUND_REQUIRED,
			change: func(s state) state {
				s.order, s.events = order.StatusREFUND_REQUIRED, s.events+1
				return s
			}},

		{name: "not JSON", body: func(fixture) string { return "idempotency_key=k" }, want: 400},
		{name: "truncated JSON", body: func(f fixture) string { return ok(f)[:20] }, want: 400},
		{name: "empty body", body: func(fixture) string { return "" }, want: 400},
		{name: "array", body: func(f fixture) string { return "[" + ok(f) + "]" }, want: 400},
		{name: "null", body: func(fixture) string { return "null" }, want: 400},
		{name: "unknown field", body: func(f fixture) string {
			return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"success","amount":5}`, f.key, f.orderID)
		}, want: 400, wantErr: `unknown field "amount"`},
		{name: "field name in other case", body: func(f fixture) string {
			return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","Status":"success"}`, f.key, f.orderID)
		}, want: 400, wantErr: `unknown field "Status"`},
		{name: "field given twice", body: func(f fixture) string {
			return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":"failure","status":"success"}`, f.key, f.orderID)
		}, want: 400, wantErr: `field "status" appears more than once`},
		{name: "missing field", body: func(f fixture) string {
			return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s"}`, f.key, f.orderID)
		}, want: 400, wantErr: `"status" is required`},
		{name: "empty key", body: func(f fixture) string { return eventJSON("", f.orderID, "success") }, want: 400},
		{name: "null key", body: func(f fixture) string {
			return fmt.Sprintf(`{"idempotency_key":null,"order_id":"%s","status":"success"}`, f.orderID)
		}, want: 400},
		{name: "status not a string", body: func(f fixture) string {
			return fmt.Sprintf(`{"idempotency_key":%q,"order_id":"%s","status":1}`, f.key, f.orderID)
		}, want: 400, wantErr: `"status" must be a string`},
		{name: "bad status", body: func(f fixture) string { return eventJSON(f.key, f.orderID, "pending") }, want: 400},
		{name: "status in other case", body: func(f fixture) string { return eventJSON(f.key, f.orderID, "SUCCESS") }, want: 400},
		{name: "key with surrounding space", body: func(f fixture) string { return eventJSON(" "+f.key, f.orderID, "success") }, want: 400},
		{name: "key too long", body: func(f fixture) string { return eventJSON(strings.Repeat("k", 256), f.orderID, "success") }, want: 400},
		{name: "trailing garbage", body: func(f fixture) string { return ok(f) + " x" }, want: 400, wantErr: "nothing after it"},
		{name: "two objects", body: func(f fixture) string { return ok(f) + ok(f) }, want: 400, wantErr: "nothing after it"},
		{name: "wrong content type", contentType: "text/plain", want: 400, wantErr: "Content-Type"},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", want: 400, wantErr: "Content-Type"},
		{name: "no content type", contentType: "-", want: 400, wantErr: "Content-Type"},
		{name: "non-UTF-8 charset", contentType: "application/json; charset=latin1", want: 400, wantErr: "charset"},

		{name: "missing signature", sign: unsigned, want: 401, wantErr: "signature"},
		{name: "signature header only", sign: then(signed, func(h http.Header) { h.Del("webhook-id") }), want: 401},
		{name: "wrong signature", sign: func(t *testing.T, h http.Header, body []byte) {
			signed(t, h, append(body, ' ')) // signs other bytes
		}, want: 401, wantErr: "signature"},
		{name: "signature for another message id", sign: then(signed, func(h http.Header) { h.Set("webhook-id", "msg_other") }), want: 401},
		{name: "signature without version", sign: then(signed, func(h http.Header) {
			h.Set("webhook-signature", strings.TrimPrefix(h.Get("webhook-signature"), "v1,"))
		}), want: 401},
		{name: "wrong secret", sign: signAt(otherSecret, 0), want: 401},
		{name: "timestamp 6 minutes old", sign: signAt(testSecret, -6*time.Minute), want: 401, wantErr: "timestamp"},
		{name: "timestamp 6 minutes ahead", sign: signAt(testSecret, 6*time.Minute), want: 401, wantErr: "timestamp"},
		{name: "timestamp not a number", sign: then(signed, func(h http.Header) { h.Set("webhook-timestamp", "soon") }), want: 401},
		{name: "unsigned garbage", body: func(fixture) string { return "garbage" }, sign: unsigned, want: 401},

		{name: "unknown order", body: func(f fixture) string { return eventJSON(f.key, uuid.New(), "success") }, want: 404},
		{name: "order ID not a UUID", body: func(f fixture) string { return eventJSON(f.key, "order-1", "success") }, want: 404},

		{name: "key reused with other status",
			setup: func(t *testing.T, e *env, f fixture) { e.apply(t, f.key, f.orderID, "failure") },
			want:  409},
		{name: "key reused with other order",
			setup: func(t *testing.T, e *env, f fixture) { e.apply(t, f.key, e.newOrder(t).orderID, "success") },
			want:  409},

		{name: "body over MaxBody", body: func(f fixture) string { return pad(ok(f), webhook.MaxBody+1) }, want: 413},
		{name: "GET", method: http.MethodGet, body: func(fixture) string { return "" }, want: 405},
		{name: "PUT", method: http.MethodPut, want: 405},
	}

	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			e := newEnv(t, d, webhook.Options{Keys: [][]byte{testKey}})
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					f := e.newOrder(t)
					if tc.setup != nil {
						tc.setup(t, e, f)
					}
					before := e.state(t, f)
					method, ct, body, sign := http.MethodPost, "application/json", ok(f), signed
					if tc.method != "" {
						method = tc.method
					}
					switch tc.contentType {
					case "":
					case "-":
						ct = ""
					default:
						ct = tc.contentType
					}
					if tc.body != nil {
						body = tc.body(f)
					}
					if tc.sign != nil {
						sign = tc.sign
					}

					rep := e.do(t, newRequest(t, method, ct, body, sign))

					if rep.status != tc.want {
						t.Fatalf("status %d (%q), want %d", rep.status, rep.errorText, tc.want)
					}
					if !strings.Contains(rep.errorText, tc.wantErr) {
						t.Errorf("error %q, want it to mention %q", rep.errorText, tc.wantErr)
					}
					switch tc.want {
					case 200:
						want := okBody{OrderID: f.orderID.String(), OrderStatus: string(tc.wantOrder), Duplicate: tc.wantDup, Outcome: tc.wantOutcome}
						if want.Outcome == "" {
							want.Outcome = map[bool]string{false: "APPLIED", true: "DUPLICATE"}[tc.wantDup]
						}
						if rep.ok != want {
							t.Errorf("body %+v, want %+v", rep.ok, want)
						}
					case 405:
						if got := rep.header.Get("Allow"); got != http.MethodPost {
							t.Errorf("Allow = %q, want POST", got)
						}
					}
					want := before
					if tc.change != nil {
						want = tc.change(before)
						if want.order != before.order {
							want.orderEvents++ // the outbox's event of the change
						}
					}
					if after := e.state(t, f); after != want {
						t.Errorf("state after delivery %+v, want %+v (before %+v)", after, want, before)
					}
					e.audit(t)
					e.checkLog(t, tc.want)
				})
			}
		})
	}
}

// deliverAtOnce POSTs each signed body from its own goroutine, all released
// together, and returns the replies in order.
func deliverAtOnce(t *testing.T, h http.Handler, bodies []string) []reply {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	start := make(chan struct{})
	replies := make([]reply, len(bodies))
	var wg sync.WaitGroup
	for i, body := range bodies {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/payments/webhook", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		signed(t, req.Header, []byte(body))
		wg.Go(func() {
			<-start
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Error(err)
				return
			}
			replies[i] = decodeReply(t, resp.StatusCode, resp.Header, b)
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return replies
}

// TestConcurrentDuplicates: the same signed event delivered 20 times at once
// is applied exactly once; every delivery gets 200.
func TestConcurrentDuplicates(t *testing.T) {
	const n = 20
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			e := newEnv(t, d, webhook.Options{Keys: [][]byte{testKey}})
			f := e.newOrder(t)
			before := e.state(t, f)

			bodies := make([]string, n)
			for i := range bodies {
				bodies[i] = eventJSON(f.key, f.orderID, "success")
			}
			replies := deliverAtOnce(t, e.h, bodies)

			firsts := 0
			for i, rep := range replies {
				if rep.status != 200 || rep.ok.OrderStatus != "PAID" || rep.ok.OrderID != f.orderID.String() {
					t.Errorf("delivery %d: %d %+v %q", i, rep.status, rep.ok, rep.errorText)
				}
				if !rep.ok.Duplicate {
					firsts++
				}
			}
			if firsts != 1 {
				t.Errorf("%d deliveries answered duplicate:false, want exactly 1", firsts)
			}
			want := before
			want.available, want.reserved, want.order, want.events = before.available-3, before.reserved-3, order.StatusPAID, 1
			want.orderEvents++ // order.paid, once
			if after := e.state(t, f); after != want {
				t.Errorf("state %+v, want %+v", after, want)
			}
			e.audit(t)
			if got := strings.Count(strings.TrimSpace(e.logs.String()), "\n") + 1; got != n {
				t.Errorf("%d log lines, want one per delivery (%d)", got, n)
			}
		})
	}
}

// TestConcurrentConflicts: one key delivered at once with both statuses. The
// first to commit wins; the other deliveries of its status are duplicates and
// those of the other status are 409, and stock moves once.
func TestConcurrentConflicts(t *testing.T) {
	const n = 20
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			e := newEnv(t, d, webhook.Options{Keys: [][]byte{testKey}})
			f := e.newOrder(t)
			before := e.state(t, f)

			bodies := make([]string, n)
			for i := range bodies {
				bodies[i] = eventJSON(f.key, f.orderID, []string{"success", "failure"}[i%2])
			}
			replies := deliverAtOnce(t, e.h, bodies)

			after := e.state(t, f)
			winner := map[order.Status]string{order.StatusPAID: "success", order.StatusCANCELLED: "failure"}[after.order]
			if winner == "" {
				t.Fatalf("order is %s, want PAID or CANCELLED", after.order)
			}
			firsts := 0
			for i, rep := range replies {
				switch {
				case strings.Contains(bodies[i], `"status":"`+winner+`"`):
					if rep.status != 200 || rep.ok.OrderStatus != string(after.order) {
						t.Errorf("delivery %d (%s, the winning status): %d %+v %q", i, winner, rep.status, rep.ok, rep.errorText)
					}
					if !rep.ok.Duplicate {
						firsts++
					}
				case rep.status != http.StatusConflict:
					t.Errorf("delivery %d (the losing status): %d %+v, want 409", i, rep.status, rep.ok)
				}
			}
			if firsts != 1 {
				t.Errorf("%d deliveries answered duplicate:false, want exactly 1", firsts)
			}
			want := before
			if winner == "success" {
				want.available, want.reserved, want.order = before.available-3, before.reserved-3, order.StatusPAID
			} else {
				want.reserved, want.order, want.hold = before.reserved-3, order.StatusCANCELLED, hold.StatusRELEASED
			}
			want.events = 1
			want.orderEvents++ // the winner's event, once
			if after != want {
				t.Errorf("state %+v, want %+v", after, want)
			}
			e.audit(t)
		})
	}
}

// TestUnavailable: when the database cannot be reached the answer is 503 with
// Retry-After, and the message does not reveal where the database is.
func TestUnavailable(t *testing.T) {
	db, err := database.Open("mysql://root@127.0.0.1:1/x", database.Options{MaxConns: 2}) // port 1 refuses
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := newEnvOn(t, db, webhook.Options{Keys: [][]byte{testKey}})

	body := eventJSON("evt_"+uuid.NewString(), uuid.New(), "success")
	rep := e.do(t, newRequest(t, http.MethodPost, "application/json", body, signed))
	if rep.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d (%q), want 503", rep.status, rep.errorText)
	}
	if got := rep.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	if strings.Contains(rep.errorText, "127.0.0.1") || strings.Contains(rep.errorText, "refused") {
		t.Errorf("error message reveals internals: %q", rep.errorText)
	}
	e.checkLog(t, 503)
}

// TestTimeout: a delivery whose database work overruns Options.Timeout is
// refused with 503 and changes nothing.
func TestTimeout(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			e := newEnv(t, d, webhook.Options{Keys: [][]byte{testKey}, Timeout: time.Nanosecond})
			f := e.newOrder(t)
			before := e.state(t, f)
			rep := e.do(t, newRequest(t, http.MethodPost, "application/json", eventJSON(f.key, f.orderID, "success"), signed))
			if rep.status != http.StatusServiceUnavailable || rep.header.Get("Retry-After") != "1" {
				t.Fatalf("status %d Retry-After %q (%q), want 503 and 1", rep.status, rep.header.Get("Retry-After"), rep.errorText)
			}
			if after := e.state(t, f); after != before {
				t.Errorf("state %+v, want unchanged %+v", after, before)
			}
			e.audit(t)
		})
	}
}

// TestCallerGone: a delivery whose caller hung up is still finished, so the
// provider's retry is a duplicate rather than a second attempt.
func TestCallerGone(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			e := newEnv(t, d, webhook.Options{Keys: [][]byte{testKey}})
			f := e.newOrder(t)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			r := newRequest(t, http.MethodPost, "application/json", eventJSON(f.key, f.orderID, "success"), signed).WithContext(ctx)
			if rep := e.do(t, r); rep.status != 200 {
				t.Fatalf("status %d (%q), want 200", rep.status, rep.errorText)
			}
			if s := e.state(t, f); s.order != order.StatusPAID || s.events != 1 {
				t.Errorf("state %+v, want the order PAID and one event", s)
			}
			e.audit(t)
		})
	}
}
