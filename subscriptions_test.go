package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	coderws "github.com/coder/websocket"
)

// nodeClient is the graphql-ws npm client (e2e/graphql-ws) subscribed to a
// product through a server, run by Node as a storefront would.
type nodeClient struct {
	events chan map[string]any
	cmd    *exec.Cmd
	stdin  io.WriteCloser // a GraphQL request per line, run over the same connection
}

func startNodeClient(t *testing.T, serverURL, productID, origin string) *nodeClient {
	t.Helper()
	return startNodeClientAs(t, serverURL, productID, origin, "")
}

// startNodeClientAs is startNodeClient with a token in connection_init
// (graphql-ws's connectionParams), as a browser storefront sends it.
func startNodeClientAs(t *testing.T, serverURL, productID, origin, token string) *nodeClient {
	t.Helper()
	if _, err := os.Stat("e2e/graphql-ws/node_modules/graphql-ws"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the graphql-ws client is not installed: run npm ci in e2e/graphql-ws (.ci/run does)")
		}
		t.Skip("skipped: run `npm ci` in e2e/graphql-ws to test with the graphql-ws client")
	}
	args := []string{"e2e/graphql-ws/subscribe.mjs", "ws" + strings.TrimPrefix(serverURL, "http") + "/graphql", productID}
	if origin != "" || token != "" {
		args = append(args, origin, token)
	}
	cmd := exec.Command("node", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("node: %v", err)
	}
	c := &nodeClient{events: make(chan map[string]any, 100), cmd: cmd, stdin: stdin}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				c.events <- m
			}
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return c
}

// next returns the client's next line, failing the test if none comes.
func (c *nodeClient) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m, ok := <-c.events:
		if !ok {
			t.Fatal("the graphql-ws client exited")
		}
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no message from the graphql-ws client in 15 s")
	}
	return nil
}

// run sends a query or mutation over the client's connection; its answer
// comes as {"result": ...} lines.
func (c *nodeClient) run(t *testing.T, query string, vars map[string]any) {
	t.Helper()
	line, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	if _, err := c.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("to the graphql-ws client: %v", err)
	}
}

// reservedOf reads stockReserved of a productStock event line.
func reservedOf(t *testing.T, m map[string]any) int {
	t.Helper()
	ev, _ := m["event"].(map[string]any)
	data, _ := ev["data"].(map[string]any)
	ps, _ := data["productStock"].(map[string]any)
	r, ok := ps["stockReserved"].(float64)
	if !ok {
		t.Fatalf("not a productStock event: %v", m)
	}
	return int(r)
}

// TestSubscriptionAcrossServers: a storefront subscribed through one server
// process sees a hold made through another.
func TestSubscriptionAcrossServers(t *testing.T) {
	a := startServer(t, dialect.MySQL, nil)
	b := startServer(t, dialect.MySQL, map[string]string{"DATABASE_URL": a.DSN})
	p := a.createProduct(t, 10)
	c := startNodeClient(t, a.URL, p.ID, "")
	if got := reservedOf(t, c.next(t)); got != 0 {
		t.Fatalf("first event: reserved %d", got)
	}
	held := time.Now()
	b.createHold(t, p.ID, 2)
	for {
		m := c.next(t)
		if reservedOf(t, m) == 2 {
			t.Logf("a hold made through the other server arrived after %v", time.Since(held).Round(time.Millisecond))
			break
		}
	}

	// A browser on a foreign origin may not subscribe; the server's own may.
	foreign := startNodeClient(t, a.URL, p.ID, "https://evil.example")
	if m := foreign.next(t); m["closed"] == nil {
		t.Fatalf("foreign Origin: %v, want the connection refused", m)
	}
	own := startNodeClient(t, a.URL, p.ID, a.URL)
	if got := reservedOf(t, own.next(t)); got != 2 {
		t.Fatalf("own origin: reserved %d", got)
	}
}

// sseEvents reads a Server-Sent Events subscription: each "data:" payload.
func sseEvents(t *testing.T, ctx context.Context, url, query string) (<-chan string, *http.Response) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/graphql", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				ch <- d
			}
		}
	}()
	return ch, resp
}

func nextSSE(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatal("the SSE stream ended")
		}
		return d
	case <-time.After(15 * time.Second):
		t.Fatal("no SSE event in 15 s")
	}
	return ""
}

// TestSubscriptionSSE: the same subscription over Server-Sent Events,
// coalesced to one event per STOCK_PUSH_INTERVAL with the latest numbers.
func TestSubscriptionSSE(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"STOCK_PUSH_INTERVAL": "400ms"})
	p := ts.createProduct(t, 100)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, resp := sseEvents(t, ctx, ts.URL, fmt.Sprintf(`subscription { productStock(id: "%s") { stockReserved } }`, p.ID))
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	if d := nextSSE(t, ch); !strings.Contains(d, `"stockReserved":0`) {
		t.Fatalf("first event %s", d)
	}
	// Twenty holds one after the other, much faster than the interval.
	for range 20 {
		ts.createHold(t, p.ID, 1)
	}
	var got []string
	for {
		d := nextSSE(t, ch)
		got = append(got, d)
		if strings.Contains(d, `"stockReserved":20`) {
			break
		}
	}
	if len(got) >= 20 {
		t.Fatalf("%d events for 20 holds: not coalesced: %v", len(got), got)
	}
	t.Logf("20 holds arrived as %d events", len(got))

	// An unknown product ends the stream with NOT_FOUND.
	bad, _ := sseEvents(t, ctx, ts.URL, `subscription { productStock(id: "424242") { id } }`)
	if d := nextSSE(t, bad); !strings.Contains(d, "NOT_FOUND") {
		t.Fatalf("unknown product: %s", d)
	}
}

// wsDial opens a graphql-transport-ws connection to the server.
func wsDial(t *testing.T, ctx context.Context, url string) *coderws.Conn {
	t.Helper()
	conn, _, err := coderws.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/graphql",
		&coderws.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestSubscriptionBounds: connection_init must come within 3 s,
// MAX_SUBSCRIPTIONS counts WebSocket and SSE together, and on shutdown a
// WebSocket is closed with 1001 and an SSE stream ended.
func TestSubscriptionBounds(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"MAX_SUBSCRIPTIONS": "1"})
	p := ts.createProduct(t, 5)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	t.Run("no connection_init", func(t *testing.T) {
		conn := wsDial(t, ctx, ts.URL)
		defer conn.CloseNow()
		start := time.Now()
		_, _, err := conn.Read(ctx)
		var ce coderws.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read: %v, want a close", err)
		}
		t.Logf("closed after %v: %d %q", time.Since(start).Round(10*time.Millisecond), ce.Code, ce.Reason)
		if ce.Code != 4408 {
			t.Fatalf("close code %d, want graphql-transport-ws's 4408 (connection initialisation timeout)", ce.Code)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("closed only after %v", d)
		}
	})

	// One subscription over SSE takes the only slot; one more over
	// WebSocket is RATE_LIMITED.
	sctx, scancel := context.WithCancel(ctx)
	ch, _ := sseEvents(t, sctx, ts.URL, fmt.Sprintf(`subscription { productStock(id: "%s") { stockReserved } }`, p.ID))
	nextSSE(t, ch)
	conn := wsDial(t, ctx, ts.URL)
	defer conn.CloseNow()
	for _, m := range []string{`{"type":"connection_init"}`,
		fmt.Sprintf(`{"id":"1","type":"subscribe","payload":{"query":"subscription { productStock(id: \"%s\") { stockReserved } }"}}`, p.ID)} {
		if err := conn.Write(ctx, coderws.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var msgs []string
	for len(msgs) < 2 {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, string(b))
	}
	if !strings.Contains(msgs[1], "RATE_LIMITED") {
		t.Fatalf("a second subscription with MAX_SUBSCRIPTIONS=1: %v", msgs)
	}
	// The slot comes back when the SSE client goes. The server notices the
	// disconnect a moment after the client sees its stream end, so a
	// subscribe sent in between may still be RATE_LIMITED: try again then.
	scancel()
	for range ch {
	}
	deadline := time.Now().Add(10 * time.Second)
	for id := 2; ; id++ {
		sub := fmt.Sprintf(`{"id":"%d","type":"subscribe","payload":{"query":"subscription { productStock(id: \"%s\") { stockReserved } }"}}`, id, p.ID)
		if err := conn.Write(ctx, coderws.MessageText, []byte(sub)); err != nil {
			t.Fatal(err)
		}
		got, limited := "", false
		for got == "" && !limited {
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m := string(b)
			switch {
			case !strings.Contains(m, fmt.Sprintf(`"id":"%d"`, id)): // a ping
			case strings.Contains(m, "RATE_LIMITED"):
				limited = true
			default:
				got = m
			}
			if time.Now().After(deadline) {
				t.Fatalf("no event for a subscription after the first ended; last message %s", m)
			}
		}
		if limited {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !strings.Contains(got, "stockReserved") {
			t.Fatalf("subscription after the first ended: %s", got)
		}
		break
	}

	// Shutdown: the open WebSocket is closed with 1001, going away.
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()
	ts.stop()
	select {
	case err := <-closed:
		var ce coderws.CloseError
		if !errors.As(err, &ce) || ce.Code != coderws.StatusGoingAway {
			t.Fatalf("on shutdown the WebSocket ended with %v, want close code 1001", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the WebSocket stayed open after shutdown")
	}
}

// TestRateLimit: a flood from one client gets 429s with Retry-After and
// RATE_LIMITED, and changes nothing, while other clients keep being served;
// queries are not limited.
func TestRateLimit(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"RATE_LIMIT": "3/m", "TRUSTED_PROXIES": "127.0.0.1/32"})
	p := ts.createProduct(t, 100)
	hold := func(clientIP string) (int, gqlResponse, http.Header) {
		body, _ := json.Marshal(map[string]any{"query": `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, "variables": map[string]any{"p": p.ID}})
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/graphql", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", clientIP)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r gqlResponse
		_ = json.NewDecoder(resp.Body).Decode(&r)
		return resp.StatusCode, r, resp.Header
	}
	var mu sync.Mutex
	limited := 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			status, r, h := hold("203.0.113.7")
			switch {
			case status == http.StatusOK && r.code() == "":
			case status == http.StatusTooManyRequests && r.code() == "RATE_LIMITED" && h.Get("Retry-After") != "" && r.Errors[0].Extensions["retryAfter"] != nil:
				mu.Lock()
				limited++
				mu.Unlock()
			default:
				t.Errorf("flooding client: %d %+v %v", status, r.Errors, h)
			}
		})
	}
	wg.Wait()
	if limited != 17 {
		t.Fatalf("%d of 20 mutations refused, want 17 (3/m)", limited)
	}
	if got := ts.product(t, p.ID); got.StockReserved != 3 {
		t.Fatalf("reserved %d after 3 admitted holds: refused ones changed something", got.StockReserved)
	}
	if status, r, _ := hold("203.0.113.8"); status != http.StatusOK || r.code() != "" {
		t.Fatalf("another client during the flood: %d %+v", status, r.Errors)
	}
	for range 10 { // queries are not limited
		ts.product(t, p.ID)
	}
	if got := ts.product(t, p.ID); got.StockReserved != 4 {
		t.Fatalf("reserved %d", got.StockReserved)
	}
}
