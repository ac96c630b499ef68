package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

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
