package graph_test

// Native fuzz targets for the GraphQL API. Their seed corpora (the f.Add
// calls below and testdata/fuzz/<FuzzName>/) run as ordinary tests under
// `go test ./...`; fuzz with, for example,
//
//	go test -run '^$' -fuzz '^FuzzGraphQLInputs$' -fuzztime 60s -parallel 2 ./graph/
//
// FuzzGraphQLInputs sends fuzzed values as variables of the contract's
// operations and predicts each answer from the database; FuzzGraphQLQuery
// sends arbitrary documents. Hold IDs are random, so a fuzzed holdId may use
// markers: $ACTIVE (the hold this input's createHold made, or another
// ACTIVE one), $EXPIRED (an ACTIVE hold past its expiresAt) and $REDEEMED.
// A cursor of $NULL sends `after: null`.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/database"
	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/product"
	"flashsale/graph"
	"flashsale/internal/testdb"
	"flashsale/internal/testkit"
	"flashsale/stock"
)

const (
	fuzzAdminToken = "fuzz-admin-token-0123456789abcdef"
	fuzzMaxHoldQty = 10
)

// The contract's codes for well-formed operations: never
// INTERNAL_SERVER_ERROR, and UNAVAILABLE cannot happen on a local SQLite file.
var fuzzInputCodes = map[string]bool{
	"BAD_USER_INPUT":     true,
	"NOT_FOUND":          true,
	"INSUFFICIENT_STOCK": true,
	"HOLD_EXPIRED":       true,
	"HOLD_NOT_ACTIVE":    true,
	"UNAUTHENTICATED":    true,
}

// fuzzQueryCodes adds the codes of documents that do not parse or validate
// (gqlgen's own, which the error presenter keeps) or exceed graph.Limits.
var fuzzQueryCodes = map[string]bool{
	"GRAPHQL_PARSE_FAILED":      true,
	"GRAPHQL_VALIDATION_FAILED": true,
	"COMPLEXITY_LIMIT_EXCEEDED": true,
	graph.CodeQueryTooLarge:     true,
	graph.CodeQueryTooDeep:      true,
}

func init() {
	for c := range fuzzInputCodes {
		fuzzQueryCodes[c] = true
	}
}

// gqlFuzzEnv is one fuzz target's database and handler. Fuzz inputs run one
// after another in a process, so it needs no locking.
type gqlFuzzEnv struct {
	db  *database.DB
	svc *stock.Service
	h   http.Handler

	// Holds the markers stand for; active is replaced once redeemed.
	active, expired, redeemed uuid.UUID
	plenty                    int // a product that never runs out
}

func newGQLFuzzEnv(tb testing.TB) *gqlFuzzEnv {
	tb.Helper()
	db := testdb.Open(tb, dialect.SQLite, database.Options{MaxConns: 4})
	quiet := slog.New(slog.DiscardHandler)
	cfg := stock.Config{HoldTTL: time.Hour, PaymentTimeout: time.Hour, MaxHoldQty: fuzzMaxHoldQty}
	e := &gqlFuzzEnv{db: db, svc: stock.New(db.Ent, db.Dialect, cfg, quiet)}
	e.h = graph.NewHandler(&graph.Resolver{Stock: e.svc, Operators: mustOperators(tb, fuzzAdminToken)}, graph.Options{Logger: quiet})

	ctx := context.Background()
	// Products 1, 2 and 3: plenty, none and a little stock.
	for _, n := range []int{1_000_000_000, 0, 3} {
		p, err := e.svc.CreateProduct(ctx, nil, stock.NewProduct{Name: fmt.Sprintf("fuzz %d", n), PriceCents: 199, Stock: n})
		if err != nil {
			tb.Fatal(err)
		}
		if e.plenty == 0 {
			e.plenty = p.ID
		}
	}
	e.active = e.newHold(tb, e.svc)
	e.redeemed = e.newHold(tb, e.svc)
	if _, err := e.svc.CreateOrder(ctx, e.redeemed, stock.Anonymous); err != nil {
		tb.Fatal(err)
	}
	cfg.HoldTTL = time.Millisecond
	e.expired = e.newHold(tb, stock.New(db.Ent, db.Dialect, cfg, quiet))
	time.Sleep(5 * time.Millisecond)
	return e
}

func (e *gqlFuzzEnv) newHold(tb testing.TB, svc *stock.Service) uuid.UUID {
	tb.Helper()
	h, err := svc.CreateHold(context.Background(), stock.HoldRequest{ProductID: e.plenty, Qty: 1})
	if err != nil {
		tb.Fatal(err)
	}
	return h.ID
}

type gqlFuzzError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Locations  []any          `json:"locations"`
	Extensions map[string]any `json:"extensions"`
}

type gqlFuzzResponse struct {
	status     int
	Data       map[string]json.RawMessage `json:"data"`
	Errors     []gqlFuzzError             `json:"errors"`
	Extensions map[string]any             `json:"extensions"`
}

// code returns the code of the error at field (a top-level field name), or "".
func (r *gqlFuzzResponse) code(field string) string {
	for _, e := range r.Errors {
		if len(e.Path) > 0 && e.Path[0] == field {
			return e.Extensions["code"].(string)
		}
	}
	return ""
}

// codes lists every error's path and code, for logs.
func (r *gqlFuzzResponse) codes() string {
	var s []string
	for _, e := range r.Errors {
		s = append(s, fmt.Sprintf("%v:%v", e.Path, e.Extensions["code"]))
	}
	return fmt.Sprintf("%d %v", r.status, s)
}

// post sends one request and checks what every answer must be: a JSON
// object of data, errors and extensions, each error with a message and a
// code from codes.
func (e *gqlFuzzEnv) post(t *testing.T, body []byte, token string, codes map[string]bool) *gqlFuzzResponse {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, r)

	resp := &gqlFuzzResponse{status: rec.Code}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "application/graphql-response+json") {
		t.Fatalf("Content-Type %q; body %q", ct, rec.Body.String())
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(resp); err != nil {
		t.Fatalf("%d body %q: not a GraphQL response: %v", rec.Code, rec.Body.String(), err)
	}
	if dec.More() {
		t.Fatalf("%d body %q: more after the response", rec.Code, rec.Body.String())
	}
	if resp.Data == nil && len(resp.Errors) == 0 {
		t.Fatalf("%d body %q: neither data nor errors", rec.Code, rec.Body.String())
	}
	for _, ge := range resp.Errors {
		code, _ := ge.Extensions["code"].(string)
		if ge.Message == "" || !codes[code] {
			t.Fatalf("error %+v: want a message and extensions.code from %v (request %s)", ge, keys(codes), body)
		}
	}
	return resp
}

func keys(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}

// call runs one well-formed operation: it must answer 200.
func (e *gqlFuzzEnv) call(t *testing.T, query string, vars map[string]any, token string) *gqlFuzzResponse {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	resp := e.post(t, body, token, fuzzInputCodes)
	t.Logf("%s", resp.codes())
	if resp.status != http.StatusOK {
		t.Fatalf("status %d for %s; errors %+v", resp.status, body, resp.Errors)
	}
	return resp
}

// snapshot is everything a mutation may change: row counts, counter sums and
// the latest update of each table.
func (e *gqlFuzzEnv) snapshot(t *testing.T) []any {
	t.Helper()
	const q = `SELECT
		(SELECT COUNT(*) FROM products), (SELECT COALESCE(SUM(stock_available), 0) FROM products),
		(SELECT COALESCE(SUM(stock_reserved), 0) FROM products), (SELECT MAX(updated_at) FROM products),
		(SELECT COUNT(*) FROM holds), (SELECT MAX(updated_at) FROM holds),
		(SELECT COUNT(*) FROM orders), (SELECT MAX(updated_at) FROM orders)`
	v := make([]any, 8)
	ptrs := make([]any, len(v))
	for i := range v {
		ptrs[i] = &v[i]
	}
	if err := e.db.SQL.QueryRowContext(context.Background(), q).Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *gqlFuzzEnv) unchanged(t *testing.T, what string, before []any) {
	t.Helper()
	if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
		t.Fatalf("refused %s changed the database:\nbefore %v\nafter  %v", what, before, after)
	}
}

func (e *gqlFuzzEnv) audit(t *testing.T) {
	t.Helper()
	testkit.MustAudit(t, context.Background(), e.svc)
}

// wire returns s as the server sees it after JSON: invalid UTF-8 becomes U+FFFD.
func wire(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

func isInt32(n int) bool { return n >= math.MinInt32 && n <= math.MaxInt32 }

func unmarshal[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return v
}

type fuzzProduct struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	PriceCents     int64  `json:"priceCents"`
	StockAvailable int    `json:"stockAvailable"`
	StockReserved  int    `json:"stockReserved"`
	StockSellable  int    `json:"stockSellable"`
}

const productFields = `id name priceCents stockAvailable stockReserved stockSellable`

func FuzzGraphQLInputs(f *testing.F) {
	cursor := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, s := range []struct {
		productID     string
		qty           int
		holdID        string
		name          string
		price, stockN int
		cursor        string
		first         int
	}{
		{"1", 1, "$ACTIVE", "Widget", 500, 10, "$NULL", 20},
		{"3", 10, "$EXPIRED", "  padded  ", 0, 0, cursor("product:1"), 1},
		{"2", 1, "$REDEEMED", "", 1, 1, cursor("product:2"), 100},
		{"9999", 0, "00000000-0000-0000-0000-000000000000", strings.Repeat("x", 201), -1, -1, "", 0},
		{"abc", 11, "not-a-uuid", "日本語", 100_000_000_001, 1_000_000_001, "cHJvZHVjdDow", 101},
	} {
		f.Add(s.productID, s.qty, s.holdID, s.name, s.price, s.stockN, s.cursor, s.first)
	}
	e := newGQLFuzzEnv(f)

	f.Fuzz(func(t *testing.T, productID string, qty int, holdID, name string, priceCents, stockN int, after string, first int) {
		ctx := context.Background()
		pidWire := wire(productID)
		pid, perr := strconv.ParseInt(pidWire, 10, 64)
		badPID := perr != nil || pid < 1 || strconv.FormatInt(pid, 10) != pidWire

		// createHold.
		var want string // the code the refusal must have; "" for success
		var p0 *ent.Product
		switch {
		case badPID || qty < 1 || qty > fuzzMaxHoldQty:
			want = "BAD_USER_INPUT"
		default:
			var err error
			switch p0, err = e.db.Ent.Product.Get(ctx, int(pid)); {
			case ent.IsNotFound(err):
				want = "NOT_FOUND"
			case err != nil:
				t.Fatal(err)
			case stock.Sellable(p0) < qty:
				want = "INSUFFICIENT_STOCK"
			}
		}
		before := e.snapshot(t)
		resp := e.call(t, `mutation($productId: ID!, $qty: Int!) {
			createHold(productId: $productId, qty: $qty) { id qty status product { `+productFields+` } }
		}`, map[string]any{"productId": productID, "qty": qty}, "")
		newHold := uuid.Nil
		changed := false // whether a mutation succeeded; refusals are checked to change nothing
		if got := resp.code("createHold"); got != want {
			t.Fatalf("createHold(%q, %d) answered code %q, want %q (errors %+v)", productID, qty, got, want, resp.Errors)
		}
		if want != "" {
			e.unchanged(t, "createHold", before)
		} else {
			h := unmarshal[struct {
				ID      string
				Qty     int
				Status  string
				Product fuzzProduct
			}](t, resp.Data["createHold"])
			// The product in the answer may come from the service's cache (up
			// to 1 s stale, as the contract allows); the database may not.
			p1, err := e.db.Ent.Product.Get(ctx, int(pid))
			if err != nil {
				t.Fatal(err)
			}
			if h.Qty != qty || h.Status != "ACTIVE" || h.Product.ID != strconv.FormatInt(pid, 10) ||
				h.Product.StockSellable != h.Product.StockAvailable-h.Product.StockReserved ||
				p1.StockReserved != p0.StockReserved+qty || p1.StockAvailable != p0.StockAvailable {
				t.Fatalf("createHold(%q, %d) = %+v; product before %+v, after %+v", productID, qty, h, p0, p1)
			}
			newHold, changed = uuid.MustParse(h.ID), true
		}

		// createOrder.
		hid := holdID
		switch holdID {
		case "$ACTIVE":
			hid = e.active.String()
			if newHold != uuid.Nil {
				hid = newHold.String()
			}
		case "$EXPIRED":
			hid = e.expired.String()
		case "$REDEEMED":
			hid = e.redeemed.String()
		}
		hidWire := wire(hid)
		hu, herr := uuid.Parse(hidWire)
		var h0 *ent.Hold
		want = ""
		if herr != nil || len(hidWire) != 36 {
			want = "BAD_USER_INPUT"
		} else {
			var err error
			switch h0, err = e.db.Ent.Hold.Get(ctx, hu); {
			case ent.IsNotFound(err):
				want = "NOT_FOUND"
			case err != nil:
				t.Fatal(err)
			case h0.Status == hold.StatusEXPIRED || (h0.Status == hold.StatusACTIVE && !time.Now().Before(h0.ExpiresAt)):
				want = "HOLD_EXPIRED"
			case h0.Status != hold.StatusACTIVE:
				want = "HOLD_NOT_ACTIVE"
			}
		}
		before = e.snapshot(t)
		resp = e.call(t, `mutation($holdId: ID!) {
			createOrder(holdId: $holdId) { id qty status amountCents hold { id status } product { id } }
		}`, map[string]any{"holdId": hid}, "")
		if got := resp.code("createOrder"); got != want {
			t.Fatalf("createOrder(%q) answered code %q, want %q (errors %+v)", hid, got, want, resp.Errors)
		}
		if want != "" {
			e.unchanged(t, "createOrder", before)
		} else {
			o := unmarshal[struct {
				ID          string
				Qty         int
				Status      string
				AmountCents int64
				Hold        struct{ ID, Status string }
				Product     struct{ ID string }
			}](t, resp.Data["createOrder"])
			p, err := e.db.Ent.Product.Get(ctx, h0.ProductID)
			if err != nil {
				t.Fatal(err)
			}
			if o.Qty != h0.Qty || o.Status != "PENDING_PAYMENT" || o.AmountCents != p.PriceCents*int64(h0.Qty) ||
				o.Hold.ID != hu.String() || o.Hold.Status != "REDEEMED" || o.Product.ID != strconv.Itoa(h0.ProductID) {
				t.Fatalf("createOrder(%q) = %+v; hold %+v", hid, o, h0)
			}
			if hu == e.active {
				e.active = e.newHold(t, e.svc)
			}
			changed = true
		}

		// createProduct: refused without the token, whatever the input
		// (an Int outside 32 bits is refused before the resolver runs).
		input := map[string]any{"input": map[string]any{"name": name, "priceCents": priceCents, "stock": stockN}}
		const create = `mutation($input: CreateProductInput!) { createProduct(input: $input) { ` + productFields + ` } }`
		want = "UNAUTHENTICATED"
		if !isInt32(priceCents) || !isInt32(stockN) {
			want = "BAD_USER_INPUT"
		}
		before = e.snapshot(t)
		if got := e.call(t, create, input, "").code("createProduct"); got != want {
			t.Fatalf("createProduct(%q, %d, %d) without a token answered code %q, want %q", name, priceCents, stockN, got, want)
		}
		e.unchanged(t, "createProduct", before)

		// With the token: a product is created only from valid input, and
		// always from plainly valid input (printable name of 1 to 200
		// characters, price and stock in range); refusals are BAD_USER_INPUT.
		trimmed := strings.TrimSpace(wire(name))
		n := utf8.RuneCountInString(trimmed)
		plain := n >= 1 && n <= 200 && !strings.ContainsFunc(trimmed, func(r rune) bool { return !unicode.IsPrint(r) }) &&
			priceCents >= 0 && priceCents <= math.MaxInt32 && stockN >= 0 && stockN <= 1_000_000_000
		resp = e.call(t, create, input, fuzzAdminToken)
		switch got := resp.code("createProduct"); {
		case got == "" && (n < 1 || n > 200 || strings.ContainsFunc(trimmed, unicode.IsControl) || priceCents < 0 || stockN < 0):
			t.Fatalf("createProduct(%q, %d, %d) accepted invalid input", name, priceCents, stockN)
		case got == "" && !plain:
			// Valid but unusual (format characters, huge stock): accepted.
		case got == "":
		case plain:
			t.Fatalf("createProduct(%q, %d, %d) refused valid input: %+v", name, priceCents, stockN, resp.Errors)
		case got != "BAD_USER_INPUT":
			t.Fatalf("createProduct(%q, %d, %d) answered code %q, want BAD_USER_INPUT", name, priceCents, stockN, got)
		}
		if resp.code("createProduct") != "" {
			e.unchanged(t, "createProduct", before)
		} else {
			p := unmarshal[fuzzProduct](t, resp.Data["createProduct"])
			if p.Name != trimmed || p.PriceCents != int64(priceCents) || p.StockAvailable != stockN || p.StockReserved != 0 || p.StockSellable != stockN {
				t.Fatalf("createProduct(%q, %d, %d) = %+v", name, priceCents, stockN, p)
			}
			changed = true
		}

		// Lookups: null for an unknown ID, BAD_USER_INPUT for a malformed one.
		resp = e.call(t, `query($productId: ID!, $holdId: ID!) {
			product(id: $productId) { id } hold(id: $holdId) { id status } order(id: $holdId) { id }
		}`, map[string]any{"productId": productID, "holdId": hid}, "")
		if got, want := resp.code("product"), map[bool]string{true: "BAD_USER_INPUT"}[badPID]; got != want {
			t.Fatalf("product(%q) answered code %q, want %q", productID, got, want)
		}
		if !badPID {
			exists, err := e.db.Ent.Product.Query().Where(product.ID(int(pid))).Exist(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(resp.Data["product"]); exists != (got != "null") {
				t.Fatalf("product(%q) = %s, but exists is %v", productID, got, exists)
			}
		}
		badHID := herr != nil || len(hidWire) != 36
		for _, field := range []string{"hold", "order"} {
			if got, want := resp.code(field), map[bool]string{true: "BAD_USER_INPUT"}[badHID]; got != want {
				t.Fatalf("%s(%q) answered code %q, want %q", field, hid, got, want)
			}
		}
		if got := string(resp.Data["hold"]); !badHID && (h0 != nil) != (got != "null") {
			t.Fatalf("hold(%q) = %s, want it only for an existing hold", hid, got)
		}

		// products: a page of up to first products after the cursor.
		afterID, badCursor := 0, false
		vars := map[string]any{"first": first, "after": after}
		if after == "$NULL" {
			vars["after"] = nil
		} else if b, err := base64.RawURLEncoding.DecodeString(wire(after)); err != nil {
			badCursor = true
		} else if s, ok := strings.CutPrefix(string(b), "product:"); !ok {
			badCursor = true
		} else if afterID, err = strconv.Atoi(s); err != nil || afterID < 1 || strconv.Itoa(afterID) != s {
			badCursor = true
		}
		resp = e.call(t, `query($first: Int, $after: String) {
			products(first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } }
		}`, vars, "")
		want = ""
		if badCursor || first < 1 || first > 100 {
			want = "BAD_USER_INPUT"
		}
		if got := resp.code("products"); got != want {
			t.Fatalf("products(%d, %q) answered code %q, want %q", first, after, got, want)
		}
		if want == "" {
			conn := unmarshal[struct {
				Edges []struct {
					Cursor string
					Node   struct{ ID string }
				}
				PageInfo struct {
					HasNextPage bool
					EndCursor   *string
				}
			}](t, resp.Data["products"])
			rest, err := e.db.Ent.Product.Query().Where(product.IDGT(afterID)).Count(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(conn.Edges) != min(first, rest) || conn.PageInfo.HasNextPage != (rest > first) {
				t.Fatalf("products(%d, %q): %d edges, hasNextPage %v; %d products follow the cursor",
					first, after, len(conn.Edges), conn.PageInfo.HasNextPage, rest)
			}
			prev := afterID
			for _, edge := range conn.Edges {
				id, err := strconv.Atoi(edge.Node.ID)
				if err != nil || id <= prev || edge.Cursor == "" {
					t.Fatalf("products(%d, %q): edge %+v out of order or without cursor", first, after, edge)
				}
				prev = id
			}
			if n := len(conn.Edges); (n == 0) != (conn.PageInfo.EndCursor == nil) || n > 0 && *conn.PageInfo.EndCursor != conn.Edges[n-1].Cursor {
				t.Fatalf("products(%d, %q): endCursor %v does not match the last edge", first, after, conn.PageInfo.EndCursor)
			}
		}

		if changed {
			e.audit(t)
		}
	})
}

func FuzzGraphQLQuery(f *testing.F) {
	for _, s := range []struct {
		query, variables string
		admin            bool
	}{
		{`{ products { edges { node { id name stockSellable } } } }`, ``, false},
		{`query($id: ID!) { product(id: $id) { id } }`, `{"id": "1"}`, false},
		{`mutation { createHold(productId: "1", qty: 2) { id status expiresAt order { id } } }`, ``, false},
		{`mutation { createProduct(input: {name: "x", priceCents: 1, stock: 1}) { id } }`, ``, true},
		{`{ __schema { types { name } } }`, ``, false},
		{`{ product(id: 1) { id `, ``, false},
	} {
		f.Add(s.query, s.variables, s.admin)
	}
	e := newGQLFuzzEnv(f)

	f.Fuzz(func(t *testing.T, query, variables string, admin bool) {
		if len(query) > 17<<10 || len(variables) > 2<<10 {
			t.Skip("bounded: larger documents only cost time")
		}
		req := map[string]any{"query": query}
		if variables != "" && json.Valid([]byte(variables)) {
			req["variables"] = json.RawMessage(variables)
		}
		body, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		token := ""
		if admin {
			token = fuzzAdminToken
		}
		before := e.snapshot(t)
		resp := e.post(t, body, token, fuzzQueryCodes)
		t.Logf("%s", resp.codes())
		switch resp.status {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnprocessableEntity:
		default:
			t.Fatalf("status %d for %s", resp.status, body)
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			e.audit(t)
		}
	})
}
