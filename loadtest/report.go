package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything a run measured and checked; -json writes it as is.
type report struct {
	URL             string           `json:"url"`
	RunID           string           `json:"run_id"`
	Clients         int              `json:"clients"`
	DurationSeconds float64          `json:"duration_seconds"` // per scenario
	Slices          int              `json:"slices"`           // the scenarios took turns in this many slices of it; 1: one after another
	RequestTimeout  string           `json:"request_timeout"`
	DBPoolCap       int              `json:"db_pool_cap,omitempty"`
	Customers       *customersInfo   `json:"customers,omitempty"` // customers mode; nil: anonymous buyers
	Subscribers     *subscribersInfo `json:"subscribers,omitempty"`
	EventsURL       string           `json:"events_url,omitempty"` // lifecycle-events' server
	EventsListen    string           `json:"events_listen,omitempty"`
	Started         time.Time        `json:"started"`
	Scenarios       []scenarioResult `json:"scenarios"`
	Ratios          []ratio          `json:"ratios"`
	Products        []createdProduct `json:"products"`
	Checks          checkResult      `json:"checks"`
	CPUs            int              `json:"cpus"`
	LoadAvgStart    string           `json:"loadavg_start,omitempty"` // 1-minute load average, Linux only
	LoadAvgEnd      string           `json:"loadavg_end,omitempty"`
	Notes           []string         `json:"notes,omitempty"`
	Interrupted     bool             `json:"interrupted"`
	SetupFailed     bool             `json:"setup_failed"`
}

// customersInfo describes a customers-mode run (never a token or the secret).
type customersInfo struct {
	Clients        int       `json:"clients"` // one customer each
	Pattern        string    `json:"pattern"` // their IDs
	LimitCustomers []string  `json:"limit_customers"`
	Expires        time.Time `json:"tokens_expire"`
	Issuer         string    `json:"issuer,omitempty"`
	Audience       string    `json:"audience,omitempty"`
}

// scenarioResult is one scenario's figures.
type scenarioResult struct {
	Name           string           `json:"name"`
	ProductID      string           `json:"product_id,omitempty"`
	Clients        int              `json:"clients"`
	ElapsedSeconds float64          `json:"elapsed_seconds"`
	Requests       int64            `json:"requests"`
	OK             int64            `json:"ok"`      // see okMeaning
	Refused        int64            `json:"refused"` // INSUFFICIENT_STOCK
	Errors         map[string]int64 `json:"errors"`  // by extensions.code, HTTP status or transport error
	RequestsPerSec float64          `json:"requests_per_sec"`
	OKPerSec       float64          `json:"ok_per_sec"`
	RefusedPerSec  float64          `json:"refused_per_sec"`
	Latency        latency          `json:"latency"`
	Steps          []stepLatency    `json:"steps,omitempty"` // lifecycle, db-lifecycle: latency of each step
	Extra          map[string]int64 `json:"extra,omitempty"`
	Notes          []string         `json:"notes,omitempty"`
	Capped         bool             `json:"capped"` // stopped by -max-requests
	Interrupted    bool             `json:"interrupted"`
	Events         *eventsFigures   `json:"events,omitempty"` // lifecycle-events: its order events
	Edge           *edgeFigures     `json:"edge,omitempty"`   // edge: the cache's figures

	// queue-subscribers: its tickets' ADMITTED events.
	QueueSubs *queueSubsFigures `json:"queue_subscribers,omitempty"`

	ended time.Time // when its last slice ended
}

const okMeaning = "ok/s counts holds made (hot-hold, sellout, limit, db-forupdate), answered queries (typename, " +
	"typename-customer, read, queue-position), tickets made (queue-join), tickets told ADMITTED (queue-subscribers, " +
	"whose requests are the joins that made its tickets), complete lifecycles: hold, order, then a payment applied as " +
	"expected, 3 in 4 a success (PAID) " +
	"and 1 in 4 a failure (CANCELLED), the same mix in both (lifecycle: webhook; db-lifecycle: transaction); refused/s counts " +
	"INSUFFICIENT_STOCK (limit: PURCHASE_LIMIT_EXCEEDED). " +
	"Latencies are of every single request, no sampling (lifecycle: each of its three requests, db-lifecycle: each of " +
	"its three transactions, and by step below them)."

// stepLatency is the latency of one step of a lifecycle.
type stepLatency struct {
	Step    string  `json:"step"`
	Latency latency `json:"latency"`
}

// ratio is one of the figures the hot-product work is judged by.
type ratio struct {
	Name   string   `json:"name"`
	Value  *float64 `json:"value"` // nil: a scenario it needs did not run or measured zero
	Target string   `json:"target"`
	Result string   `json:"result"` // PASS, MISS or n/a
	// Informational: shown with PASS/MISS, but -fail-on-miss ignores it.
	Informational bool `json:"informational,omitempty"`
}

func (r *report) anyMiss() bool {
	return slices.ContainsFunc(r.Ratios, func(x ratio) bool { return x.Result == "MISS" && !x.Informational })
}

// addTokenNote adds to typename-customer's notes what verifying a token
// cost, against typename of the same run.
func addTokenNote(r *report) {
	var tn, tc *scenarioResult
	for i := range r.Scenarios {
		switch r.Scenarios[i].Name {
		case scTypename:
			tn = &r.Scenarios[i]
		case scTypenameCustomer:
			tc = &r.Scenarios[i]
		}
	}
	if n := tokenNote(tn, tc, r.CPUs); n != "" {
		tc.Notes = append(tc.Notes, n)
	}
}

// figure is one side of a ratio, read from the scenarios that ran; false:
// not there (a scenario it needs did not run, or made no such request).
type figure func(rs []scenarioResult) (float64, bool)

// ratioDef defines a target ratio: num ÷ den, against bound, at least
// (cmp "≥") or at most ("≤"). -fail-on-miss ignores an informational one.
type ratioDef struct {
	name          string
	num, den      figure
	cmp           string
	bound         float64
	informational bool
}

// ratioDefs are the target ratios, in the order they are reported.
var ratioDefs = []ratioDef{
	{"hot-hold holds/s ÷ db-forupdate holds/s", okPerSec(scHotHold), okPerSec(scDBForUpdate), "≥", 3, false},
	{"hot-hold holds/s ÷ typename req/s", okPerSec(scHotHold), reqPerSec(scTypename), "≥", 0.5, false},
	{"sellout refusals/s ÷ typename req/s", refusedPerSec(scSellout), reqPerSec(scTypename), "≥", 0.8, false},
	{"read ok/s ÷ typename req/s", okPerSec(scRead), reqPerSec(scTypename), "≥", 0.8, false},
	{"hot-hold p99 ÷ typename p99", p99Of(scHotHold), p99Of(scTypename), "≤", 2, false},
	{"lifecycle complete/s ÷ typename req/s", okPerSec(scLifecycle), reqPerSec(scTypename), "≥", 0.1, false},
	{"lifecycle complete/s ÷ db-lifecycle complete/s", okPerSec(scLifecycle), okPerSec(scDBLifecycle), "≥", 3, false},
	// Each of lifecycleSteps.
	{"lifecycle " + stepHold + " p99 ÷ typename p99", stepP99(scLifecycle, stepHold), p99Of(scTypename), "≤", 3, false},
	{"lifecycle " + stepOrder + " p99 ÷ typename p99", stepP99(scLifecycle, stepOrder), p99Of(scTypename), "≤", 3, false},
	{"lifecycle " + stepWebhook + " p99 ÷ typename p99", stepP99(scLifecycle, stepWebhook), p99Of(scTypename), "≤", 3, false},
	// Live stock: delivery within the contract's second, and fan-out that
	// costs the holds little.
	{"subscribers " + stepDelivery + " p99 ÷ 1 s", stepP99(scSubscribers, stepDelivery), constant(float64(deliveryBound)), "≤", 1, false},
	{"subscribers holds/s ÷ subscribers-baseline holds/s", okPerSec(scSubscribers), okPerSec(scSubscribersBaseline), "≥", 0.8, false},
	// Order events: what writing and delivering them costs a lifecycle,
	// and the backlog drained soon after the run (see events.go).
	{"lifecycle-events complete/s ÷ lifecycle complete/s", okPerSec(scLifecycleEvents), okPerSec(scLifecycle), "≥", 0.85, false},
	{"lifecycle-events drain time ÷ 5 s", eventsDrain, constant(eventsDrainTarget.Seconds()), "≤", 1, false},
	// A cache in front (see edge.go): most reads never reach the server,
	// which is asked a few times a second, and stock stays within the
	// contract's staleness.
	{"edge reads/s ÷ edge-origin reads/s", okPerSec(scEdge), okPerSec(scEdgeOrigin), "≥", edgeSpeedupTarget, false},
	{"edge answers from nginx's cache ÷ all", edgeFigure(func(f *edgeFigures) float64 { return f.FromCache }), constant(1), "≥", edgeFromCacheTarget, false},
	{"edge server requests/s for the query ÷ 2/s", edgeFigure(func(f *edgeFigures) float64 { return f.OriginPerSec }), constant(edgeOriginTarget), "≤", 1, false},
	{"edge max staleness ÷ (2 × max-age + 1) s", edgeFigure(func(f *edgeFigures) float64 { return f.MaxStale }),
		edgeFigure(func(f *edgeFigures) float64 { return f.StaleBound }), "≤", 1, false},
	// The waiting room: a join costs about what a hold does, a position
	// read what a product read does, and ADMITTED reaches a watching
	// storefront within the contract's second.
	{"queue-join ok/s ÷ hot-hold holds/s", okPerSec(scQueueJoin), okPerSec(scHotHold), "≥", 0.8, false},
	{"queue-position ok/s ÷ read ok/s", okPerSec(scQueuePosition), okPerSec(scRead), "≥", 0.8, false},
	{"queue-subscribers " + stepAdmitted + " p99 ÷ 1 s", stepP99(scQueueSubscribers, stepAdmitted), constant(float64(deliveryBound)), "≤", 1, false},
	// What verifying a customer token costs (customers mode only).
	{"typename-customer req/s ÷ typename req/s", reqPerSec(scTypenameCustomer), reqPerSec(scTypename), "≥", 0.8, true},
}

// computeRatios derives the target ratios from the scenarios that ran.
func computeRatios(rs []scenarioResult) []ratio {
	out := make([]ratio, 0, len(ratioDefs))
	for _, d := range ratioDefs {
		r := ratio{Name: d.name, Target: fmt.Sprintf("%s %g", d.cmp, d.bound), Result: "n/a", Informational: d.informational}
		n, okN := d.num(rs)
		m, okM := d.den(rs)
		if okN && okM && m > 0 {
			v := n / m
			r.Value = &v
			pass := v >= d.bound
			if d.cmp == "≤" {
				pass = v <= d.bound
			}
			r.Result = map[bool]string{true: "PASS", false: "MISS"}[pass]
		}
		out = append(out, r)
	}
	return out
}

// findScenario returns the row of the scenario name, nil if it did not run.
func findScenario(rs []scenarioResult, name string) *scenarioResult {
	for i := range rs {
		if rs[i].Name == name {
			return &rs[i]
		}
	}
	return nil
}

// scenarioFigure is f of the scenario name's row.
func scenarioFigure(name string, f func(*scenarioResult) float64) figure {
	return func(rs []scenarioResult) (float64, bool) {
		s := findScenario(rs, name)
		if s == nil {
			return 0, false
		}
		return f(s), true
	}
}

func okPerSec(name string) figure {
	return scenarioFigure(name, func(s *scenarioResult) float64 { return s.OKPerSec })
}

func reqPerSec(name string) figure {
	return scenarioFigure(name, func(s *scenarioResult) float64 { return s.RequestsPerSec })
}

func refusedPerSec(name string) figure {
	return scenarioFigure(name, func(s *scenarioResult) float64 { return s.RefusedPerSec })
}

func p99Of(name string) figure {
	return scenarioFigure(name, func(s *scenarioResult) float64 { return float64(s.Latency.P99) })
}

// stepP99 is the p99 of one step of a scenario; not there when it made no
// such request.
func stepP99(name, step string) figure {
	return func(rs []scenarioResult) (float64, bool) {
		s := findScenario(rs, name)
		if s == nil {
			return 0, false
		}
		for _, st := range s.Steps {
			if st.Step == step && st.Latency.Count > 0 {
				return float64(st.Latency.P99), true
			}
		}
		return 0, false
	}
}

// eventsDrain is how long lifecycle-events' backlog took to drain; not
// there when it was not measured.
func eventsDrain(rs []scenarioResult) (float64, bool) {
	s := findScenario(rs, scLifecycleEvents)
	if s == nil || s.Events == nil || s.Events.Error != "" {
		return 0, false
	}
	return s.Events.DrainSeconds, true
}

// edgeFigure is f of the edge scenario's figures; not there when they were
// not measured.
func edgeFigure(f func(*edgeFigures) float64) figure {
	return func(rs []scenarioResult) (float64, bool) {
		s := findScenario(rs, scEdge)
		if s == nil || s.Edge == nil || s.Edge.Error != "" {
			return 0, false
		}
		return f(s.Edge), true
	}
}

func constant(v float64) figure {
	return func([]scenarioResult) (float64, bool) { return v, true }
}

// writeText prints the report as plain aligned tables.
func writeText(w io.Writer, r *report, o options) {
	writeHeader(w, r, o)
	fmt.Fprintln(w)
	writeScenarios(w, r)
	fmt.Fprintln(w)
	writeNotes(w, r)
	fmt.Fprintln(w)
	writeRatios(w, r)
	fmt.Fprintln(w)
	writeChecks(w, r)
}

// writeHeader prints what was run, against what, on what machine.
func writeHeader(w io.Writer, r *report, o options) {
	turns := ""
	if r.Slices > 1 {
		turns = fmt.Sprintf(" (taking turns in %d slices of %s)", r.Slices, o.Duration/time.Duration(r.Slices))
	}
	fmt.Fprintf(w, "flashsale load test %s: %s, %d clients, %s per scenario%s, request timeout %s\n",
		r.RunID, r.URL, r.Clients, o.Duration, turns, r.RequestTimeout)
	if r.EventsURL != "" {
		fmt.Fprintf(w, "events server (lifecycle-events): %s, its order events POSTed to the tool's receiver on %s\n", r.EventsURL, r.EventsListen)
	}
	if c := r.Customers; c != nil {
		fmt.Fprintf(w, "customers mode: every buyer request carries its client's token (%d customers, %s); limit: %d customers shared by all clients\n",
			c.Clients, c.Pattern, len(c.LimitCustomers))
	}
	if r.LoadAvgStart != "" {
		// Tool, server and database share this machine: a busy one skews every figure.
		fmt.Fprintf(w, "machine: %d CPUs, 1-minute load average %s at start, %s at end\n", r.CPUs, r.LoadAvgStart, r.LoadAvgEnd)
	}
}

// writeScenarios prints the table of figures, a row per scenario and one
// per step below it.
func writeScenarios(w io.Writer, r *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tproduct\trequests\treq/s\tok/s\trefused/s\tp50\tp95\tp99\tmax\terrors")
	for _, s := range r.Scenarios {
		name := s.Name
		if s.Interrupted {
			name += " (interrupted)"
		} else if s.Capped {
			name += " (capped)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, cmp.Or(s.ProductID, "-"), s.Requests,
			fmtRate(s.RequestsPerSec), fmtRate(s.OKPerSec), fmtRate(s.RefusedPerSec),
			fmtDur(s.Latency.P50), fmtDur(s.Latency.P95), fmtDur(s.Latency.P99), fmtDur(s.Latency.Max), fmtErrors(s.Errors))
		for _, st := range s.Steps {
			l := st.Latency
			fmt.Fprintf(tw, "  %s\t\t%d\t\t\t\t%s\t%s\t%s\t%s\n", st.Step, l.Count, fmtDur(l.P50), fmtDur(l.P95), fmtDur(l.P99), fmtDur(l.Max))
		}
	}
	tw.Flush()
}

// writeNotes prints what the figures mean, then the scenarios' notes and
// the run's.
func writeNotes(w io.Writer, r *report) {
	fmt.Fprintln(w, wrap(okMeaning, 100))
	for _, s := range r.Scenarios {
		for _, n := range s.Notes {
			if !strings.HasPrefix(n, s.Name+":") {
				n = s.Name + ": " + n
			}
			fmt.Fprintln(w, wrap(n, 100))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, wrap(n, 100))
	}
}

// writeRatios prints the table of target ratios.
func writeRatios(w io.Writer, r *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ratio\tvalue\ttarget\tresult")
	for _, x := range r.Ratios {
		v := "-"
		if x.Value != nil {
			v = fmtRatio(*x.Value, x.Target)
		}
		res := x.Result
		if x.Informational {
			res += " (informational)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", x.Name, v, x.Target, res)
	}
	tw.Flush()
}

// writeChecks prints what was checked, the violations, and the verdict.
func writeChecks(w io.Writer, r *report) {
	fmt.Fprintln(w, "checks:")
	for _, l := range r.Checks.Lines {
		fmt.Fprintln(w, "  "+l)
	}
	for _, v := range r.Checks.Violations {
		fmt.Fprintln(w, "  VIOLATION: "+v)
	}
	switch {
	case len(r.Checks.Violations) > 0:
		fmt.Fprintf(w, "verdict: FAIL, %d violation(s)\n", len(r.Checks.Violations))
	case r.Checks.Failed || r.SetupFailed:
		fmt.Fprintln(w, "verdict: FAIL, a scenario or a check could not run (see above)")
	case r.Interrupted:
		fmt.Fprintln(w, "verdict: interrupted; no violation in what ran")
	default:
		fmt.Fprintln(w, "verdict: OK, no invariant violated, nothing oversold")
	}
}

// fmtRatio prints a ratio with two decimals, or three where two would
// round it onto its target's bound (0.797 against ≥ 0.8 is not "0.80 MISS").
func fmtRatio(v float64, target string) string {
	s := fmt.Sprintf("%.2f", v)
	_, bound, _ := strings.Cut(target, " ")
	if b, err := strconv.ParseFloat(strings.Fields(bound + " x")[0], 64); err == nil && v != b && s == fmt.Sprintf("%.2f", b) {
		s = fmt.Sprintf("%.3f", v)
	}
	return s
}

func writeJSON(path string, r *report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func fmtRate(x float64) string {
	switch {
	case x == 0:
		return "0"
	case x < 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.0f", x)
}

func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d == 0:
		return "-"
	case ms < 10:
		return fmt.Sprintf("%.2fms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.1fms", ms)
	}
	return fmt.Sprintf("%.2fs", ms/1000)
}

// fmtErrors lists error classes, most frequent first.
func fmtErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(errs[b], errs[a]), cmp.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, errs[k])
	}
	return strings.Join(parts, ", ")
}

// wrap breaks a note into lines of at most width runes, at spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(s) {
		n := len([]rune(word))
		if i > 0 {
			if line+1+n > width {
				b.WriteString("\n  ")
				line = 2
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		b.WriteString(word)
		line += n
	}
	return b.String()
}

// loadAvg returns the 1-minute load average, or "" where /proc has none.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
