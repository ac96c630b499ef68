package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/database"
	"flashsale/internal/testdb"
	"flashsale/internal/testkit"
	"flashsale/signing"
)

const (
	testAdminToken = "test-admin-token-0123456789abcdef"
	testSecret     = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // base64 of 24 bytes
)

// testSigner signs webhooks as the payment provider would, with testSecret.
var testSigner = func() *signing.Signer {
	s, err := signing.NewSigner(testSecret)
	if err != nil {
		panic(err)
	}
	return s
}()

// testServer is the whole server, started in-process by run().
type testServer struct {
	URL  string
	DSN  string // DATABASE_URL it runs on
	logs *testkit.SyncBuffer
	stop func() // stops the server and checks that run returned nil; idempotent
}

// startServer runs the server on a fresh database of dialect d with env
// overrides, waits until it is ready, and stops it (checking that run
// returns cleanly) when the test ends.
func startServer(t *testing.T, d string, env map[string]string) *testServer {
	t.Helper()
	dsn, ok := env["DATABASE_URL"] // given as "": the embedded default
	if !ok {
		dsn = testdb.URL(t, d)
	}
	port := testkit.FreePort(t)
	vars := map[string]string{
		"PORT":           fmt.Sprint(port),
		"DATABASE_URL":   dsn,
		"ADMIN_TOKEN":    testAdminToken,
		"WEBHOOK_SECRET": testSecret,
		"SWEEP_INTERVAL": "100ms",
		"LOG_LEVEL":      "debug",
	}
	for k, v := range env {
		vars[k] = v
	}
	getenv := func(k string) string { return vars[k] }
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testkit.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"flashsale"}, getenv, logs) }()
	ts := &testServer{URL: fmt.Sprintf("http://127.0.0.1:%d", port), DSN: dsn, logs: logs}
	var once sync.Once
	ts.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run returned %v", err)
				}
			case <-time.After(40 * time.Second):
				t.Errorf("server did not stop")
			}
			if t.Failed() {
				t.Logf("server log:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(ts.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ts.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return ts
			}
		}
		select {
		case err := <-done:
			t.Fatalf("server exited during start: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
}

func (r gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// gql posts one GraphQL request; token, when set, goes in Authorization.
func (ts *testServer) gql(t *testing.T, token, query string, vars map[string]any) gqlResponse {
	t.Helper()
	_, r := ts.post(t, token, query, vars)
	return r
}

// post is gql with the HTTP status.
func (ts *testServer) post(t *testing.T, token, query string, vars map[string]any) (int, gqlResponse) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /graphql: %v", err)
	}
	defer resp.Body.Close()
	var out gqlResponse
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST /graphql: status %d, body %q: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, out
}

// must decodes data into v and fails the test on any GraphQL error.
func (r gqlResponse) must(t *testing.T, v any) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("unexpected errors: %+v", r.Errors)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode %s: %v", r.Data, err)
	}
}

type productJSON struct {
	ID             string `json:"id"`
	StockAvailable int    `json:"stockAvailable"`
	StockReserved  int    `json:"stockReserved"`
	StockSellable  int    `json:"stockSellable"`
}

const productFields = `id stockAvailable stockReserved stockSellable`

func (ts *testServer) createProduct(t *testing.T, stock int) productJSON {
	t.Helper()
	var out struct{ CreateProduct productJSON }
	ts.gql(t, testAdminToken, `mutation($in: CreateProductInput!) { createProduct(input: $in) { `+productFields+` } }`,
		map[string]any{"in": map[string]any{"name": "Test drop", "priceCents": 1250, "stock": stock}}).must(t, &out)
	return out.CreateProduct
}

func (ts *testServer) product(t *testing.T, id string) productJSON {
	t.Helper()
	var out struct{ Product productJSON }
	ts.gql(t, "", `query($id: ID!) { product(id: $id) { `+productFields+` } }`, map[string]any{"id": id}).must(t, &out)
	return out.Product
}

func (ts *testServer) createHold(t *testing.T, productID string, qty int) string {
	t.Helper()
	var out struct{ CreateHold struct{ ID string } }
	ts.gql(t, "", `mutation($p: ID!, $q: Int!) { createHold(productId: $p, qty: $q) { id } }`,
		map[string]any{"p": productID, "q": qty}).must(t, &out)
	return out.CreateHold.ID
}

func (ts *testServer) createOrder(t *testing.T, holdID string) string {
	t.Helper()
	var out struct{ CreateOrder struct{ ID string } }
	ts.gql(t, "", `mutation($h: ID!) { createOrder(holdId: $h) { id } }`, map[string]any{"h": holdID}).must(t, &out)
	return out.CreateOrder.ID
}

// webhook delivers a signed payment event and returns the status and body.
func (ts *testServer) webhook(t *testing.T, key, orderID, status string) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"idempotency_key": key, "order_id": orderID, "status": status})
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/payments/webhook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if err := testSigner.Sign(req.Header, "msg_"+key, time.Now(), body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST webhook: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestLifecycleOverHTTP drives hold → order → payment through the real server.
func TestLifecycleOverHTTP(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ts := startServer(t, d, nil)
			p := ts.createProduct(t, 5)
			holdID := ts.createHold(t, p.ID, 2)
			if got := ts.product(t, p.ID); got.StockReserved != 2 || got.StockSellable != 3 {
				t.Fatalf("after hold: %+v", got)
			}
			orderID := ts.createOrder(t, holdID)
			var o struct {
				Order struct {
					Status, ID  string
					AmountCents int
					Hold        struct{ Status string }
					Product     productJSON
				}
			}
			ts.gql(t, "", `query($id: ID!) { order(id: $id) { id status amountCents hold { status } product { `+productFields+` } } }`,
				map[string]any{"id": orderID}).must(t, &o)
			if o.Order.Status != "PENDING_PAYMENT" || o.Order.AmountCents != 2500 || o.Order.Hold.Status != "REDEEMED" || o.Order.Product.StockReserved != 2 {
				t.Fatalf("order: %+v", o.Order)
			}
			status, body := ts.webhook(t, "evt_1", orderID, "success")
			if status != 200 || body["order_status"] != "PAID" || body["duplicate"] != false || body["order_id"] != orderID {
				t.Fatalf("webhook: %d %v", status, body)
			}
			status, body = ts.webhook(t, "evt_1", orderID, "success")
			if status != 200 || body["duplicate"] != true {
				t.Fatalf("duplicate webhook: %d %v", status, body)
			}
			if got := ts.product(t, p.ID); got.StockAvailable != 3 || got.StockReserved != 0 || got.StockSellable != 3 {
				t.Fatalf("after payment: %+v", got)
			}
			var h struct {
				Hold struct {
					Status string
					Order  struct{ ID, Status string }
				}
			}
			ts.gql(t, "", `query($id: ID!) { hold(id: $id) { status order { id status } } }`, map[string]any{"id": holdID}).must(t, &h)
			if h.Hold.Order.ID != orderID || h.Hold.Order.Status != "PAID" {
				t.Fatalf("hold: %+v", h.Hold)
			}
		})
	}
}

// TestErrorCodes produces every error code of the contract through /graphql
// and checks that each refused mutation changed nothing.
func TestErrorCodes(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ts := startServer(t, d, map[string]string{"HOLD_TTL": "1s", "MAX_HOLD_QTY": "5"})
			p := ts.createProduct(t, 3)
			redeemed := ts.createHold(t, p.ID, 1)
			ts.createOrder(t, redeemed)
			expiring := ts.createHold(t, p.ID, 1)
			time.Sleep(1100 * time.Millisecond) // past HOLD_TTL; the sweeper may or may not have run
			before := ts.product(t, p.ID)

			const (
				hold    = `mutation($p: ID!, $q: Int!) { createHold(productId: $p, qty: $q) { id } }`
				order   = `mutation($h: ID!) { createOrder(holdId: $h) { id } }`
				product = `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`
			)
			good := map[string]any{"name": "x", "priceCents": 1, "stock": 1}
			for _, tc := range []struct {
				name, token, query string
				vars               map[string]any
				code               string
			}{
				{"qty zero", "", hold, map[string]any{"p": p.ID, "q": 0}, "BAD_USER_INPUT"},
				{"qty negative", "", hold, map[string]any{"p": p.ID, "q": -3}, "BAD_USER_INPUT"},
				{"qty over MAX_HOLD_QTY", "", hold, map[string]any{"p": p.ID, "q": 6}, "BAD_USER_INPUT"},
				{"qty not an int", "", hold, map[string]any{"p": p.ID, "q": "two"}, "BAD_USER_INPUT"},
				{"malformed product ID", "", hold, map[string]any{"p": "abc", "q": 1}, "BAD_USER_INPUT"},
				{"malformed hold ID", "", order, map[string]any{"h": "not-a-uuid"}, "BAD_USER_INPUT"},
				{"first out of range", "", `{ products(first: 101) { edges { cursor } } }`, nil, "BAD_USER_INPUT"},
				{"first zero", "", `{ products(first: 0) { edges { cursor } } }`, nil, "BAD_USER_INPUT"},
				{"malformed cursor", "", `{ products(after: "!!") { edges { cursor } } }`, nil, "BAD_USER_INPUT"},
				{"malformed ID in query", "", `{ hold(id: "x") { id } }`, nil, "BAD_USER_INPUT"},
				{"empty product name", testAdminToken, product, map[string]any{"in": map[string]any{"name": " ", "priceCents": 1, "stock": 1}}, "BAD_USER_INPUT"},
				{"negative price", testAdminToken, product, map[string]any{"in": map[string]any{"name": "x", "priceCents": -1, "stock": 1}}, "BAD_USER_INPUT"},
				{"negative stock", testAdminToken, product, map[string]any{"in": map[string]any{"name": "x", "priceCents": 1, "stock": -1}}, "BAD_USER_INPUT"},
				{"unknown product", "", hold, map[string]any{"p": "999999", "q": 1}, "NOT_FOUND"},
				{"unknown hold", "", order, map[string]any{"h": "6f1c1d2e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"}, "NOT_FOUND"},
				{"insufficient stock", "", hold, map[string]any{"p": p.ID, "q": 3}, "INSUFFICIENT_STOCK"},
				{"expired hold", "", order, map[string]any{"h": expiring}, "HOLD_EXPIRED"},
				{"redeemed hold", "", order, map[string]any{"h": redeemed}, "HOLD_NOT_ACTIVE"},
				{"no token", "", product, map[string]any{"in": good}, "UNAUTHENTICATED"},
				{"wrong token", "nope", product, map[string]any{"in": good}, "UNAUTHENTICATED"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := ts.gql(t, tc.token, tc.query, tc.vars)
					if r.code() != tc.code {
						t.Fatalf("code %q, want %q (errors %+v)", r.code(), tc.code, r.Errors)
					}
					if r.Errors[0].Message == "" {
						t.Fatalf("empty message")
					}
				})
			}
			if after := ts.product(t, p.ID); after.StockAvailable != before.StockAvailable ||
				after.StockReserved > before.StockReserved { // only the sweeper may lower it
				t.Fatalf("refused calls changed stock: before %+v, after %+v", before, after)
			}
			var list struct {
				Products struct{ Edges []any }
			}
			ts.gql(t, "", `{ products(first: 100) { edges { cursor } } }`, nil).must(t, &list)
			if n := len(list.Products.Edges); n != 1 {
				t.Fatalf("%d products, want 1: a refused createProduct created one", n)
			}

			// INTERNAL_SERVER_ERROR: break the schema under the server and
			// check the answer reveals nothing of it.
			db, err := database.Open(ts.DSN, database.Options{MaxConns: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.SQL.Exec("ALTER TABLE holds RENAME TO holds_gone"); err != nil {
				t.Fatal(err)
			}
			r := ts.gql(t, "", hold, map[string]any{"p": p.ID, "q": 1})
			if r.code() != "INTERNAL_SERVER_ERROR" || r.Errors[0].Message != "internal server error" {
				t.Fatalf("got %+v, want INTERNAL_SERVER_ERROR without internals", r.Errors)
			}
			if _, err := db.SQL.Exec("ALTER TABLE holds_gone RENAME TO holds"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUnavailable cuts the server off from MySQL mid-flight: reads and
// mutations answer UNAVAILABLE within the request timeout, /readyz says 503,
// nothing changes, and all is well once the database is back.
func TestUnavailable(t *testing.T) {
	target, err := url.Parse(testdb.URL(t, dialect.MySQL))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, target.Host)
	target.Host = proxy.addr
	ts := startServer(t, dialect.MySQL, map[string]string{
		"DATABASE_URL":    target.String(),
		"REQUEST_TIMEOUT": "2s",
	})
	p := ts.createProduct(t, 10)
	before := ts.product(t, p.ID)

	proxy.cut()
	// Product reads are served from memory for up to half a second; wait that
	// out so the read below must reach the database.
	time.Sleep(600 * time.Millisecond)
	start := time.Now()
	for _, q := range []struct {
		query string
		vars  map[string]any
	}{
		{`mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, map[string]any{"p": p.ID}},
		{`query($p: ID!) { product(id: $p) { id } }`, map[string]any{"p": p.ID}},
	} {
		r := ts.gql(t, "", q.query, q.vars)
		if r.code() != "UNAVAILABLE" {
			t.Fatalf("code %q, want UNAVAILABLE (%+v)", r.code(), r.Errors)
		}
		if strings.Contains(r.Errors[0].Message, "3306") || strings.Contains(r.Errors[0].Message, "dial") {
			t.Fatalf("message reveals internals: %q", r.Errors[0].Message)
		}
	}
	t.Logf("UNAVAILABLE answered in %s", time.Since(start))
	resp, err := http.Get(ts.URL + "/readyz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz during outage: %v %v", resp, err)
	}
	resp.Body.Close()

	proxy.restore()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := ts.gql(t, "", `query($p: ID!) { product(id: $p) { `+productFields+` } }`, map[string]any{"p": p.ID})
		if r.code() == "" {
			var out struct{ Product productJSON }
			r.must(t, &out)
			if out.Product != before {
				t.Fatalf("outage changed stock: %+v, was %+v", out.Product, before)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered after the outage: %+v", r.Errors)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ts.createHold(t, p.ID, 1)
}

// TestConfigErrors: bad settings stop the server with a clear message.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PORT": "http"}, "PORT"},
		{map[string]string{"HOLD_TTL": "2"}, "HOLD_TTL"},
		{map[string]string{"PAYMENT_TIMEOUT": "-1m"}, "PAYMENT_TIMEOUT"},
		{map[string]string{"SWEEP_INTERVAL": "0s"}, "SWEEP_INTERVAL"},
		{map[string]string{"MAX_HOLD_QTY": "0"}, "MAX_HOLD_QTY"},
		{map[string]string{"DB_MAX_CONNS": "lots"}, "DB_MAX_CONNS"},
		{map[string]string{"DATABASE_URL": "postgres://x/y"}, "unsupported scheme"},
		{map[string]string{"DATABASE_URL": "mysql://root@127.0.0.1:3306/"}, "database name"},
		{map[string]string{"WEBHOOK_SECRET": "whsec_%%%"}, "WEBHOOK_SECRET"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"CORS_ALLOWED_ORIGINS": "shop.example"}, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"GRAPHQL_MAX_DEPTH": "1"}, "GRAPHQL_MAX_DEPTH"},
		{map[string]string{"CUSTOMER_JWT_SECRET": "short"}, "CUSTOMER_JWT_SECRET"},
		{map[string]string{"RATE_LIMIT": "20"}, "RATE_LIMIT"},
		{map[string]string{"RATE_LIMIT": "0/s"}, "RATE_LIMIT"},
		{map[string]string{"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"},
		{map[string]string{"STOCK_PUSH_INTERVAL": "2s"}, "STOCK_PUSH_INTERVAL"},
		{map[string]string{"MAX_SUBSCRIPTIONS": "0"}, "MAX_SUBSCRIPTIONS"},
		{map[string]string{"MAX_SUBSCRIPTIONS_PER_CONNECTION": "0"}, "MAX_SUBSCRIPTIONS_PER_CONNECTION"},
		{map[string]string{"MAX_STREAMS_PER_IP": "lots"}, "MAX_STREAMS_PER_IP"},
		{map[string]string{"READ_TIMEOUT": "1ms"}, "READ_TIMEOUT"},
		{map[string]string{"READ_CACHE_MAX_AGE": "-1"}, "READ_CACHE_MAX_AGE"},
		{map[string]string{"METRICS_ADDR": "9090"}, "METRICS_ADDR"},
		{map[string]string{"METRICS_ADDR": "256.0.0.1:9090"}, "METRICS_ADDR"}, // cannot listen: refused at start
		{map[string]string{"CUSTOMER_JWKS_URL": "http://login.shop.example/jwks.json"}, "CUSTOMER_JWKS_URL"},
		{map[string]string{"CUSTOMER_JWT_ISSUER": "https://login.shop.example"}, "CUSTOMER_JWT_ISSUER"},
		{map[string]string{"CUSTOMER_JWT_SECRET": testAdminToken, "ADMIN_TOKEN": testAdminToken}, "CUSTOMER_JWT_SECRET"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			env := map[string]string{"DATABASE_URL": "sqlite://" + t.TempDir() + "/x.db", "PORT": "0"}
			for k, v := range tc.env {
				env[k] = v
			}
			var out bytes.Buffer
			err := run(context.Background(), []string{"flashsale"}, func(k string) string { return env[k] }, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v, want an error naming %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "%%%") && tc.want == "WEBHOOK_SECRET" {
				t.Fatalf("error echoes the secret: %v", err)
			}
		})
	}
}

// TestFailClosed: on MySQL the server refuses to start without a webhook
// secret, with a weak one, or with a weak operator token. Each refusal names
// the variable and how to make a good value, and comes before the server
// touches the database or listens.
func TestFailClosed(t *testing.T) {
	dsn := testdb.URL(t, dialect.MySQL)
	key16 := "whsec_" + base64.StdEncoding.EncodeToString([]byte("only sixteen b.."))
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // all in the error
	}{
		{"no webhook secret", map[string]string{"WEBHOOK_SECRET": ""}, []string{"WEBHOOK_SECRET is required", "openssl rand"}},
		{"blank webhook secret", map[string]string{"WEBHOOK_SECRET": "   "}, []string{"WEBHOOK_SECRET", "openssl rand"}},
		{"16-byte webhook key", map[string]string{"WEBHOOK_SECRET": key16}, []string{"WEBHOOK_SECRET", "at least 24"}},
		{"one-character admin token", map[string]string{"ADMIN_TOKEN": "x"}, []string{"ADMIN_TOKEN", "at least 32", "openssl rand"}},
		{"31-character admin token", map[string]string{"ADMIN_TOKEN": testAdminToken[:31]}, []string{"ADMIN_TOKEN", "at least 32"}},
		{"admin token with a space", map[string]string{"ADMIN_TOKEN": "correct horse battery staple 0123"}, []string{"ADMIN_TOKEN", "without spaces"}},
		{"admin token is the webhook secret", map[string]string{"ADMIN_TOKEN": testSecret}, []string{"ADMIN_TOKEN", "WEBHOOK_SECRET"}},
		{"allowAllFiles", map[string]string{"DATABASE_URL": dsn + "?allowAllFiles=true"}, []string{"DATABASE_URL", "allowAllFiles"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := testkit.FreePort(t)
			env := map[string]string{"PORT": fmt.Sprint(port), "DATABASE_URL": dsn, "WEBHOOK_SECRET": testSecret, "ADMIN_TOKEN": testAdminToken}
			for k, v := range tc.env {
				env[k] = v
			}
			var out testkit.SyncBuffer
			done := make(chan error, 1)
			go func() {
				done <- run(context.Background(), []string{"flashsale"}, func(k string) string { return env[k] }, &out)
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("run did not refuse; it is serving:\n%s", out.String())
			}
			if err == nil {
				t.Fatal("run returned nil")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{testSecret[6:], testAdminToken} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error quotes a secret: %v", err)
				}
			}
			if c, derr := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); derr == nil {
				c.Close()
				t.Errorf("something listens on port %d after the refusal", port)
			}
			if tables := countTables(t, dsn); tables != 0 {
				t.Errorf("the refused server created %d tables: it touched the database", tables)
			}
		})
	}
	// The same database with good secrets starts: the refusals above are
	// the secrets', not the database's.
	ts := startServer(t, dialect.MySQL, map[string]string{"DATABASE_URL": dsn})
	if r := ts.gql(t, testAdminToken, `mutation { createProduct(input: {name: "x", priceCents: 1, stock: 1}) { id } }`, nil); r.code() != "" {
		t.Fatalf("operator token refused: %+v", r.Errors)
	}
}

// countTables returns how many tables the MySQL database of dsn has.
func countTables(t *testing.T, dsn string) int {
	t.Helper()
	db, err := database.Open(dsn, database.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.SQL.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPlaygroundAndHealth: the operator's pages answer.
func TestPlaygroundAndHealth(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	for path, want := range map[string]string{"/": "<html", "/healthz": `"ok"`, "/readyz": `"ready"`} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %.80q", path, resp.StatusCode, b)
		}
	}
	// The playground comes from the binary: its page is locked to this
	// origin, and every script and stylesheet it names is served here.
	resp, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("playground CSP %q", csp)
	}
	refs := regexp.MustCompile(`(?:src|href)="(/[^"]+)"`).FindAllStringSubmatch(string(page), -1)
	if len(refs) < 4 {
		t.Fatalf("the playground page names %d assets: %s", len(refs), page)
	}
	for _, m := range refs {
		r, err := http.Get(ts.URL + m[1])
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("GET %s (named by the playground): %d", m[1], r.StatusCode)
		}
	}
	// GET /graphql serves queries.
	resp, err = http.Get(ts.URL + "/graphql?query=" + "%7Bproducts%7Bedges%7Bnode%7Bid%7D%7D%7D%7D")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"products"`) {
		t.Errorf("GET /graphql: %d %s", resp.StatusCode, b)
	}
}

// TestEmbeddedDefault: with no configuration at all (`go run .`) the server
// creates flashsale.db in the working directory, seeds demo products once,
// accepts unsigned webhooks with a warning, and keeps operator mutations off.
func TestEmbeddedDefault(t *testing.T) {
	t.Chdir(t.TempDir())
	unset := map[string]string{"DATABASE_URL": "", "WEBHOOK_SECRET": "", "ADMIN_TOKEN": "", "SWEEP_INTERVAL": "", "LOG_LEVEL": ""}
	for range 2 { // the second start must not seed again
		ts := startServer(t, "", unset)
		if _, err := os.Stat("flashsale.db"); err != nil {
			t.Fatalf("default database: %v", err)
		}
		var out struct {
			Products struct{ Edges []struct{ Node productJSON } }
		}
		ts.gql(t, "", `{ products { edges { node { `+productFields+` } } } }`, nil).must(t, &out)
		if n := len(out.Products.Edges); n != 3 {
			t.Fatalf("%d demo products, want 3", n)
		}
		if !strings.Contains(ts.logs.String(), "WEBHOOK_SECRET is not set") {
			t.Errorf("no warning about unsigned webhooks in the log:\n%s", ts.logs.String())
		}
		if r := ts.gql(t, "anything", `mutation { createProduct(input: {name: "x", priceCents: 1, stock: 1}) { id } }`, nil); r.code() != "UNAUTHENTICATED" {
			t.Fatalf("operator mutation without ADMIN_TOKEN: %s %+v", r.Data, r.Errors)
		}
		ts.stop()
	}
}

// TestProductsPagination walks the products oldest first.
func TestProductsPagination(t *testing.T) {
	ts := startServer(t, dialect.MySQL, nil)
	var ids []string
	for i := range 5 {
		ids = append(ids, ts.createProduct(t, i).ID)
	}
	var got []string
	var after any
	for page := 0; ; page++ {
		var out struct {
			Products struct {
				Edges []struct {
					Cursor string
					Node   productJSON
				}
				PageInfo struct {
					HasNextPage bool
					EndCursor   *string
				}
			}
		}
		ts.gql(t, "", `query($a: String) { products(first: 2, after: $a) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }`,
			map[string]any{"a": after}).must(t, &out)
		for _, e := range out.Products.Edges {
			got = append(got, e.Node.ID)
		}
		if !out.Products.PageInfo.HasNextPage {
			break
		}
		after = *out.Products.PageInfo.EndCursor
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("pages %v, want %v", got, ids)
	}
}

// cutProxy forwards TCP to MariaDB until cut, then drops every connection
// and refuses new ones: a database outage that harms no other test.
type cutProxy struct {
	addr  string
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func newCutProxy(t *testing.T, upstream string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestSweeperAfterRestart: holds that fall due while no server runs are
// released by the first sweep of the next one, and the running gocron job
// releases holds and unpaid orders on its own.
func TestSweeperAfterRestart(t *testing.T) {
	env := map[string]string{"HOLD_TTL": "1s", "PAYMENT_TIMEOUT": "1s", "SWEEP_INTERVAL": "1h"}
	env["DATABASE_URL"] = testdb.URL(t, dialect.MySQL)
	first := startServer(t, dialect.MySQL, env)
	p := first.createProduct(t, 10)
	holdID := first.createHold(t, p.ID, 3)
	orderID := first.createOrder(t, first.createHold(t, p.ID, 2))
	// Stop it before anything is due (SWEEP_INTERVAL=1h: its only sweep ran at start).
	first.stop()
	time.Sleep(1200 * time.Millisecond)

	env["SWEEP_INTERVAL"] = "100ms"
	second := startServer(t, dialect.MySQL, env)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out struct {
			Hold  struct{ Status string }
			Order struct{ Status string }
		}
		second.gql(t, "", `query($h: ID!, $o: ID!) { hold(id: $h) { status } order(id: $o) { status } }`,
			map[string]any{"h": holdID, "o": orderID}).must(t, &out)
		if out.Hold.Status == "EXPIRED" && out.Order.Status == "CANCELLED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not released after restart: %+v", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := second.product(t, p.ID); got.StockReserved != 0 || got.StockSellable != 10 {
		t.Fatalf("stock after sweep: %+v", got)
	}

	// A hold made now can only be released by a later run of the job.
	late := second.createHold(t, p.ID, 1)
	deadline = time.Now().Add(10 * time.Second)
	for {
		var out struct{ Hold struct{ Status string } }
		second.gql(t, "", `query($h: ID!) { hold(id: $h) { status } }`, map[string]any{"h": late}).must(t, &out)
		if out.Hold.Status == "EXPIRED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running sweeper did not release hold: %+v", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := second.product(t, p.ID); got.StockReserved != 0 {
		t.Fatalf("stock after the job's sweep: %+v", got)
	}
}
