package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseEvent(t *testing.T) {
	for _, tc := range []struct {
		in       string
		reserved int
		ok       bool
	}{
		{`{"type":"next","id":"1","payload":{"data":{"productStock":{"stockReserved":42,"stockSellable":8,"updatedAt":"2026-12-01T04:50:00.123456Z"}}}}`, 42, true},
		{`{"id":"1","type":"next","payload":{"data":{"productStock":{"stockSellable":8,"updatedAt":"2026-12-01T04:50:00Z","stockReserved":7}}}}`, 7, true},
		// gqlgen's order: the type last.
		{`{"payload":{"data":{"productStock":{"stockReserved":9,"stockSellable":1,"updatedAt":"2026-12-01T04:50:00.5Z"}}},"id":"1","type":"next"}`, 9, true},
		{`{"type":"ping"}`, 0, false},
		{`{"payload":{"data":{"productStock":{"stockReserved":9,"updatedAt":"2026-12-01T04:50:00Z"}}},"id":"1","type":"complete"}`, 0, false},
		{`{"type":"next","id":"1","payload":{"errors":[{"message":"x"}]}}`, 0, false},
		{`{"type":"next","payload":{"data":{"productStock":{"stockReserved":"x","updatedAt":"2026-12-01T04:50:00Z"}}}}`, 0, false},
	} {
		n, ts, ok := parseEvent([]byte(tc.in))
		if ok != tc.ok || n != tc.reserved || (ok && ts.Year() != 2026) {
			t.Errorf("parseEvent(%s) = %d %v %v", tc.in, n, ts, ok)
		}
	}
}

// TestSubscribersAgainstServer runs the subscribers scenario on two server
// processes over one database: every subscriber watches through the first,
// holds go to both, so half the changes reach the subscribers through the
// first server's poll of the database.
func TestSubscribersAgainstServer(t *testing.T) {
	dbURL := freshDatabase(t)
	a := startServer(t, dbURL, "STOCK_PUSH_INTERVAL=100ms")
	b := startServer(t, dbURL, "STOCK_PUSH_INTERVAL=100ms")
	jsonFile := filepath.Join(t.TempDir(), "figures.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"loadtest", "-url", a + "," + b, "-token", testToken, "-secret", testSecret, "-db", dbURL,
		"-clients", "8", "-duration", "1s", "-timeout", "30s", "-scenarios", "subscribers", "-subscribers", "200",
		// The test process stands in for -server-pid: this checks that the
		// measurement runs, not its figure.
		"-server-pid", strconv.Itoa(os.Getpid()), "-json", jsonFile}, noEnv, &out, &errb)
	t.Logf("output:\n%s", out.String())
	if code != exitOK {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, errb.String())
	}
	for _, want := range []string{"subscribers-baseline ", "\nsubscribers ", stepDelivery, "subscribers holds/s ÷ subscribers-baseline holds/s",
		"all 200 open subscriptions were told the product's final stock: ok", "KiB per subscription"} {
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
	s := rep.Subscribers
	if s == nil || s.Connected != 200 || s.Converged != 200 || s.Delay.Count == 0 || s.Events < int64(s.Delay.Count) {
		t.Fatalf("subscribers figures: %+v", s)
	}
	// The delay is measured from the database's clock: never negative by
	// more than clock jitter, and the contract's bound is generous here.
	if s.Delay.P50 < -50*time.Millisecond || s.Delay.Max > 5*time.Second {
		t.Errorf("delays p50 %s max %s", s.Delay.P50, s.Delay.Max)
	}
}
