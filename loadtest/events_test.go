package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"flashsale/signing"
	"flashsale/sink"
)

// testEventsSecret signs the events server's order events in the tests; it
// must differ from testSecret (the server refuses the same one).
const testEventsSecret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// TestEventsFlags: -events-url, -events-listen and -events-secret go
// together, on loopback, and lifecycle-events named outright needs them;
// "all" without them keeps it, for run to skip with a note.
func TestEventsFlags(t *testing.T) {
	var errb bytes.Buffer
	base := []string{"loadtest", "-token", "x", "-url", "http://127.0.0.1:8080"}
	o, err := parseFlags(append(base, "-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:9099",
		"-events-secret", testEventsSecret, "-scenarios", "lifecycle-events,lifecycle"), noEnv, &errb)
	if err != nil || o.EventsURL != "http://127.0.0.1:8081" || o.EventsListen != "127.0.0.1:9099" || o.EventsSecret != testEventsSecret ||
		strings.Join(o.Scenarios, ",") != "lifecycle,lifecycle-events" {
		t.Fatalf("flags: %+v, %v", o, err)
	}
	// The secret defaults to $EVENTS_WEBHOOK_SECRET, with -events-url only.
	env := func(k string) string { return map[string]string{"EVENTS_WEBHOOK_SECRET": testEventsSecret}[k] }
	if o, err := parseFlags(append(base, "-events-url", "http://localhost:8081", "-events-listen", "localhost:9099"), env, &errb); err != nil ||
		o.EventsSecret != testEventsSecret {
		t.Fatalf("secret from the environment: %+v, %v", o, err)
	}
	if o, err := parseFlags(base, env, &errb); err != nil || o.EventsSecret != "" || !slices.Contains(o.Scenarios, scLifecycleEvents) {
		t.Fatalf("no -events-url: %+v, %v", o, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-events-listen", "127.0.0.1:9099"}, "-events-listen without -events-url"},
		{[]string{"-events-secret", testEventsSecret}, "-events-secret without -events-url"},
		{[]string{"-events-url", "http://127.0.0.1:8081"}, "-events-url needs -events-listen"},
		{[]string{"-events-url", "http://10.0.0.1:8081", "-events-listen", "127.0.0.1:9099"}, "not loopback"},
		{[]string{"-events-url", "http://127.0.0.1:8080", "-events-listen", "127.0.0.1:9099"}, "is also a -url"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "10.0.0.1:9099"}, "-events-listen: host \"10.0.0.1\" is not loopback"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "9099"}, "want host:port"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:0"}, "want a port 1..65535"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:9099", "-events-secret", "whsec_c2VjcmV0LXMzY3IzdA=="},
			"-events-secret: key is 13 bytes"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:9099", "-events-secret", "s3cr3t"}, "-events-secret: must start with"},
		{[]string{"-scenarios", "lifecycle,lifecycle-events"}, "lifecycle-events needs a second server"},
	} {
		_, err := parseFlags(append(slices.Clone(base), tc.args...), noEnv, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "c2VjcmV0LXMzY3IzdA")) {
			t.Errorf("the error quotes the secret: %v", err)
		}
	}
}

// signEvent signs an order event the Standard Webhooks way, by hand.
func signEvent(t *testing.T, secret, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	unix := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + unix + "."))
	mac.Write(body)
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", unix)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return h
}

func TestVerifyWebhook(t *testing.T) {
	key, err := signing.ParseSecret(testEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := []byte(`{"id":"evt_1","type":"order.created"}`)
	good := signEvent(t, testEventsSecret, "evt_1", now, body)
	if err := verifyWebhook(key, good, body, now); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	// The server's own signer agrees.
	s, err := signing.NewSigner(testEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	if err := s.Sign(h, "evt_1", now, body); err != nil {
		t.Fatal(err)
	}
	if err := verifyWebhook(key, h, body, now.Add(time.Minute)); err != nil {
		t.Fatalf("signing.Signer's signature: %v", err)
	}
	// One good v1 among others (key rotation) is enough.
	several := good.Clone()
	several.Set("webhook-signature", "v1a,xyz v1,AAAA "+good.Get("webhook-signature"))
	if err := verifyWebhook(key, several, body, now); err != nil {
		t.Fatalf("several signatures: %v", err)
	}
	with := func(k, v string) http.Header {
		h := good.Clone()
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	for name, tc := range map[string]struct {
		h    http.Header
		body []byte
		now  time.Time
	}{
		"another body":           {good, []byte(`{"id":"evt_1","type":"order.paid"}`), now},
		"another id":             {with("webhook-id", "evt_2"), body, now},
		"another secret":         {signEvent(t, testSecret, "evt_1", now, body), body, now},
		"no signature":           {with("webhook-signature", ""), body, now},
		"no id":                  {with("webhook-id", ""), body, now},
		"timestamp not a number": {with("webhook-timestamp", "soon"), body, now},
		"timestamp too old":      {good, body, now.Add(6 * time.Minute)},
		"timestamp too new":      {good, body, now.Add(-6 * time.Minute)},
		"v2 only":                {with("webhook-signature", "v2,"+strings.TrimPrefix(good.Get("webhook-signature"), "v1,")), body, now},
	} {
		if err := verifyWebhook(key, tc.h, tc.body, tc.now); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// TestReceiver sends the receiver events the way the server does (package
// sink's webhook, signed): it answers 204 to every POST, counts requests
// and distinct webhook-ids, and counts what does not verify.
func TestReceiver(t *testing.T) {
	rc, err := newReceiver("127.0.0.1:0", testEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()
	url := "http://" + rc.addr() + "/events"
	send := func(secret, id string) error {
		t.Helper()
		s, err := sink.NewWebhook(sink.WebhookConfig{URL: url, Secret: secret, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.Send(context.Background(), sink.Message{ID: id, Type: "order.created", Body: []byte(`{"id":"` + id + `"}`)})
	}
	start := time.Now()
	for _, id := range []string{"evt_1", "evt_2", "evt_1", "evt_3"} {
		if err := send(testEventsSecret, id); err != nil {
			t.Fatalf("send %s: %v (want 204)", id, err)
		}
	}
	c := rc.counts()
	if c.requests != 4 || c.distinct != 3 || c.badSignature != 0 || c.withoutID != 0 || c.lastNew.Before(start) {
		t.Fatalf("after 4 good POSTs of 3 events: %+v", c)
	}
	// Signed with another secret: received, and counted as a failure.
	if err := send(testSecret, "evt_4"); err != nil {
		t.Fatalf("badly signed: %v (want 204 all the same)", err)
	}
	// No headers at all; and a GET, which is not a delivery.
	resp, err := http.Post(url, "application/json", strings.NewReader(`{}`))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("bare POST: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err = http.Get(url); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v %v", resp, err)
	}
	resp.Body.Close()
	c = rc.counts()
	if c.requests != 6 || c.distinct != 4 || c.badSignature != 2 || c.withoutID != 1 {
		t.Fatalf("after a badly signed POST, a bare one and a GET: %+v", c)
	}

	// Without a secret, nothing is verified.
	plain, err := newReceiver("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.close()
	url = "http://" + plain.addr() + "/events"
	if err := send(testSecret, "evt_1"); err != nil {
		t.Fatal(err)
	}
	if c := plain.counts(); c.requests != 1 || c.distinct != 1 || c.badSignature != 0 {
		t.Fatalf("unverified receiver: %+v", c)
	}
	// A port in use is an error, not a silent second receiver.
	if _, err := newReceiver(plain.addr(), ""); err == nil || !strings.Contains(err.Error(), "-events-listen") {
		t.Fatalf("port in use: %v", err)
	}
}

// TestEventsRatios: lifecycle-events ÷ lifecycle against 0.85, and the
// drain against 5 s; n/a when lifecycle-events did not run or its drain
// could not be measured.
func TestEventsRatios(t *testing.T) {
	get := func(rs []scenarioResult) map[string]string {
		got := map[string]string{}
		for _, r := range computeRatios(rs) {
			v := "-"
			if r.Value != nil {
				v = fmt.Sprintf("%.2f", *r.Value)
			}
			got[r.Name] = v + " " + r.Target + " " + r.Result
		}
		return got
	}
	life := scenarioResult{Name: scLifecycle, OKPerSec: 1000}
	ev := scenarioResult{Name: scLifecycleEvents, OKPerSec: 900, Events: &eventsFigures{Drained: true, DrainSeconds: 1.5}}
	for _, tc := range []struct {
		rs           []scenarioResult
		ratio, drain string
	}{
		{[]scenarioResult{life, ev}, "0.90 ≥ 0.85 PASS", "0.30 ≤ 1 PASS"},
		{[]scenarioResult{life}, "- ≥ 0.85 n/a", "- ≤ 1 n/a"},
	} {
		got := get(tc.rs)
		if r := got["lifecycle-events complete/s ÷ lifecycle complete/s"]; r != tc.ratio {
			t.Errorf("ratio %q, want %q", r, tc.ratio)
		}
		if r := got["lifecycle-events drain time ÷ 5 s"]; r != tc.drain {
			t.Errorf("drain %q, want %q", r, tc.drain)
		}
	}
	ev.OKPerSec, ev.Events = 800, &eventsFigures{DrainSeconds: 60} // not drained: how long the tool waited
	got := get([]scenarioResult{life, ev})
	if got["lifecycle-events complete/s ÷ lifecycle complete/s"] != "0.80 ≥ 0.85 MISS" || got["lifecycle-events drain time ÷ 5 s"] != "12.00 ≤ 1 MISS" {
		t.Errorf("misses: %v", got)
	}
	if r := (&report{Ratios: computeRatios([]scenarioResult{life, ev})}); !r.anyMiss() {
		t.Error("-fail-on-miss ignores the events ratios")
	}
	ev.Events = &eventsFigures{Error: "orderEvents: HTTP 502"}
	if got := get([]scenarioResult{life, ev}); got["lifecycle-events drain time ÷ 5 s"] != "- ≤ 1 n/a" {
		t.Errorf("unmeasured drain: %v", got)
	}
}

// TestEventsAgainstServer runs lifecycle and lifecycle-events taking turns
// against two servers on their own databases, the second with its webhook
// sink pointed at the tool's receiver: every event the lifecycles wrote is
// received, signed, and the checks pass.
func TestEventsAgainstServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	a := startServer(t, freshDatabase(t))
	b := startServer(t, freshDatabase(t), "EVENTS_WEBHOOK_URL=http://"+listen+"/events", "EVENTS_WEBHOOK_SECRET="+testEventsSecret)
	jsonFile := filepath.Join(t.TempDir(), "figures.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"loadtest", "-url", a, "-token", testToken, "-secret", testSecret,
		"-events-url", b, "-events-listen", listen, "-events-secret", testEventsSecret,
		"-scenarios", "lifecycle,lifecycle-events", "-clients", "8", "-duration", "1s", "-timeout", "30s", "-json", jsonFile}, noEnv, &out, &errb)
	t.Logf("output:\n%s", out.String())
	if code != exitOK {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, errb.String())
	}
	for _, want := range []string{"verdict: OK", "lifecycle-events complete/s ÷ lifecycle complete/s", "lifecycle-events drain time ÷ 5 s",
		"events server (lifecycle-events): " + b, "lifecycle-events: order events: ", " 0 signature failures",
		"order events on " + b + ": none PENDING or FAILED"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	raw, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 2 || rep.Scenarios[1].Name != scLifecycleEvents || rep.EventsURL != b || rep.EventsListen != listen {
		t.Fatalf("scenarios %+v, events server %q %q", rep.Scenarios, rep.EventsURL, rep.EventsListen)
	}
	s := rep.Scenarios[1]
	f := s.Events
	if f == nil || s.OK == 0 || s.Extra[extraOrders] < s.OK || f.Written != s.OK+s.Extra[extraOrders] || !f.Drained ||
		f.Received < f.Written || f.SignatureFailures != 0 || f.WithoutID != 0 || !f.Verified || f.EventsPerSec <= 0 ||
		f.DrainSeconds < 0 || f.DrainSeconds > f.ConfirmedSeconds {
		t.Fatalf("lifecycle-events: %+v, events %+v", s, f)
	}
	// Without errors, a lifecycle wrote exactly two events.
	if len(s.Errors) == 0 && f.Received != 2*s.OK {
		t.Errorf("%d events received for %d complete lifecycles", f.Received, s.OK)
	}
	// Each scenario's product is on its own server.
	if len(rep.Products) != 2 || rep.Products[0].Server != "" || rep.Products[1].Server != b {
		t.Errorf("products %+v", rep.Products)
	}
}
