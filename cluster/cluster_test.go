// Package cluster holds TestCluster: the real server binary, three processes
// of it against one MariaDB of the test's own, a flash sale driven through
// them for a minute while one server is killed and the database crashes,
// and then a check, against the database, that the contract held throughout.
//
// TestGalera (galera_test.go) drives the same sale over a 3-node MariaDB
// Galera cluster of the test's own, kills one node mid-sale and lets it
// rejoin, then checks the contract on every node and that the nodes agree.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The servers' settings: short lifetimes, so that holds expire, payments
// time out and the sweeper works many times within the run.
const (
	holdTTL        = 2 * time.Second
	paymentTimeout = 3 * time.Second
	sweepInterval  = 250 * time.Millisecond
	requestTimeout = 2 * time.Second

	// outageBound: while the database is down every request gets its answer
	// within REQUEST_TIMEOUT plus this margin.
	outageBound = requestTimeout + 3*time.Second

	buyers          = 32
	serverCount     = 3
	serverDowntime  = 2 * time.Second
	dbDowntime      = 5 * time.Second
	defaultDuration = 60 * time.Second
	minDuration     = 16 * time.Second // room for both faults and the recovery
	adminToken      = "cluster-admin-token-0123456789abc"
)

// initialStock of the hot products of each drop. A new drop goes on sale
// every dropEvery, so that stock is contested throughout the run (one drop
// sells out in a few seconds) and each drop's last units are fought over.
var initialStock = []int{200, 100, 50}

const dropEvery = 5 * time.Second

// faults records when the test broke things.
type faults struct {
	server        int       // the index of the server killed
	serverKilled  time.Time // kill -9 sent
	serverStarted time.Time // started again
	serverReady   time.Time // /readyz says 200 again
	dbFault       string    // SIGKILL (a crash, the default) or SIGSTOP (a freeze)
	dbKilled      time.Time // the signal sent to mariadbd
	dbGone        time.Time // mariadbd has exited (or stopped)
	dbStarted     time.Time // mariadbd started (or continued) again
	dbReady       time.Time // accepting connections again
	errs          []error
}

// TestCluster: see the package comment. CLUSTER_DURATION (a Go duration)
// sets how long the load runs (default 60s); CLUSTER_DB_FAULT=freeze
// freezes the database instead of crashing it; CLUSTER_LOG_DIR keeps the
// logs of the servers and MariaDB there.
func TestCluster(t *testing.T) {
	dur := duration(t)
	db := startMariaDB(t)
	bin := buildServer(t)

	secret := newWebhookSecret()
	settings := serverSettings(db.url(), secret)
	servers := make([]*server, serverCount)
	for i := range servers {
		servers[i] = startServer(t, bin, i, settings)
	}
	for _, s := range servers {
		if err := s.waitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newClient(servers, secret, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()

	// The sale, with the faults on a timetable of their own.
	stalls := watchStalls()
	defer stalls.stop()
	l := newLoad(c, holdTTL, paymentTimeout, sweepInterval)
	if o := l.drop(context.Background(), 1); o != outOK {
		t.Fatalf("createProduct: %s", o)
	}
	f := &faults{server: 1, dbFault: dbFault(t)}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.inject(start, dur, servers[f.server], db)
	}()
	l.run(ctx, buyers)
	loadEnd := time.Now()
	wg.Wait()
	for _, err := range f.errs {
		t.Error(err)
	}
	if f.dbReady.IsZero() {
		t.Fatal("the database did not come back; nothing more to check")
	}

	drained := l.drain(45 * time.Second)
	drainedAt := time.Now()
	// Let the sweeper release what fell due.
	time.Sleep(holdTTL + 4*sweepInterval)

	// While the servers still run: the sweeper is keeping up, and every
	// server is ready again.
	ck := newChecker(t, db.url(), "")
	defer ck.close()
	ck.sweeperKeepsUp()
	for _, s := range servers {
		if err := s.waitReady(5 * time.Second); err != nil {
			t.Errorf("after the run: %v", err)
		}
	}
	// Stop them (SIGTERM) so the database is quiet for the audit.
	stopServers(t, servers)
	ck.audit()
	ck.stock(l.allProducts())
	ck.acknowledged(l)

	results := c.rec.all()
	r := analyze(results, f, stalls.list())
	text := summary(summaryInput{
		dur: loadEnd.Sub(start), drain: drainedAt.Sub(loadEnd), drained: drained,
		results: results, products: l.allProducts(), a: r, f: f, db: ck.counts(), start: start, stalls: stalls.list(),
	})
	t.Log(text)
	// go test shows a passing test's log only with -v; CI asks for the
	// summary in a file so that every run's figures are printed.
	if path := os.Getenv("CLUSTER_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Errorf("CLUSTER_REPORT: %v", err)
		}
	}

	if !drained {
		t.Errorf("webhook deliveries still retrying %s after the load stopped", 45*time.Second)
	}
	report(t, "request(s) got INTERNAL_SERVER_ERROR or HTTP 500", r.internal)
	report(t, "request(s) hung past the client's timeout", r.hangs)
	report(t, fmt.Sprintf("request(s) overlapping the database outage took longer than %s", outageBound), r.slowInOutage)
	report(t, "request(s) made while the database was down got an answer other than UNAVAILABLE, 503 or connection refused", r.wrongInOutage)
	report(t, "request(s) got an answer the sale does not allow", r.unexpected)
	for _, s := range l.apiStock {
		t.Errorf("the API showed inconsistent stock: %s", s)
	}
	l.checkEvents(t)
}

// stopServers stops every server (SIGTERM); each must still be running and
// exit cleanly (exit status 66 would be a data race under -race), and its
// log must show no data race and no panic.
func stopServers(t *testing.T, servers []*server) {
	t.Helper()
	for _, s := range servers {
		p := s.current()
		if !p.running() {
			t.Errorf("server %d exited during the run: %v\n%s", s.idx, p.err, tail(s.logPath, 25))
			continue
		}
		if err := p.stop(15 * time.Second); err != nil {
			t.Errorf("server %d on SIGTERM: %v\n%s", s.idx, err, tail(s.logPath, 25))
		}
		if race := dataRace(s.logPath); race != "" {
			t.Errorf("server %d: the race detector found a data race:\n%s", s.idx, race)
		}
		if p := panics(s.logPath); len(p) > 0 {
			t.Errorf("server %d logged %d panics: %s", s.idx, len(p), examples(p))
		}
	}
}

// newWebhookSecret makes a WEBHOOK_SECRET: whsec_ and 24 random bytes.
func newWebhookSecret() string {
	key := make([]byte, 24)
	_, _ = rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// serverSettings are the servers' environment: the database, the secrets,
// and the short lifetimes above.
func serverSettings(dbURL, secret string) map[string]string {
	return map[string]string{
		"DATABASE_URL":     dbURL,
		"ADMIN_TOKEN":      adminToken,
		"WEBHOOK_SECRET":   secret,
		"HOLD_TTL":         holdTTL.String(),
		"PAYMENT_TIMEOUT":  paymentTimeout.String(),
		"SWEEP_INTERVAL":   sweepInterval.String(),
		"REQUEST_TIMEOUT":  requestTimeout.String(),
		"DB_MAX_CONNS":     "10",
		"LOG_FORMAT":       "json",
		"SHUTDOWN_TIMEOUT": "5s",
	}
}

func dbFault(t *testing.T) string {
	switch v := os.Getenv("CLUSTER_DB_FAULT"); v {
	case "", "crash":
		return "SIGKILL"
	case "freeze":
		return "SIGSTOP"
	default:
		t.Fatalf("CLUSTER_DB_FAULT=%q: want crash (the default) or freeze", v)
		return ""
	}
}

func duration(t *testing.T) time.Duration {
	v := os.Getenv("CLUSTER_DURATION")
	if v == "" {
		return defaultDuration
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < minDuration {
		t.Fatalf("CLUSTER_DURATION=%q: want a Go duration of at least %s", v, minDuration)
	}
	return d
}

// inject kills server s at a quarter of the run and starts it again
// serverDowntime later on the same port; then at half of the run it
// crashes the database (SIGKILL) and starts it again dbDowntime later on the
// same data and port, or with CLUSTER_DB_FAULT=freeze stops it (SIGSTOP:
// connections stay open, nothing answers) and continues it dbDowntime later.
func (f *faults) inject(start time.Time, dur time.Duration, s *server, db *mariaDB) {
	time.Sleep(time.Until(start.Add(dur / 4)))
	f.serverKilled = time.Now()
	s.current().kill()
	time.Sleep(serverDowntime)
	f.serverStarted = time.Now()
	if err := s.start(); err != nil {
		f.errs = append(f.errs, err)
	} else if err := s.waitReady(30 * time.Second); err != nil {
		f.errs = append(f.errs, fmt.Errorf("restarting after kill -9: %w", err))
	} else {
		f.serverReady = time.Now()
	}

	time.Sleep(time.Until(start.Add(dur / 2)))
	f.dbKilled = time.Now()
	p := db.current()
	if f.dbFault == "SIGSTOP" {
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		f.dbGone = time.Now()
		time.Sleep(dbDowntime)
		f.dbStarted = time.Now()
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	} else {
		p.kill()
		f.dbGone = time.Now()
		time.Sleep(dbDowntime)
		f.dbStarted = time.Now()
		if err := db.start(); err != nil {
			f.errs = append(f.errs, err)
			return
		}
	}
	if err := db.waitReady(60 * time.Second); err != nil {
		f.errs = append(f.errs, fmt.Errorf("the database after %s: %w", f.dbFault, err))
	} else {
		f.dbReady = time.Now()
	}
}

// report fails the test when examples is not empty, showing a few of them.
func report(t *testing.T, what string, examples []result) {
	t.Helper()
	if len(examples) == 0 {
		return
	}
	msg := fmt.Sprintf("%d %s; for example:", len(examples), what)
	for i, r := range examples {
		if i == 5 {
			break
		}
		msg += "\n  " + r.String()
	}
	t.Error(msg)
}
