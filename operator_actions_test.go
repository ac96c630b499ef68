package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/internal/testdb"
)

// Named operators of these tests, besides ADMIN_TOKEN's "admin".
const (
	aliceToken = "alice-operator-token-0123456789abcdef"
	bobToken   = "bob-operator-token-0123456789abcdef00"
)

// operatorsEnv runs the server with alice and bob in OPERATOR_TOKENS.
var operatorsEnv = map[string]string{"OPERATOR_TOKENS": "alice:" + aliceToken + ", bob:" + bobToken}

// actionJSON is an OperatorAction as the API answers it.
type actionJSON struct {
	ID, Operator, Mutation, Input string
	At                            time.Time
	Before, After                 *string
}

const actionFields = `id operator at mutation input before after`

// productSnapshot is a product as the log keeps it (before, after).
type productSnapshot struct {
	ID                                           string
	Name                                         string
	PriceCents                                   int
	StockAvailable, StockReserved, StockSellable int
	MaxPerCustomer                               *int
	SaleStartsAt, SaleEndsAt                     *string
}

func snapshotOf(t *testing.T, s *string) *productSnapshot {
	t.Helper()
	if s == nil {
		return nil
	}
	var p productSnapshot
	if err := json.Unmarshal([]byte(*s), &p); err != nil {
		t.Fatalf("product snapshot %s: %v", *s, err)
	}
	return &p
}

type actionsPage struct {
	OperatorActions struct {
		Edges []struct {
			Cursor string
			Node   actionJSON
		}
		PageInfo struct {
			HasNextPage bool
			EndCursor   *string
		}
	}
}

const actionsQuery = `query($first: Int, $after: String) { operatorActions(first: $first, after: $after) {
	edges { cursor node { ` + actionFields + ` } } pageInfo { hasNextPage endCursor } } }`

// actions reads the whole operator action log, newest first, in pages of
// first.
func (ts *testServer) actions(t *testing.T, first int) []actionJSON {
	t.Helper()
	var all []actionJSON
	vars := map[string]any{"first": first}
	for {
		var pg actionsPage
		ts.gql(t, testAdminToken, actionsQuery, vars).must(t, &pg)
		for _, e := range pg.OperatorActions.Edges {
			all = append(all, e.Node)
		}
		if !pg.OperatorActions.PageInfo.HasNextPage {
			return all
		}
		vars["after"] = *pg.OperatorActions.PageInfo.EndCursor
	}
}

// TestOperatorActionLog: every operator mutation, by each named operator,
// is in the log once, with its input as sent and the product before and
// after; refused ones are not; the log pages newest first.
func TestOperatorActionLog(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			rc := newEventReceiver(t)
			env := map[string]string{"EVENTS_WEBHOOK_URL": rc.URL, "EVENTS_WEBHOOK_SECRET": testEventsSecret}
			for k, v := range operatorsEnv {
				env[k] = v
			}
			ts := startServer(t, d, env)
			want := checkEachMutationRecorded(t, ts, rc)
			checkRefusalsRecordNothing(t, ts, want)
			checkActionPaging(t, ts, want)
		})
	}
}

// checkEachMutationRecorded makes each operator mutation once and checks
// the log; it returns the log's mutations, newest first.
func checkEachMutationRecorded(t *testing.T, ts *testServer, rc *eventReceiver) []string {
	var made struct{ CreateProduct struct{ ID string } }
	ts.gql(t, aliceToken, `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`,
		map[string]any{"in": map[string]any{"name": "Sneaker <1> & co", "priceCents": 1250, "stock": 10, "saleEndsAt": nil}}).must(t, &made)
	pid := made.CreateProduct.ID
	// An alias and inline arguments: the log names the field and the input as written.
	ts.gql(t, bobToken, `mutation($id: ID!) { cheaper: updateProduct(id: $id, input: {priceCents: 990, maxPerCustomer: null}) { id } }`,
		map[string]any{"id": pid}).must(t, &struct{}{})
	ts.gql(t, testAdminToken, fmt.Sprintf(`mutation { adjustStock(productId: %q, delta: 5, reason: "second pallet") { id } }`, pid), nil).must(t, &struct{}{})
	ts.createOrder(t, ts.createHold(t, pid, 2))
	waitFor(t, "order.created at the webhook", func() bool { return len(rc.received()) == 1 })
	var evs struct {
		OrderEvents struct {
			Edges []struct{ Node struct{ ID string } }
		}
	}
	ts.gql(t, testAdminToken, `{ orderEvents { edges { node { id } } } }`, nil).must(t, &evs)
	evID := evs.OrderEvents.Edges[0].Node.ID
	ts.gql(t, aliceToken, `mutation($ids: [ID!]!) { redeliverEvents(ids: $ids) { id } }`, map[string]any{"ids": []string{evID}}).must(t, &struct{}{})
	ts.gql(t, bobToken, `mutation { redeliverFailedEvents }`, nil).must(t, &struct{}{})

	got := ts.actions(t, 20)
	want := []struct {
		operator, mutation, input string
		before, after             string // the snapshots' "priceCents/stockAvailable/stockReserved", "" for null
	}{
		{"bob", "redeliverFailedEvents", `{}`, "", ""},
		{"alice", "redeliverEvents", `{"ids":["` + evID + `"]}`, "", ""},
		{"admin", "adjustStock", `{"delta":5,"productId":"` + pid + `","reason":"second pallet"}`, "990/10/0", "990/15/0"},
		{"bob", "updateProduct", `{"id":"` + pid + `","input":{"maxPerCustomer":null,"priceCents":990}}`, "1250/10/0", "990/10/0"},
		{"alice", "createProduct", `{"input":{"name":"Sneaker <1> & co","priceCents":1250,"saleEndsAt":null,"stock":10}}`, "", "1250/10/0"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d actions, want %d: %+v", len(got), len(want), got)
	}
	brief := func(s *string) string {
		if p := snapshotOf(t, s); p != nil {
			if p.ID != pid || p.Name != "Sneaker <1> & co" || p.StockSellable != p.StockAvailable-p.StockReserved {
				t.Errorf("snapshot %s", *s)
			}
			return fmt.Sprintf("%d/%d/%d", p.PriceCents, p.StockAvailable, p.StockReserved)
		}
		return ""
	}
	var mutations []string
	for i, w := range want {
		g := got[i]
		if b, a := brief(g.Before), brief(g.After); g.Operator != w.operator || g.Mutation != w.mutation || g.Input != w.input || b != w.before || a != w.after {
			t.Errorf("action %d: %s %s %s, product %q to %q\nwant %+v", i, g.Operator, g.Mutation, g.Input, b, a, w)
		}
		if i > 0 && g.At.After(got[i-1].At) || time.Since(g.At) > time.Minute || time.Until(g.At) > time.Minute {
			t.Errorf("action %d at %s: not newest first, or not now", i, g.At)
		}
		mutations = append(mutations, g.Mutation)
	}
	return mutations
}

// checkRefusalsRecordNothing: refused before the transaction (bad input,
// no operator) or inside it (rolled back), a mutation leaves no action.
func checkRefusalsRecordNothing(t *testing.T, ts *testServer, want []string) {
	p := ts.createProduct(t, 4)
	ts.createHold(t, p.ID, 2)
	const (
		create    = `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`
		update    = `mutation($id: ID!, $in: UpdateProductInput!) { updateProduct(id: $id, input: $in) { id } }`
		adjust    = `mutation($id: ID!, $d: Int!) { adjustStock(productId: $id, delta: $d, reason: "r") { id } }`
		redeliver = `mutation($ids: [ID!]!) { redeliverEvents(ids: $ids) { id } }`
	)
	for _, tc := range []struct {
		name, token, query string
		vars               map[string]any
		code               string
	}{
		{"empty name", aliceToken, create, map[string]any{"in": map[string]any{"name": " ", "priceCents": 1, "stock": 1}}, "BAD_USER_INPUT"},
		{"sale ends before it starts", aliceToken, create, map[string]any{"in": map[string]any{"name": "x", "priceCents": 1, "stock": 1,
			"saleStartsAt": "2030-01-02T00:00:00Z", "saleEndsAt": "2030-01-01T00:00:00Z"}}, "BAD_USER_INPUT"},
		{"unknown product", bobToken, update, map[string]any{"id": "999999", "in": map[string]any{"name": "x"}}, "NOT_FOUND"},
		{"limit below a buyer's units (in the transaction)", bobToken, update, map[string]any{"id": p.ID, "in": map[string]any{"maxPerCustomer": 1}}, "BAD_USER_INPUT"},
		{"delta 0", testAdminToken, adjust, map[string]any{"id": p.ID, "d": 0}, "BAD_USER_INPUT"},
		{"withdrawing held units (in the transaction)", testAdminToken, adjust, map[string]any{"id": p.ID, "d": -3}, "INSUFFICIENT_STOCK"},
		{"unknown event (in the transaction)", aliceToken, redeliver, map[string]any{"ids": []string{"evt_" + strings.Repeat("0", 32)}}, "NOT_FOUND"},
		{"malformed event ID", aliceToken, redeliver, map[string]any{"ids": []string{"nope"}}, "BAD_USER_INPUT"},
		{"anonymous", "", adjust, map[string]any{"id": p.ID, "d": 1}, "UNAUTHENTICATED"},
		{"unknown token", "not-an-operator-token-0123456789abcdef", adjust, map[string]any{"id": p.ID, "d": 1}, "UNAUTHENTICATED"},
	} {
		if r := ts.gql(t, tc.token, tc.query, tc.vars); r.code() != tc.code {
			t.Errorf("%s: %s %+v, want %s", tc.name, r.Data, r.Errors, tc.code)
		}
	}
	var got []string
	for _, a := range ts.actions(t, 50) {
		got = append(got, a.Mutation)
	}
	// Only the test product's createProduct (by admin) was added.
	if want := append([]string{"createProduct"}, want...); !slices.Equal(got, want) {
		t.Fatalf("after refused mutations the log is %v, want %v", got, want)
	}
}

// checkActionPaging: pages of any size give the log newest first; first
// outside 1..100 and a cursor that is not the log's are BAD_USER_INPUT.
func checkActionPaging(t *testing.T, ts *testServer, want []string) {
	all := ts.actions(t, 50)
	for _, first := range []int{1, 2, 5} {
		if got := ts.actions(t, first); !slices.EqualFunc(got, all, func(a, b actionJSON) bool { return a.ID == b.ID }) {
			t.Errorf("in pages of %d: %v, want %v", first, got, all)
		}
	}
	var pg actionsPage
	ts.gql(t, testAdminToken, `{ operatorActions { edges { cursor } pageInfo { hasNextPage } } }`, nil).must(t, &pg)
	if n := len(pg.OperatorActions.Edges); n != len(want)+1 || pg.OperatorActions.PageInfo.HasNextPage {
		t.Errorf("default page: %d actions, want all %d", n, len(want)+1)
	}
	productCursor := encodeTestCursor("product:1")
	for _, vars := range []map[string]any{
		{"first": 0}, {"first": 101}, {"first": -1},
		{"after": "bm9wZQ"}, {"after": productCursor}, {"after": encodeTestCursor("action:1.x")},
	} {
		if r := ts.gql(t, testAdminToken, actionsQuery, vars); r.code() != "BAD_USER_INPUT" {
			t.Errorf("operatorActions %v: %s %+v, want BAD_USER_INPUT", vars, r.Data, r.Errors)
		}
	}
}

// TestOperatorActionsWho: the log is for operators only; every named
// operator reads it, buyers and unknown tokens do not.
func TestOperatorActionsWho(t *testing.T) {
	env := map[string]string{
		"CUSTOMER_JWT_SECRET": testCustomerSecret, "CUSTOMER_JWT_ISSUER": "https://login.shop.example",
		"CUSTOMER_JWT_AUDIENCE": "flashsale",
	}
	for k, v := range operatorsEnv {
		env[k] = v
	}
	ts := startServer(t, dialect.MySQL, env)
	const q = `{ operatorActions { edges { cursor } } }`
	for _, tc := range []struct {
		name, token string
		status      int
		code        string
	}{
		{"admin", testAdminToken, 200, ""},
		{"alice", aliceToken, 200, ""},
		{"bob", bobToken, 200, ""},
		{"anonymous", "", 200, "UNAUTHENTICATED"},
		{"customer", customerToken(t, "carol", time.Hour), 200, "UNAUTHENTICATED"},
		{"unknown token", "not-an-operator-token-0123456789abcdef", http.StatusUnauthorized, "UNAUTHENTICATED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, r := ts.post(t, tc.token, q, nil)
			if status != tc.status || r.code() != tc.code {
				t.Fatalf("status %d, %s %+v; want %d %q", status, r.Data, r.Errors, tc.status, tc.code)
			}
			if tc.code != "" && len(r.Data) > 0 && string(r.Data) != "null" {
				t.Fatalf("refused, yet answered %s", r.Data)
			}
		})
	}
}

// TestOperatorTokenRotation rotates an operator's token the way docs/api.md
// says: add the new one under a new name, switch the tools, remove the old
// one. Each step is a restart on the same database; the log keeps who did
// what under the name they had.
func TestOperatorTokenRotation(t *testing.T) {
	const (
		oldToken = "ci-old-token-0123456789abcdef0123456"
		newToken = "ci-new-token-0123456789abcdef0123456"
	)
	dsn := testdb.URL(t, dialect.MySQL)
	adjust := func(ts *testServer, token string) (int, string) {
		status, r := ts.post(t, token, `mutation { adjustStock(productId: "1", delta: 1, reason: "rotation") { id } }`, nil)
		return status, r.code()
	}
	steps := []struct {
		name, tokens      string
		oldCode, newCode  string
		oldStatus, newSts int
	}{
		{"before", "ci:" + oldToken, "", "UNAUTHENTICATED", 200, 401},
		{"add the new token", "ci:" + oldToken + ",ci-2:" + newToken, "", "", 200, 200},
		{"remove the old token", "ci-2:" + newToken, "UNAUTHENTICATED", "", 401, 200},
	}
	for i, s := range steps {
		ts := startServer(t, dialect.MySQL, map[string]string{"DATABASE_URL": dsn, "OPERATOR_TOKENS": s.tokens})
		if i == 0 {
			ts.createProduct(t, 1)
		}
		if status, code := adjust(ts, oldToken); status != s.oldStatus || code != s.oldCode {
			t.Errorf("%s: old token: %d %q, want %d %q", s.name, status, code, s.oldStatus, s.oldCode)
		}
		if status, code := adjust(ts, newToken); status != s.newSts || code != s.newCode {
			t.Errorf("%s: new token: %d %q, want %d %q", s.name, status, code, s.newSts, s.newCode)
		}
		if i == len(steps)-1 {
			var who []string
			for _, a := range ts.actions(t, 50) {
				who = append(who, a.Operator+" "+a.Mutation)
			}
			want := []string{"ci-2 adjustStock", "ci-2 adjustStock", "ci adjustStock", "ci adjustStock", "admin createProduct"}
			if !slices.Equal(who, want) {
				t.Errorf("log after the rotation: %q, want %q", who, want)
			}
		}
		ts.stop()
	}
}

// TestConcurrentOperatorActions: two operators adjusting one product's
// stock at once each get exactly one row per call, and the rows in time
// order form one chain: each before is the previous after, and each after
// is its before plus its delta.
func TestConcurrentOperatorActions(t *testing.T) {
	ts := startServer(t, dialect.MySQL, operatorsEnv)
	p := ts.createProduct(t, 100)
	const perOperator = 20
	deltas := map[string]int{"alice": 3, "bob": -2}
	tokens := map[string]string{"alice": aliceToken, "bob": bobToken}
	var wg sync.WaitGroup
	for name, tok := range tokens {
		for i := range perOperator {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vars := map[string]any{"p": p.ID, "d": deltas[name], "r": fmt.Sprintf("%s %d", name, i)}
				if err := tryGQL(ts, tok, `mutation($p: ID!, $d: Int!, $r: String!) { adjustStock(productId: $p, delta: $d, reason: $r) { id } }`, vars); err != nil {
					t.Errorf("%s %d: %v", name, i, err)
				}
			}()
		}
	}
	wg.Wait()
	all := ts.actions(t, 50)
	var chain []actionJSON
	perReason := map[string]int{}
	for _, a := range all {
		if a.Mutation != "adjustStock" {
			continue
		}
		chain = append(chain, a)
		var in struct {
			Delta  int
			Reason string
		}
		if err := json.Unmarshal([]byte(a.Input), &in); err != nil || in.Delta != deltas[a.Operator] || !strings.HasPrefix(in.Reason, a.Operator+" ") {
			t.Errorf("action %+v: input %+v (%v)", a, in, err)
		}
		perReason[in.Reason]++
	}
	if len(chain) != 2*perOperator || len(perReason) != 2*perOperator {
		t.Fatalf("%d adjustStock actions for %d distinct calls, want %d each", len(chain), len(perReason), 2*perOperator)
	}
	checkChain(t, chain, 100, ts.product(t, p.ID).StockAvailable)
}

// checkChain checks that the adjustStock actions (newest first, as the log
// reads) form one chain from first to last units.
func checkChain(t *testing.T, newestFirst []actionJSON, first, last int) {
	t.Helper()
	chain := slices.Clone(newestFirst)
	slices.Reverse(chain)
	if !sort.SliceIsSorted(chain, func(i, j int) bool { return chain[i].At.Before(chain[j].At) }) {
		t.Errorf("the log is not newest first by time")
	}
	units := first
	for i, a := range chain {
		before, after := snapshotOf(t, a.Before), snapshotOf(t, a.After)
		var in struct{ Delta int }
		_ = json.Unmarshal([]byte(a.Input), &in)
		if before == nil || after == nil || before.StockAvailable != units || after.StockAvailable-before.StockAvailable != in.Delta {
			t.Fatalf("action %d (%s, delta %d) breaks the chain at %d units: before %v after %v", i, a.Operator, in.Delta, units, a.Before, a.After)
		}
		units = after.StockAvailable
	}
	if units != last {
		t.Fatalf("the chain ends at %d units, the product has %d", units, last)
	}
}

// encodeTestCursor makes a cursor the way the server does (base64url).
func encodeTestCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// tryGQL is gql for goroutines: it returns what went wrong instead of
// failing the test.
func tryGQL(ts *testServer, token, query string, vars map[string]any) error {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r gqlResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("status %d: %w", resp.StatusCode, err)
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("status %d: %+v", resp.StatusCode, r.Errors)
	}
	return nil
}
