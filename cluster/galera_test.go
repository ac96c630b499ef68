package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"flashsale/database"
	"flashsale/internal/testkit"
)

// The Galera run: the same sale over a 3-node MariaDB Galera cluster of
// the test's own, every node taking writes, one node killed mid-sale.
const (
	galeraSize            = 3
	galeraVictim          = 1 // the node killed: not the one that bootstrapped the cluster
	nodeDowntime          = 5 * time.Second
	defaultGaleraDuration = 40 * time.Second
	minGaleraDuration     = 20 * time.Second // room for the outage and the rejoin
)

// nodeFault records what happened to the node the test killed.
type nodeFault struct {
	node     int
	killed   time.Time // kill -9 sent
	evicted  time.Time // the other nodes' cluster shrank to 2 (zero: not seen)
	started  time.Time // started again
	ready    time.Time // accepting connections again
	synced   time.Time // Synced in a cluster of 3 again
	position string    // what --wsrep-recover found ("" none: it rejoins by SST)
	transfer string    // IST or SST
	errs     []error
	// Galera's counters on each node, taken just before the kill (the
	// killed node's start again from 0 when it restarts).
	before []map[string]string
	// hold, when set, runs holdBeforeKill before the kill, and release
	// right after it.
	hold, release func()
}

// holdBeforeKill: the receiver holds the order event deliveries of the
// server on the killed node this long before the kill, so that its
// attempts are in flight when its node dies.
const holdBeforeKill = time.Second

// wsrepCounters are the Galera status counters the summary shows.
var wsrepCounters = []string{"wsrep_replicated", "wsrep_local_cert_failures", "wsrep_local_bf_aborts", "wsrep_local_replays"}

// TestGalera: a flash sale through three server processes over a 3-node
// Galera cluster, each server on its own node first, with kill -9 of one
// node mid-sale and its rejoin; then the contract is checked on every
// node, the nodes must agree row for row, every order event must reach a
// receiver in the test and pass TestEventsSurviveKill's checks (a
// duplicate only where the node's loss lost an attempt's answer), and a
// summary is printed (and appended to CLUSTER_REPORT). GALERA_DURATION (a Go duration, default
// 40s) sets how long the load runs; CLUSTER_LOG_DIR keeps the logs.
// Outside CI it is skipped when the Galera provider is not installed.
func TestGalera(t *testing.T) {
	testStart := time.Now()
	reported := false
	t.Cleanup(func() {
		switch {
		case t.Skipped():
			appendReport(t, "\n== galera run: skipped (no Galera provider; see the test's output)\n")
		case !reported:
			appendReport(t, "\n== galera run: no summary: the test stopped before the end of the sale (see its output)\n")
		}
	})
	dur := galeraDuration(t)
	galeraPrereqs(t)

	// Does this tree's package database take a list of hosts? Ask its
	// parser now, and after the cluster is up whether a connection through
	// a list really reaches the second host when the first is dead.
	listURL := "mysql://root@127.0.0.1:3306,127.0.0.1:3307,127.0.0.1:3308/flashsale"
	_, listErr := database.ParseURL(listURL)

	// Build the server while the cluster forms.
	bin := filepath.Join(t.TempDir(), "flashsale")
	var buildTook time.Duration
	built := make(chan error, 1)
	buildDone := make(chan struct{})
	go func() {
		defer close(buildDone)
		d, err := buildBinary(bin)
		buildTook = d
		built <- err
	}()
	// Should the test stop early, the build ends before its directory goes.
	t.Cleanup(func() { <-buildDone })
	g := startGalera(t, galeraSize)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster of %d Synced in %s; server built (race detector %v) in %s", galeraSize, g.formed.Round(100*time.Millisecond), raceEnabled, buildTook.Round(100*time.Millisecond))

	multi, mode := hostListMode(t, g, listErr)
	t.Log(mode)

	// The shop's receiver of order events, closed after the servers stop
	// (cleanups run last first).
	secret, eventsSecret := newWebhookSecret(), newWebhookSecret()
	rcv, err := newHookReceiver(eventsSecret, 20*time.Millisecond, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.close)

	// Three servers, one after the other so that migrations do not race,
	// server i on node i first.
	servers := make([]*server, galeraSize)
	for i := range servers {
		settings := serverSettings(g.serverURL(i, multi), secret)
		// Debug: the stock package logs each transaction it retries
		// (deadlocks, which is how Galera reports a certification conflict).
		settings["LOG_LEVEL"] = "debug"
		// Order events to the receiver, the path naming the sender.
		settings["EVENTS_WEBHOOK_URL"] = rcv.url(i)
		settings["EVENTS_WEBHOOK_SECRET"] = eventsSecret
		settings["EVENTS_RETRY_MIN"] = "200ms"
		settings["EVENTS_RETRY_MAX"] = "2s"
		settings["EVENTS_TIMEOUT"] = galeraEventsTimeout.String()
		servers[i] = startServerLog(t, bin, i, settings, fmt.Sprintf("galera-server%d.log", i))
		if err := servers[i].waitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newClient(servers, secret, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()

	// The sale, with the node fault on a timetable of its own.
	stalls := watchStalls()
	defer stalls.stop()
	l := newLoad(c, holdTTL, paymentTimeout, sweepInterval)
	if o := l.drop(context.Background(), 1); o != outOK {
		t.Fatalf("createProduct: %s", o)
	}
	// Server f.node's (its node first) order event attempts are held in
	// flight at the receiver across the kill: their outcomes are written
	// after its node died.
	f := &nodeFault{node: galeraVictim}
	var heldAtKill int
	f.hold = func() { rcv.holdBack(f.node) }
	f.release = func() {
		_, heldAtKill, _ = rcv.stats(f.node)
		rcv.releaseHeld()
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.inject(start, dur, g)
	}()
	l.run(ctx, buyers)
	loadEnd := time.Now()
	wg.Wait()
	for _, err := range f.errs {
		t.Error(err)
	}
	if f.synced.IsZero() {
		t.Fatalf("%s did not rejoin the cluster; nothing more to check", g.nodes[f.node])
	}

	drained := l.drain(45 * time.Second)
	drainedAt := time.Now()
	// Let the sweepers release what fell due.
	time.Sleep(holdTTL + 4*sweepInterval)

	// While the servers still run: on every node, nothing is stuck.
	checkers := make([]*checker, len(g.nodes))
	for i, n := range g.nodes {
		checkers[i] = newChecker(t, n.url(), n.String())
		defer checkers[i].close()
		checkers[i].sweeperKeepsUp()
	}
	// Then every order event delivered: DELIVERED on the cluster (read
	// through node 0, which waits for what the others committed) and
	// answered 2xx at the receiver, with nothing in flight.
	ev := &galeraEvents{}
	ev.heldAtKill = heldAtKill // written by inject, which wg.Wait() waited for
	ev.counters[0] = nodeCounters(g)
	waitFrom := time.Now()
	for deadline := waitFrom.Add(galeraEventsDrain); ; time.Sleep(100 * time.Millisecond) {
		ev.state = drainStatus(checkers[0], rcv)
		if ev.drained = ev.state.done(); ev.drained || time.Now().After(deadline) {
			break
		}
	}
	ev.waited, ev.afterSale = time.Since(waitFrom), time.Since(loadEnd)
	ev.counters[1] = nodeCounters(g)
	if !ev.drained {
		t.Errorf("order events not all delivered %s after the sale (waited %s): %s", ev.afterSale.Round(100*time.Millisecond), galeraEventsDrain, ev.state)
	}
	for _, s := range servers {
		if err := s.waitReady(5 * time.Second); err != nil {
			t.Errorf("after the run: %v", err)
		}
	}
	stopServers(t, servers)

	// Every node has applied everything, then each is checked on its own
	// and against the others.
	if err := g.waitConverged(30 * time.Second); err != nil {
		t.Error(err)
	}
	for _, ck := range checkers {
		ck.audit()
		ck.stock(l.allProducts())
		ck.acknowledged(l)
	}
	agree := compareNodes(t, g, checkers)
	counters := nodeCounters(g)

	// The order events: the checks of TestEventsSurviveKill, a duplicate
	// explained only by an answer the node's loss made the relay lose.
	checksFrom := time.Now()
	ev.reqs = rcv.all()
	for _, s := range servers {
		ev.relay = append(ev.relay, scanRelayLog(s.logPath))
	}
	lost := galeraLost(f, f.node, ev.relay)
	ev.fig = checkOrderEvents(t, checkers[0], ev.reqs, l.purchases(), eventRun{servers: len(servers), lost: lost, victim: -1})
	var slowResend []string
	ev.maxResend, slowResend = explainedResends(ev.reqs, lost)
	ev.checksTook = time.Since(checksFrom)
	for _, d := range ev.fig.dupList {
		t.Logf("duplicate: %s", d)
	}

	results := c.rec.all()
	a := analyzeGalera(results, f, multi, stalls.list())
	text := galeraSummary(galeraSummaryInput{
		dur: loadEnd.Sub(start), drain: drainedAt.Sub(loadEnd), drained: drained, start: start,
		results: results, products: l.allProducts(), a: a, f: f, g: g, servers: servers,
		multi: multi, mode: mode, stalls: stalls.list(), db: checkers[0].counts(), agree: agree,
		counters: counters, buildTook: buildTook, total: time.Since(testStart), events: ev.text(f, g),
	})
	t.Log(text)
	appendReport(t, text)
	reported = true

	if !drained {
		t.Errorf("webhook deliveries still retrying %s after the load stopped", 45*time.Second)
	}
	report(t, "request(s) got INTERNAL_SERVER_ERROR or HTTP 500", a.internal)
	report(t, "request(s) hung past the client's timeout", a.hangs)
	report(t, fmt.Sprintf("request(s) overlapping the node outage took longer than %s", outageBound), a.slowInOutage)
	report(t, "request(s) got an answer the sale does not allow", a.unexpected)
	if a.noFailover != "" {
		t.Error(a.noFailover)
	}
	for _, s := range l.apiStock {
		t.Errorf("the API showed inconsistent stock: %s", s)
	}
	l.checkEvents(t)
	if len(slowResend) > 0 {
		slices.Sort(slowResend)
		t.Errorf("%d order events whose answer was lost were not attempted again within %s: %s", len(slowResend), eventsTakeover, examples(slowResend))
	}
	if ev.fig.events == 0 {
		t.Error("no order events: the sale wrote none, or the servers have no sink")
	}
}

// nodeCounters reads Galera's counters on every node (nil for a node
// that does not answer).
func nodeCounters(g *galera) []map[string]string {
	out := make([]map[string]string, len(g.nodes))
	for i, n := range g.nodes {
		out[i], _ = n.status(wsrepCounters...)
	}
	return out
}

func galeraDuration(t *testing.T) time.Duration {
	v := os.Getenv("GALERA_DURATION")
	if v == "" {
		return defaultGaleraDuration
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < minGaleraDuration {
		t.Fatalf("GALERA_DURATION=%q: want a Go duration of at least %s", v, minGaleraDuration)
	}
	return d
}

// appendReport appends text to the file CLUSTER_REPORT names, if any
// (TestCluster writes it first; .ci/run prints it).
func appendReport(t *testing.T, text string) {
	path := os.Getenv("CLUSTER_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		_, err = f.WriteString(text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Errorf("CLUSTER_REPORT: %v", err)
	}
}

// hostListMode decides how the servers name the cluster. With multi-host
// support in package database (a DATABASE_URL with a list of hosts, tried
// in order), server i gets node i first and then the others; without it,
// node i only. The probe: ParseURL must take a list, and a pool opened
// through one whose first host is dead must reach the second.
func hostListMode(t *testing.T, g *galera, parseErr error) (multi bool, mode string) {
	t.Helper()
	const single = "DATABASE_URL mode: single host (fallback: server i on node i only, so its node's outage is its outage)"
	if parseErr != nil {
		return false, fmt.Sprintf("%s; database.ParseURL refuses a host list: %v", single, parseErr)
	}
	dead := testkit.FreePort(t)
	u := fmt.Sprintf("mysql://root@127.0.0.1:%d,127.0.0.1:%d/flashsale", dead, g.nodes[0].port)
	db, err := database.Open(u, database.Options{MaxConns: 1})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = db.Ping(ctx)
		cancel()
		db.Close()
	}
	if err != nil {
		return false, fmt.Sprintf("%s; database.ParseURL takes a host list, but a connection through a dead host and a live one failed: %v", single, err)
	}
	return true, "DATABASE_URL mode: multi-host (server i: node i first, then the next two; a probe through a dead host and a live one connected)"
}

// serverURL is the DATABASE_URL of server i: its node first, then the
// next ones in turn (multi), or its node only.
func (g *galera) serverURL(i int, multi bool) string {
	var hosts []string
	for k := range len(g.nodes) {
		hosts = append(hosts, fmt.Sprintf("127.0.0.1:%d", g.nodes[(i+k)%len(g.nodes)].port))
		if !multi {
			break
		}
	}
	return fmt.Sprintf("mysql://root@%s/flashsale", strings.Join(hosts, ","))
}

// inject kills the victim node (kill -9) at a fifth of the run (its rejoin
// takes 15 to 35 s on 2 busy cores: a joiner applies the write sets it
// missed while the load goes on), waits
// until the other nodes have noticed (their cluster is 2), and at least
// nodeDowntime, then recovers its position and starts it again on the same
// data and ports, and waits until it is Synced.
func (f *nodeFault) inject(start time.Time, dur time.Duration, g *galera) {
	n := g.nodes[f.node]
	if f.hold != nil {
		time.Sleep(time.Until(start.Add(dur/5 - holdBeforeKill)))
		f.hold()
	}
	time.Sleep(time.Until(start.Add(dur / 5)))
	for _, m := range g.nodes {
		st, _ := m.status(wsrepCounters...)
		f.before = append(f.before, st)
	}
	f.killed = time.Now()
	n.current().kill()
	if f.release != nil {
		f.release()
	}
	other := g.nodes[(f.node+1)%len(g.nodes)]
	for time.Since(f.killed) < 30*time.Second {
		if st, err := other.status("wsrep_cluster_size"); err == nil && st["wsrep_cluster_size"] == strconv.Itoa(len(g.nodes)-1) {
			f.evicted = time.Now()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Until(f.killed.Add(nodeDowntime)))

	pos, err := n.recoverPosition()
	if err != nil {
		f.errs = append(f.errs, err)
	}
	f.position = pos
	var more []string
	if pos != "" {
		more = append(more, "--wsrep_start_position="+pos)
	}
	offset := n.logSize()
	f.started = time.Now()
	if err := n.start(more...); err != nil {
		f.errs = append(f.errs, err)
		return
	}
	if err := n.waitReady(2 * time.Minute); err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s after kill -9: %w", n, err))
		return
	}
	f.ready = time.Now()
	if err := n.waitSynced(len(g.nodes), 2*time.Minute); err != nil {
		f.errs = append(f.errs, fmt.Errorf("after kill -9: %w", err))
		return
	}
	f.synced = time.Now()
	f.transfer = n.transfer(offset)
}

// counter is a node's Galera counter, summed over the killed node's two
// lives.
func (f *nodeFault) counter(i int, after map[string]string, name string) int {
	v := atoi(after[name])
	if i == f.node && i < len(f.before) {
		v += atoi(f.before[i][name])
	}
	return v
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// waitConverged waits until every node is Synced in the full cluster and
// has committed the same last transaction with nothing left to apply.
func (g *galera) waitConverged(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var states []string
		seqnos := map[string]bool{}
		ok := true
		for _, n := range g.nodes {
			st, err := n.status("wsrep_cluster_size", "wsrep_local_state_comment", "wsrep_last_committed", "wsrep_local_recv_queue")
			if err != nil {
				ok = false
				states = append(states, fmt.Sprintf("%s: %v", n, err))
				continue
			}
			states = append(states, fmt.Sprintf("%s: %v", n, st))
			seqnos[st["wsrep_last_committed"]] = true
			if st["wsrep_cluster_size"] != strconv.Itoa(len(g.nodes)) || st["wsrep_local_state_comment"] != "Synced" || st["wsrep_local_recv_queue"] != "0" {
				ok = false
			}
		}
		if ok && len(seqnos) == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the nodes did not converge within %s after the servers stopped: %s", timeout, strings.Join(states, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
