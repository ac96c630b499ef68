package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"entgo.io/ent/dialect"
)

// aliasedHolds is one mutation operation of n aliased createHold fields of
// qty each, all for product p, directly or through a fragment.
func aliasedHolds(p string, n, qty int, viaFragment bool) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "h%d: createHold(productId: %q, qty: %d) { id }\n", i, p, qty)
	}
	if viaFragment {
		return "mutation { ...Holds }\nfragment Holds on Mutation {\n" + b.String() + "}"
	}
	return "mutation {\n" + b.String() + "}"
}

// TestAliasedMutations: every mutation field costs one against RATE_LIMIT,
// aliases and fragments included, and an operation of more fields than the
// caller has left, or than GRAPHQL_MAX_MUTATIONS, is refused whole and
// changes nothing. (Before: the limiter charged one per request, so one
// request of 400 aliased holds reserved a whole product.)
func TestAliasedMutations(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"RATE_LIMIT": "5/m"})
	p := ts.createProduct(t, 160)
	for _, tc := range []struct {
		name        string
		query       string
		status      int // 0: not checked
		code        string
		reservedNow int
	}{
		{"300 aliases: over GRAPHQL_MAX_MUTATIONS", aliasedHolds(p.ID, 300, 1, false), 0, "COMPLEXITY_LIMIT_EXCEEDED", 0},
		{"11 aliases in a fragment: over GRAPHQL_MAX_MUTATIONS", aliasedHolds(p.ID, 11, 1, true), 0, "COMPLEXITY_LIMIT_EXCEEDED", 0},
		// createProduct above took one of the 5: the operator shares its IP's bucket.
		{"6 aliases: more than the 5 a caller may ever send at once", aliasedHolds(p.ID, 6, 10, false), http.StatusTooManyRequests, "RATE_LIMITED", 0},
		{"5 aliases: more than the 4 left", aliasedHolds(p.ID, 5, 10, false), http.StatusTooManyRequests, "RATE_LIMITED", 0},
		{"3 aliases through a fragment: within the limit", aliasedHolds(p.ID, 3, 10, true), http.StatusOK, "", 30},
		{"2 more: only 1 left, refused whole", aliasedHolds(p.ID, 2, 10, false), http.StatusTooManyRequests, "RATE_LIMITED", 30},
		{"1 more: exactly what is left", aliasedHolds(p.ID, 1, 10, false), http.StatusOK, "", 40},
		{"1 more: none left", aliasedHolds(p.ID, 1, 10, false), http.StatusTooManyRequests, "RATE_LIMITED", 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, r := ts.post(t, "", tc.query, nil)
			if r.code() != tc.code || (tc.status != 0 && status != tc.status) {
				t.Fatalf("got %d %q (%+v), want %d %q", status, r.code(), firstError(r), tc.status, tc.code)
			}
			if tc.code == "RATE_LIMITED" && r.Errors[0].Extensions["retryAfter"] == nil {
				t.Errorf("RATE_LIMITED without extensions.retryAfter: %+v", r.Errors[0])
			}
			if got := ts.product(t, p.ID); got.StockReserved != tc.reservedNow {
				t.Fatalf("reserved %d, want %d: a refused operation changed something", got.StockReserved, tc.reservedNow)
			}
		})
	}
	// Queries are not limited, aliased or not.
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, "p%d: product(id: %q) { id }\n", i, p.ID)
	}
	if r := ts.gql(t, "", "{"+b.String()+"}", nil); r.code() != "" {
		t.Fatalf("50 aliased product queries: %+v", firstError(r))
	}
}

// TestGraphQLMaxMutations: GRAPHQL_MAX_MUTATIONS is read and applies with
// RATE_LIMIT off.
func TestGraphQLMaxMutations(t *testing.T) {
	ts := startServer(t, dialect.SQLite, map[string]string{"GRAPHQL_MAX_MUTATIONS": "2"})
	p := ts.createProduct(t, 100)
	if r := ts.gql(t, "", aliasedHolds(p.ID, 3, 1, false), nil); r.code() != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Fatalf("3 mutations with a limit of 2: %+v", firstError(r))
	}
	if r := ts.gql(t, "", aliasedHolds(p.ID, 2, 1, false), nil); r.code() != "" {
		t.Fatalf("2 mutations with a limit of 2: %+v", firstError(r))
	}
	if got := ts.product(t, p.ID); got.StockReserved != 2 {
		t.Fatalf("reserved %d, want 2", got.StockReserved)
	}
}

// TestIntrospectionBomb: introspection counts toward GRAPHQL_MAX_COMPLEXITY.
// Hundreds of aliased __schema selections in a query under the size limit
// are refused before anything runs, with a small answer; GraphiQL's own
// introspection query (TestIntrospectionWithinLimits) still passes. (Before:
// gqlgen's complexity skipped __schema, and such a query answered 20 MB.)
func TestIntrospectionBomb(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	aliases := func(n int, sel string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "s%d: %s ", i, sel)
		}
		return b.String()
	}
	for _, tc := range []struct{ name, query string }{
		{"aliased __schema", "{" + aliases(400, "__schema { types { name } }") + "}"},
		{"through a fragment", "{ ...F } fragment F on Query {" + aliases(280, "__schema { types { fields { name } } }") + "}"},
		{"aliased __type", "{" + aliases(200, `__type(name: "Query") { fields { name type { name } } }`) + "}"},
		{"GraphiQL's query three times over", strings.Replace(introspectionQuery, "__schema {", "a: __schema { types { ...FullType } } b: __schema { types { ...FullType } } __schema {", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.query) > 16<<10 {
				t.Fatalf("query is %d bytes: the size limit, not complexity, would refuse it", len(tc.query))
			}
			body, status := ts.rawPost(t, tc.query)
			var r gqlResponse
			decodeJSON(t, body, &r)
			if r.code() != "COMPLEXITY_LIMIT_EXCEEDED" || r.Data != nil && string(r.Data) != "null" {
				t.Fatalf("status %d, %d bytes: %.300s", status, len(body), body)
			}
			if len(body) > 1<<10 {
				t.Errorf("the refusal is %d bytes", len(body))
			}
		})
	}
}

// rawPost posts an anonymous query and returns the answer's bytes.
func (ts *testServer) rawPost(t *testing.T, query string) ([]byte, int) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	resp, err := http.Post(ts.URL+"/graphql", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return raw, resp.StatusCode
}

func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %.200q: %v", b, err)
	}
}

func firstError(r gqlResponse) any {
	if len(r.Errors) == 0 {
		return nil
	}
	return r.Errors[0]
}

// TestAnswersSayWhatIsWrong: every /graphql answer is nosniff, and a body
// or parameter that cannot be decoded is BAD_USER_INPUT in the caller's
// terms, never Go's ("Go struct field RawParams.query of type string").
func TestAnswersSayWhatIsWrong(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	for _, tc := range []struct {
		name, method, target, body string
		code, says                 string // "": a good answer
	}{
		{"query", "POST", "/graphql", `{"query":"{ serverTime }"}`, "", ""},
		{"GET query", "GET", "/graphql?query=%7BserverTime%7D", "", "", ""},
		{"query not a string", "POST", "/graphql", `{"query":5}`, "BAD_USER_INPUT", `"query" must be a string, not a number`},
		{"variables not an object", "POST", "/graphql", `{"query":"{ serverTime }","variables":[1]}`, "BAD_USER_INPUT", `"variables" must be an object, not an array`},
		{"body an array", "POST", "/graphql", `[{"query":"{ serverTime }"}]`, "BAD_USER_INPUT", "must be a JSON object"},
		{"body cut short", "POST", "/graphql", `{"query":"{ serverTime }"`, "BAD_USER_INPUT", "not valid JSON"},
		{"GET variables not an object", "GET", "/graphql?query=%7BserverTime%7D&variables=5", "", "BAD_USER_INPUT", `"variables" parameter must be a JSON object`},
		{"GET extensions not JSON", "GET", "/graphql?query=%7BserverTime%7D&extensions=%7B", "", "BAD_USER_INPUT", `"extensions" parameter must be a JSON object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.URL+tc.target, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			var r gqlResponse
			decodeJSON(t, raw, &r)
			if r.code() != tc.code {
				t.Fatalf("code %q, want %q: %s", r.code(), tc.code, raw)
			}
			if tc.code == "" {
				return
			}
			msg := r.Errors[0].Message
			if !strings.Contains(msg, tc.says) || strings.Contains(msg, "Go ") || strings.Contains(msg, "RawParams") || strings.Contains(msg, "interface {}") {
				t.Errorf("message %q, want one saying %q in the caller's terms", msg, tc.says)
			}
		})
	}
}
