package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	coderws "github.com/coder/websocket"

	"flashsale/deploy/nginx"
)

// TestBehindNginx runs the server behind a real nginx with the repository's
// configuration (deploy/nginx/flashsale.conf) and checks, through it, what
// the contract promises a shop that puts a cache in front: public reads are
// served from the cache, a stampede asks the server once, nothing private
// or failed is kept, a caller with Authorization neither gets nor leaves a
// cached answer, stock is at most 2N+1 s stale, and subscriptions pass.
func TestBehindNginx(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil) // READ_CACHE_MAX_AGE: 1
	px := startNginx(t, ts)
	p := ts.createProduct(t, 100)
	stockURL := func(alias string) string {
		return gqlURL(px.URL, `query($p: ID!) { `+alias+`product(id: $p) { id stockSellable } }`, map[string]any{"p": p.ID}, nil)
	}
	admin := map[string]string{"Authorization": "Bearer " + testAdminToken}

	t.Run("a public read is cached", func(t *testing.T) {
		u := stockURL("")
		first, second := get(t, u, nil), get(t, u, nil)
		assertCache(t, first, "MISS", publicCache)
		assertCache(t, second, "HIT", publicCache)
		if string(first.body) != string(second.body) || second.header.Get("ETag") != first.header.Get("ETag") {
			t.Fatalf("the cached answer differs:\n%s\n%s", first.body, second.body)
		}
		nm := get(t, u, map[string]string{"If-None-Match": first.header.Get("ETag")})
		if nm.status != http.StatusNotModified || len(nm.body) != 0 {
			t.Fatalf("If-None-Match through nginx: status %d, %d bytes; want 304, none", nm.status, len(nm.body))
		}
		if n := upstreamRequests(t, px, u); n != 1 {
			t.Fatalf("the server was asked %d times, want 1", n)
		}
	})
	t.Run("Authorization neither gets nor leaves a cached answer", func(t *testing.T) {
		assertCache(t, get(t, stockURL(""), admin), "BYPASS", "no-store") // cached above
		u := stockURL("a: ")
		assertCache(t, get(t, u, admin), "BYPASS", "no-store")
		assertCache(t, get(t, u, nil), "MISS", publicCache)
	})
	t.Run("private fields, errors and POSTs are never kept", func(t *testing.T) {
		for _, q := range []string{`{ serverTime }`, `{ me { id } }`, `{ product(id: "not-an-id") { id } }`,
			`query($p: ID!) { product(id: $p) { stockSellable } serverTime }`} {
			u := gqlURL(px.URL, q, map[string]any{"p": p.ID}, nil)
			for range 2 {
				assertCache(t, get(t, u, nil), "MISS", "no-store")
			}
		}
		body := map[string]any{"query": `query($p: ID!) { product(id: $p) { stockSellable } }`, "variables": map[string]any{"p": p.ID}}
		for range 2 {
			a := postAnswer(t, px.URL, nil, body)
			if a.header.Get("Cache-Control") != "no-store" || a.header.Get("X-Cache-Status") == "HIT" {
				t.Fatalf("POST: Cache-Control %q, X-Cache-Status %q", a.header.Get("Cache-Control"), a.header.Get("X-Cache-Status"))
			}
		}
	})
	t.Run("a stampede of misses asks the server once", func(t *testing.T) {
		u := stockURL("stampede: ")
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if a := get(t, u, nil); a.status != http.StatusOK {
					t.Errorf("status %d", a.status)
				}
			})
		}
		wg.Wait()
		if n := upstreamRequests(t, px, u); n != 1 {
			t.Fatalf("50 viewers at once: the server was asked %d times, want 1", n)
		}
	})
	t.Run("stock seen through the cache is at most 2N+1 s old", func(t *testing.T) {
		testStaleness(t, ts, px, p.ID)
	})
	t.Run("persisted queries by hash are cached", func(t *testing.T) {
		q := `query Edge($p: ID!) { product(id: $p) { name stockSellable } }`
		sum := sha256.Sum256([]byte(q))
		ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
		vars := map[string]any{"p": p.ID}
		u := gqlURL(px.URL, "", vars, ext)
		assertCache(t, get(t, u, nil), "MISS", "no-store") // PersistedQueryNotFound
		postAnswer(t, px.URL, nil, map[string]any{"query": q, "variables": vars, "extensions": ext})
		assertCache(t, get(t, u, nil), "MISS", publicCache)
		assertCache(t, get(t, u, nil), "HIT", publicCache)
	})
	t.Run("subscriptions pass through", func(t *testing.T) {
		testSubscriptionsThrough(t, ts, px, p.ID)
	})
}

// startNginx puts nginx with the repository's configuration in front of
// ts, for the test's lifetime; without nginx it skips, or fails under CI.
func startNginx(t *testing.T, ts *testServer) *nginx.Proxy {
	t.Helper()
	if _, err := nginx.Binary(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI is set, so a missing nginx fails instead of skipping)", err)
		}
		t.Skipf("%v", err)
	}
	u, _ := url.Parse(ts.URL)
	px, err := nginx.Start(context.Background(), nginx.Options{Upstream: u.Host, Dir: t.TempDir(), UpstreamLog: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		px.Stop()
		if t.Failed() {
			t.Logf("nginx's log:\n%s", px.Log())
		}
	})
	return px
}

// assertCache checks where an answer came from and what it said a cache
// may do with it.
func assertCache(t *testing.T, a getAnswer, status, cacheControl string) {
	t.Helper()
	if got, cc := a.header.Get("X-Cache-Status"), a.header.Get("Cache-Control"); got != status || cc != cacheControl {
		t.Fatalf("X-Cache-Status %q, Cache-Control %q; want %q, %q\n%s", got, cc, status, cacheControl, a.body)
	}
}

// upstreamRequests counts the requests for rawURL that nginx sent the
// server (its log of them, deploy/nginx's UpstreamLog).
func upstreamRequests(t *testing.T, px *nginx.Proxy, rawURL string) int {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(px.UpstreamLogPath())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 4 && f[3] == u.RequestURI() {
			n++
		}
	}
	return n
}

// testStaleness changes the stock under a cached answer and polls it
// through nginx: the new stock must show within 2N+1 s (N = 1), and once
// it has, the old never again; then changes it and waits longer than that
// before one read, which must show it.
func testStaleness(t *testing.T, ts *testServer, px *nginx.Proxy, productID string) {
	u := gqlURL(px.URL, `query($p: ID!) { stale: product(id: $p) { stockSellable } }`, map[string]any{"p": productID}, nil)
	sellable := func() int {
		var out struct{ Stale productJSON }
		get(t, u, nil).gql(t).must(t, &out)
		return out.Stale.StockSellable
	}
	before := sellable() // cached now
	ts.createHold(t, productID, 1)
	changed := time.Now()
	const bound = 3 * time.Second // 2 × READ_CACHE_MAX_AGE + 1
	var seenAt time.Duration
	for time.Since(changed) < bound+2*time.Second {
		switch s := sellable(); {
		case s == before-1 && seenAt == 0:
			seenAt = time.Since(changed)
		case s == before && seenAt != 0:
			t.Fatalf("the old stock came back %s after the new one was seen", time.Since(changed))
		case s != before && s != before-1:
			t.Fatalf("sellable %d, want %d or %d", s, before, before-1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if seenAt == 0 || seenAt > bound {
		t.Fatalf("the new stock showed after %s (0: never), want within %s", seenAt, bound)
	}
	t.Logf("the new stock showed through nginx %s after the hold", seenAt.Round(time.Millisecond))
	// After a quiet spell longer than the bound, the first viewer gets the
	// stock now, not the answer that expired meanwhile.
	ts.createHold(t, productID, 1)
	time.Sleep(bound + 500*time.Millisecond)
	if s := sellable(); s != before-2 {
		t.Fatalf("after a quiet spell: sellable %d, want %d (an expired answer was served)", s, before-2)
	}
}

// testSubscriptionsThrough subscribes through nginx over WebSocket and SSE:
// each hears the product now and again after a hold, so neither is cached
// nor held back in nginx's buffers.
func testSubscriptionsThrough(t *testing.T, ts *testServer, px *nginx.Proxy, productID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	query := map[string]any{"query": `subscription($p: ID!) { productStock(id: $p) { stockSellable } }`, "variables": map[string]any{"p": productID}}

	conn, _, err := coderws.Dial(ctx, "ws"+strings.TrimPrefix(px.URL, "http")+"/graphql",
		&coderws.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatalf("WebSocket through nginx: %v", err)
	}
	defer conn.CloseNow()
	wsSend := func(m map[string]any) {
		b, _ := json.Marshal(m)
		if err := conn.Write(ctx, coderws.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	wsNext := func(want string) {
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("WebSocket: waiting for %s: %v", want, err)
			}
			var m struct{ Type string }
			if json.Unmarshal(b, &m) == nil && m.Type == want {
				return
			}
		}
	}
	wsSend(map[string]any{"type": "connection_init"})
	wsNext("connection_ack")
	wsSend(map[string]any{"id": "1", "type": "subscribe", "payload": query})
	wsNext("next")

	body, _ := json.Marshal(query)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, px.URL+"/graphql", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("SSE through nginx: %v", err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	sseNext := func() {
		for events.Scan() {
			if strings.HasPrefix(events.Text(), "event: next") {
				return
			}
		}
		t.Fatalf("SSE: the stream ended before an event: %v", events.Err())
	}
	sseNext()

	ts.createHold(t, productID, 1)
	wsNext("next")
	sseNext()
}
