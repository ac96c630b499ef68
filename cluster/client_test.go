package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"flashsale/signing"
)

// Outcomes of a request, besides GraphQL's extensions.code and "HTTP <status>".
const (
	outOK       = "ok"
	outRefused  = "refused"        // connection refused: the server is down
	outReset    = "reset"          // connection reset by the server
	outEOF      = "EOF"            // the server closed the connection without answering
	outTimeout  = "client timeout" // no answer within the client's timeout: a hang
	outTransErr = "transport error"
)

// result is one HTTP request the test made.
type result struct {
	op      string // createHold, createOrder, webhook, ...
	server  int
	start   time.Time
	took    time.Duration
	outcome string
	note    string // what came back, for examples in failure messages
}

func (r result) end() time.Time { return r.start.Add(r.took) }

func (r result) String() string {
	return fmt.Sprintf("%s on server %d at %s took %s: %s %s", r.op, r.server,
		r.start.Format("15:04:05.000"), r.took.Round(time.Millisecond), r.outcome, r.note)
}

// recorder keeps every request's result.
type recorder struct {
	mu      sync.Mutex
	results []result
}

func (r *recorder) add(res result) {
	r.mu.Lock()
	r.results = append(r.results, res)
	r.mu.Unlock()
}

func (r *recorder) all() []result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]result(nil), r.results...)
}

// client talks to the cluster: round robin over the servers, moving on to
// the next one when a server refuses the connection (the request never
// reached it, so that is safe even for mutations).
type client struct {
	servers []*server
	http    *http.Client
	next    atomic.Uint64
	rec     *recorder
	signer  *signing.Signer
	token   string // ADMIN_TOKEN
}

func newClient(servers []*server, secret, adminToken string) (*client, error) {
	signer, err := signing.NewSigner(secret)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		// Below the server's ReadHeaderTimeout (5 s), after which it closes
		// a connection that has not sent a request. The Transport keeps
		// connections it dialed for a request that another one then served;
		// a POST sent on such a fresh connection just as the server hangs
		// up fails with EOF and is not retried: the test's artefact, not
		// the server's fault.
		IdleConnTimeout: 3 * time.Second,
	}
	return &client{
		servers: servers,
		// Nothing may hang forever: 10 s is five times REQUEST_TIMEOUT.
		http:   &http.Client{Transport: tr, Timeout: 10 * time.Second},
		rec:    &recorder{},
		signer: signer,
		token:  adminToken,
	}, nil
}

func (c *client) close() { c.http.CloseIdleConnections() }

// reply is the answer to a request after any moves to other servers.
type reply struct {
	server  int // the server that answered (the last one tried)
	at      time.Time
	status  int // 0: no answer (transport error)
	body    []byte
	outcome string
}

// post sends body to path on server first (-1: the next in round robin),
// trying the others in turn while servers refuse connections. header is
// called before each attempt (webhook signatures carry a timestamp).
// Every attempt is recorded under op, with classify naming the outcome of
// an answered one.
func (c *client) post(op, path string, first int, body []byte, header func(http.Header),
	classify func(status int, body []byte) (outcome, note string)) reply {
	n := len(c.servers)
	if first < 0 {
		first = int(c.next.Add(1) % uint64(n))
	}
	var rep reply
	for i := range n {
		idx := (first + i) % n
		req, err := http.NewRequest(http.MethodPost, c.servers[idx].url+path, bytes.NewReader(body))
		if err != nil {
			panic(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if header != nil {
			header(req.Header)
		}
		start := time.Now()
		resp, err := c.http.Do(req)
		var note string
		rep = reply{}
		if err == nil {
			rep.status = resp.StatusCode
			rep.body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			rep.outcome, note = transportOutcome(err), err.Error()
		} else {
			rep.outcome, note = classify(rep.status, rep.body)
		}
		rep.server, rep.at = idx, time.Now()
		c.rec.add(result{op: op, server: idx, start: start, took: rep.at.Sub(start), outcome: rep.outcome, note: note})
		if rep.outcome != outRefused {
			break
		}
	}
	return rep
}

func transportOutcome(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return outRefused
	case errors.Is(err, syscall.ECONNRESET):
		return outReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return outEOF
	case errors.As(err, &ne) && ne.Timeout():
		return outTimeout
	}
	return outTransErr
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	} `json:"errors"`
}

// classifyGraphQL names a GraphQL answer by its first error's
// extensions.code ("ok" without errors), adding the HTTP status when it is
// a 5xx; an answer that is not GraphQL is "HTTP <status>".
func classifyGraphQL(status int, body []byte) (string, string) {
	var r gqlResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Sprintf("HTTP %d", status), clip(body)
	}
	if r.Data == nil && r.Errors == nil {
		return fmt.Sprintf("HTTP %d without data or errors", status), clip(body)
	}
	out := outOK
	if len(r.Errors) > 0 {
		out = r.Errors[0].Extensions.Code
		if out == "" {
			out = "error without code"
		}
	} else if status != http.StatusOK {
		out = fmt.Sprintf("HTTP %d", status)
	}
	if status == http.StatusInternalServerError {
		out += " (HTTP 500)"
	}
	if out == outOK {
		return out, ""
	}
	return out, clip(body)
}

// gql runs one GraphQL operation and decodes its data into v when it succeeds.
func (c *client) gql(op, query string, vars map[string]any, admin bool, v any) string {
	out, _ := c.gqlAck(op, query, vars, admin, v)
	return out
}

// gqlAck is gql, also saying which server answered and when.
func (c *client) gqlAck(op, query string, vars map[string]any, admin bool, v any) (string, ack) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	var header func(http.Header)
	if admin {
		header = func(h http.Header) { h.Set("Authorization", "Bearer "+c.token) }
	}
	rep := c.post(op, "/graphql", -1, body, header, classifyGraphQL)
	a := ack{server: rep.server, at: rep.at}
	if rep.outcome == outOK && v != nil {
		var r gqlResponse
		if err := json.Unmarshal(rep.body, &r); err != nil || json.Unmarshal(r.Data, v) != nil {
			return "undecodable data", a
		}
	}
	return rep.outcome, a
}

// ack is who acknowledged a write, and when the answer came.
type ack struct {
	server int
	at     time.Time
}

func (a ack) String() string {
	return fmt.Sprintf("answered by server %d at %s", a.server, a.at.Format("15:04:05.000"))
}

// webhookAck is the body of a 200 webhook answer.
type webhookAck struct {
	OrderID     string `json:"order_id"`
	OrderStatus string `json:"order_status"`
	Duplicate   bool   `json:"duplicate"`
}

// webhook delivers one signed payment event, starting with a random server,
// and returns the outcome ("ok" for 200, else "HTTP <status>" or a
// transport outcome) with the 200 answer's body.
func (c *client) webhook(op, msgID, key, orderID, status string) (string, *webhookAck) {
	body, _ := json.Marshal(map[string]string{"idempotency_key": key, "order_id": orderID, "status": status})
	sign := func(h http.Header) {
		if err := c.signer.Sign(h, msgID, time.Now(), body); err != nil {
			panic(err)
		}
	}
	var ack *webhookAck
	classify := func(st int, b []byte) (string, string) {
		if st != http.StatusOK {
			return fmt.Sprintf("HTTP %d", st), clip(b)
		}
		var a webhookAck
		if err := json.Unmarshal(b, &a); err != nil {
			return "HTTP 200, bad body", clip(b)
		}
		ack = &a
		return outOK, ""
	}
	rep := c.post(op, "/api/payments/webhook", rand.IntN(len(c.servers)), body, sign, classify)
	if rep.outcome != outOK {
		ack = nil // an earlier attempt's, if any (there is none: only refusals move on)
	}
	return rep.outcome, ack
}
