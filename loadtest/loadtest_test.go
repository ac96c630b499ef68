package main

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

const (
	testToken  = "loadtest-admin-token-0123456789ab"
	testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

func noEnv(string) string { return "" }

func TestLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true},
		{"http://127.1.2.3:8080/", true},
		{"http://localhost:8080", true},
		{"http://LOCALHOST", true},
		{"http://[::1]:8080", true},
		{"https://127.0.0.1", true},
		{"http://10.0.0.1:8080", false},
		{"http://192.168.1.10", false},
		{"http://[::2]:8080", false},
		{"http://example.com", false},
		{"http://localhost.example.com", false},
		{"http://127.0.0.1.nip.io", false},
		{"ftp://127.0.0.1", false},
		{"127.0.0.1:8080", false},
		{"http://127.0.0.1:8080/graphql", false},
	} {
		_, err := loopbackURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("loopbackURL(%q): err %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		db string
		ok bool
	}{
		{"mysql://root@127.0.0.1:3306/flashsale", true},
		{"mysql://root@localhost/flashsale", true},
		{"sqlite://flashsale.db", true},
		{"mysql://root@db.internal:3306/flashsale", false},
		{"mysql://root@127.0.0.1:3306/", false},
		{"postgres://127.0.0.1/x", false},
	} {
		if err := checkDBURL(tc.db); (err == nil) != tc.ok {
			t.Errorf("checkDBURL(%q): err %v, want ok=%v", tc.db, err, tc.ok)
		}
	}
	// The dialer refuses a non-loopback address whatever the name said.
	if err := dialLoopbackOnly("tcp", "10.1.2.3:80", nil); err == nil {
		t.Errorf("dialLoopbackOnly let 10.1.2.3 through")
	}
	if err := dialLoopbackOnly("tcp", "127.0.0.1:80", nil); err != nil {
		t.Errorf("dialLoopbackOnly refused 127.0.0.1: %v", err)
	}
	// And the tool stops at its flags.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"loadtest", "-url", "http://10.0.0.1:8080", "-token", "x"}, noEnv, &out, &errb); code != exitUsage {
		t.Fatalf("non-loopback -url: exit %d, want %d (%s)", code, exitUsage, errb.String())
	}
	if !strings.Contains(errb.String(), "not loopback") {
		t.Fatalf("message does not say why: %s", errb.String())
	}
}

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

func TestParseScenarios(t *testing.T) {
	got, err := parseScenarios("db-lifecycle,db-forupdate, typename,read")
	if err != nil || strings.Join(got, ",") != "typename,read,db-forupdate,db-lifecycle" {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := parseScenarios("typename,nope"); err == nil {
		t.Fatal("unknown scenario accepted")
	}
	// A database scenario named outright needs a MySQL -db.
	for _, db := range []string{"", "sqlite://x.db"} {
		var errb bytes.Buffer
		_, err := parseFlags([]string{"loadtest", "-token", "x", "-db", db, "-scenarios", "typename,db-lifecycle"}, noEnv, &errb)
		if err == nil || !strings.Contains(err.Error(), "db-lifecycle needs a MySQL") {
			t.Errorf("-db %q: db-lifecycle accepted: %v", db, err)
		}
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
	// Without db-lifecycle (no -db) and without a step, those ratios are n/a.
	rs[1].Steps = rs[1].Steps[:2]
	check(rs[:2], map[string]string{
		"lifecycle complete/s ÷ db-lifecycle complete/s": "- ≥ 3 n/a",
		"lifecycle webhook p99 ÷ typename p99":           "- ≤ 3 n/a",
		"lifecycle createHold p99 ÷ typename p99":        "2.00 ≤ 3 PASS",
	})
}

// TestAgainstServer builds the server, runs it on a fresh MariaDB database,
// and runs every scenario for a second with 8 clients: the tool's own checks
// must pass and every figure must be non-zero. It runs db-lifecycle again on
// the schema the stock rewrite may bring (no foreign key from orders to
// products, more columns with defaults). Then it breaks the stock of
// the sellout product behind the server's back and checks that the tool's
// checks see it.
func TestAgainstServer(t *testing.T) {
	dbURL := freshDatabase(t)
	srv := startServer(t, dbURL)

	jsonFile := filepath.Join(t.TempDir(), "figures.json")
	var out, errb bytes.Buffer
	args := []string{"loadtest", "-url", srv, "-token", testToken, "-secret", testSecret, "-db", dbURL,
		"-clients", "8", "-duration", "1s", "-sellout-stock", "20", "-timeout", "30s", "-json", jsonFile}
	code := run(context.Background(), args, noEnv, &out, &errb)
	t.Logf("output:\n%s", out.String())
	if code != exitOK {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, errb.String())
	}
	for _, want := range []string{"verdict: OK", "hot-hold holds/s ÷ db-forupdate holds/s", "stock.Service.Audit", "oversold",
		"\ndb-lifecycle ", "\n  payment tx ", "lifecycle complete/s ÷ db-lifecycle complete/s", "lifecycle complete/s ÷ typename req/s",
		"lifecycle createHold p99 ÷ typename p99", "lifecycle createOrder p99 ÷ typename p99", "lifecycle webhook p99 ÷ typename p99"} {
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
		t.Fatalf("-json: %v", err)
	}
	if len(rep.Scenarios) != len(allScenarios) {
		t.Fatalf("%d scenarios ran, want %d: %+v", len(rep.Scenarios), len(allScenarios), rep.Notes)
	}
	for i, s := range rep.Scenarios {
		if s.Name != allScenarios[i] {
			t.Errorf("scenario %d is %s, want %s", i, s.Name, allScenarios[i])
		}
		if s.Requests == 0 || s.OK == 0 || s.RequestsPerSec <= 0 || s.OKPerSec <= 0 || s.Latency.P50ms <= 0 ||
			s.Latency.P99ms < s.Latency.P50ms || s.Latency.MaxMs < s.Latency.P99ms || int64(s.Latency.Count) != s.Requests {
			t.Errorf("%s: figures missing or inconsistent: %+v", s.Name, s)
		}
		// A request may time out on a busy machine; more than a few is a bug.
		var errs int64
		for _, n := range s.Errors {
			errs += n
		}
		if errs*100 > s.Requests {
			t.Errorf("%s: errors %v in %d requests", s.Name, s.Errors, s.Requests)
		} else if errs > 0 {
			t.Logf("%s: errors %v in %d requests", s.Name, s.Errors, s.Requests)
		}
		switch s.Name {
		case scSellout:
			if s.OK > 20 || s.OK == 0 || s.Refused == 0 || s.RefusedPerSec <= 0 {
				t.Errorf("sellout: %d holds on a stock of 20, %d refusals", s.OK, s.Refused)
			}
		case scLifecycle, scDBLifecycle:
			if s.Extra["PAID"] == 0 || s.Extra["CANCELLED"] == 0 || s.Extra["PAID"]+s.Extra["CANCELLED"] != s.OK {
				t.Errorf("%s: %d requests, %d lifecycles, %v", s.Name, s.Requests, s.OK, s.Extra)
			}
			steps := lifecycleSteps
			if s.Name == scDBLifecycle {
				steps = dbLifecycleSteps
			}
			var n int
			for i, st := range s.Steps {
				n += st.Latency.Count
				if i >= len(steps) || st.Step != steps[i] || st.Latency.Count < int(s.OK) || st.Latency.P99ms <= 0 {
					t.Errorf("%s: step %d: %+v, want %s with at least %d requests", s.Name, i, st, steps[min(i, len(steps)-1)], s.OK)
				}
			}
			if len(s.Steps) != len(steps) || int64(n) != s.Requests {
				t.Errorf("%s: steps %+v, %d requests", s.Name, s.Steps, s.Requests)
			}
		}
	}
	for _, r := range rep.Ratios {
		if r.Value == nil || *r.Value <= 0 || (r.Result != "PASS" && r.Result != "MISS") {
			t.Errorf("ratio %s: %v %s", r.Name, r.Value, r.Result)
		}
	}
	if len(rep.Checks.Violations) > 0 || rep.Checks.Failed || rep.DBPoolCap != 8 || len(rep.Products) != 6 {
		t.Fatalf("checks %+v, pool %d, products %v", rep.Checks, rep.DBPoolCap, rep.Products)
	}
	db := openSQL(t, dbURL)
	checkDBLifecycle(t, db, rep)

	// db-lifecycle names every column it writes and needs no foreign key
	// from orders to products: it still runs once that key is gone and the
	// tables have grown columns with defaults.
	var fks int
	if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()
		AND TABLE_NAME = 'orders' AND CONSTRAINT_NAME = 'orders_products_orders'`).Scan(&fks); err != nil {
		t.Fatal(err)
	}
	if fks > 0 {
		if _, err := db.Exec(`ALTER TABLE orders DROP FOREIGN KEY orders_products_orders`); err != nil {
			t.Fatal(err)
		}
	}
	for _, table := range []string{"holds", "orders", "payment_events", "products"} {
		if _, err := db.Exec("ALTER TABLE " + table + " ADD COLUMN lt_extra varchar(20) NOT NULL DEFAULT 'x'"); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	errb.Reset()
	jsonFile2 := filepath.Join(t.TempDir(), "figures.json")
	code = run(context.Background(), []string{"loadtest", "-url", srv, "-token", testToken, "-db", dbURL, "-clients", "4",
		"-duration", "300ms", "-timeout", "30s", "-scenarios", "db-lifecycle", "-json", jsonFile2}, noEnv, &out, &errb)
	var rep2 report
	if raw, err := os.ReadFile(jsonFile2); err == nil {
		_ = json.Unmarshal(raw, &rep2)
	}
	if code != exitOK || len(rep2.Scenarios) != 1 || rep2.Scenarios[0].OK == 0 || len(rep2.Scenarios[0].Errors) > 0 {
		t.Fatalf("db-lifecycle on the changed schema: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	checkDBLifecycle(t, db, rep2)

	// Ctrl-C (a cancelled context) stops the first scenario early and skips
	// the next: the tool still reports and checks, and says it was interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	out.Reset()
	errb.Reset()
	code = run(ctx, []string{"loadtest", "-url", srv, "-token", testToken, "-db", dbURL, "-clients", "4", "-duration", "20s",
		"-scenarios", "read,typename"}, noEnv, &out, &errb)
	if code != exitInterrupted || time.Since(start) > 10*time.Second ||
		!strings.Contains(out.String(), "typename (interrupted)") || strings.Contains(out.String(), "\nread  ") ||
		!strings.Contains(out.String(), "verdict: interrupted") {
		t.Fatalf("interrupted run: exit %d after %s\n%s\n%s", code, time.Since(start), out.String(), errb.String())
	}

	// One ACTIVE hold more on the sellout product, its counter untouched:
	// oversold, and the reserved count no longer matches the holds.
	var sellout createdProduct
	for _, p := range rep.Products {
		if p.Scenario == scSellout {
			sellout = p
		}
	}
	if _, err := db.Exec(`INSERT INTO holds (id, created_at, updated_at, qty, status, expires_at, product_id)
		VALUES (UUID(), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 1, 'ACTIVE', UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, ?)`, sellout.ID); err != nil {
		t.Fatal(err)
	}
	a, err := newAPI(srv, testToken, "", 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	var sold int64
	for _, s := range rep.Scenarios {
		if s.Name == scSellout {
			sold = s.OK
		}
	}
	st := &state{opts: options{DB: dbURL}, api: a, products: rep.Products, selloutOK: sold}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	c := st.check(cctx)
	all := strings.Join(c.Violations, "\n")
	if !strings.Contains(all, "OVERSOLD") || !strings.Contains(all, "Audit: product "+sellout.ID+": reserved ") {
		t.Fatalf("the checks missed the extra hold:\n%s", all)
	}
}

// checkDBLifecycle checks the rows db-lifecycle left on its product: the
// counters match them, every PAID or CANCELLED order it counted is there
// with its payment event, and every order's hold is REDEEMED or RELEASED.
func checkDBLifecycle(t *testing.T, db *sql.DB, rep report) {
	t.Helper()
	var res scenarioResult
	for _, s := range rep.Scenarios {
		if s.Name == scDBLifecycle {
			res = s
		}
	}
	if res.ProductID == "" {
		t.Fatalf("db-lifecycle did not run: %+v", rep.Notes)
	}
	var received, available, reserved, active, pending, paid, cancelled, events, orphans int64
	err := db.QueryRow(`SELECT p.stock_received, p.stock_available, p.stock_reserved,
  (SELECT COALESCE(SUM(qty), 0) FROM holds WHERE product_id = p.id AND status = 'ACTIVE'),
  (SELECT COALESCE(SUM(qty), 0) FROM orders WHERE product_id = p.id AND status = 'PENDING_PAYMENT'),
  (SELECT COALESCE(SUM(qty), 0) FROM orders WHERE product_id = p.id AND status = 'PAID'),
  (SELECT COUNT(*) FROM orders WHERE product_id = p.id AND status = 'CANCELLED'),
  (SELECT COUNT(*) FROM payment_events e JOIN orders o ON o.id = e.order_id
     WHERE o.product_id = p.id AND e.outcome = 'APPLIED' AND e.order_status_after = o.status),
  (SELECT COUNT(*) FROM orders o JOIN holds h ON h.id = o.hold_id
     WHERE o.product_id = p.id AND h.status <> IF(o.status = 'CANCELLED', 'RELEASED', 'REDEEMED'))
FROM products p WHERE p.id = ?`, res.ProductID).
		Scan(&received, &available, &reserved, &active, &pending, &paid, &cancelled, &events, &orphans)
	if err != nil {
		t.Fatal(err)
	}
	if reserved != active+pending || available != received-paid || paid < res.Extra["PAID"] ||
		cancelled < res.Extra["CANCELLED"] || events < res.OK || orphans != 0 {
		t.Errorf("db-lifecycle product %s: received %d available %d reserved %d; active %d pending %d paid %d cancelled %d; "+
			"%d events, %d orders whose hold is in the wrong state; the run counted %v",
			res.ProductID, received, available, reserved, active, pending, paid, cancelled, events, orphans, res.Extra)
	}
}

// freshDatabase creates lt_<random> on the MariaDB of TEST_MYSQL_URL
// (default root@127.0.0.1:3306) and drops it when the test ends.
func freshDatabase(t *testing.T) string {
	t.Helper()
	base := cmp.Or(os.Getenv("TEST_MYSQL_URL"), "mysql://root@127.0.0.1:3306/test")
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("TEST_MYSQL_URL: %v", err)
	}
	u.Path = "/"
	admin := openSQL(t, u.String())
	name := "lt_" + randomHex(6)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("this test needs MariaDB/MySQL at %s (set TEST_MYSQL_URL): %v", u.Host, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// openSQL opens a mysql:// URL with the plain driver.
func openSQL(t *testing.T, raw string) *sql.DB {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", u.Host, strings.Trim(u.Path, "/")
	cfg.Timeout = 5 * time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// startServer builds the server from the module root, runs it on dbURL and
// returns its base URL; it is stopped with SIGTERM when the test ends.
func startServer(t *testing.T, dbURL string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "fs")
	build := exec.Command("go", "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the server: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("PORT=%d", port), "DATABASE_URL="+dbURL, "ADMIN_TOKEN="+testToken, "WEBHOOK_SECRET="+testSecret,
		"HOLD_TTL=2m", "PAYMENT_TIMEOUT=15m", "SWEEP_INTERVAL=1s", "DB_MAX_CONNS=20", "LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("server exited with %v", waitErr)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("server did not stop on SIGTERM")
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("server log:\n%s", b)
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("server exited at start: %v\n%s", waitErr, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
