package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// galeraAnalysis sorts the Galera run's requests that break a rule.
type galeraAnalysis struct {
	internal     []result // INTERNAL_SERVER_ERROR or HTTP 500
	hangs        []result // no answer within the client's timeout
	unexpected   []result // not an answer the sale allows (no server is killed: no transport errors either)
	slowInOutage []result // overlapping the node outage, slower than outageBound (stalls of the machine aside)
	outage       []result // every request overlapping the node outage (kill -9 to Synced again)
	busy         []result // UNAVAILABLE or 503 away from the outage
	// noFailover: with a host list, the server whose first node was down
	// answered nothing while it was (empty when that is not so).
	noFailover string
}

// failoverGrace: how long after the others evicted the dead node a server
// may still be finding its next host.
const failoverGrace = 2 * time.Second

func analyzeGalera(results []result, f *nodeFault, multi bool, stalls []stall) galeraAnalysis {
	var a galeraAnalysis
	outageEnd := f.synced
	if outageEnd.IsZero() {
		outageEnd = time.Now()
	}
	for _, r := range results {
		switch {
		case strings.Contains(r.outcome, "INTERNAL_SERVER_ERROR") || strings.Contains(r.outcome, "HTTP 500"):
			a.internal = append(a.internal, r)
		case r.outcome == outTimeout:
			a.hangs = append(a.hangs, r)
		case isTransport(r.outcome) || !slices.Contains(allowed[r.op], r.outcome):
			a.unexpected = append(a.unexpected, r)
		}
		if !r.start.After(outageEnd) && !r.end().Before(f.killed) {
			a.outage = append(a.outage, r)
			if r.took-stalled(stalls, r.start, r.end()) > outageBound {
				a.slowInOutage = append(a.slowInOutage, r)
			}
		} else if r.outcome == "UNAVAILABLE" || r.outcome == "HTTP 503" {
			a.busy = append(a.busy, r)
		}
	}
	// With a host list, server f.node (its node first) must carry on on the
	// next node while its own is down.
	from := f.evicted
	if from.IsZero() {
		from = f.killed.Add(nodeDowntime)
	}
	from = from.Add(failoverGrace)
	if multi && f.started.After(from) {
		var rs []result
		for _, r := range results {
			if r.server == f.node && !r.start.Before(from) && r.start.Before(f.started) {
				rs = append(rs, r)
			}
		}
		if c := count(rs); len(rs) > 0 && c[outOK] == 0 {
			a.noFailover = fmt.Sprintf("multi-host mode: server %d answered none of its %d requests OK while its first node was down (%s after the cluster evicted it until its restart), answers: %s: its connections did not move to the next host",
				f.node, len(rs), failoverGrace, others(c))
		}
	}
	return a
}

// serverLog is what one server's JSON log says about the database.
type serverLog struct {
	retries  map[string]int    // transactions the stock package retried, by error
	problems map[string][2]int // WARN and ERROR lines by message and error: [in the outage, outside]
}

var mysqlErr = regexp.MustCompile(`Error ([0-9]+)(?: \([0-9A-Z]+\))?: ([^;:()]{0,70})`)
var digits = regexp.MustCompile(`[0-9]+`)

// errClass shortens an error to its kind: the MySQL error number and text,
// else its words with the numbers (ports, IDs, times) taken out.
func errClass(err string) string {
	if m := mysqlErr.FindStringSubmatch(err); m != nil {
		return "Error " + m[1] + ": " + strings.TrimSpace(m[2])
	}
	s := digits.ReplaceAllString(err, "N")
	if len(s) > 110 {
		s = s[:110] + "…"
	}
	return s
}

// scanServerLog reads a server's log; from and to bound the outage.
func scanServerLog(path string, from, to time.Time) serverLog {
	sl := serverLog{retries: map[string]int{}, problems: map[string][2]int{}}
	f, err := os.Open(path)
	if err != nil {
		return sl
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
			Err   string    `json:"err"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch {
		case line.Msg == "retrying transaction":
			sl.retries[errClass(line.Err)]++
		case line.Level == "WARN" || line.Level == "ERROR":
			k := line.Level + " " + line.Msg
			if line.Err != "" {
				k += ": " + errClass(line.Err)
			}
			v := sl.problems[k]
			if !line.Time.Before(from) && !line.Time.After(to) {
				v[0]++
			} else {
				v[1]++
			}
			sl.problems[k] = v
		}
	}
	return sl
}

type galeraSummaryInput struct {
	dur, drain       time.Duration
	drained          bool
	start            time.Time
	results          []result
	products         []product
	a                galeraAnalysis
	f                *nodeFault
	g                *galera
	servers          []*server
	multi            bool
	mode             string
	stalls           []stall
	db               dbCounts
	agree            string
	counters         []map[string]string // Galera's counters per node at the end
	buildTook, total time.Duration
	events           string // the order events' figures (galeraEvents.text)
}

// galeraSummary is the Galera run's report: the cluster, the node fault,
// requests by outcome, by phase and by server, the outage, what the
// servers logged, Galera's conflict counters and the database.
func galeraSummary(in galeraSummaryInput) string {
	var b strings.Builder
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("+%.1fs", t.Sub(in.start).Seconds())
	}
	f := in.f
	victim := in.g.nodes[f.node]
	fmt.Fprintf(&b, "\n== galera run: %s of load, %d buyers, %d servers over a %d-node MariaDB Galera cluster (race detector %v); deliveries drained %s later (complete: %v)\n",
		in.dur.Round(100*time.Millisecond), buyers, len(in.servers), len(in.g.nodes), raceEnabled, in.drain.Round(100*time.Millisecond), in.drained)
	fmt.Fprintf(&b, "%s\n", in.mode)
	fmt.Fprintf(&b, "timings: cluster formed (every node Synced) in %s; server built in %s beside it; the test took %s up to this summary\n",
		in.g.formed.Round(100*time.Millisecond), in.buildTook.Round(100*time.Millisecond), in.total.Round(100*time.Millisecond))
	evicted := "the others never showed a cluster of 2"
	if !f.evicted.IsZero() {
		evicted = fmt.Sprintf("the others' cluster shrank to %d at %s (%s later)", len(in.g.nodes)-1, at(f.evicted), f.evicted.Sub(f.killed).Round(100*time.Millisecond))
	}
	pos := "none recovered, so a full SST"
	if f.position != "" {
		pos = "recovered " + f.position
	}
	fmt.Fprintf(&b, "fault:\n  %s: kill -9 at %s; %s; started again at %s (position %s), accepting connections at %s, Synced at %s by %s (out of the cluster %s)\n",
		victim, at(f.killed), evicted, at(f.started), pos, at(f.ready), at(f.synced), f.transfer, f.synced.Sub(f.killed).Round(100*time.Millisecond))
	if len(in.stalls) > 0 {
		b.WriteString("  the test process itself stalled:")
		for _, s := range in.stalls {
			fmt.Fprintf(&b, " %s for %s;", at(s.at), s.gap.Round(time.Millisecond))
		}
		b.WriteString("\n")
	}

	writeRequests(&b, in.results)

	// By phase and server, by each request's start.
	phases := []struct {
		name     string
		from, to time.Time
	}{
		{"steady", in.start, f.killed},
		{"node down", f.killed, f.started},
		{"node rejoining", f.started, f.synced},
		{"rejoined", f.synced, in.start.Add(in.dur)},
		{"drain", in.start.Add(in.dur), time.Now()},
	}
	fmt.Fprintf(&b, "by phase and server (request start; server %d has the killed node first):\n", f.node)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  phase\tfrom\tto\tserver\trequests\tok\tp99\tmax\tother answers")
	for _, ph := range phases {
		var rs []result
		for _, r := range in.results {
			if !r.start.Before(ph.from) && r.start.Before(ph.to) {
				rs = append(rs, r)
			}
		}
		l := latencies(rs)
		fmt.Fprintf(tw, "  %s\t%s\t%s\tall\t%d\t%d\t%s\t%s\t%s\n", ph.name, at(ph.from), at(ph.to), len(rs), count(rs)[outOK], l.p(99), l.p(100), others(count(rs)))
		for i := range in.servers {
			var ss []result
			for _, r := range rs {
				if r.server == i {
					ss = append(ss, r)
				}
			}
			l := latencies(ss)
			fmt.Fprintf(tw, "  \t\t\t%d\t%d\t%d\t%s\t%s\t%s\n", i, len(ss), count(ss)[outOK], l.p(99), l.p(100), others(count(ss)))
		}
	}
	tw.Flush()

	out := in.a.outage
	fmt.Fprintf(&b, "node outage (kill -9 at %s to Synced at %s): %d requests overlapped it; answers: %s; max latency %s (bound %s)\n",
		at(f.killed), at(f.synced), len(out), others(count(out)), latencies(out).p(100), outageBound)
	for i := range in.servers {
		var ss []result
		for _, r := range out {
			if r.server == i {
				ss = append(ss, r)
			}
		}
		note := ""
		if i == f.node {
			note = " (its first node is the one killed)"
		}
		fmt.Fprintf(&b, "  server %d%s: %d requests, %d ok, max %s; other answers: %s\n", i, note, len(ss), count(ss)[outOK], latencies(ss).p(100), others(count(ss)))
	}
	busy := map[string]int{}
	for _, r := range in.a.busy {
		busy[fmt.Sprintf("server %d", r.server)]++
	}
	fmt.Fprintf(&b, "UNAVAILABLE or 503 away from the outage: %d (%s)\n", len(in.a.busy), others(busy))
	failover := "n/a (single host)"
	if in.multi {
		failover = "ok"
		if in.a.noFailover != "" {
			failover = "FAILED"
		}
	}
	fmt.Fprintf(&b, "rule breaks: %d INTERNAL/500, %d hangs, %d slow in outage, %d unexpected answers; failover of server %d: %s\n",
		len(in.a.internal), len(in.a.hangs), len(in.a.slowInOutage), len(in.a.unexpected), f.node, failover)

	// What the servers logged about the database.
	b.WriteString("server logs: WARN/ERROR lines (in the outage / outside it):\n")
	retries := map[string]int{}
	for _, s := range in.servers {
		sl := scanServerLog(s.logPath, f.killed, f.synced)
		for k, v := range sl.retries {
			retries[fmt.Sprintf("server %d %s", s.idx, k)] += v
		}
		keys := slices.Collect(maps.Keys(sl.problems))
		sort.Slice(keys, func(i, j int) bool {
			a, b := sl.problems[keys[i]], sl.problems[keys[j]]
			return a[0]+a[1] > b[0]+b[1] || a[0]+a[1] == b[0]+b[1] && keys[i] < keys[j]
		})
		if len(keys) == 0 {
			fmt.Fprintf(&b, "  server %d: none\n", s.idx)
		}
		for i, k := range keys {
			if i == 6 {
				fmt.Fprintf(&b, "  server %d: … %d more kinds\n", s.idx, len(keys)-i)
				break
			}
			fmt.Fprintf(&b, "  server %d: %d / %d  %s\n", s.idx, sl.problems[k][0], sl.problems[k][1], k)
		}
	}
	fmt.Fprintf(&b, "transactions retried by package stock (debug log: deadlocks, which is how Galera reports a certification conflict, and lock waits): %s\n", others(retries))
	b.WriteString("Galera counters per node (the killed node's two lives added up):")
	for i := range in.g.nodes {
		c := func(name string) int { return f.counter(i, in.counters[i], name) }
		fmt.Fprintf(&b, " node %d: %d write sets replicated, %d certification failures, %d brute-force aborts, %d replays;", i,
			c("wsrep_replicated"), c("wsrep_local_cert_failures"), c("wsrep_local_bf_aborts"), c("wsrep_local_replays"))
	}
	b.WriteString("\n")
	b.WriteString(in.events)
	fmt.Fprintf(&b, "database after the run (node 0; %s):\n", in.agree)
	writeDatabase(&b, in.db, in.products)
	return b.String()
}
