package cluster

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// allowed lists, per operation, the answers a sale may get at any time.
// Transport errors are allowed only from the killed server around its
// kill; UNAVAILABLE and 503 any time (a lock wait past REQUEST_TIMEOUT is
// UNAVAILABLE too).
var allowed = map[string][]string{
	"createProduct":               {outOK, "UNAVAILABLE"},
	"createHold":                  {outOK, "INSUFFICIENT_STOCK", "UNAVAILABLE"},
	"createOrder":                 {outOK, "HOLD_EXPIRED", "UNAVAILABLE"},
	"createOrder (retry)":         {outOK, "HOLD_EXPIRED", "HOLD_NOT_ACTIVE", "UNAVAILABLE"}, // the first try may have worked
	"product":                     {outOK, "UNAVAILABLE"},
	"webhook":                     {outOK, "HTTP 503"},
	"webhook (retry)":             {outOK, "HTTP 503"},
	"webhook (reused key)":        {outOK, "HTTP 503", "HTTP 409"},
	"webhook (reused key, retry)": {outOK, "HTTP 503", "HTTP 409"},
}

// staleOK: the contract lets the stock a query returns be up to 1 s stale,
// so for that long into the outage a server may still answer from what it
// knew (a product read, or a hold refused as sold out).
const staleOK = time.Second

func isTransport(outcome string) bool {
	switch outcome {
	case outRefused, outReset, outEOF, outTransErr:
		return true
	}
	return false
}

// analysis sorts the requests that break a rule.
type analysis struct {
	internal      []result // INTERNAL_SERVER_ERROR or HTTP 500
	hangs         []result // no answer within the client's timeout
	slowInOutage  []result // overlapping the database outage, slower than outageBound (stalls of the machine aside)
	wrongInOutage []result // made and answered while the database was down, not UNAVAILABLE/503/refused
	unexpected    []result // not an answer the sale allows
	outage        []result // every request overlapping the database outage
	busy          []result // UNAVAILABLE or 503 away from the outage (a lock wait past REQUEST_TIMEOUT, say)
}

// stallWatch notes when the test process itself did not run for a while
// (the machine stalled), since that shows up in every latency it measures.
type stallWatch struct {
	mu     sync.Mutex
	stalls []stall
	done   chan struct{}
}

type stall struct {
	at  time.Time
	gap time.Duration
}

func watchStalls() *stallWatch {
	w := &stallWatch{done: make(chan struct{})}
	go func() {
		const tick = 10 * time.Millisecond
		last := time.Now()
		for {
			select {
			case <-w.done:
				return
			case now := <-time.After(tick):
				if gap := now.Sub(last) - tick; gap > 250*time.Millisecond {
					w.mu.Lock()
					w.stalls = append(w.stalls, stall{at: last, gap: gap})
					w.mu.Unlock()
				}
				last = now
			}
		}
	}()
	return w
}

func (w *stallWatch) stop() { close(w.done) }

func (w *stallWatch) list() []stall {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]stall(nil), w.stalls...)
}

// stalled is how long the test process was stalled between from and to.
func stalled(stalls []stall, from, to time.Time) time.Duration {
	var d time.Duration
	for _, s := range stalls {
		if a, b := maxTime(s.at, from), minTime(s.at.Add(s.gap), to); b.After(a) {
			d += b.Sub(a)
		}
	}
	return d
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func analyze(results []result, f *faults, stalls []stall) analysis {
	var a analysis
	serverUp := f.serverReady
	if serverUp.IsZero() {
		serverUp = time.Now()
	}
	for _, r := range results {
		switch {
		case strings.Contains(r.outcome, "INTERNAL_SERVER_ERROR") || strings.Contains(r.outcome, "HTTP 500"):
			a.internal = append(a.internal, r)
		case r.outcome == outTimeout:
			a.hangs = append(a.hangs, r)
		case isTransport(r.outcome):
			if r.server != f.server || r.end().Before(f.serverKilled) || r.start.After(serverUp) {
				a.unexpected = append(a.unexpected, r)
			}
		case !slices.Contains(allowed[r.op], r.outcome):
			a.unexpected = append(a.unexpected, r)
		}
		if !r.start.After(f.dbReady) && !r.end().Before(f.dbKilled) {
			a.outage = append(a.outage, r)
			// A stall of the whole machine (the test process stalled too)
			// is not the server's time.
			if r.took-stalled(stalls, r.start, r.end()) > outageBound {
				a.slowInOutage = append(a.slowInOutage, r)
			}
		} else if r.outcome == "UNAVAILABLE" || r.outcome == "HTTP 503" {
			a.busy = append(a.busy, r)
		}
		if !r.start.Before(f.dbGone) && !r.end().After(f.dbStarted) {
			switch {
			case r.outcome == "UNAVAILABLE", r.outcome == "HTTP 503", r.outcome == outRefused:
			case r.start.Sub(f.dbGone) < staleOK && (r.outcome == outOK && r.op == "product" || r.outcome == "INSUFFICIENT_STOCK"):
				// Stock shown or refused from what the server knew just before.
			default:
				a.wrongInOutage = append(a.wrongInOutage, r)
			}
		}
	}
	return a
}

type summaryInput struct {
	dur, drain time.Duration
	drained    bool
	start      time.Time
	results    []result
	products   []product
	a          analysis
	f          *faults
	stalls     []stall
	db         dbCounts
}

// summary is the run's report: faults, requests by outcome and phase,
// the outage, latencies and the database's totals.
func summary(in summaryInput) string {
	var b strings.Builder
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("+%.1fs", t.Sub(in.start).Seconds())
	}
	f := in.f
	fmt.Fprintf(&b, "\n== cluster run: %s of load, %d buyers, %d servers (race detector %v); deliveries drained %s later (complete: %v)\n",
		in.dur.Round(100*time.Millisecond), buyers, serverCount, raceEnabled, in.drain.Round(100*time.Millisecond), in.drained)
	fmt.Fprintf(&b, "faults:\n  server %d: kill -9 at %s, started at %s, ready at %s (down %s)\n",
		f.server, at(f.serverKilled), at(f.serverStarted), at(f.serverReady), f.serverReady.Sub(f.serverKilled).Round(10*time.Millisecond))
	fmt.Fprintf(&b, "  MariaDB: %s at %s (took effect %s later), started again at %s, accepting connections at %s (outage %s)\n",
		f.dbFault, at(f.dbKilled), f.dbGone.Sub(f.dbKilled).Round(time.Millisecond), at(f.dbStarted), at(f.dbReady), f.dbReady.Sub(f.dbKilled).Round(10*time.Millisecond))
	if len(in.stalls) > 0 {
		b.WriteString("  the test process itself stalled:")
		for _, s := range in.stalls {
			fmt.Fprintf(&b, " %s for %s;", at(s.at), s.gap.Round(time.Millisecond))
		}
		b.WriteString("\n")
	}

	writeRequests(&b, in.results)

	// By phase of the run, by each request's start.
	type phase struct {
		name     string
		from, to time.Time
	}
	phases := []phase{
		{"steady", in.start, f.serverKilled},
		{"server down", f.serverKilled, f.serverReady},
		{"between faults", f.serverReady, f.dbKilled},
		{"database down", f.dbKilled, f.dbReady},
		{"recovered", f.dbReady, in.start.Add(in.dur)},
		{"drain", in.start.Add(in.dur), time.Now()},
	}
	fmt.Fprintln(&b, "by phase (request start):")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  phase\tfrom\tto\trequests\tok\tp99\tmax\tother answers")
	for _, ph := range phases {
		var rs []result
		for _, r := range in.results {
			if !r.start.Before(ph.from) && r.start.Before(ph.to) {
				rs = append(rs, r)
			}
		}
		l := latencies(rs)
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", ph.name, at(ph.from), at(ph.to), len(rs), count(rs)[outOK], l.p(99), l.p(100), others(count(rs)))
	}
	tw.Flush()

	out := in.a.outage
	fmt.Fprintf(&b, "database outage: %d requests overlapped it; answers: %s; max latency %s (bound %s)\n",
		len(out), others(count(out)), latencies(out).p(100), outageBound)
	fmt.Fprintf(&b, "UNAVAILABLE or 503 away from the outage: %d\n", len(in.a.busy))
	fmt.Fprintf(&b, "rule breaks: %d INTERNAL/500, %d hangs, %d slow in outage, %d wrong answers in outage, %d unexpected answers\n",
		len(in.a.internal), len(in.a.hangs), len(in.a.slowInOutage), len(in.a.wrongInOutage), len(in.a.unexpected))
	b.WriteString("database after the run:\n")
	writeDatabase(&b, in.db, in.products)
	return b.String()
}

// writeRequests writes the count and latencies of the requests, and a
// table of them by operation and outcome.
func writeRequests(b *strings.Builder, results []result) {
	lat := latencies(results)
	fmt.Fprintf(b, "requests: %d; latency p50 %s, p99 %s, max %s\n", len(results), lat.p(50), lat.p(99), lat.p(100))
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  operation\toutcome\tcount\tp50\tp99\tmax")
	byOp := map[[2]string][]result{}
	for _, r := range results {
		k := [2]string{r.op, r.outcome}
		byOp[k] = append(byOp[k], r)
	}
	keys := slices.Collect(maps.Keys(byOp))
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return len(byOp[keys[i]]) > len(byOp[keys[j]])
	})
	for _, k := range keys {
		l := latencies(byOp[k])
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", k[0], k[1], len(byOp[k]), l.p(50), l.p(99), l.p(100))
	}
	tw.Flush()
}

// writeDatabase writes the database's totals and each drop's products.
func writeDatabase(b *strings.Builder, db dbCounts, products []product) {
	fmt.Fprintf(b, "  holds: %s\n  orders: %s\n  payment events: %s\n",
		others(db.holds), others(db.orders), others(db.events))
	var total, sold, reserved, soldOut int
	for i, p := range products {
		row := db.products[p.id]
		total += p.stock
		sold += row.received - row.available
		reserved += row.reserved
		if row.available == 0 {
			soldOut++
		}
		if i%len(initialStock) == 0 {
			fmt.Fprintf(b, "  drop %d:", i/len(initialStock)+1)
		}
		fmt.Fprintf(b, " product %s sold %d/%d (reserved %d)", p.id, row.received-row.available, p.stock, row.reserved)
		if i%len(initialStock) == len(initialStock)-1 || i == len(products)-1 {
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(b, "  all %d products: %d units sold of %d, %d reserved; %d sold out\n", len(products), sold, total, reserved, soldOut)
}

func count(rs []result) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[r.outcome]++
	}
	return m
}

// others lists counts, largest first, leaving out "ok".
func others(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	var parts []string
	for _, k := range keys {
		if k != outOK {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

type latencyList []time.Duration

func latencies(rs []result) latencyList {
	l := make(latencyList, len(rs))
	for i, r := range rs {
		l[i] = r.took
	}
	slices.Sort(l)
	return l
}

// p is the pth percentile (100: the maximum).
func (l latencyList) p(p int) string {
	if len(l) == 0 {
		return "-"
	}
	i := min(len(l)-1, len(l)*p/100)
	d := l[i]
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
