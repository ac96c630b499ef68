package sink_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"flashsale/sink"
)

// testKey is the signing key; testSecret is its WEBHOOK_SECRET form.
var (
	testKey    = []byte("0123456789abcdefghijklmnopqrstuv")
	testSecret = "whsec_" + base64.StdEncoding.EncodeToString(testKey)
)

// received is one request as a receiver saw it.
type received struct {
	method string
	header http.Header
	body   []byte
}

// receiver is an endpoint that records requests and answers with the
// given handler (200 when nil).
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
}

func newReceiver(t *testing.T, answer http.HandlerFunc) *receiver {
	t.Helper()
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, received{req.Method, req.Header.Clone(), body})
		r.mu.Unlock()
		if answer != nil {
			answer(w, req)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func newWebhook(t *testing.T, cfg sink.WebhookConfig) *sink.Webhook {
	t.Helper()
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	w, err := sink.NewWebhook(cfg)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// asError checks that err is a failed attempt, as the contract says.
func asError(t *testing.T, err error) *sink.Error {
	t.Helper()
	if err == nil {
		t.Fatal("Send succeeded, want a failed attempt")
	}
	e, ok := err.(*sink.Error)
	if !ok {
		t.Fatalf("Send error is %T (%v), want *sink.Error", err, err)
	}
	return e
}

func msg(id string, body string) sink.Message {
	return sink.Message{ID: id, Type: "order.paid", Body: []byte(body)}
}

// verifySignature checks a delivery's signature independently of the
// Standard Webhooks library: v1 is base64(HMAC-SHA256(key, id.ts.body)).
func verifySignature(t *testing.T, key []byte, h http.Header, body []byte) {
	t.Helper()
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if sigs := strings.Fields(h.Get("webhook-signature")); !slices.Contains(sigs, want) {
		t.Errorf("webhook-signature %q has no %q", sigs, want)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Fatalf("webhook-timestamp %q: %v", ts, err)
	}
	// Standard Webhooks receivers refuse a timestamp 5 minutes off.
	if d := time.Since(time.Unix(sec, 0)).Abs(); d > 5*time.Minute {
		t.Errorf("webhook-timestamp %s is %v off", ts, d)
	}
}

func TestWebhookSignsAndDelivers(t *testing.T) {
	r := newReceiver(t, nil)
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL + "/hooks/flashsale?shop=1"})
	if w.Name() != sink.NameWebhook {
		t.Errorf("Name() = %q, want %q", w.Name(), sink.NameWebhook)
	}
	// Bytes a careless re-encoding would change: escapes, non-ASCII, spacing.
	body := "{\"id\":\"evt_1\",  \"note\":\"caf\u00e9 \\u00e9\\n\",\"n\":1.50}\n"
	if err := w.Send(context.Background(), msg("evt_1", body)); err != nil {
		t.Fatalf("Send: %v", err)
	}

	reqs := r.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if got.method != http.MethodPost {
		t.Errorf("method %s, want POST", got.method)
	}
	if !bytes.Equal(got.body, []byte(body)) {
		t.Errorf("body %q, want %q", got.body, body)
	}
	for name, want := range map[string]string{
		"Content-Type": "application/json",
		"User-Agent":   sink.DefaultUserAgent,
		"webhook-id":   "evt_1",
	} {
		if v := got.header.Get(name); v != want {
			t.Errorf("header %s = %q, want %q", name, v, want)
		}
	}
	verifySignature(t, testKey, got.header, got.body)
}

func TestWebhookStatus(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		wantReason string // "" means delivered
		wantRetry  time.Duration
	}{
		{name: "200", status: 200},
		{name: "201", status: 201},
		{name: "204", status: 204},
		{name: "400", status: 400, wantReason: "HTTP 400"},
		{name: "404", status: 404, wantReason: "HTTP 404"},
		{name: "500", status: 500, wantReason: "HTTP 500"},
		{name: "500 ignores Retry-After", status: 500, header: map[string]string{"Retry-After": "7"}, wantReason: "HTTP 500"},
		{name: "429 without Retry-After", status: 429, wantReason: "HTTP 429"},
		{name: "429 Retry-After seconds", status: 429, header: map[string]string{"Retry-After": "7"}, wantReason: "HTTP 429", wantRetry: 7 * time.Second},
		{name: "503 Retry-After seconds", status: 503, header: map[string]string{"Retry-After": "120"}, wantReason: "HTTP 503", wantRetry: 2 * time.Minute},
		{name: "503 Retry-After negative", status: 503, header: map[string]string{"Retry-After": "-5"}, wantReason: "HTTP 503"},
		{name: "503 Retry-After garbage", status: 503, header: map[string]string{"Retry-After": "soon"}, wantReason: "HTTP 503"},
		{name: "503 Retry-After past date", status: 503, header: map[string]string{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, wantReason: "HTTP 503"},
		{name: "301", status: 301, header: map[string]string{"Location": "/elsewhere"}, wantReason: "redirect (HTTP 301), not followed"},
		{name: "302", status: 302, header: map[string]string{"Location": "/elsewhere"}, wantReason: "redirect (HTTP 302), not followed"},
		{name: "307", status: 307, header: map[string]string{"Location": "/elsewhere"}, wantReason: "redirect (HTTP 307), not followed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, `{"secret_detail":"do not store me"}`)
			})
			w := newWebhook(t, sink.WebhookConfig{URL: r.URL})
			err := w.Send(context.Background(), msg("evt_status", `{}`))
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Send: %v, want delivered", err)
				}
				return
			}
			e := asError(t, err)
			if e.Reason != tt.wantReason || e.RetryAfter != tt.wantRetry {
				t.Errorf("Error{Reason: %q, RetryAfter: %v}, want {%q, %v}", e.Reason, e.RetryAfter, tt.wantReason, tt.wantRetry)
			}
			if strings.Contains(e.Error(), "do not store me") {
				t.Errorf("error %q holds the response body", e.Error())
			}
			if n := len(r.requests()); n != 1 {
				t.Errorf("receiver got %d requests, want 1 (followed a redirect?)", n)
			}
		})
	}
}

func TestWebhookRedirectNotFollowed(t *testing.T) {
	target := newReceiver(t, nil)
	r := newReceiver(t, func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, target.URL+"/stolen", http.StatusFound)
	})
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL})
	e := asError(t, w.Send(context.Background(), msg("evt_redirect", `{}`)))
	if want := "redirect (HTTP 302), not followed"; e.Reason != want {
		t.Errorf("Reason %q, want %q", e.Reason, want)
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("redirect target got %d requests, want 0", n)
	}
}

func TestWebhookRetryAfterDate(t *testing.T) {
	r := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(90*time.Second).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL})
	e := asError(t, w.Send(context.Background(), msg("evt_date", `{}`)))
	if e.Reason != "HTTP 503" {
		t.Errorf("Reason %q, want HTTP 503", e.Reason)
	}
	// The date has whole seconds and the clock moves on: any positive
	// wait up to 90s is right.
	if e.RetryAfter <= 0 || e.RetryAfter > 90*time.Second {
		t.Errorf("RetryAfter %v, want in (0, 90s]", e.RetryAfter)
	}
}

func TestWebhookTimeout(t *testing.T) {
	r := newReceiver(t, func(_ http.ResponseWriter, req *http.Request) {
		<-req.Context().Done() // answers only once the sink has given up
	})
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL, Timeout: 200 * time.Millisecond})
	e := asError(t, w.Send(context.Background(), msg("evt_slow", `{}`)))
	if e.Reason != "timeout" {
		t.Errorf("Reason %q (%v), want timeout", e.Reason, e)
	}
}

func TestWebhookCanceled(t *testing.T) {
	r := newReceiver(t, nil)
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := asError(t, w.Send(ctx, msg("evt_canceled", `{}`)))
	if e.Reason != "canceled" {
		t.Errorf("Reason %q (%v), want canceled", e.Reason, e)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestWebhookConnectionRefused(t *testing.T) {
	// The query and credentials must not reach the reason or the error.
	url := "http://user:hunter2@" + closedPort(t) + "/hook?token=sekrit"
	w := newWebhook(t, sink.WebhookConfig{URL: url})
	e := asError(t, w.Send(context.Background(), msg("evt_refused", `{}`)))
	if e.Reason != "connection refused" {
		t.Errorf("Reason %q (%v), want connection refused", e.Reason, e)
	}
	for _, s := range []string{"sekrit", "hunter2"} {
		if strings.Contains(e.Error(), s) {
			t.Errorf("error %q quotes the URL's %q", e.Error(), s)
		}
	}
}

func TestWebhookHugeResponseBody(t *testing.T) {
	huge := bytes.Repeat([]byte("x"), 10<<20)
	for _, tt := range []struct {
		status     int
		wantReason string
	}{{200, ""}, {500, "HTTP 500"}} {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			r := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.status)
				w.Write(huge) // fails once the sink hangs up; that is expected
			})
			w := newWebhook(t, sink.WebhookConfig{URL: r.URL})
			err := w.Send(context.Background(), msg("evt_huge", `{}`))
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Send: %v, want delivered", err)
				}
				return
			}
			if e := asError(t, err); e.Reason != tt.wantReason || strings.Contains(e.Error(), "xxx") {
				t.Errorf("Reason %q, error %.100q; want reason %q and no body", e.Reason, e.Error(), tt.wantReason)
			}
		})
	}
}

func TestWebhookReusesConnection(t *testing.T) {
	var conns atomic.Int32
	r := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write(bytes.Repeat([]byte("y"), 4<<10)) // a body the sink must drain to reuse the connection
	}))
	r.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	r.Start()
	t.Cleanup(r.Close)
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL})
	for i := range 5 {
		if err := w.Send(context.Background(), msg(fmt.Sprintf("evt_reuse_%d", i), `{}`)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 sequential sends opened %d connections, want 1", n)
	}
}

func TestWebhookConcurrentSends(t *testing.T) {
	r := newReceiver(t, nil)
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL, Concurrency: 4})
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- w.Send(context.Background(), msg(fmt.Sprintf("evt_c%d", i), fmt.Sprintf(`{"i":%d}`, i)))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Send: %v", err)
		}
	}
	ids := map[string]bool{}
	for _, req := range r.requests() {
		ids[req.header.Get("webhook-id")] = true
		verifySignature(t, testKey, req.header, req.body)
	}
	if len(ids) != n {
		t.Errorf("receiver saw %d distinct ids, want %d", len(ids), n)
	}
}

func TestNewWebhookErrors(t *testing.T) {
	const shortSecret = "whsec_c2hvcnRrZXk=" // "shortkey", 8 bytes
	tests := []struct {
		name   string
		cfg    sink.WebhookConfig
		want   string // in the error
		secret string // must not be in the error
	}{
		{"no prefix", sink.WebhookConfig{URL: "https://shop.example/hook", Secret: "s3cr3t-without-prefix"}, "whsec_", "s3cr3t-without-prefix"},
		{"bad base64", sink.WebhookConfig{URL: "https://shop.example/hook", Secret: "whsec_not!base64!s3cr3t"}, "base64", "not!base64!s3cr3t"},
		{"short key", sink.WebhookConfig{URL: "https://shop.example/hook", Secret: shortSecret}, "at least 24", "c2hvcnRrZXk"},
		{"empty secret", sink.WebhookConfig{URL: "https://shop.example/hook"}, "whsec_", ""},
		{"ftp URL", sink.WebhookConfig{URL: "ftp://shop.example/hook", Secret: testSecret}, `"ftp"`, ""},
		{"no host", sink.WebhookConfig{URL: "https:///hook", Secret: testSecret}, "no host", ""},
		{"empty URL", sink.WebhookConfig{Secret: testSecret}, "empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sink.NewWebhook(tt.cfg)
			if err == nil {
				t.Fatal("NewWebhook succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
}

func TestCheckWebhookURL(t *testing.T) {
	tests := []struct {
		url  string
		want string // "" means valid, else a part of the error
	}{
		{"https://shop.example/hooks/flashsale", ""},
		{"http://127.0.0.1:8080/hook", ""},
		{"HTTPS://shop.example", ""},
		{"https://user:pass@shop.example/hook?token=abc", ""},
		{"http://[::1]:9000/hook", ""},
		{"", "empty"},
		{" https://shop.example/hook", "spaces"},
		{"ftp://shop.example/hook", `"ftp"`},
		{"mailto:shop@example.com", `"mailto"`},
		{"shop.example/hook", "no scheme"},
		{"https://", "no host"},
		{"https:///hook", "no host"},
		{"http:shop.example", "no host"},
		{"https://shop.example:port/hook", "not a valid URL"},
		{"https://[::1/hook", "not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := sink.CheckWebhookURL(tt.url)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("CheckWebhookURL: %v, want valid", err)
			case tt.want != "" && err == nil:
				t.Errorf("CheckWebhookURL accepted it, want an error mentioning %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	// The URL may hold credentials: errors describe it without quoting it.
	if err := sink.CheckWebhookURL("ftp://user:hunter2@shop.example:bad/x"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v: want one that does not quote the password", err)
	}
}

func TestWebhookUntrustedCertificate(t *testing.T) {
	var hits atomic.Int32
	r := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	r.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	r.StartTLS()
	t.Cleanup(r.Close)
	w := newWebhook(t, sink.WebhookConfig{URL: r.URL})
	e := asError(t, w.Send(context.Background(), msg("evt_tls", `{}`)))
	if e.Reason != "TLS certificate rejected" {
		t.Errorf("Reason %q (%v), want TLS certificate rejected", e.Reason, e)
	}
	if hits.Load() != 0 {
		t.Error("the event reached a server whose certificate is not trusted")
	}
}
