package main

import (
	"slices"
	"time"
)

// latency summarizes every request's duration of a scenario.
type latency struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"-"`
	P95   time.Duration `json:"-"`
	P99   time.Duration `json:"-"`
	Max   time.Duration `json:"-"`
	Mean  time.Duration `json:"-"`
	// The same, in milliseconds, for -json.
	P50ms  float64 `json:"p50_ms"`
	P95ms  float64 `json:"p95_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

// summarize sorts d in place and returns its exact percentiles.
func summarize(d []time.Duration) latency {
	if len(d) == 0 {
		return latency{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	l := latency{
		Count: len(d),
		P50:   percentile(d, 50),
		P95:   percentile(d, 95),
		P99:   percentile(d, 99),
		Max:   d[len(d)-1],
		Mean:  sum / time.Duration(len(d)),
	}
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	l.P50ms, l.P95ms, l.P99ms, l.MaxMs, l.MeanMs = ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max), ms(l.Mean)
	return l
}

// percentile returns the nearest-rank p-th percentile of sorted: the
// smallest value with at least p% of the values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// rank = ceil(p/100 * n), computed in integers to avoid float rounding.
	n := len(sorted)
	rank := (int(p*100)*n + 9999) / 10000
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}
