package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/database"
)

// snapshot is everything a refused request must leave alone.
type snapshot struct {
	products, holds, orders, events int
	counters                        string // every product's stock counters
}

func takeSnapshot(t *testing.T, db *database.DB) snapshot {
	t.Helper()
	ctx := context.Background()
	var s snapshot
	var err error
	if s.products, err = db.Ent.Product.Query().Count(ctx); err != nil {
		t.Fatal(err)
	}
	if s.holds, err = db.Ent.Hold.Query().Count(ctx); err != nil {
		t.Fatal(err)
	}
	if s.orders, err = db.Ent.Order.Query().Count(ctx); err != nil {
		t.Fatal(err)
	}
	if s.events, err = db.Ent.PaymentEvent.Query().Count(ctx); err != nil {
		t.Fatal(err)
	}
	ps, err := db.Ent.Product.Query().All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		s.counters += fmt.Sprintf("%d:%d/%d/%d ", p.ID, p.StockReceived, p.StockAvailable, p.StockReserved)
	}
	return s
}

// TestHostileInput sends malformed, oversized, deep, forged and unauthorised
// requests to the running server: each gets its clear error and changes
// nothing.
func TestHostileInput(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"MAX_HOLD_QTY": "5"})
	p := ts.createProduct(t, 10)
	holdID := ts.createHold(t, p.ID, 1)
	orderID := ts.createOrder(t, ts.createHold(t, p.ID, 1))
	if status, _ := ts.webhook(t, "evt_paid", orderID, "success"); status != 200 {
		t.Fatalf("setup payment: %d", status)
	}
	db, err := database.Open(ts.DSN, database.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before := takeSnapshot(t, db)

	deep := "{ hold(id: \"" + holdID + "\") { " + strings.Repeat("order { hold { ", 25) + "id" + strings.Repeat(" } }", 25) + " } }"
	wide := "{ " + strings.Repeat("a: products(first: 100) { edges { node { id name stockAvailable stockReserved stockSellable } } } ", 1)
	for i := range 9 {
		wide += fmt.Sprintf("p%d: products(first: 100) { edges { node { id name } } } ", i)
	}
	wide += "}"
	hold := `mutation($p: ID!, $q: Int!) { createHold(productId: $p, qty: $q) { id } }`
	for _, tc := range []struct {
		name        string
		contentType string
		body        string // raw body; when empty, query+vars are encoded
		query       string
		vars        map[string]any
		token       string
		status      int
		code        string
	}{
		{name: "body not JSON", contentType: "application/json", body: `{"query": "{ products`, status: 400, code: "BAD_USER_INPUT"},
		{name: "body is a JSON string", contentType: "application/json", body: `"hello"`, status: 400, code: "BAD_USER_INPUT"},
		{name: "form body", contentType: "application/x-www-form-urlencoded", body: "query=%7B__typename%7D", status: 415, code: "BAD_USER_INPUT"},
		{name: "GraphQL syntax error", query: "mutation { createHold(productId: ", status: 422, code: "GRAPHQL_PARSE_FAILED"},
		{name: "unknown field", query: "{ product(id: \"1\") { password } }", status: 422, code: "GRAPHQL_VALIDATION_FAILED"},
		{name: "qty as string", query: hold, vars: map[string]any{"p": p.ID, "q": "1"}, status: 200, code: "BAD_USER_INPUT"},
		{name: "qty as float", query: hold, vars: map[string]any{"p": p.ID, "q": 1.5}, status: 422, code: "BAD_USER_INPUT"},
		{name: "qty 1e20", query: hold, vars: map[string]any{"p": p.ID, "q": 1e20}, status: 422, code: "BAD_USER_INPUT"},
		{name: "qty 2^31", query: hold, vars: map[string]any{"p": p.ID, "q": 1 << 31}, status: 200, code: "BAD_USER_INPUT"},
		{name: "qty min int64", query: hold, vars: map[string]any{"p": p.ID, "q": -1 << 63}, status: 200, code: "BAD_USER_INPUT"},
		{name: "qty null", query: hold, vars: map[string]any{"p": p.ID, "q": nil}, status: 422, code: "BAD_USER_INPUT"},
		{name: "product ID is a UUID", query: hold, vars: map[string]any{"p": holdID, "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product ID SQL", query: hold, vars: map[string]any{"p": "1; DROP TABLE products", "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product ID quote", query: hold, vars: map[string]any{"p": "1' OR '1'='1", "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product ID huge", query: hold, vars: map[string]any{"p": "99999999999999999999999", "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product ID negative", query: hold, vars: map[string]any{"p": "-1", "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product ID with plus", query: hold, vars: map[string]any{"p": "+" + p.ID, "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product ID with leading zero", query: hold, vars: map[string]any{"p": "0" + p.ID, "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product ID unicode digits", query: hold, vars: map[string]any{"p": "١٢", "q": 1}, status: 200, code: "BAD_USER_INPUT"},
		{name: "hold ID is an int", query: `mutation { createOrder(holdId: "1") { id } }`, status: 200, code: "BAD_USER_INPUT"},
		{name: "hold ID with NUL", query: `mutation($h: ID!) { createOrder(holdId: $h) { id } }`, vars: map[string]any{"h": holdID[:35] + "\x00"}, status: 200, code: "BAD_USER_INPUT"},
		{name: "hold ID braces", query: `mutation($h: ID!) { createOrder(holdId: $h) { id } }`, vars: map[string]any{"h": "{" + holdID + "}"}, status: 200, code: "BAD_USER_INPUT"},
		{name: "product name SQL, no token", query: `mutation { createProduct(input: {name: "x'); DROP TABLE holds; --", priceCents: 1, stock: 1}) { id } }`, status: 200, code: "UNAUTHENTICATED"},
		// A bearer token that is not ADMIN_TOKEN is a customer token, and
		// one that fails is refused before any field runs.
		{name: "wrong token", token: "Bearer-guess", query: `mutation { createProduct(input: {name: "x", priceCents: 1, stock: 1}) { id } }`, status: 401, code: "UNAUTHENTICATED"},
		{name: "token prefix", token: testAdminToken[:5], query: `mutation { createProduct(input: {name: "x", priceCents: 1, stock: 1}) { id } }`, status: 401, code: "UNAUTHENTICATED"},
		{name: "wrong token on a query", token: "Bearer-guess", query: `{ __typename }`, status: 401, code: "UNAUTHENTICATED"},
		{name: "name of 201 runes", token: testAdminToken, query: `mutation($n: String!) { createProduct(input: {name: $n, priceCents: 1, stock: 1}) { id } }`, vars: map[string]any{"n": strings.Repeat("é", 201)}, status: 200, code: "BAD_USER_INPUT"},
		{name: "name with NUL", token: testAdminToken, query: `mutation($n: String!) { createProduct(input: {name: $n, priceCents: 1, stock: 1}) { id } }`, vars: map[string]any{"n": "drop\x00"}, status: 200, code: "BAD_USER_INPUT"},
		{name: "stock 2^40", token: testAdminToken, query: `mutation { createProduct(input: {name: "x", priceCents: 1, stock: 1099511627776}) { id } }`, status: 200, code: "BAD_USER_INPUT"},
		{name: "nested 50 levels", query: deep, status: 200, code: "QUERY_TOO_DEEP"},
		{name: "too complex", query: wide, status: 200, code: "COMPLEXITY_LIMIT_EXCEEDED"},
		{name: "a customer's holds, too wide", query: `{ me { holds(first: 100) { edges { node { id qty product { id name priceCents stockAvailable } order { id status } } } } } }`, status: 200, code: "COMPLEXITY_LIMIT_EXCEEDED"},
		{name: "query over 16 KiB", query: "{ __typename " + strings.Repeat(" ", 17<<10) + "}", status: 200, code: "QUERY_TOO_LARGE"},
		{name: "10 MiB body", contentType: "application/json", body: `{"query":"` + strings.Repeat("a", 10<<20) + `"}`, status: 413, code: "BAD_USER_INPUT"},
		{name: "mutation over GET", status: 406},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req *http.Request
			if tc.name == "mutation over GET" {
				req, _ = http.NewRequest(http.MethodGet, ts.URL+"/graphql?query=mutation%7BcreateHold(productId:%22"+p.ID+"%22,qty:1)%7Bid%7D%7D", nil)
			} else {
				body := tc.body
				if body == "" {
					b, _ := json.Marshal(map[string]any{"query": tc.query, "variables": tc.vars})
					body = string(b)
				}
				req, _ = http.NewRequest(http.MethodPost, ts.URL+"/graphql", strings.NewReader(body))
				ct := tc.contentType
				if ct == "" {
					ct = "application/json"
				}
				req.Header.Set("Content-Type", ct)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %.300s", resp.StatusCode, tc.status, raw)
			}
			if tc.code != "" {
				var out gqlResponse
				if err := json.Unmarshal(raw, &out); err != nil {
					t.Fatalf("not JSON: %.300s", raw)
				}
				if out.code() != tc.code {
					t.Errorf("code %q, want %q: %.300s", out.code(), tc.code, raw)
				}
				if len(raw) > 4096 {
					t.Errorf("error answer is %d bytes: it echoes the input", len(raw))
				}
			}
			if after := takeSnapshot(t, db); after != before {
				t.Fatalf("refused request changed the database:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}

	// The webhook, through the same server.
	signed := func(body []byte, ts time.Time) http.Header {
		h := http.Header{}
		if err := testSigner.Sign(h, "msg_1", ts, body); err != nil {
			t.Fatal(err)
		}
		return h
	}
	good := []byte(`{"idempotency_key":"evt_h","order_id":"` + orderID + `","status":"failure"}`)
	replayed := signed([]byte(`{"idempotency_key":"evt_paid","order_id":"`+orderID+`","status":"success"}`), time.Now())
	for _, tc := range []struct {
		name   string
		body   []byte
		header http.Header
		status int
	}{
		{"no signature", good, http.Header{}, 401},
		{"bad signature", good, func() http.Header { h := signed(good, time.Now()); h.Set("webhook-signature", "v1,AAAA"); return h }(), 401},
		{"signature of another body", good, replayed, 401},
		{"timestamp 6 min old", good, signed(good, time.Now().Add(-6*time.Minute)), 401},
		{"timestamp 6 min ahead", good, signed(good, time.Now().Add(6*time.Minute)), 401},
		{"key reused with other content", good, nil, 409},
		{"10 MiB body", bytes.Repeat([]byte("a"), 10<<20), http.Header{}, 413},
	} {
		t.Run("webhook "+tc.name, func(t *testing.T) {
			body, header := tc.body, tc.header
			if header == nil { // evt_paid was a success: the same key as a failure
				body = []byte(`{"idempotency_key":"evt_paid","order_id":"` + orderID + `","status":"failure"}`)
				header = signed(body, time.Now())
			}
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/payments/webhook", bytes.NewReader(body))
			req.Header = header.Clone()
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if after := takeSnapshot(t, db); after != before {
				t.Fatalf("refused webhook changed the database:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
	if n, _ := db.Ent.Product.Query().Count(context.Background()); n != 1 {
		t.Fatalf("%d products: a table was dropped or a product slipped in", n)
	}
}

// TestSlowClient: a client that sends its headers a byte at a time is cut
// off by the server's header timeout, and other clients are served meanwhile.
func TestSlowClient(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		req := "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + strings.Repeat("a", 100)
		for i := range len(req) {
			if _, err := conn.Write([]byte{req[i]}); err != nil {
				done <- err
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- nil
	}()
	// Others are served while the slow client dribbles.
	resp, err := http.Get(ts.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz during slow client: %v %v", resp, err)
	}
	resp.Body.Close()
	// The server answers 408 or closes once its header timeout (5s) passes.
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	took := time.Since(start)
	if took > 10*time.Second {
		t.Fatalf("slow client held its connection for %v", took)
	}
	t.Logf("slow client cut off after %v (answer %q)", took.Round(100*time.Millisecond), strings.TrimSpace(line))
}

// TestIntrospectionWithinLimits: the playground's introspection query (the
// standard one, with its deep TypeRef fragment) passes the default limits.
func TestIntrospectionWithinLimits(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	var out struct {
		Schema struct{ Types []struct{ Name string } } `json:"__schema"`
	}
	ts.gql(t, "", introspectionQuery, nil).must(t, &out)
	if len(out.Schema.Types) < 10 {
		t.Fatalf("introspection returned %d types", len(out.Schema.Types))
	}
}

// introspectionQuery is graphql-js's getIntrospectionQuery(), as GraphiQL sends it.
const introspectionQuery = `query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}`

// TestCORS: no cross-origin access by default; configured origins only.
func TestCORS(t *testing.T) {
	preflight := func(ts *testServer, origin string) http.Header {
		req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/graphql", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type") // as browsers send it
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header
	}
	closed := startServer(t, dialect.SQLite, nil)
	if h := preflight(closed, "https://shop.example"); h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("default server allows cross-origin calls: %v", h)
	}
	open := startServer(t, dialect.SQLite, map[string]string{"CORS_ALLOWED_ORIGINS": "https://shop.example, https://m.shop.example"})
	h := preflight(open, "https://shop.example")
	if h.Get("Access-Control-Allow-Origin") != "https://shop.example" || !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("allowed origin refused: %v", h)
	}
	if h := preflight(open, "https://evil.example"); h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin allowed: %v", h)
	}
}
