package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	coderws "github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// Live stock's streams, who is on them and their fair share (docs/api.md,
// "Live stock"), through the whole server.

// wsMsg is one graphql-transport-ws message.
type wsMsg struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// wsClient is a graphql-transport-ws connection read in the background
// (which also answers the server's control frames).
type wsClient struct {
	conn   *coderws.Conn
	msgs   chan wsMsg
	closed chan error // the read error that ended the connection
}

// dialWS opens a WebSocket to /graphql with extra upgrade headers; a
// refused upgrade returns the response and the error.
func dialWS(t *testing.T, ctx context.Context, url string, h http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	conn, resp, err := coderws.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/graphql",
		&coderws.DialOptions{Subprotocols: []string{"graphql-transport-ws"}, HTTPHeader: h})
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{conn: conn, msgs: make(chan wsMsg, 100), closed: make(chan error, 1)}
	go func() {
		defer close(c.msgs)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				c.closed <- err
				return
			}
			var m wsMsg
			if json.Unmarshal(b, &m) == nil && m.Type != "ping" && m.Type != "pong" {
				c.msgs <- m
			}
		}
	}()
	t.Cleanup(func() { _ = conn.CloseNow() })
	return c, resp, nil
}

// mustDialWS is dialWS that fails the test on a refusal.
func mustDialWS(t *testing.T, ctx context.Context, url string, h http.Header) *wsClient {
	t.Helper()
	c, resp, err := dialWS(t, ctx, url, h)
	if err != nil {
		t.Fatalf("WebSocket upgrade: %v (%v)", err, resp)
	}
	return c
}

func (c *wsClient) write(t *testing.T, m any) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := c.conn.Write(t.Context(), coderws.MessageText, b); err != nil {
		t.Fatalf("write %s: %v", b, err)
	}
}

// tryWrite is write for a message the server may have closed the
// connection before.
func (c *wsClient) tryWrite(t *testing.T, m any) {
	b, _ := json.Marshal(m)
	_ = c.conn.Write(t.Context(), coderws.MessageText, b)
}

// init sends connection_init with payload (nil: none) and returns the
// server's first answer.
func (c *wsClient) init(t *testing.T, payload map[string]any) wsMsg {
	t.Helper()
	m := map[string]any{"type": "connection_init"}
	if payload != nil {
		m["payload"] = payload
	}
	c.write(t, m)
	return c.next(t)
}

// mustInit is init that fails the test unless the server acknowledges.
func (c *wsClient) mustInit(t *testing.T, payload map[string]any) {
	t.Helper()
	if m := c.init(t, payload); m.Type != "connection_ack" {
		t.Fatalf("connection_init answered %+v, want connection_ack", m)
	}
}

// subscribe starts operation id (a subscription, query or mutation).
func (c *wsClient) subscribe(t *testing.T, id, query string, vars map[string]any) {
	t.Helper()
	c.write(t, map[string]any{"id": id, "type": "subscribe", "payload": map[string]any{"query": query, "variables": vars}})
}

// next is the next message but pings; a closed connection is a message of
// type "closed".
func (c *wsClient) next(t *testing.T) wsMsg {
	t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			return wsMsg{Type: "closed"}
		}
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no WebSocket message in 15 s")
	}
	return wsMsg{}
}

// closeCode waits (within a generous bound) for the server to close the
// connection, reading past other messages, and returns the close code.
func (c *wsClient) closeCode(t *testing.T, within time.Duration) coderws.StatusCode {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case <-c.msgs:
		case err := <-c.closed:
			var ce coderws.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("connection ended by %v, not a close frame", err)
			}
			return ce.Code
		case <-deadline:
			t.Fatalf("the connection is still open after %v", within)
		}
	}
}

// result runs one query or mutation over the connection and returns its
// answer (the payload of next, or of error as {"errors": ...}).
func (c *wsClient) result(t *testing.T, id, query string, vars map[string]any) gqlResponse {
	t.Helper()
	c.subscribe(t, id, query, vars)
	for {
		m := c.next(t)
		var r gqlResponse
		switch {
		case m.Type == "closed":
			t.Fatalf("connection closed before %s answered", id)
		case m.ID != id:
		case m.Type == "next":
			_ = json.Unmarshal(m.Payload, &r)
			return r
		case m.Type == "error":
			_ = json.Unmarshal(m.Payload, &r.Errors)
			return r
		}
	}
}

const holdMutation = `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`

func stockSubscription(productID string) string {
	return fmt.Sprintf(`subscription { productStock(id: "%s") { stockReserved } }`, productID)
}

func bearer(token string) map[string]any { return map[string]any{"Authorization": "Bearer " + token} }

// holdOwnedBy reports whether token's customer reads hold id as theirs.
func (ts *testServer) holdOwnedBy(t *testing.T, token, id string) bool {
	t.Helper()
	var read struct{ Hold *struct{ ID string } }
	ts.gql(t, token, `query($id: ID!) { hold(id: $id) { id } }`, map[string]any{"id": id}).must(t, &read)
	return read.Hold != nil
}

// TestSubscriptionTokenInConnectionParams: a browser's graphql-ws client
// puts the customer token in connectionParams; the socket then acts for
// that customer (a hold made over it is theirs), and the upgrade's header
// keeps working, the payload's token winning over it.
func TestSubscriptionTokenInConnectionParams(t *testing.T) {
	ts := customerServer(t)
	p := ts.createProduct(t, 10)
	alice, bob := customerToken(t, "alice", time.Hour), customerToken(t, "bob", time.Hour)

	node := startNodeClientAs(t, ts.URL, p.ID, "", alice)
	if got := reservedOf(t, node.next(t)); got != 0 {
		t.Fatalf("first event: reserved %d", got)
	}
	node.run(t, `{ me { id } }`, nil)
	node.run(t, holdMutation, map[string]any{"p": p.ID})
	var me, holdID string
	for me == "" || holdID == "" {
		m := node.next(t)
		if m["resultError"] != nil || m["closed"] != nil {
			t.Fatalf("over the graphql-ws connection: %v", m)
		}
		r, _ := m["result"].(map[string]any)
		if r["errors"] != nil {
			t.Fatalf("over the graphql-ws connection: %v", r)
		}
		data, _ := r["data"].(map[string]any)
		if who, ok := data["me"].(map[string]any); ok {
			me, _ = who["id"].(string)
		}
		if h, ok := data["createHold"].(map[string]any); ok {
			holdID, _ = h["id"].(string)
		}
	}
	if me != "alice" {
		t.Fatalf("me over the socket = %q, want alice", me)
	}
	if !ts.holdOwnedBy(t, alice, holdID) || ts.holdOwnedBy(t, bob, holdID) {
		t.Fatalf("the hold made over alice's socket is not alice's alone")
	}

	for _, tc := range []struct {
		name    string
		header  string         // the upgrade's Authorization token
		payload map[string]any // connection_init's
		want    string         // whose hold; "": refused UNAUTHENTICATED
	}{
		{"header only", alice, nil, "alice"},
		{"payload wins over the header", bob, bearer(alice), "alice"},
		{"lowercase key", "", map[string]any{"authorization": "bearer " + alice}, "alice"},
		{"neither", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("Authorization", "Bearer "+tc.header)
			}
			c := mustDialWS(t, t.Context(), ts.URL, h)
			c.mustInit(t, tc.payload)
			r := c.result(t, "1", holdMutation, map[string]any{"p": p.ID})
			if tc.want == "" {
				if r.code() != "UNAUTHENTICATED" {
					t.Fatalf("%s %+v, want UNAUTHENTICATED", r.Data, r.Errors)
				}
				return
			}
			var out struct{ CreateHold struct{ ID string } }
			r.must(t, &out)
			if !ts.holdOwnedBy(t, alice, out.CreateHold.ID) {
				t.Fatalf("hold %s is not %s's", out.CreateHold.ID, tc.want)
			}
		})
	}
}

// TestSubscriptionBadTokenInInit: a token in connection_init that fails
// closes the connection with 4403 (graphql-ws's client then stops, and
// says why), never taken as anonymous.
func TestSubscriptionBadTokenInInit(t *testing.T) {
	ts := customerServer(t)
	p := ts.createProduct(t, 10)
	for _, tc := range []struct {
		name    string
		payload map[string]any
	}{
		{"garbage", bearer("not.a.jwt")},
		{"expired", bearer(customerToken(t, "alice", -time.Minute))},
		{"wrong secret", bearer(func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
				Subject: "alice", Issuer: "https://login.shop.example", Audience: jwt.ClaimStrings{"flashsale"},
				ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
			}).SignedString([]byte("another-secret-of-at-least-32-bytes!!"))
			return s
		}())},
		{"not Bearer", map[string]any{"AUTHORIZATION": "Basic YWxpY2U6cHc="}},
		{"not a string", map[string]any{"Authorization": 42}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustDialWS(t, t.Context(), ts.URL, nil)
			c.write(t, map[string]any{"type": "connection_init", "payload": tc.payload})
			// Refused, the connection may be closed before this arrives.
			c.tryWrite(t, map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": stockSubscription(p.ID)}})
			if code := c.closeCode(t, 15*time.Second); code != 4403 {
				t.Fatalf("close code %d, want 4403", code)
			}
		})
	}
	t.Run("graphql-ws client", func(t *testing.T) {
		node := startNodeClientAs(t, ts.URL, p.ID, "", "not.a.jwt")
		for {
			m := node.next(t)
			if m["event"] != nil {
				t.Fatalf("an event for a bad token: %v", m)
			}
			if code, ok := m["closed"].(float64); ok {
				if code != 4403 {
					t.Fatalf("closed with %v, want 4403", m)
				}
				return
			}
		}
	})
}

// shortCustomerToken is good for about good more: its exp is already past
// by less than the server's 30 s leeway.
func shortCustomerToken(t *testing.T, sub string, good time.Duration) (token string, until time.Time) {
	t.Helper()
	exp := time.Now().Add(good - 30*time.Second).Truncate(time.Second) // exp is whole seconds
	return customerToken(t, sub, time.Until(exp)), exp.Add(30 * time.Second)
}

// TestSubscriptionTokenExpiry: a connection authenticated by a customer
// token (in connection_init or the upgrade's header) is closed with 4403
// when the token expires, and a mutation sent over it after that never
// acts for the customer.
func TestSubscriptionTokenExpiry(t *testing.T) {
	ts := customerServer(t)
	p := ts.createProduct(t, 10)

	t.Run("graphql-ws client", func(t *testing.T) {
		tok, _ := shortCustomerToken(t, "alice", 4*time.Second)
		node := startNodeClientAs(t, ts.URL, p.ID, "", tok)
		for {
			m := node.next(t)
			if code, ok := m["closed"].(float64); ok {
				if code != 4403 {
					t.Fatalf("closed with %v, want 4403 when the token expired", m)
				}
				return
			}
		}
	})
	for _, how := range []string{"connection_init", "header"} {
		t.Run(how, func(t *testing.T) {
			tok, until := shortCustomerToken(t, "carol", 4*time.Second)
			h, payload := http.Header{}, bearer(tok)
			if how == "header" {
				h.Set("Authorization", "Bearer "+tok)
				payload = nil
			}
			c := mustDialWS(t, t.Context(), ts.URL, h)
			c.mustInit(t, payload)
			c.subscribe(t, "1", stockSubscription(p.ID), nil)
			time.Sleep(time.Until(until))
			// The server may have closed already: then the write fails.
			c.tryWrite(t, map[string]any{"id": "2", "type": "subscribe", "payload": map[string]any{
				"query": holdMutation, "variables": map[string]any{"p": p.ID}}})
			if code := c.closeCode(t, 15*time.Second); code != 4403 {
				t.Fatalf("close code %d, want 4403 when the token expired", code)
			}
		})
	}
	var me struct {
		Me struct {
			Holds struct {
				Edges []struct{ Node struct{ ID string } }
			}
		}
	}
	ts.gql(t, customerToken(t, "carol", time.Hour), `{ me { holds { edges { node { id } } } } }`, nil).must(t, &me)
	if n := len(me.Me.Holds.Edges); n != 0 || ts.product(t, p.ID).StockReserved != 0 {
		t.Fatalf("mutations sent after the token expired made %d holds for the customer", n)
	}
}

// TestSubscriptionsPerConnection: beyond MAX_SUBSCRIPTIONS_PER_CONNECTION
// that subscription ends with RATE_LIMITED and the connection's others go
// on; a stopped one frees its slot, and other connections have their own.
func TestSubscriptionsPerConnection(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"MAX_SUBSCRIPTIONS_PER_CONNECTION": "2"})
	p := ts.createProduct(t, 10)
	c := mustDialWS(t, t.Context(), ts.URL, nil)
	c.mustInit(t, nil)
	// reserved[id] is the last stockReserved each subscription saw.
	reserved := map[string]string{}
	see := func(until func() bool) {
		t.Helper()
		for !until() {
			m := c.next(t)
			switch {
			case m.Type == "closed":
				t.Fatal("the connection closed")
			case m.Type == "next" && strings.Contains(string(m.Payload), "stockReserved"):
				var r struct {
					Data struct{ ProductStock struct{ StockReserved int } }
				}
				_ = json.Unmarshal(m.Payload, &r)
				reserved[m.ID] = fmt.Sprint(r.Data.ProductStock.StockReserved)
			case m.Type == "error" && strings.Contains(string(m.Payload), "RATE_LIMITED"):
				reserved[m.ID] = "RATE_LIMITED"
			default:
				t.Fatalf("unexpected %+v", m)
			}
		}
	}
	// One after the other: subscriptions sent at once start concurrently,
	// and which of them is beyond the cap is then a race.
	for n, id := range []string{"1", "2", "3"} {
		c.subscribe(t, id, stockSubscription(p.ID), nil)
		see(func() bool { return len(reserved) == n+1 })
	}
	if reserved["1"] != "0" || reserved["2"] != "0" || reserved["3"] != "RATE_LIMITED" {
		t.Fatalf("three subscriptions with a cap of 2: %v, want the third RATE_LIMITED", reserved)
	}
	ts.createHold(t, p.ID, 1)
	see(func() bool { return reserved["1"] == "1" && reserved["2"] == "1" })

	other := mustDialWS(t, t.Context(), ts.URL, nil)
	other.mustInit(t, nil)
	if r := other.result(t, "1", stockSubscription(p.ID), nil); r.code() != "" {
		t.Fatalf("another connection: %+v", r.Errors)
	}

	// Stopping one frees its slot (once the server has ended it).
	c.write(t, map[string]any{"id": "1", "type": "complete"})
	deadline := time.Now().Add(10 * time.Second)
	for id := 4; ; id++ {
		r := c.result(t, fmt.Sprint(id), stockSubscription(p.ID), nil)
		if r.code() == "" {
			break
		}
		if r.code() != "RATE_LIMITED" || time.Now().After(deadline) {
			t.Fatalf("a subscription after one was stopped: %+v", r.Errors)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openSSE starts a subscription over Server-Sent Events from a client that
// says it is behind the proxy as xff; a refusal leaves the body to read.
func openSSE(t *testing.T, ctx context.Context, url, query, xff string) *http.Response {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/graphql", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Forwarded-For", xff)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestSubscriptionStreamsPerIP: MAX_STREAMS_PER_IP counts a client's
// WebSocket connections and SSE streams together (an IPv6 client by its
// /64, behind TRUSTED_PROXIES by the forwarded IP); beyond, 429 with
// Retry-After and RATE_LIMITED; a slot frees when a stream closes.
func TestSubscriptionStreamsPerIP(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"MAX_STREAMS_PER_IP": "2", "TRUSTED_PROXIES": "127.0.0.1/32"})
	p := ts.createProduct(t, 10)
	query := stockSubscription(p.ID)
	open := func(t *testing.T, ctx context.Context, transport, ip string) (status int, resp *http.Response) {
		t.Helper()
		if transport == "sse" {
			resp := openSSE(t, ctx, ts.URL, query, ip)
			return resp.StatusCode, resp
		}
		c, resp, err := dialWS(t, ctx, ts.URL, http.Header{"X-Forwarded-For": {ip}})
		if err != nil {
			if resp == nil {
				t.Fatalf("WebSocket upgrade: %v", err)
			}
			return resp.StatusCode, resp
		}
		c.mustInit(t, nil) // else closed after 3 s, freeing its slot
		return http.StatusSwitchingProtocols, resp
	}
	refused := func(status int, resp *http.Response) string {
		if status != http.StatusTooManyRequests {
			return fmt.Sprintf("%d, want 429", status)
		}
		var r gqlResponse
		_ = json.NewDecoder(resp.Body).Decode(&r)
		if resp.Header.Get("Retry-After") == "" || r.code() != "RATE_LIMITED" {
			return fmt.Sprintf("429 with Retry-After %q, %+v; want a Retry-After and RATE_LIMITED", resp.Header.Get("Retry-After"), r.Errors)
		}
		return ""
	}
	sseCtx, closeSSE := context.WithCancel(t.Context())
	for _, tc := range []struct {
		transport, ip string
		refused       bool
	}{
		{"ws", "203.0.113.7", false},
		{"sse", "203.0.113.7", false},
		{"ws", "203.0.113.7", true},
		{"sse", "203.0.113.7", true},
		{"ws", "203.0.113.8", false}, // another client has its own
		{"ws", "2001:db8::1", false},
		{"sse", "2001:db8::2", false},
		{"ws", "2001:db8::3", true}, // the same /64
		{"sse", "2001:db8:0:1::1", false},
	} {
		ctx := t.Context()
		if tc.transport == "sse" && tc.ip == "203.0.113.7" {
			ctx = sseCtx
		}
		status, resp := open(t, ctx, tc.transport, tc.ip)
		if tc.refused {
			if msg := refused(status, resp); msg != "" {
				t.Fatalf("%s from %s beyond the cap: %s", tc.transport, tc.ip, msg)
			}
		} else if status != http.StatusOK && status != http.StatusSwitchingProtocols {
			t.Fatalf("%s from %s: %d", tc.transport, tc.ip, status)
		}
	}

	// The SSE stream ends; its slot comes back once the server notices.
	closeSSE()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, resp := open(t, t.Context(), "ws", "203.0.113.7")
		if status == http.StatusSwitchingProtocols {
			break
		}
		if msg := refused(status, resp); msg != "" || time.Now().After(deadline) {
			t.Fatalf("after a stream closed: %d %s", status, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSubscriptionReadTimeout: a request that asks for a stream keeps the
// server's read timeout (READ_TIMEOUT) until its body is read: one whose
// body never completes is cut. Streams that started outlive it.
func TestSubscriptionReadTimeout(t *testing.T) {
	ts := startServer(t, dialect.MySQL, map[string]string{"READ_TIMEOUT": "1s"})
	p := ts.createProduct(t, 10)
	for _, tc := range []struct{ name, headers string }{
		{"SSE", "Accept: text/event-stream\r\n"},
		{"POST with an Upgrade header", "Connection: Upgrade\r\nUpgrade: websocket\r\n"},
		{"plain POST", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: 200\r\n\r\n{\"query\":", tc.headers)
			_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				t.Fatal("a request whose body never completes is still open after 20 s")
			case err == nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
				t.Fatal("a stream started before its body was read")
			}
		})
	}

	// Streams that started are not cut: both still deliver after twice
	// READ_TIMEOUT.
	ch, _ := sseEvents(t, t.Context(), ts.URL, stockSubscription(p.ID))
	nextSSE(t, ch)
	c := mustDialWS(t, t.Context(), ts.URL, nil)
	c.mustInit(t, nil)
	if r := c.result(t, "1", stockSubscription(p.ID), nil); r.code() != "" {
		t.Fatalf("WebSocket subscription: %+v", r.Errors)
	}
	time.Sleep(2 * time.Second)
	ts.createHold(t, p.ID, 1)
	if d := nextSSE(t, ch); !strings.Contains(d, `"stockReserved":1`) {
		t.Fatalf("SSE after the read timeout: %s", d)
	}
	if m := c.next(t); m.Type != "next" || !strings.Contains(string(m.Payload), `"stockReserved":1`) {
		t.Fatalf("WebSocket after the read timeout: %+v", m)
	}
}
