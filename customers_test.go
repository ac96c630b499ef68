package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/golang-jwt/jwt/v5"

	"flashsale/internal/testkit"
)

// testCustomerSecret signs the HS256 customer tokens of these tests.
const testCustomerSecret = "customer-secret-of-the-shops-login-0123456789"

// customerToken returns an HS256 token for sub, valid for ttl (negative:
// expired), with the tests' issuer and audience.
func customerToken(t *testing.T, sub string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: sub, Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
	}).SignedString([]byte(testCustomerSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// customerServer starts the server with HS256 customer tokens required.
func customerServer(t *testing.T) *testServer {
	return startServer(t, dialect.MySQL, map[string]string{
		"CUSTOMER_JWT_SECRET":   testCustomerSecret,
		"CUSTOMER_JWT_ISSUER":   "https://login.shop.example",
		"CUSTOMER_JWT_AUDIENCE": "flashsale",
	})
}

// TestCustomerTokenRefusals: a customer token that fails is UNAUTHENTICATED
// wherever it is sent (a query, me, a mutation), never taken as anonymous;
// where customers are configured, buyer mutations need one, and the
// operator's token is not one.
func TestCustomerTokenRefusals(t *testing.T) {
	ts := customerServer(t)
	p := ts.createProduct(t, 10)
	good := customerToken(t, "alice", time.Hour)
	unsigned := func(claims string) string {
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "."
	}
	resigned := func(secret string) string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
			Subject: "alice", Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
		}).SignedString([]byte(secret))
		return s
	}
	claimsOf := func(c jwt.RegisteredClaims) string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testCustomerSecret))
		return s
	}
	exp := jwt.NewNumericDate(time.Now().Add(time.Hour))
	hold := `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`
	vars := map[string]any{"p": p.ID}
	for _, tc := range []struct {
		name, token, query string
	}{
		{"expired token on a query", customerToken(t, "alice", -time.Minute), `{ __typename }`},
		{"expired token on me", customerToken(t, "alice", -time.Minute), `{ me { id } }`},
		{"expired token on createHold", customerToken(t, "alice", -time.Minute), hold},
		{"alg none", unsigned(`{"sub":"alice","exp":4102444800}`), `{ me { id } }`},
		{"wrong secret", resigned("another-secret-of-at-least-32-bytes!!"), `{ me { id } }`},
		{"wrong issuer", claimsOf(jwt.RegisteredClaims{Subject: "alice", Issuer: "https://evil.example", Audience: jwt.ClaimStrings{"flashsale"}, ExpiresAt: exp}), `{ me { id } }`},
		{"wrong audience", claimsOf(jwt.RegisteredClaims{Subject: "alice", Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"other"}, ExpiresAt: exp}), `{ me { id } }`},
		{"no exp", claimsOf(jwt.RegisteredClaims{Subject: "alice", Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"}}), `{ me { id } }`},
		{"no sub", claimsOf(jwt.RegisteredClaims{Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"}, ExpiresAt: exp}), `{ me { id } }`},
		{"garbage", "not.a.jwt", `{ me { id } }`},
		// RFC 7515 4.1.11: a crit header names extensions the verifier must
		// understand, and this server understands none.
		{"crit header", critToken(t), `{ me { id } }`},
		{"sub with NUL", claimsOf(jwt.RegisteredClaims{Subject: "alice\x00", Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"}, ExpiresAt: exp}), hold},
		{"sub with newline", claimsOf(jwt.RegisteredClaims{Subject: "alice\nlevel=ERROR", Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"}, ExpiresAt: exp}), `{ me { id } }`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, r := ts.post(t, tc.token, tc.query, vars)
			if status != http.StatusUnauthorized || r.code() != "UNAUTHENTICATED" {
				t.Fatalf("status %d, %+v; want 401 UNAUTHENTICATED", status, r.Errors)
			}
			if len(r.Data) > 0 && string(r.Data) != "null" {
				t.Fatalf("refused request answered data %s", r.Data)
			}
		})
	}
	if got := ts.product(t, p.ID); got.StockReserved != 0 {
		t.Fatalf("refused calls reserved stock: %+v", got)
	}

	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"operator token", testAdminToken},
	} {
		t.Run("createHold with "+tc.name, func(t *testing.T) {
			if r := ts.gql(t, tc.token, hold, vars); r.code() != "UNAUTHENTICATED" {
				t.Fatalf("%s %+v, want UNAUTHENTICATED", r.Data, r.Errors)
			}
		})
	}
	var me struct{ Me *struct{ ID string } }
	ts.gql(t, testAdminToken, `{ me { id } }`, nil).must(t, &me)
	if me.Me != nil {
		t.Fatalf("me for the operator = %+v, want null", me.Me)
	}
	ts.gql(t, good, `{ me { id } }`, nil).must(t, &me)
	if me.Me == nil || me.Me.ID != "alice" {
		t.Fatalf("me = %+v, want alice", me.Me)
	}
	// The scheme is case-insensitive (RFC 7235), the token is not.
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		if r := ts.gqlAuth(t, scheme+" "+good, `{ me { id } }`); r.code() != "" || !strings.Contains(string(r.Data), `"alice"`) {
			t.Errorf("%q scheme: %s %+v", scheme, r.Data, r.Errors)
		}
	}
	if r := ts.gqlAuth(t, "Basic "+good, `{ me { id } }`); r.code() != "UNAUTHENTICATED" {
		t.Errorf("Basic scheme: %s %+v, want UNAUTHENTICATED", r.Data, r.Errors)
	}
}

// critToken is a well-signed customer token with a crit header.
func critToken(t *testing.T) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: "alice", Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	})
	tok.Header["crit"] = []string{"exp"}
	s, err := tok.SignedString([]byte(testCustomerSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// gqlAuth posts query with Authorization set to exactly authorization.
func (ts *testServer) gqlAuth(t *testing.T, authorization, query string) gqlResponse {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out gqlResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOwnership: a customer's hold and order are NOT_FOUND (null on reads)
// to another customer, on every entry point; the operator reads them.
func TestOwnership(t *testing.T) {
	ts := customerServer(t)
	p := ts.createProduct(t, 10)
	alice, bob := customerToken(t, "alice", time.Hour), customerToken(t, "bob", time.Hour)
	var h struct{ CreateHold struct{ ID string } }
	ts.gql(t, alice, `mutation($p: ID!) { createHold(productId: $p, qty: 2) { id } }`, map[string]any{"p": p.ID}).must(t, &h)
	var o struct{ CreateOrder struct{ ID string } }
	ts.gql(t, alice, `mutation($h: ID!) { createOrder(holdId: $h) { id } }`, map[string]any{"h": h.CreateHold.ID}).must(t, &o)
	var other struct{ CreateHold struct{ ID string } }
	ts.gql(t, alice, `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, map[string]any{"p": p.ID}).must(t, &other)

	holdQ, orderQ := `query($id: ID!) { hold(id: $id) { id } }`, `query($id: ID!) { order(id: $id) { id } }`
	for _, tc := range []struct {
		name, token, query string
		vars               map[string]any
		code               string // "" : a null answer
	}{
		{"hold read by bob", bob, holdQ, map[string]any{"id": h.CreateHold.ID}, ""},
		{"order read by bob", bob, orderQ, map[string]any{"id": o.CreateOrder.ID}, ""},
		{"createOrder by bob", bob, `mutation($h: ID!) { createOrder(holdId: $h) { id } }`, map[string]any{"h": other.CreateHold.ID}, "NOT_FOUND"},
		{"releaseHold by bob", bob, `mutation($h: ID!) { releaseHold(holdId: $h) { id } }`, map[string]any{"h": other.CreateHold.ID}, "NOT_FOUND"},
		{"hold read anonymously", "", holdQ, map[string]any{"id": h.CreateHold.ID}, ""},
		{"order read anonymously", "", orderQ, map[string]any{"id": o.CreateOrder.ID}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.gql(t, tc.token, tc.query, tc.vars)
			if tc.code != "" {
				if r.code() != tc.code {
					t.Fatalf("%s %+v, want %s", r.Data, r.Errors, tc.code)
				}
				return
			}
			if r.code() != "" || (!strings.Contains(string(r.Data), ":null") && string(r.Data) != "null") {
				t.Fatalf("%s %+v, want a null answer", r.Data, r.Errors)
			}
		})
	}
	// Bob's calls changed nothing: alice's second hold is still hers to order.
	ts.gql(t, alice, `mutation($h: ID!) { releaseHold(holdId: $h) { status } }`, map[string]any{"h": other.CreateHold.ID}).must(t, &struct{}{})
	for _, tok := range []string{alice, testAdminToken} {
		var read struct{ Order *struct{ ID string } }
		ts.gql(t, tok, orderQ, map[string]any{"id": o.CreateOrder.ID}).must(t, &read)
		if read.Order == nil || read.Order.ID != o.CreateOrder.ID {
			t.Fatalf("order read with its owner's or the operator's token: %+v", read.Order)
		}
	}
	var me struct {
		Me struct {
			Holds struct {
				Edges []struct{ Node struct{ ID, Status string } }
			}
			Orders struct {
				Edges []struct{ Node struct{ ID string } }
			}
		}
	}
	ts.gql(t, alice, `{ me { holds(first: 10) { edges { node { id status } } } orders { edges { node { id } } } } }`, nil).must(t, &me)
	if hs := me.Me.Holds.Edges; len(hs) != 2 || hs[0].Node.ID != other.CreateHold.ID || hs[0].Node.Status != "RELEASED" || hs[1].Node.ID != h.CreateHold.ID {
		t.Fatalf("alice's holds, newest first: %+v", hs)
	}
	if os := me.Me.Orders.Edges; len(os) != 1 || os[0].Node.ID != o.CreateOrder.ID {
		t.Fatalf("alice's orders: %+v", os)
	}
	ts.gql(t, bob, `{ me { holds { edges { node { id } } } } }`, nil).must(t, &me)
	if len(me.Me.Holds.Edges) != 0 {
		t.Fatalf("bob sees holds: %+v", me.Me.Holds.Edges)
	}
}

// TestBuyerRulesOverHTTP: the contract's new error codes, as a storefront
// sees them.
func TestBuyerRulesOverHTTP(t *testing.T) {
	ts := customerServer(t)
	alice := customerToken(t, "alice", time.Hour)
	var serverTime struct{ ServerTime time.Time }
	ts.gql(t, "", `{ serverTime }`, nil).must(t, &serverTime)
	if d := time.Since(serverTime.ServerTime); d < -time.Minute || d > time.Minute {
		t.Fatalf("serverTime %s is far from now", serverTime.ServerTime)
	}
	opens := serverTime.ServerTime.Add(time.Hour).Truncate(time.Second)
	mk := func(in map[string]any) string {
		var out struct{ CreateProduct struct{ ID string } }
		ts.gql(t, testAdminToken, `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`,
			map[string]any{"in": in}).must(t, &out)
		return out.CreateProduct.ID
	}
	limited := mk(map[string]any{"name": "limited", "priceCents": 100, "stock": 100, "maxPerCustomer": 2})
	later := mk(map[string]any{"name": "later", "priceCents": 100, "stock": 100, "saleStartsAt": opens.Format(time.RFC3339)})
	over := mk(map[string]any{"name": "over", "priceCents": 100, "stock": 100,
		"saleStartsAt": serverTime.ServerTime.Add(-time.Hour).Format(time.RFC3339), "saleEndsAt": serverTime.ServerTime.Add(-time.Minute).Format(time.RFC3339)})

	hold := `mutation($p: ID!, $q: Int!, $k: String) { createHold(productId: $p, qty: $q, idempotencyKey: $k) { id qty idempotencyKey } }`
	var first struct {
		CreateHold struct {
			ID             string
			IdempotencyKey string
		}
	}
	ts.gql(t, alice, hold, map[string]any{"p": limited, "q": 2, "k": "cart-1"}).must(t, &first)
	if first.CreateHold.IdempotencyKey != "cart-1" {
		t.Fatalf("hold %+v", first.CreateHold)
	}
	var again struct{ CreateHold struct{ ID string } }
	ts.gql(t, alice, hold, map[string]any{"p": limited, "q": 2, "k": "cart-1"}).must(t, &again)
	if again.CreateHold.ID != first.CreateHold.ID {
		t.Fatalf("a retry with the same key made hold %s, want %s", again.CreateHold.ID, first.CreateHold.ID)
	}
	for _, tc := range []struct {
		name string
		vars map[string]any
		code string
	}{
		{"key reused with another qty", map[string]any{"p": limited, "q": 1, "k": "cart-1"}, "IDEMPOTENCY_KEY_REUSED"},
		{"past maxPerCustomer", map[string]any{"p": limited, "q": 1, "k": "cart-2"}, "PURCHASE_LIMIT_EXCEEDED"},
		{"before the sale", map[string]any{"p": later, "q": 1}, "SALE_NOT_STARTED"},
		{"after the sale", map[string]any{"p": over, "q": 1}, "SALE_ENDED"},
		{"empty key", map[string]any{"p": limited, "q": 1, "k": ""}, "BAD_USER_INPUT"},
		{"key with a control character", map[string]any{"p": limited, "q": 1, "k": "cart\n3"}, "BAD_USER_INPUT"},
		{"key of 256 characters", map[string]any{"p": limited, "q": 1, "k": strings.Repeat("k", 256)}, "BAD_USER_INPUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.gql(t, alice, hold, tc.vars)
			if r.code() != tc.code {
				t.Fatalf("%s %+v, want %s", r.Data, r.Errors, tc.code)
			}
			if tc.code == "SALE_NOT_STARTED" {
				if got, _ := r.Errors[0].Extensions["saleStartsAt"].(string); got != opens.Format(time.RFC3339Nano) {
					t.Fatalf("extensions.saleStartsAt = %q, want %s", got, opens.Format(time.RFC3339Nano))
				}
			}
		})
	}
	var ps struct {
		Product struct{ StockReserved, MaxPerCustomer int }
	}
	ts.gql(t, "", `query($p: ID!) { product(id: $p) { stockReserved maxPerCustomer saleStartsAt saleEndsAt updatedAt } }`,
		map[string]any{"p": limited}).must(t, &ps)
	if ps.Product.StockReserved != 2 || ps.Product.MaxPerCustomer != 2 {
		t.Fatalf("limited product %+v: refusals must change nothing", ps.Product)
	}
}

// TestCustomersByJWKS: RS256/ES256 customer tokens checked against the
// shop's JWKS, fetched at start; the server refuses to start when it cannot
// fetch it.
func TestCustomersByJWKS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwks, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
		"x": b64(key.X.FillBytes(make([]byte, 32))), "y": b64(key.Y.FillBytes(make([]byte, 32))),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwks)
	}))
	defer srv.Close()
	ts := startServer(t, dialect.MySQL, map[string]string{"CUSTOMER_JWKS_URL": srv.URL + "/.well-known/jwks.json"})
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{Subject: "carol", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	tok.Header["kid"] = "k1"
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	var me struct{ Me struct{ ID string } }
	ts.gql(t, signed, `{ me { id } }`, nil).must(t, &me)
	if me.Me.ID != "carol" {
		t.Fatalf("me = %+v", me.Me)
	}
	// An HS256 token "signed" with the public key's bytes: algorithm confusion.
	pub, _ := json.Marshal(jwks)
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "carol", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString(pub)
	if status, r := ts.post(t, confused, `{ me { id } }`, nil); status != http.StatusUnauthorized || r.code() != "UNAUTHENTICATED" {
		t.Fatalf("HS256 with the public key: status %d %+v", status, r.Errors)
	}

	// No JWKS at start: the server does not start.
	srv.Close()
	env := map[string]string{"PORT": fmt.Sprint(0), "DATABASE_URL": ts.DSN, "WEBHOOK_SECRET": testSecret, "ADMIN_TOKEN": testAdminToken,
		"CUSTOMER_JWKS_URL": srv.URL + "/.well-known/jwks.json"}
	var out testkit.SyncBuffer
	if err := run(t.Context(), []string{"flashsale"}, func(k string) string { return env[k] }, &out); err == nil || !strings.Contains(err.Error(), "JWKS") {
		t.Fatalf("run without a reachable JWKS: %v", err)
	}
}
