package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

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
	// "all" leaves subscribers, queue-subscribers and edge out.
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
		if strings.HasPrefix(r.Name, "subscribers ") || strings.HasPrefix(r.Name, scLifecycleEvents+" ") || strings.HasPrefix(r.Name, scEdge+" ") ||
			strings.HasPrefix(r.Name, scQueueSubscribers+" ") { // did not run
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
	if len(rep.Checks.Violations) > 0 || rep.Checks.Failed || rep.DBPoolCap != 8 || len(rep.Products) != 8 {
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
