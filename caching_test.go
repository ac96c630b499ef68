package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"
)

// The contract's "Caching at the edge", through the real server: which
// answers a CDN may keep (Cache-Control, ETag, 304), and automatic
// persisted queries over GET. edge_test.go puts a real nginx in front.

const publicCache = "public, max-age=1, stale-while-revalidate=1" // READ_CACHE_MAX_AGE's default

// getAnswer is one GET /graphql answer.
type getAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a getAnswer) gql(t *testing.T) gqlResponse {
	t.Helper()
	var r gqlResponse
	if err := json.Unmarshal(a.body, &r); err != nil {
		t.Fatalf("status %d, body %q: %v", a.status, a.body, err)
	}
	return r
}

// gqlURL is the GET URL of a query: the same query and variables always
// make the same URL (encoding/json sorts map keys), as a CDN keys on it.
func gqlURL(base, query string, vars, ext map[string]any) string {
	q := url.Values{}
	if query != "" {
		q.Set("query", query)
	}
	for name, v := range map[string]map[string]any{"variables": vars, "extensions": ext} {
		if v != nil {
			b, _ := json.Marshal(v)
			q.Set(name, string(b))
		}
	}
	return base + "/graphql?" + q.Encode()
}

// get sends GET rawURL with the given headers.
func get(t *testing.T, rawURL string, header map[string]string) getAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return getAnswer{resp.StatusCode, resp.Header, body}
}

// postAnswer sends a POST /graphql and returns it as a getAnswer.
func postAnswer(t *testing.T, base string, header map[string]string, body any) getAnswer {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, base+"/graphql", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /graphql: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return getAnswer{resp.StatusCode, resp.Header, raw}
}

// TestCacheControlOverHTTP: only a GET query of public fields, without
// Authorization, answered without errors, is public; every other answer is
// no-store, and GET answers vary by Authorization.
func TestCacheControlOverHTTP(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	p := ts.createProduct(t, 10)
	pv := map[string]any{"p": p.ID}
	admin := map[string]string{"Authorization": "Bearer " + testAdminToken}
	for _, c := range []struct {
		name   string
		ans    func() getAnswer
		public bool
		code   string // the answer's error code, if any
	}{
		{"product", func() getAnswer {
			return get(t, gqlURL(ts.URL, `query($p: ID!) { product(id: $p) { id name stockSellable updatedAt } }`, pv, nil), nil)
		}, true, ""},
		{"products page", func() getAnswer {
			return get(t, gqlURL(ts.URL, `{ products(first: 5) { edges { cursor node { id stockSellable } } pageInfo { hasNextPage endCursor } } }`, nil, nil), nil)
		}, true, ""},
		{"no such product (null, no error)", func() getAnswer {
			return get(t, gqlURL(ts.URL, `{ product(id: "999999") { id } }`, nil, nil), nil)
		}, true, ""},
		{"product with its waiting room", func() getAnswer {
			return get(t, gqlURL(ts.URL, `query($p: ID!) { product(id: $p) { queueAdmitPerMinute queue { waiting admitted admitPerMinute } } }`, pv, nil), nil)
		}, true, ""},
		{"queueTicket", func() getAnswer {
			return get(t, gqlURL(ts.URL, `{ queueTicket(id: "01a250ca-01fc-742a-9b5b-a6853d84591a") { id position } }`, nil, nil), nil)
		}, false, ""},
		{"me", func() getAnswer { return get(t, gqlURL(ts.URL, `{ me { id } }`, nil, nil), nil) }, false, ""},
		{"hold", func() getAnswer { return get(t, gqlURL(ts.URL, `{ hold(id: "1") { id } }`, nil, nil), nil) }, false, ""},
		{"order", func() getAnswer { return get(t, gqlURL(ts.URL, `{ order(id: "1") { id } }`, nil, nil), nil) }, false, ""},
		{"serverTime", func() getAnswer { return get(t, gqlURL(ts.URL, `{ serverTime }`, nil, nil), nil) }, false, ""},
		{"product and serverTime", func() getAnswer {
			return get(t, gqlURL(ts.URL, `query($p: ID!) { product(id: $p) { stockSellable } serverTime }`, pv, nil), nil)
		}, false, ""},
		{"orders (operator)", func() getAnswer {
			return get(t, gqlURL(ts.URL, `{ orders { edges { node { id } } } }`, nil, nil), admin)
		}, false, ""},
		{"operatorActions (operator)", func() getAnswer {
			return get(t, gqlURL(ts.URL, `{ operatorActions { edges { node { id } } } }`, nil, nil), admin)
		}, false, ""},
		{"Authorization on a public query", func() getAnswer {
			return get(t, gqlURL(ts.URL, `query($p: ID!) { product(id: $p) { stockSellable } }`, pv, nil), admin)
		}, false, ""},
		{"an error", func() getAnswer {
			return get(t, gqlURL(ts.URL, `{ product(id: "not-an-id") { id } }`, nil, nil), nil)
		}, false, "BAD_USER_INPUT"},
		{"a parse error", func() getAnswer { return get(t, gqlURL(ts.URL, `{ product(id: `, nil, nil), nil) }, false, "GRAPHQL_PARSE_FAILED"},
		{"a mutation over GET", func() getAnswer {
			return get(t, gqlURL(ts.URL, `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, pv, nil), nil)
		}, false, ""},
		{"POST of a public query", func() getAnswer {
			return postAnswer(t, ts.URL, nil, map[string]any{"query": `query($p: ID!) { product(id: $p) { stockSellable } }`, "variables": pv})
		}, false, ""},
		{"POST of a mutation", func() getAnswer {
			return postAnswer(t, ts.URL, nil, map[string]any{"query": `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, "variables": pv})
		}, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := c.ans()
			cc, etag := a.header.Get("Cache-Control"), a.header.Get("ETag")
			if c.public {
				if a.status != http.StatusOK || cc != publicCache || etag == "" {
					t.Fatalf("status %d, Cache-Control %q, ETag %q; want 200, %q and an ETag\n%s", a.status, cc, etag, publicCache, a.body)
				}
				if errs := a.gql(t).Errors; len(errs) > 0 {
					t.Fatalf("a public answer with errors: %+v", errs)
				}
			} else if cc != "no-store" || etag != "" {
				t.Fatalf("Cache-Control %q, ETag %q; want no-store and no ETag\n%s", cc, etag, a.body)
			}
			if c.code != "" {
				if got := a.gql(t).code(); got != c.code {
					t.Fatalf("code %q, want %q", got, c.code)
				}
			}
			if vary := strings.Join(a.header.Values("Vary"), ","); strings.Contains(c.name, "POST") == strings.Contains(vary, "Authorization") {
				t.Errorf("Vary %q: a GET answer must vary by Authorization (a POST need not)", vary)
			}
		})
	}
}

// TestEventStreamIsNoStore: a subscription over SSE, whose transport would
// say no-cache, is no-store too, and tells nginx not to buffer it.
func TestEventStreamIsNoStore(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	p := ts.createProduct(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"query": `subscription($p: ID!) { productStock(id: $p) { stockSellable } }`, "variables": map[string]any{"p": p.ID}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q: not a stream", ct)
	}
	if cc, xab := resp.Header.Get("Cache-Control"), resp.Header.Get("X-Accel-Buffering"); cc != "no-store" || xab != "no" {
		t.Errorf("Cache-Control %q, X-Accel-Buffering %q; want no-store and no", cc, xab)
	}
}

// TestETagAndNotModified: a public answer's ETag is answered 304 with the
// same ETag and Cache-Control and no body; a change of stock changes it.
func TestETagAndNotModified(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	p := ts.createProduct(t, 10)
	u := gqlURL(ts.URL, `query($p: ID!) { product(id: $p) { stockSellable } }`, map[string]any{"p": p.ID}, nil)
	first := get(t, u, nil)
	etag := first.header.Get("ETag")
	if first.status != http.StatusOK || etag == "" {
		t.Fatalf("status %d, ETag %q", first.status, etag)
	}
	if again := get(t, u, nil); again.header.Get("ETag") != etag || !bytes.Equal(again.body, first.body) {
		t.Fatalf("the same answer twice: ETag %q then %q", etag, again.header.Get("ETag"))
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag} {
		nm := get(t, u, map[string]string{"If-None-Match": inm})
		if nm.status != http.StatusNotModified || len(nm.body) != 0 || nm.header.Get("ETag") != etag || nm.header.Get("Cache-Control") != publicCache {
			t.Fatalf("If-None-Match %s: status %d, ETag %q, Cache-Control %q, %d bytes; want 304, the same ETag and %q, no body",
				inm, nm.status, nm.header.Get("ETag"), nm.header.Get("Cache-Control"), len(nm.body), publicCache)
		}
	}
	ts.createHold(t, p.ID, 3)
	changed := get(t, u, map[string]string{"If-None-Match": etag})
	var out struct{ Product productJSON }
	changed.gql(t).must(t, &out)
	if changed.status != http.StatusOK || changed.header.Get("ETag") == etag || out.Product.StockSellable != 7 {
		t.Fatalf("after a hold: status %d, ETag %q (was %q), sellable %d; want 200, a new ETag, 7",
			changed.status, changed.header.Get("ETag"), etag, out.Product.StockSellable)
	}
}

// TestPersistedQueriesOverGET: a query registered by one request (POST or
// GET with the query and its hash) is then served by GET with the hash
// alone, at one short URL for every storefront, cacheable; an unknown hash
// is PERSISTED_QUERY_NOT_FOUND and never cacheable.
func TestPersistedQueriesOverGET(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	p := ts.createProduct(t, 10)
	vars := map[string]any{"p": p.ID}
	apq := func(q string) map[string]any {
		sum := sha256.Sum256([]byte(q))
		return map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	}
	for _, c := range []struct {
		name     string
		query    string
		register func(q string) getAnswer
	}{
		{"registered by POST", `query Stock($p: ID!) { product(id: $p) { stockSellable } }`, func(q string) getAnswer {
			return postAnswer(t, ts.URL, nil, map[string]any{"query": q, "variables": vars, "extensions": apq(q)})
		}},
		{"registered by GET", `query Page($p: ID!) { product(id: $p) { name priceCents stockSellable } }`, func(q string) getAnswer {
			return get(t, gqlURL(ts.URL, q, vars, apq(q)), nil)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hashOnly := gqlURL(ts.URL, "", vars, apq(c.query))
			if miss := get(t, hashOnly, nil); miss.gql(t).code() != "PERSISTED_QUERY_NOT_FOUND" || miss.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("before registering: code %q, Cache-Control %q; want PERSISTED_QUERY_NOT_FOUND, no-store",
					miss.gql(t).code(), miss.header.Get("Cache-Control"))
			}
			reg := c.register(c.query)
			if errs := reg.gql(t).Errors; reg.status != http.StatusOK || len(errs) > 0 {
				t.Fatalf("registering: status %d, %+v", reg.status, errs)
			}
			// Another storefront builds the same URL, and gets the answer.
			if other := gqlURL(ts.URL, "", map[string]any{"p": p.ID}, apq(c.query)); other != hashOnly {
				t.Fatalf("two storefronts, two URLs:\n%s\n%s", hashOnly, other)
			}
			a := get(t, hashOnly, nil)
			var out struct{ Product productJSON }
			a.gql(t).must(t, &out)
			if out.Product.StockSellable != 10 || a.header.Get("Cache-Control") != publicCache || a.header.Get("ETag") == "" {
				t.Fatalf("by hash: sellable %d, Cache-Control %q, ETag %q", out.Product.StockSellable, a.header.Get("Cache-Control"), a.header.Get("ETag"))
			}
			if len(hashOnly) > 300 {
				t.Errorf("the cached URL is %d bytes long", len(hashOnly))
			}
		})
	}
}

// TestReadCacheMaxAge: READ_CACHE_MAX_AGE sets max-age and
// stale-while-revalidate; 0 makes every answer no-store.
func TestReadCacheMaxAge(t *testing.T) {
	for _, c := range []struct{ env, want string }{
		{"0", "no-store"},
		{"5", "public, max-age=5, stale-while-revalidate=5"},
	} {
		t.Run(c.env, func(t *testing.T) {
			ts := startServer(t, dialect.SQLite, map[string]string{"READ_CACHE_MAX_AGE": c.env})
			a := get(t, gqlURL(ts.URL, `{ products { edges { node { id } } } }`, nil, nil), nil)
			if a.status != http.StatusOK || a.header.Get("Cache-Control") != c.want {
				t.Fatalf("status %d, Cache-Control %q; want 200, %q", a.status, a.header.Get("Cache-Control"), c.want)
			}
			if (c.want == "no-store") != (a.header.Get("ETag") == "") {
				t.Errorf("ETag %q with Cache-Control %q", a.header.Get("ETag"), c.want)
			}
		})
	}
}
