package main

import (
	"fmt"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	d := make([]time.Duration, 0, 1000)
	for i := 1000; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	l := summarize(d)
	if l.P50 != 500*time.Millisecond || l.P95 != 950*time.Millisecond || l.P99 != 990*time.Millisecond || l.Max != time.Second || l.Count != 1000 {
		t.Fatalf("summarize: %+v", l)
	}
	if p := percentile([]time.Duration{7}, 99); p != 7 {
		t.Fatalf("one value: p99 %v", p)
	}
	if p := percentile([]time.Duration{1, 2, 3}, 50); p != 2 {
		t.Fatalf("p50 of 1,2,3: %v", p)
	}
}

// TestRatios checks the lifecycle ratios on made-up figures: throughput
// against typename and db-lifecycle, and each step's p99 against typename's.
func TestRatios(t *testing.T) {
	ms := func(n int) latency { return latency{Count: 10, P99: time.Duration(n) * time.Millisecond} }
	rs := []scenarioResult{
		{Name: scTypename, RequestsPerSec: 1000, OKPerSec: 1000, Latency: ms(10)},
		{Name: scLifecycle, OKPerSec: 150, Steps: []stepLatency{
			{Step: stepHold, Latency: ms(20)}, {Step: stepOrder, Latency: ms(30)}, {Step: stepWebhook, Latency: ms(31)}}},
		{Name: scDBLifecycle, OKPerSec: 60},
	}
	want := map[string]string{
		"lifecycle complete/s ÷ typename req/s":          "0.15 ≥ 0.1 PASS",
		"lifecycle complete/s ÷ db-lifecycle complete/s": "2.50 ≥ 3 MISS",
		"lifecycle createHold p99 ÷ typename p99":        "2.00 ≤ 3 PASS",
		"lifecycle createOrder p99 ÷ typename p99":       "3.00 ≤ 3 PASS",
		"lifecycle webhook p99 ÷ typename p99":           "3.10 ≤ 3 MISS",
		"hot-hold holds/s ÷ typename req/s":              "- ≥ 0.5 n/a",
	}
	check := func(rs []scenarioResult, want map[string]string) {
		t.Helper()
		got := map[string]string{}
		for _, r := range computeRatios(rs) {
			v := "-"
			if r.Value != nil {
				v = fmt.Sprintf("%.2f", *r.Value)
			}
			got[r.Name] = v + " " + r.Target + " " + r.Result
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s: %q, want %q", name, got[name], w)
			}
		}
	}
	check(rs, want)
	// typename-customer: informational, n/a without customers mode; its
	// MISS does not count for -fail-on-miss.
	check(rs, map[string]string{"typename-customer req/s ÷ typename req/s": "- ≥ 0.8 n/a"})
	tc := []scenarioResult{rs[0], {Name: scTypenameCustomer, RequestsPerSec: 700, OKPerSec: 700}}
	check(tc, map[string]string{"typename-customer req/s ÷ typename req/s": "0.70 ≥ 0.8 MISS"})
	if r := (&report{Ratios: computeRatios(tc)}); r.anyMiss() {
		t.Errorf("an informational MISS counts as a miss: %+v", r.Ratios)
	}
	for _, tc := range []struct {
		v      float64
		target string
		want   string
	}{{0.797, "≥ 0.8", "0.797"}, {0.8, "≥ 0.8", "0.80"}, {0.8049, "≥ 0.8", "0.805"}, {0.81, "≥ 0.8", "0.81"},
		{2.004, "≤ 2", "2.004"}, {1.5, "≤ 2", "1.50"}, {0.797, "odd", "0.80"}} {
		if got := fmtRatio(tc.v, tc.target); got != tc.want {
			t.Errorf("fmtRatio(%v, %q) = %q, want %q", tc.v, tc.target, got, tc.want)
		}
	}
	// Without db-lifecycle (no -db) and without a step, those ratios are n/a.
	rs[1].Steps = rs[1].Steps[:2]
	check(rs[:2], map[string]string{
		"lifecycle complete/s ÷ db-lifecycle complete/s": "- ≥ 3 n/a",
		"lifecycle webhook p99 ÷ typename p99":           "- ≤ 3 n/a",
		"lifecycle createHold p99 ÷ typename p99":        "2.00 ≤ 3 PASS",
	})
}
