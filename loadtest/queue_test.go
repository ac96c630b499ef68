package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseTicketEvent(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 123456000, time.UTC)
	for _, tc := range []struct {
		in     string
		sub    int
		status string
		at     time.Time
		ok     bool
	}{
		// gqlgen's order: the type last.
		{`{"payload":{"data":{"queueTicket":{"status":"WAITING","position":17,"admittedAt":null}}},"id":"3","type":"next"}`, 3, "WAITING", time.Time{}, true},
		{`{"payload":{"data":{"queueTicket":{"status":"ADMITTED","position":null,"admittedAt":"2026-12-07T10:00:00.123456Z"}}},"id":"12","type":"next"}`, 12, "ADMITTED", at, true},
		{`{"type":"next","id":"0","payload":{"data":{"queueTicket":{"admittedAt":"2026-12-07T10:00:00.123456Z","status":"ADMITTED"}}}}`, 0, "ADMITTED", at, true},
		{`{"type":"ping"}`, 0, "", time.Time{}, false},
		{`{"payload":[{"message":"x","extensions":{"code":"RATE_LIMITED"}}],"id":"3","type":"error"}`, 0, "", time.Time{}, false},
		{`{"payload":{"data":{"productStock":{"stockReserved":9,"updatedAt":"2026-12-01T04:50:00Z"}}},"id":"1","type":"next"}`, 0, "", time.Time{}, false},
		{`{"payload":{"data":{"queueTicket":{"status":"ADMITTED","admittedAt":"yesterday"}}},"id":"3","type":"next"}`, 0, "", time.Time{}, false},
		{`{"payload":{"data":{"queueTicket":{"status":"WAITING","admittedAt":null}}},"id":"x","type":"next"}`, 0, "", time.Time{}, false},
	} {
		ev, ok := parseTicketEvent([]byte(tc.in))
		if ok != tc.ok || (ok && (ev.sub != tc.sub || ev.status != tc.status || !ev.admittedAt.Equal(tc.at))) {
			t.Errorf("parseTicketEvent(%s) = %+v %v", tc.in, ev, ok)
		}
	}
	// The long way, for what the short one leaves out.
	ev, why := decodeTicketNext(json.RawMessage(`{"data":{"queueTicket":{"status":"ADMITTED","admittedAt":"2026-12-07T10:00:00.123456Z"}}}`))
	if why != "" || ev.status != "ADMITTED" || !ev.admittedAt.Equal(at) {
		t.Errorf("decodeTicketNext: %+v %q", ev, why)
	}
	if _, why := decodeTicketNext(json.RawMessage(`{"data":null,"errors":[{"message":"no","extensions":{"code":"NOT_FOUND"}}]}`)); why != "error NOT_FOUND" {
		t.Errorf("decodeTicketNext of an error: %q", why)
	}
}

// TestQueueSubscriptionTally: what one connection's reader records, and
// how queue-subscribers adds it up: an ADMITTED first event is not
// measured, a subscription the server ended is not "not told".
func TestQueueSubscriptionTally(t *testing.T) {
	ws := &ticketWatchers{}
	c := &ticketConn{subs: []*ticketSub{{}, {}, {}, {}}, pending: 4, ready: make(chan struct{})}
	ws.subs = c.subs
	t0 := time.Now()
	c.event(ticketEvent{sub: 0, status: "WAITING"}, t0, ws)
	c.event(ticketEvent{sub: 1, status: "ADMITTED", admittedAt: t0.Add(-time.Second)}, t0, ws) // already admitted
	c.event(ticketEvent{sub: 2, status: "WAITING"}, t0, ws)
	c.end(3, "error RATE_LIMITED", ws) // never subscribed
	select {
	case <-c.ready:
	default:
		t.Fatal("not ready once every subscription had its first event or ended")
	}
	c.event(ticketEvent{sub: 0, status: "WAITING"}, t0, ws)
	c.event(ticketEvent{sub: 0, status: "ADMITTED", admittedAt: t0}, t0.Add(300*time.Millisecond), ws)
	c.event(ticketEvent{sub: 0, status: "ADMITTED", admittedAt: t0}, t0.Add(900*time.Millisecond), ws) // told once
	if ws.subscribed.Load() != 3 || ws.settled.Load() != 2 {
		t.Fatalf("subscribed %d, settled %d; want 3, 2", ws.subscribed.Load(), ws.settled.Load())
	}
	c.end(2, "complete", ws)
	if ws.settled.Load() != 3 {
		t.Fatalf("settled %d after an end, want 3", ws.settled.Load())
	}
	fig := &queueSubsFigures{Ended: map[string]int64{}}
	ws.tally(fig, t0.Add(-time.Second))
	if fig.Subscribed != 3 || fig.Told != 1 || fig.Early != 1 || fig.Delay.Count != 1 || fig.Delay.P99 != 300*time.Millisecond ||
		fig.Events != 6 || fig.Ended["complete"] != 1 || fig.Ended["error RATE_LIMITED"] != 1 || fig.AdmissionSeconds != 1.3 {
		t.Fatalf("tally: %+v", fig)
	}
	if fig.NotTold != 0 {
		t.Fatalf("not told: %d", fig.NotTold)
	}
	// One subscribed, never told, not ended: not told.
	c.subs = append(c.subs, &ticketSub{})
	ws.subs = c.subs
	c.event(ticketEvent{sub: 4, status: "WAITING"}, t0, ws)
	fig = &queueSubsFigures{Ended: map[string]int64{}}
	ws.tally(fig, t0)
	if fig.NotTold != 1 || fig.Subscribed != 4 {
		t.Fatalf("tally with one not told: %+v", fig)
	}
}

func TestQueueRatios(t *testing.T) {
	rs := []scenarioResult{
		{Name: scHotHold, OKPerSec: 1000},
		{Name: scRead, OKPerSec: 2000},
		{Name: scQueueJoin, OKPerSec: 700},
		{Name: scQueuePosition, OKPerSec: 1900},
		{Name: scQueueSubscribers, Steps: []stepLatency{{Step: stepAdmitted, Latency: latency{Count: 5, P99: 1200 * time.Millisecond}}}},
	}
	got := map[string]string{}
	for _, r := range computeRatios(rs) {
		v := "-"
		if r.Value != nil {
			v = fmtRatio(*r.Value, r.Target)
		}
		got[r.Name] = v + " " + r.Target + " " + r.Result
	}
	for name, want := range map[string]string{
		"queue-join ok/s ÷ hot-hold holds/s":               "0.70 ≥ 0.8 MISS",
		"queue-position ok/s ÷ read ok/s":                  "0.95 ≥ 0.8 PASS",
		"queue-subscribers " + stepAdmitted + " p99 ÷ 1 s": "1.20 ≤ 1 MISS",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}
	// Without hot-hold or read, their queue ratios are n/a.
	for _, r := range computeRatios(rs[2:]) {
		if strings.HasPrefix(r.Name, "queue-join") || strings.HasPrefix(r.Name, "queue-position") {
			if r.Value != nil || r.Result != "n/a" {
				t.Errorf("%s without its baseline: %v %s", r.Name, r.Value, r.Result)
			}
		}
	}
	if o := (options{QueueSubscribers: 10000, Duration: 10 * time.Second}); queueSubsRate(o) != 60000 {
		t.Errorf("rate for 10000 over 10s: %d", queueSubsRate(o))
	}
	if o := (options{QueueSubscribers: 10000, Duration: 10 * time.Second, QueueAdmitPerMinute: 5}); queueSubsRate(o) != 5 {
		t.Errorf("-queue-admit-per-minute 5: %d", queueSubsRate(o))
	}
	if o := (options{QueueSubscribers: 100_000, Duration: 100 * time.Millisecond}); queueSubsRate(o) != maxAdmitPerMinute {
		t.Errorf("rate over the server's bound: %d", queueSubsRate(o))
	}
}

// runQueue runs the tool with args against srv and returns its report.
func runQueue(t *testing.T, env func(string) string, args ...string) (report, string) {
	t.Helper()
	jsonFile := filepath.Join(t.TempDir(), "figures.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), append(append([]string{"loadtest"}, args...), "-json", jsonFile), env, &out, &errb)
	t.Logf("output:\n%s", out.String())
	if code != exitOK {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, errb.String())
	}
	raw, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("-json: %v", err)
	}
	return rep, out.String()
}

// checkQueueRows checks queue-join's and queue-position's rows and their
// ratios, run beside typename, read and hot-hold.
func checkQueueRows(t *testing.T, rep report, out string) {
	t.Helper()
	for _, want := range []string{"\nqueue-join ", "\nqueue-position ", "queue-join ok/s ÷ hot-hold holds/s",
		"queue-position ok/s ÷ read ok/s", "verdict: OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, name := range []string{scQueueJoin, scQueuePosition} {
		s := findScenario(rep.Scenarios, name)
		if s == nil {
			t.Fatalf("%s did not run: %v", name, rep.Notes)
		}
		if s.Requests == 0 || s.OK == 0 || s.OKPerSec <= 0 || s.Latency.P99ms <= 0 || int64(s.Latency.Count) != s.Requests {
			t.Errorf("%s: figures missing or inconsistent: %+v", name, s)
		}
		var errs int64
		for _, n := range s.Errors {
			errs += n
		}
		if errs*100 > s.Requests || s.Extra["WAITING"] == 0 {
			t.Errorf("%s: errors %v, statuses %v in %d requests", name, s.Errors, s.Extra, s.Requests)
		}
	}
	for _, r := range rep.Ratios {
		switch r.Name {
		case "queue-join ok/s ÷ hot-hold holds/s", "queue-position ok/s ÷ read ok/s":
			if r.Value == nil || *r.Value <= 0 || (r.Result != "PASS" && r.Result != "MISS") {
				t.Errorf("ratio %s: %v %s", r.Name, r.Value, r.Result)
			}
		}
	}
}

// checkQueueSubs checks queue-subscribers' row and figures: every ticket
// subscribed and told ADMITTED, its delay measured (no bound: a busy
// machine may be slow), its ratio and check reported.
func checkQueueSubs(t *testing.T, rep report, out string, n, conns int) *queueSubsFigures {
	t.Helper()
	for _, want := range []string{"\nqueue-subscribers ", "\n  " + stepAdmitted, "queue-subscribers " + stepAdmitted + " p99 ÷ 1 s",
		"share this machine's clock", "queue-subscribers: all " + strconv.Itoa(n) + " open ticket subscriptions were told ADMITTED: ok", "verdict: OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	s := findScenario(rep.Scenarios, scQueueSubscribers)
	if s == nil || s.QueueSubs == nil {
		t.Fatalf("queue-subscribers did not run: %v", rep.Notes)
	}
	f := s.QueueSubs
	if f.Tickets != n || f.Subscribed != n || f.Told != n || f.Connections != conns || f.Delay.Count != n || f.Early != 0 ||
		f.ServerAdmitted != n || f.ServerWaiting != 0 || f.Events < int64(2*n) || f.AdmissionSeconds <= 0 {
		t.Fatalf("queue-subscribers figures: %+v", f)
	}
	if s.Requests != int64(n) || s.OK != int64(n) || int64(s.Latency.Count) != s.Requests || len(s.Steps) != 1 || s.Steps[0].Latency.Count != n {
		t.Errorf("queue-subscribers row: %+v", s)
	}
	// Measured from the server's clock: never negative by more than
	// jitter.
	if f.Delay.P50 < -50*time.Millisecond {
		t.Errorf("delay p50 %s", f.Delay.P50)
	}
	i := slices.IndexFunc(rep.Ratios, func(r ratio) bool { return strings.HasPrefix(r.Name, scQueueSubscribers+" ") })
	if i < 0 || rep.Ratios[i].Value == nil || (rep.Ratios[i].Result != "PASS" && rep.Ratios[i].Result != "MISS") {
		t.Errorf("queue-subscribers ratio: %+v", rep.Ratios)
	}
	return f
}

// TestQueueAgainstServer runs the waiting-room scenarios with anonymous
// buyers: queue-join and queue-position beside typename, read and
// hot-hold, then queue-subscribers with several subscriptions per
// connection (the last connection with fewer).
func TestQueueAgainstServer(t *testing.T) {
	dbURL := freshDatabase(t)
	srv := startServer(t, dbURL)
	rep, out := runQueue(t, noEnv, "-url", srv, "-token", testToken, "-db", dbURL, "-clients", "8", "-duration", "1s",
		"-timeout", "30s", "-scenarios", "typename,read,hot-hold,queue-join,queue-position")
	checkQueueRows(t, rep, out)
	if len(rep.Scenarios) != 5 {
		t.Fatalf("%d scenarios ran, want 5", len(rep.Scenarios))
	}

	rep, out = runQueue(t, noEnv, "-url", srv, "-token", testToken, "-db", dbURL, "-clients", "8", "-duration", "1s",
		"-timeout", "30s", "-scenarios", "queue-subscribers", "-queue-subscribers", "60", "-queue-per-conn", "7")
	if f := checkQueueSubs(t, rep, out, 60, 9); f.PerConnection != 7 || f.AdmitPerMinute != 3600 {
		t.Errorf("per connection %d, rate %d; want 7, 3600", f.PerConnection, f.AdmitPerMinute)
	}
}

// TestQueueCustomersAgainstServer runs them in customers mode: every
// queue-join request joins as a customer of its own, every queue-position
// client reads its own customer's ticket, and queue-subscribers' tickets
// each have their customer, whose token their connection carries.
func TestQueueCustomersAgainstServer(t *testing.T) {
	dbURL := freshDatabase(t)
	srv := startServer(t, dbURL, "CUSTOMER_JWT_SECRET="+testCustomerSecret)
	env := func(k string) string { return map[string]string{"CUSTOMER_JWT_SECRET": testCustomerSecret}[k] }
	rep, out := runQueue(t, env, "-url", srv, "-token", testToken, "-db", dbURL, "-clients", "8", "-duration", "1s",
		"-timeout", "30s", "-scenarios", "typename,read,hot-hold,queue-join,queue-position")
	checkQueueRows(t, rep, out)

	db := openSQL(t, dbURL)
	prefix := "lt-" + rep.RunID + "-"
	for _, p := range rep.Products {
		var n, distinct, foreign int
		if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT customer_id), COALESCE(SUM(customer_id NOT LIKE ?), 0)
FROM queue_tickets WHERE product_id = ?`, prefix+"%", p.ID).Scan(&n, &distinct, &foreign); err != nil {
			t.Fatal(err)
		}
		switch p.Scenario {
		case scQueueJoin:
			if s := findScenario(rep.Scenarios, scQueueJoin); int64(n) != s.OK || distinct != n || foreign != 0 {
				t.Errorf("queue-join: %d tickets of %d customers (%d not the tool's), %d joins answered", n, distinct, foreign, s.OK)
			}
		case scQueuePosition:
			if n != 8 || distinct != 8 || foreign != 0 {
				t.Errorf("queue-position: %d tickets of %d customers (%d not the tool's), want 8 of 8", n, distinct, foreign)
			}
		default:
			if n != 0 {
				t.Errorf("%s: %d tickets", p.Scenario, n)
			}
		}
	}

	rep, out = runQueue(t, env, "-url", srv, "-token", testToken, "-db", dbURL, "-clients", "8", "-duration", "1s",
		"-timeout", "30s", "-scenarios", "queue-subscribers", "-queue-subscribers", "20")
	if f := checkQueueSubs(t, rep, out, 20, 20); f.PerConnection != 1 {
		t.Errorf("customers mode: %d subscriptions per connection, want 1", f.PerConnection)
	}
}
