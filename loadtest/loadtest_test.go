package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-jwt/jwt/v5"

	"flashsale/signing"
	"flashsale/sink"
)

const (
	testToken  = "loadtest-admin-token-0123456789ab"
	testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	// Customers mode.
	testCustomerSecret = "loadtest-customer-secret-0123456789abcdef"
	testIssuer         = "https://login.loadtest.example"
	testAudience       = "flashsale-loadtest"
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
	if all, _ := parseScenarios("all"); slices.Contains(all, scSubscribers) {
		t.Fatal("all includes subscribers, which must be named")
	}
	if got, _ := parseScenarios("subscribers"); strings.Join(got, ",") != scSubscribers {
		t.Fatalf("subscribers named: %v", got)
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
	// Without customer tokens, typename-customer and limit are skipped;
	// "all" leaves subscribers out.
	anonymous := slices.DeleteFunc(slices.Clone(allScenarios), func(n string) bool {
		return isCustomerScenario(n) || isEventsScenario(n) || slices.Contains(optInScenarios, n)
	})
	if len(rep.Scenarios) != len(anonymous) || rep.Customers != nil {
		t.Fatalf("%d scenarios ran, want %d: %+v", len(rep.Scenarios), len(anonymous), rep.Notes)
	}
	for _, n := range customerScenarios {
		if !slices.Contains(rep.Notes, n+" skipped: it needs customer tokens (-customer-secret, the server's CUSTOMER_JWT_SECRET)") {
			t.Errorf("no note says %s was skipped: %v", n, rep.Notes)
		}
	}
	// Without -events-url, lifecycle-events is skipped too.
	if !slices.ContainsFunc(rep.Notes, func(n string) bool {
		return strings.HasPrefix(n, scLifecycleEvents+" skipped: it needs a second server")
	}) {
		t.Errorf("no note says lifecycle-events was skipped: %v", rep.Notes)
	}
	for i, s := range rep.Scenarios {
		if s.Name != anonymous[i] {
			t.Errorf("scenario %d is %s, want %s", i, s.Name, anonymous[i])
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
		if strings.HasPrefix(r.Name, "subscribers ") || strings.HasPrefix(r.Name, scLifecycleEvents+" ") { // did not run
			if r.Value != nil || r.Result != "n/a" {
				t.Errorf("ratio %s without its scenario: %v %s", r.Name, r.Value, r.Result)
			}
			continue
		}
		if r.Name == "typename-customer req/s ÷ typename req/s" {
			if r.Value != nil || r.Result != "n/a" || !r.Informational {
				t.Errorf("ratio %s without customers: %v %s", r.Name, r.Value, r.Result)
			}
			continue
		}
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
	st := &state{opts: options{DB: dbURL, HoldTTL: time.Hour}, api: a, products: rep.Products, selloutOK: sold, started: time.Now()}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	c := st.check(cctx)
	all := strings.Join(c.Violations, "\n")
	if !strings.Contains(all, "OVERSOLD") || !strings.Contains(all, "Audit: product "+sellout.ID+": reserved ") {
		t.Fatalf("the checks missed the extra hold:\n%s", all)
	}
}

// TestLongerThanHoldTTL: a run longer than the server's HOLD_TTL, as a
// user would run it, ends OK: holds that expired during it freed their
// units, the sweeper released thousands while the checks could run, and
// neither the sellout count nor the audit may call that a violation.
func TestLongerThanHoldTTL(t *testing.T) {
	dbURL := freshDatabase(t)
	srv := startServer(t, dbURL, "HOLD_TTL=2s", "SWEEP_INTERVAL=200ms")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"loadtest", "-url", srv, "-token", testToken, "-secret", testSecret,
		"-db", dbURL, "-hold-ttl", "2s", "-clients", "16", "-duration", "5s", "-scenarios", "lifecycle,hot-hold,sellout"},
		noEnv, &out, &errb)
	if code != exitOK || !strings.Contains(out.String(), "verdict: OK") || !strings.Contains(out.String(), "not a bound") {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "sellout product") || strings.Contains(line, "Audit") {
			t.Log(strings.TrimSpace(line))
		}
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
func startServer(t *testing.T, dbURL string, env ...string) string {
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
	cmd.Env = append(cmd.Env, env...)
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

// TestMintToken parses the tool's customer tokens back with golang-jwt and
// the secret, the way the server verifies them: HS256, sub, exp, iss, aud.
func TestMintToken(t *testing.T) {
	now := time.Now()
	tok, err := mintToken(testCustomerSecret, testIssuer, testAudience, "lt-run-7", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(tok, secret string, opts ...jwt.ParserOption) (*jwt.RegisteredClaims, error) {
		var c jwt.RegisteredClaims
		opts = append(opts, jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
		_, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return []byte(secret), nil }, opts...)
		return &c, err
	}
	c, err := parse(tok, testCustomerSecret, jwt.WithIssuer(testIssuer), jwt.WithAudience(testAudience))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if c.Subject != "lt-run-7" || c.ExpiresAt == nil || c.ExpiresAt.Unix() != now.Add(time.Hour).Unix() ||
		c.IssuedAt == nil || c.IssuedAt.Unix() != now.Unix() || c.ID == "" {
		t.Fatalf("claims %+v", c)
	}
	if _, err := parse(tok, testCustomerSecret+"x"); err == nil {
		t.Fatal("the token verifies with another secret")
	}
	// Without issuer and audience the token carries neither.
	tok2, err := mintToken(testCustomerSecret, "", "", "lt-run-7", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := parse(tok2, testCustomerSecret); err != nil || c.Issuer != "" || len(c.Audience) != 0 || tok2 == tok {
		t.Fatalf("plain token: %+v, %v", c, err)
	}
	if _, err := mintToken("too short", "", "", "x", now, time.Hour); err == nil {
		t.Fatal("a secret under 32 bytes was accepted")
	}

	// A run's tokens: one customer per client, and the limit scenario's
	// clients spread over limitCustomers customers, each client with a token
	// of its own.
	o := options{Clients: 10, Duration: 10 * time.Second, Timeout: 15 * time.Second,
		CustomerSecret: testCustomerSecret, CustomerIssuer: testIssuer, CustomerAudience: testAudience}
	cs, err := newCustomers(o, "abcd", tokenTTL(o, 3))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.ids) != 10 || len(cs.tokens) != 10 || len(cs.limitIDs) != limitCustomers || len(cs.limitTokens) != 10 {
		t.Fatalf("customers %+v", cs)
	}
	seen := map[string]bool{}
	for w := range 10 {
		c, err := parse(cs.tokens[w], testCustomerSecret, jwt.WithIssuer(testIssuer), jwt.WithAudience(testAudience))
		if err != nil || c.Subject != fmt.Sprintf("lt-abcd-%d", w) || c.Subject != cs.ids[w] ||
			c.ExpiresAt.Time.Before(now.Add(3*25*time.Second+checkTimeout)) {
			t.Fatalf("client %d: %+v, %v", w, c, err)
		}
		lc, err := parse(cs.limitTokens[w], testCustomerSecret, jwt.WithIssuer(testIssuer), jwt.WithAudience(testAudience))
		if err != nil || lc.Subject != fmt.Sprintf("lt-abcd-limit-%d", w%limitCustomers) || seen[cs.limitTokens[w]] {
			t.Fatalf("limit client %d: %+v, %v", w, lc, err)
		}
		seen[cs.limitTokens[w]] = true
	}
	// Fewer clients than limit customers: one customer each.
	o.Clients = 2
	if cs, err := newCustomers(o, "abcd", time.Hour); err != nil || len(cs.limitIDs) != 2 {
		t.Fatalf("2 clients: %+v, %v", cs, err)
	}
}

func TestCustomerFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	var errb bytes.Buffer
	o, err := parseFlags([]string{"loadtest", "-token", "x", "-scenarios", "typename-customer,limit"}, env(map[string]string{
		"CUSTOMER_JWT_SECRET": testCustomerSecret, "CUSTOMER_JWT_ISSUER": testIssuer, "CUSTOMER_JWT_AUDIENCE": testAudience}), &errb)
	if err != nil || o.CustomerSecret != testCustomerSecret || o.CustomerIssuer != testIssuer || o.CustomerAudience != testAudience ||
		strings.Join(o.Scenarios, ",") != "typename-customer,limit" {
		t.Fatalf("from the environment: %+v, %v", o, err)
	}
	// Flags win over the environment.
	o, err = parseFlags([]string{"loadtest", "-token", "x", "-customer-secret", testCustomerSecret + "2", "-customer-issuer", "i"},
		env(map[string]string{"CUSTOMER_JWT_SECRET": testCustomerSecret, "CUSTOMER_JWT_ISSUER": testIssuer}), &errb)
	if err != nil || o.CustomerSecret != testCustomerSecret+"2" || o.CustomerIssuer != "i" {
		t.Fatalf("flags: %+v, %v", o, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-customer-secret", "tiny-s3cr3t"}, "-customer-secret: 11 bytes, want at least 32"},
		{[]string{"-customer-issuer", "i"}, "without -customer-secret"},
		{[]string{"-scenarios", "typename,typename-customer"}, "typename-customer needs customer tokens"},
		{[]string{"-scenarios", "limit"}, "limit needs customer tokens"},
	} {
		_, err := parseFlags(append([]string{"loadtest", "-token", "x"}, tc.args...), noEnv, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("the error quotes the secret: %v", err)
		}
	}
	// "all" without customers mode skips them instead.
	if o, err := parseFlags([]string{"loadtest", "-token", "x"}, noEnv, &errb); err != nil || !slices.Contains(o.Scenarios, scLimit) {
		t.Fatalf("all: %+v, %v", o, err)
	}
}

// TestMaxConcurrent checks the tool's own view of the limit: the most holds
// of one customer alive at one instant, by the server's createdAt and
// expiresAt.
func TestMaxConcurrent(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1_800_000_000+int64(s), 0) }
	h := func(c, from, to int) limitHold { return limitHold{customer: c, createdAt: at(from), expiresAt: at(to)} }
	holds := []limitHold{
		h(0, 0, 10), h(0, 0, 10), // two in one batch
		h(0, 10, 20), h(0, 12, 22), // after both expired: two again
		h(1, 0, 10), h(1, 5, 15), h(1, 9, 19), // three alive at 9
		h(2, 3, 13),
	}
	if got := maxConcurrent(holds, 4); !slices.Equal(got, []int{2, 3, 1, 0}) {
		t.Fatalf("maxConcurrent: %v", got)
	}
}

// TestCustomersAgainstServer runs the customers-mode scenarios against a
// server with CUSTOMER_JWT_SECRET (and an issuer and audience): every buyer
// request carries its client's token, typename-customer measures the
// token's cost, limit holds as 4 customers from 8 clients at once and its
// checks pass; the holds and orders in the database belong to the tool's
// customers. Then a wrong secret stops the tool at once, an anonymous tool
// is told it needs tokens, and a hold past the limit slipped into the
// database is caught by the checks, over GraphQL and in SQL.
func TestCustomersAgainstServer(t *testing.T) {
	dbURL := freshDatabase(t)
	srv := startServer(t, dbURL, "CUSTOMER_JWT_SECRET="+testCustomerSecret,
		"CUSTOMER_JWT_ISSUER="+testIssuer, "CUSTOMER_JWT_AUDIENCE="+testAudience)
	env := func(k string) string {
		return map[string]string{"CUSTOMER_JWT_SECRET": testCustomerSecret, "CUSTOMER_JWT_ISSUER": testIssuer,
			"CUSTOMER_JWT_AUDIENCE": testAudience}[k]
	}
	const clients = 8
	jsonFile := filepath.Join(t.TempDir(), "figures.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"loadtest", "-url", srv, "-token", testToken, "-secret", testSecret, "-db", dbURL,
		"-clients", strconv.Itoa(clients), "-duration", "1s", "-timeout", "30s", "-json", jsonFile,
		"-scenarios", "typename,typename-customer,hot-hold,lifecycle,limit"}, env, &out, &errb)
	t.Logf("output:\n%s", out.String())
	if code != exitOK {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, errb.String())
	}
	for _, want := range []string{"verdict: OK", "customers mode: every buyer request carries its client's token",
		"typename-customer: token verification: ", " µs per request at p50, throughput ratio ",
		"typename-customer req/s ÷ typename req/s", "hot-hold holds/s ÷ typename req/s",
		"the tool's answers: most holds of one customer alive at one instant ≤ 2: ok",
		"GraphQL me: each customer's ACTIVE holds + PENDING_PAYMENT + PAID orders of it ≤ 2: ok",
		", database: per customer, ACTIVE holds + PENDING_PAYMENT + PAID orders of it ≤ 2: ok",
		"refused PURCHASE_LIMIT_EXCEEDED"} {
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
	if rep.Customers == nil || rep.Customers.Clients != clients || len(rep.Customers.LimitCustomers) != limitCustomers {
		t.Fatalf("customers %+v", rep.Customers)
	}
	names := []string{scTypename, scTypenameCustomer, scHotHold, scLifecycle, scLimit}
	if len(rep.Scenarios) != len(names) {
		t.Fatalf("%d scenarios ran, want %d: %+v", len(rep.Scenarios), len(names), rep.Notes)
	}
	byName := map[string]scenarioResult{}
	for i, s := range rep.Scenarios {
		byName[s.Name] = s
		if s.Name != names[i] {
			t.Errorf("scenario %d is %s, want %s", i, s.Name, names[i])
		}
		if s.Requests == 0 || s.OK == 0 || s.RequestsPerSec <= 0 || s.Latency.P50ms <= 0 || int64(s.Latency.Count) != s.Requests {
			t.Errorf("%s: figures missing or inconsistent: %+v", s.Name, s)
		}
		var errs int64
		for _, n := range s.Errors {
			errs += n
		}
		if errs*100 > s.Requests || s.Errors["UNAUTHENTICATED"] > 0 {
			t.Errorf("%s: errors %v in %d requests", s.Name, s.Errors, s.Requests)
		}
	}
	// Holds live 2 minutes, longer than the run: a customer got at most 2.
	if l := byName[scLimit]; l.OK == 0 || l.OK > limitCustomers*limitMax || l.Refused == 0 || l.Refused+l.OK != l.Requests {
		t.Errorf("limit: %d holds made, %d refused, %d requests", l.OK, l.Refused, l.Requests)
	}
	for _, r := range rep.Ratios {
		switch r.Name {
		case "typename-customer req/s ÷ typename req/s", "hot-hold holds/s ÷ typename req/s", "hot-hold p99 ÷ typename p99",
			"lifecycle complete/s ÷ typename req/s":
			if r.Value == nil || *r.Value <= 0 || (r.Result != "PASS" && r.Result != "MISS") {
				t.Errorf("ratio %s: %v %s", r.Name, r.Value, r.Result)
			}
		}
	}
	if len(rep.Checks.Violations) > 0 || rep.Checks.Failed {
		t.Fatalf("checks %+v", rep.Checks)
	}

	// Every hold and order is a customer's: one customer per client in
	// hot-hold and lifecycle (an order is its hold's customer's), the 4
	// shared customers in limit.
	db := openSQL(t, dbURL)
	prefix := "lt-" + rep.RunID + "-"
	for _, p := range rep.Products {
		var n, distinct, foreign, orders, mismatched int
		if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT customer_id), SUM(customer_id NOT LIKE ?),
  (SELECT COUNT(*) FROM orders WHERE product_id = ?),
  (SELECT COUNT(*) FROM orders o JOIN holds h ON h.id = o.hold_id WHERE o.product_id = ? AND o.customer_id <> h.customer_id)
FROM holds WHERE product_id = ?`, prefix+"%", p.ID, p.ID, p.ID).Scan(&n, &distinct, &foreign, &orders, &mismatched); err != nil {
			t.Fatal(err)
		}
		want := clients
		if p.Scenario == scLimit {
			want = limitCustomers
		}
		if n == 0 || distinct != want || foreign != 0 || mismatched != 0 || (p.Scenario == scLifecycle) != (orders > 0) {
			t.Errorf("%s product %s: %d holds of %d customers (want %d), %d not the tool's; %d orders, %d of another customer than their hold",
				p.Scenario, p.ID, n, distinct, want, foreign, orders, mismatched)
		}
		if (p.Scenario == scLimit) != (p.MaxPerCustomer == limitMax) {
			t.Errorf("%s product: maxPerCustomer %d", p.Scenario, p.MaxPerCustomer)
		}
	}

	// A secret the server does not have: the tool stops before any scenario.
	out.Reset()
	errb.Reset()
	code = run(context.Background(), []string{"loadtest", "-url", srv, "-token", testToken, "-clients", "2", "-duration", "200ms",
		"-scenarios", "typename-customer", "-customer-secret", testCustomerSecret + "-wrong", "-customer-issuer", testIssuer,
		"-customer-audience", testAudience}, noEnv, &out, &errb)
	if code != exitViolation || !strings.Contains(errb.String(), "the server refuses the tool's customer token") || out.Len() > 0 {
		t.Fatalf("wrong secret: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	// No secret against a server that needs customers: buyers are refused,
	// and the note says why.
	out.Reset()
	errb.Reset()
	code = run(context.Background(), []string{"loadtest", "-url", srv, "-token", testToken, "-clients", "2", "-duration", "200ms",
		"-scenarios", "hot-hold"}, noEnv, &out, &errb)
	if code != exitOK || !strings.Contains(out.String(), "UNAUTHENTICATED: the server needs customer tokens") {
		t.Fatalf("anonymous tool: exit %d\n%s\n%s", code, out.String(), errb.String())
	}

	// A third unit for one limit customer, slipped into the database behind
	// the server's back (its counter kept in step, so only the limit is
	// broken): GraphQL me, SQL and stock.Service.Audit all see it.
	limitP, _ := (&state{products: rep.Products}).limitProduct()
	victim := rep.Customers.LimitCustomers[1]
	if _, err := db.Exec(`INSERT INTO holds (id, created_at, updated_at, qty, status, expires_at, product_id, customer_id)
		VALUES (UUID(), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 1, 'ACTIVE', UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, ?, ?)`, limitP.ID, victim); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE products SET stock_reserved = stock_reserved + 1 WHERE id = ?`, limitP.ID); err != nil {
		t.Fatal(err)
	}
	a, err := newAPI(srv, testToken, "", 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	o := options{Clients: clients, Duration: time.Second, Timeout: 10 * time.Second, DB: dbURL,
		CustomerSecret: testCustomerSecret, CustomerIssuer: testIssuer, CustomerAudience: testAudience}
	cust, err := newCustomers(o, rep.RunID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st := &state{opts: o, api: a, products: rep.Products, cust: cust}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	c := st.check(cctx)
	all := strings.Join(c.Violations, "\n")
	if c.Failed || strings.Count(all, "LIMIT EXCEEDED") != 2 || !strings.Contains(all, "customer "+victim+" has 3 units") ||
		!strings.Contains(all, fmt.Sprintf("customer %q has 3 units", victim)) ||
		!strings.Contains(all, fmt.Sprintf("Audit: product %s: customer %q has 3 units held, pending or paid, over its maxPerCustomer 2", limitP.ID, victim)) {
		t.Fatalf("the checks missed the extra hold (failed %v):\n%s\n%s", c.Failed, all, strings.Join(c.Lines, "\n"))
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

// Scenarios take turns slice by slice, in order; one that ends before it
// drives is skipped, and one slice runs at a time.
func TestTurns(t *testing.T) {
	order := []string{"a", "b", "c"}
	tr := newTurns(order, 3)
	var (
		mu      sync.Mutex
		got     []string
		running atomic.Int32
	)
	var wg sync.WaitGroup
	for _, name := range order {
		wg.Go(func() {
			defer close(tr.left[name])
			if name == "b" {
				return // failed before it drove
			}
			for range tr.slices {
				<-tr.grant[name]
				if running.Add(1) != 1 {
					t.Errorf("%s runs while another slice runs", name)
				}
				mu.Lock()
				got = append(got, name)
				mu.Unlock()
				running.Add(-1)
				tr.done <- struct{}{}
			}
		})
	}
	tr.run()
	wg.Wait()
	if want := []string{"a", "c", "a", "c", "a", "c"}; !slices.Equal(got, want) {
		t.Fatalf("slices ran in the order %v, want %v", got, want)
	}
}

func TestSliceCount(t *testing.T) {
	for _, c := range []struct {
		slices   int
		duration time.Duration
		want     int
	}{
		{5, 10 * time.Second, 5},
		{1, 10 * time.Second, 1},
		{5, 300 * time.Millisecond, 3}, // no slice under 100ms
		{5, 100 * time.Millisecond, 1},
	} {
		if got := sliceCount(options{Slices: c.slices, Duration: c.duration}); got != c.want {
			t.Errorf("sliceCount(-slices %d, -duration %s) = %d, want %d", c.slices, c.duration, got, c.want)
		}
	}
}

func TestRefusalCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code string // "": not read the cheap way
	}{
		// What gqlgen writes for a refused createHold.
		{`{"errors":[{"message":"insufficient stock: 1 requested, product is sold out","path":["createHold"],"locations":[{"line":1,"column":20}],"extensions":{"code":"INSUFFICIENT_STOCK"}}],"data":null}`, "INSUFFICIENT_STOCK"},
		{`{"errors":[{"message":"m","path":["createHold"],"extensions":{"code":"NOT_FOUND"}}],"data":null}`, "NOT_FOUND"},
		{`{"errors":[{"message":"say \"no\" \\","path":["a",0,"b"],"extensions":{"code":"SALE_NOT_STARTED","saleStartsAt":"2026-12-01T00:00:00Z"}}],"data":null}`, "SALE_NOT_STARTED"},
		{`{"errors":[{"message":"unauthenticated","extensions":{"code":"UNAUTHENTICATED"}}]}`, "UNAUTHENTICATED"},
		{`{"data":{"createHold":{"id":"x"}}}`, ""},
		{`{"errors":[{"message":"x","locations":[{"line":1,"column":2}],"extensions":{"code":"GRAPHQL_VALIDATION_FAILED"}}]}`, "GRAPHQL_VALIDATION_FAILED"},
		{`{"errors":[{"message":"x","locations":[{"line":1,"column":2}],"path":["a"],"extensions":{"code":"X"}}]}`, ""},
		{`{"errors":[{"message":"x","path":["a"],"extensions":{"code":"bad"}}]}`, ""},
		{`{"errors":[{"message":"x","path":["a"],"extensions":{"code":"INSUFF`, ""},
		{`{"errors":[{"message":"unterminated`, ""},
		{`{"errors":[{"message":"x","path":["a"],"extensions":{}}]}`, ""},
	} {
		code, ok := refusalCode([]byte(tc.in))
		if ok != (tc.code != "") || code != tc.code {
			t.Errorf("refusalCode(%s) = %q, %v; want %q", tc.in, code, ok, tc.code)
		}
		if !ok {
			continue
		}
		// The cheap read must agree with the full decode.
		var out gqlResponse
		if err := json.Unmarshal([]byte(tc.in), &out); err != nil || len(out.Errors) == 0 || out.Errors[0].Extensions.Code != code {
			t.Errorf("refusalCode(%s) = %q; the full decode says %+v (%v)", tc.in, code, out.Errors, err)
		}
	}
}

// TestPostAnswers: how post classifies what a server answers, and that it
// decodes data in the same pass.
func TestPostAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		class  string
		id     string
	}{
		{"data", 200, `{"data":{"createHold":{"id":"h1"}}}`, "", "h1"},
		{"refusal", 200, `{"errors":[{"message":"no","path":["createHold"],"extensions":{"code":"INSUFFICIENT_STOCK"}}],"data":null}`, "INSUFFICIENT_STOCK", ""},
		{"error first in another order", 200, `{"data":null,"errors":[{"extensions":{"code":"NOT_FOUND"},"message":"no"}]}`, "NOT_FOUND", ""},
		{"error without code", 200, `{"errors":[{"message":"no"}],"data":null}`, "error without code", ""},
		{"rate limited", 429, `{"errors":[{"message":"slow down","extensions":{"code":"RATE_LIMITED","retryAfter":1}}]}`, "RATE_LIMITED", ""},
		{"error beside data of another shape", 200, `{"errors":[{"message":"x","extensions":{"code":"X"}}],"data":{"createHold":7}}`, "X", ""},
		{"data of another shape", 200, `{"data":{"createHold":7}}`, "bad JSON answer", ""},
		{"not JSON", 200, `<html>`, "bad JSON answer", ""},
		{"HTTP error, not JSON", 502, `bad gateway`, "HTTP 502", ""},
		{"HTTP error with data", 500, `{"data":{"createHold":{"id":"h1"}}}`, "HTTP 500", "h1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			a, err := newAPI(srv.URL, "", "", 1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer a.close()
			var out struct {
				CreateHold struct{ ID string } `json:"createHold"`
			}
			class := a.post(context.Background(), "", []byte(`{}`), &out)
			if class != tc.class || out.CreateHold.ID != tc.id {
				t.Errorf("post = %q, id %q; want %q, id %q", class, out.CreateHold.ID, tc.class, tc.id)
			}
			want := tc.class
			if tc.name == "data of another shape" {
				want = "" // without a place for data, its shape is not checked
			}
			if class := a.post(context.Background(), "", []byte(`{}`), nil); class != want {
				t.Errorf("post without data = %q; want %q", class, want)
			}
		})
	}
}

// testEventsSecret signs the events server's order events in the tests; it
// must differ from testSecret (the server refuses the same one).
const testEventsSecret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// TestEventsFlags: -events-url, -events-listen and -events-secret go
// together, on loopback, and lifecycle-events named outright needs them;
// "all" without them keeps it, for run to skip with a note.
func TestEventsFlags(t *testing.T) {
	var errb bytes.Buffer
	base := []string{"loadtest", "-token", "x", "-url", "http://127.0.0.1:8080"}
	o, err := parseFlags(append(base, "-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:9099",
		"-events-secret", testEventsSecret, "-scenarios", "lifecycle-events,lifecycle"), noEnv, &errb)
	if err != nil || o.EventsURL != "http://127.0.0.1:8081" || o.EventsListen != "127.0.0.1:9099" || o.EventsSecret != testEventsSecret ||
		strings.Join(o.Scenarios, ",") != "lifecycle,lifecycle-events" {
		t.Fatalf("flags: %+v, %v", o, err)
	}
	// The secret defaults to $EVENTS_WEBHOOK_SECRET, with -events-url only.
	env := func(k string) string { return map[string]string{"EVENTS_WEBHOOK_SECRET": testEventsSecret}[k] }
	if o, err := parseFlags(append(base, "-events-url", "http://localhost:8081", "-events-listen", "localhost:9099"), env, &errb); err != nil ||
		o.EventsSecret != testEventsSecret {
		t.Fatalf("secret from the environment: %+v, %v", o, err)
	}
	if o, err := parseFlags(base, env, &errb); err != nil || o.EventsSecret != "" || !slices.Contains(o.Scenarios, scLifecycleEvents) {
		t.Fatalf("no -events-url: %+v, %v", o, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-events-listen", "127.0.0.1:9099"}, "-events-listen without -events-url"},
		{[]string{"-events-secret", testEventsSecret}, "-events-secret without -events-url"},
		{[]string{"-events-url", "http://127.0.0.1:8081"}, "-events-url needs -events-listen"},
		{[]string{"-events-url", "http://10.0.0.1:8081", "-events-listen", "127.0.0.1:9099"}, "not loopback"},
		{[]string{"-events-url", "http://127.0.0.1:8080", "-events-listen", "127.0.0.1:9099"}, "is also a -url"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "10.0.0.1:9099"}, "-events-listen: host \"10.0.0.1\" is not loopback"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "9099"}, "want host:port"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:0"}, "want a port 1..65535"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:9099", "-events-secret", "whsec_c2VjcmV0LXMzY3IzdA=="},
			"-events-secret: key is 13 bytes"},
		{[]string{"-events-url", "http://127.0.0.1:8081", "-events-listen", "127.0.0.1:9099", "-events-secret", "s3cr3t"}, "-events-secret: must start with"},
		{[]string{"-scenarios", "lifecycle,lifecycle-events"}, "lifecycle-events needs a second server"},
	} {
		_, err := parseFlags(append(slices.Clone(base), tc.args...), noEnv, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "c2VjcmV0LXMzY3IzdA")) {
			t.Errorf("the error quotes the secret: %v", err)
		}
	}
}

// signEvent signs an order event the Standard Webhooks way, by hand.
func signEvent(t *testing.T, secret, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	unix := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + unix + "."))
	mac.Write(body)
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", unix)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return h
}

func TestVerifyWebhook(t *testing.T) {
	key, err := signing.ParseSecret(testEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := []byte(`{"id":"evt_1","type":"order.created"}`)
	good := signEvent(t, testEventsSecret, "evt_1", now, body)
	if err := verifyWebhook(key, good, body, now); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	// The server's own signer agrees.
	s, err := signing.NewSigner(testEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	if err := s.Sign(h, "evt_1", now, body); err != nil {
		t.Fatal(err)
	}
	if err := verifyWebhook(key, h, body, now.Add(time.Minute)); err != nil {
		t.Fatalf("signing.Signer's signature: %v", err)
	}
	// One good v1 among others (key rotation) is enough.
	several := good.Clone()
	several.Set("webhook-signature", "v1a,xyz v1,AAAA "+good.Get("webhook-signature"))
	if err := verifyWebhook(key, several, body, now); err != nil {
		t.Fatalf("several signatures: %v", err)
	}
	with := func(k, v string) http.Header {
		h := good.Clone()
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	for name, tc := range map[string]struct {
		h    http.Header
		body []byte
		now  time.Time
	}{
		"another body":           {good, []byte(`{"id":"evt_1","type":"order.paid"}`), now},
		"another id":             {with("webhook-id", "evt_2"), body, now},
		"another secret":         {signEvent(t, testSecret, "evt_1", now, body), body, now},
		"no signature":           {with("webhook-signature", ""), body, now},
		"no id":                  {with("webhook-id", ""), body, now},
		"timestamp not a number": {with("webhook-timestamp", "soon"), body, now},
		"timestamp too old":      {good, body, now.Add(6 * time.Minute)},
		"timestamp too new":      {good, body, now.Add(-6 * time.Minute)},
		"v2 only":                {with("webhook-signature", "v2,"+strings.TrimPrefix(good.Get("webhook-signature"), "v1,")), body, now},
	} {
		if err := verifyWebhook(key, tc.h, tc.body, tc.now); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// TestReceiver sends the receiver events the way the server does (package
// sink's webhook, signed): it answers 204 to every POST, counts requests
// and distinct webhook-ids, and counts what does not verify.
func TestReceiver(t *testing.T) {
	rc, err := newReceiver("127.0.0.1:0", testEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()
	url := "http://" + rc.addr() + "/events"
	send := func(secret, id string) error {
		t.Helper()
		s, err := sink.NewWebhook(sink.WebhookConfig{URL: url, Secret: secret, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.Send(context.Background(), sink.Message{ID: id, Type: "order.created", Body: []byte(`{"id":"` + id + `"}`)})
	}
	start := time.Now()
	for _, id := range []string{"evt_1", "evt_2", "evt_1", "evt_3"} {
		if err := send(testEventsSecret, id); err != nil {
			t.Fatalf("send %s: %v (want 204)", id, err)
		}
	}
	c := rc.counts()
	if c.requests != 4 || c.distinct != 3 || c.badSignature != 0 || c.withoutID != 0 || c.lastNew.Before(start) {
		t.Fatalf("after 4 good POSTs of 3 events: %+v", c)
	}
	// Signed with another secret: received, and counted as a failure.
	if err := send(testSecret, "evt_4"); err != nil {
		t.Fatalf("badly signed: %v (want 204 all the same)", err)
	}
	// No headers at all; and a GET, which is not a delivery.
	resp, err := http.Post(url, "application/json", strings.NewReader(`{}`))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("bare POST: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err = http.Get(url); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v %v", resp, err)
	}
	resp.Body.Close()
	c = rc.counts()
	if c.requests != 6 || c.distinct != 4 || c.badSignature != 2 || c.withoutID != 1 {
		t.Fatalf("after a badly signed POST, a bare one and a GET: %+v", c)
	}

	// Without a secret, nothing is verified.
	plain, err := newReceiver("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.close()
	url = "http://" + plain.addr() + "/events"
	if err := send(testSecret, "evt_1"); err != nil {
		t.Fatal(err)
	}
	if c := plain.counts(); c.requests != 1 || c.distinct != 1 || c.badSignature != 0 {
		t.Fatalf("unverified receiver: %+v", c)
	}
	// A port in use is an error, not a silent second receiver.
	if _, err := newReceiver(plain.addr(), ""); err == nil || !strings.Contains(err.Error(), "-events-listen") {
		t.Fatalf("port in use: %v", err)
	}
}

// TestEventsRatios: lifecycle-events ÷ lifecycle against 0.85, and the
// drain against 5 s; n/a when lifecycle-events did not run or its drain
// could not be measured.
func TestEventsRatios(t *testing.T) {
	get := func(rs []scenarioResult) map[string]string {
		got := map[string]string{}
		for _, r := range computeRatios(rs) {
			v := "-"
			if r.Value != nil {
				v = fmt.Sprintf("%.2f", *r.Value)
			}
			got[r.Name] = v + " " + r.Target + " " + r.Result
		}
		return got
	}
	life := scenarioResult{Name: scLifecycle, OKPerSec: 1000}
	ev := scenarioResult{Name: scLifecycleEvents, OKPerSec: 900, Events: &eventsFigures{Drained: true, DrainSeconds: 1.5}}
	for _, tc := range []struct {
		rs           []scenarioResult
		ratio, drain string
	}{
		{[]scenarioResult{life, ev}, "0.90 ≥ 0.85 PASS", "0.30 ≤ 1 PASS"},
		{[]scenarioResult{life}, "- ≥ 0.85 n/a", "- ≤ 1 n/a"},
	} {
		got := get(tc.rs)
		if r := got["lifecycle-events complete/s ÷ lifecycle complete/s"]; r != tc.ratio {
			t.Errorf("ratio %q, want %q", r, tc.ratio)
		}
		if r := got["lifecycle-events drain time ÷ 5 s"]; r != tc.drain {
			t.Errorf("drain %q, want %q", r, tc.drain)
		}
	}
	ev.OKPerSec, ev.Events = 800, &eventsFigures{DrainSeconds: 60} // not drained: how long the tool waited
	got := get([]scenarioResult{life, ev})
	if got["lifecycle-events complete/s ÷ lifecycle complete/s"] != "0.80 ≥ 0.85 MISS" || got["lifecycle-events drain time ÷ 5 s"] != "12.00 ≤ 1 MISS" {
		t.Errorf("misses: %v", got)
	}
	if r := (&report{Ratios: computeRatios([]scenarioResult{life, ev})}); !r.anyMiss() {
		t.Error("-fail-on-miss ignores the events ratios")
	}
	ev.Events = &eventsFigures{Error: "orderEvents: HTTP 502"}
	if got := get([]scenarioResult{life, ev}); got["lifecycle-events drain time ÷ 5 s"] != "- ≤ 1 n/a" {
		t.Errorf("unmeasured drain: %v", got)
	}
}

// TestEventsAgainstServer runs lifecycle and lifecycle-events taking turns
// against two servers on their own databases, the second with its webhook
// sink pointed at the tool's receiver: every event the lifecycles wrote is
// received, signed, and the checks pass.
func TestEventsAgainstServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	a := startServer(t, freshDatabase(t))
	b := startServer(t, freshDatabase(t), "EVENTS_WEBHOOK_URL=http://"+listen+"/events", "EVENTS_WEBHOOK_SECRET="+testEventsSecret)
	jsonFile := filepath.Join(t.TempDir(), "figures.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"loadtest", "-url", a, "-token", testToken, "-secret", testSecret,
		"-events-url", b, "-events-listen", listen, "-events-secret", testEventsSecret,
		"-scenarios", "lifecycle,lifecycle-events", "-clients", "8", "-duration", "1s", "-timeout", "30s", "-json", jsonFile}, noEnv, &out, &errb)
	t.Logf("output:\n%s", out.String())
	if code != exitOK {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, errb.String())
	}
	for _, want := range []string{"verdict: OK", "lifecycle-events complete/s ÷ lifecycle complete/s", "lifecycle-events drain time ÷ 5 s",
		"events server (lifecycle-events): " + b, "lifecycle-events: order events: ", " 0 signature failures",
		"order events on " + b + ": none PENDING or FAILED"} {
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
	if len(rep.Scenarios) != 2 || rep.Scenarios[1].Name != scLifecycleEvents || rep.EventsURL != b || rep.EventsListen != listen {
		t.Fatalf("scenarios %+v, events server %q %q", rep.Scenarios, rep.EventsURL, rep.EventsListen)
	}
	s := rep.Scenarios[1]
	f := s.Events
	if f == nil || s.OK == 0 || s.Extra[extraOrders] < s.OK || f.Written != s.OK+s.Extra[extraOrders] || !f.Drained ||
		f.Received < f.Written || f.SignatureFailures != 0 || f.WithoutID != 0 || !f.Verified || f.EventsPerSec <= 0 ||
		f.DrainSeconds < 0 || f.DrainSeconds > f.ConfirmedSeconds {
		t.Fatalf("lifecycle-events: %+v, events %+v", s, f)
	}
	// Without errors, a lifecycle wrote exactly two events.
	if len(s.Errors) == 0 && f.Received != 2*s.OK {
		t.Errorf("%d events received for %d complete lifecycles", f.Received, s.OK)
	}
	// Each scenario's product is on its own server.
	if len(rep.Products) != 2 || rep.Products[0].Server != "" || rep.Products[1].Server != b {
		t.Errorf("products %+v", rep.Products)
	}
}
