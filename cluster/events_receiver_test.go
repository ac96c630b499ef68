package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The shop's side of the order events webhook: a receiver in the test
// process that records every request and verifies its signature on its
// own (not with package signing), answering 204 after a short delay so
// that deliveries are in flight when a server is killed.

// hookReq is one request the receiver got.
type hookReq struct {
	proc        int // the server that sent it (the URL path names it)
	method      string
	contentType string
	id          string // webhook-id
	ts          string // webhook-timestamp
	sigOK       bool
	sigErr      string // why the signature did not verify
	raw         []byte // the body exactly as received
	body        hookBody
	bodyErr     string // the body is not the contract's JSON

	arrived, answered   time.Time
	arrivalTk, answerTk int64 // from one counter: the order of arrivals and answers
	status              int   // the answer (0: still in flight)
	// clientGone: the sender's connection closed before the answer was
	// written (it was killed): the answer was lost.
	clientGone bool
	held       bool // held back until the kill
}

// answeredOK: the sender could have read a 2xx.
func (r *hookReq) answeredOK() bool {
	return r.status >= 200 && r.status < 300 && !r.clientGone
}

func (r *hookReq) String() string {
	return fmt.Sprintf("%s (seq %d of order %s) from server %d, arrived %s, answered %s%s",
		r.id, r.body.Data.Sequence, r.body.Data.Order.ID, r.proc, r.arrived.Format("15:04:05.000"),
		r.answered.Format("15:04:05.000"), map[bool]string{true: " (sender gone)"}[r.clientGone])
}

// hookBody is the part of an event's body the checks read.
type hookBody struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	OccurredAt time.Time `json:"occurredAt"`
	Data       struct {
		Sequence int     `json:"sequence"`
		Reason   *string `json:"reason"`
		Order    struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"order"`
	} `json:"data"`
}

// Every field of the contract's example body, by object.
var (
	bodyFields  = []string{"id", "type", "occurredAt", "data"}
	dataFields  = []string{"sequence", "reason", "order"}
	orderFields = []string{"id", "status", "productId", "customerId", "holdId", "qty", "amountCents", "createdAt", "paymentDueAt"}
)

// hookReceiver is the receiver. Server i is given the URL base()+"/events/i".
type hookReceiver struct {
	key      []byte // the secret's key
	srv      *httptest.Server
	tick     atomic.Int64
	minDelay time.Duration
	maxDelay time.Duration

	mu       sync.Mutex
	reqs     []*hookReq
	inflight map[int]int // per server
	// While holdProc >= 0, that server's requests are not answered until
	// release is closed (or the sender goes away): the kill then finds
	// them in flight.
	holdProc int
	release  chan struct{}
}

func newHookReceiver(secret string, minDelay, maxDelay time.Duration) (*hookReceiver, error) {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, fmt.Errorf("events secret %q does not start with whsec_", secret)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, err
	}
	r := &hookReceiver{key: key, minDelay: minDelay, maxDelay: maxDelay, inflight: map[int]int{}, holdProc: -1}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	return r, nil
}

func (r *hookReceiver) url(proc int) string { return fmt.Sprintf("%s/events/%d", r.srv.URL, proc) }

func (r *hookReceiver) close() { r.srv.Close() }

// verify checks a Standard Webhooks signature: HMAC-SHA256 with the key
// over "<id>.<timestamp>.<body>", base64, among the header's "v1,<sig>"
// entries (space separated).
func (r *hookReceiver) verify(id, ts, header string, body []byte) (bool, string) {
	if id == "" || ts == "" || header == "" {
		return false, fmt.Sprintf("missing header: webhook-id %q, webhook-timestamp %q, webhook-signature %q", id, ts, header)
	}
	mac := hmac.New(sha256.New, r.key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, entry := range strings.Fields(header) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return true, ""
		}
	}
	return false, fmt.Sprintf("no v1 signature matches (header %q)", header)
}

// checkBody parses an event's body and checks that every field of the
// contract's example is there.
func checkBody(raw []byte) (hookBody, string) {
	var b hookBody
	if err := json.Unmarshal(raw, &b); err != nil {
		return b, "not JSON: " + err.Error()
	}
	var top, data, ord map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil || json.Unmarshal(top["data"], &data) != nil || json.Unmarshal(data["order"], &ord) != nil {
		return b, "data or data.order is not an object"
	}
	for _, set := range []struct {
		obj    map[string]json.RawMessage
		where  string
		fields []string
	}{{top, "", bodyFields}, {data, "data.", dataFields}, {ord, "data.order.", orderFields}} {
		for _, f := range set.fields {
			if _, ok := set.obj[f]; !ok {
				return b, "no field " + set.where + f
			}
		}
	}
	return b, ""
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	arrived := time.Now()
	tk := r.tick.Add(1)
	raw, err := io.ReadAll(req.Body) // all of it: then a closed connection cancels the context
	proc := -1
	if n, ok := strings.CutPrefix(req.URL.Path, "/events/"); ok {
		if i, err := strconv.Atoi(n); err == nil {
			proc = i
		}
	}
	h := &hookReq{proc: proc, method: req.Method, contentType: req.Header.Get("Content-Type"),
		id: req.Header.Get("webhook-id"), ts: req.Header.Get("webhook-timestamp"),
		raw: raw, arrived: arrived, arrivalTk: tk}
	if err != nil {
		h.bodyErr = "reading the body: " + err.Error()
	} else {
		h.body, h.bodyErr = checkBody(raw)
	}
	h.sigOK, h.sigErr = r.verify(h.id, h.ts, req.Header.Get("webhook-signature"), raw)

	r.mu.Lock()
	r.reqs = append(r.reqs, h)
	r.inflight[proc]++
	release := r.release
	if proc == r.holdProc {
		h.held = true
	}
	r.mu.Unlock()

	ctx := req.Context()
	delay := r.minDelay + rand.N(r.maxDelay-r.minDelay+1)
	select {
	case <-ctx.Done():
	case <-time.After(delay):
	}
	if h.held {
		select {
		case <-ctx.Done():
		case <-release:
		case <-time.After(3 * time.Second): // well within EVENTS_TIMEOUT (5s)
		}
	}

	r.mu.Lock()
	h.answered, h.answerTk, h.status = time.Now(), r.tick.Add(1), http.StatusNoContent
	h.clientGone = ctx.Err() != nil
	r.inflight[proc]--
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// holdBack makes the receiver hold server proc's requests until
// releaseHeld.
func (r *hookReceiver) holdBack(proc int) {
	r.mu.Lock()
	r.holdProc, r.release = proc, make(chan struct{})
	r.mu.Unlock()
}

func (r *hookReceiver) releaseHeld() {
	r.mu.Lock()
	if r.release != nil {
		close(r.release)
	}
	r.holdProc, r.release = -1, nil
	r.mu.Unlock()
}

// stats says how many requests arrived, how many of server proc's are held
// back now, and how many are in flight in all.
func (r *hookReceiver) stats(proc int) (received, held, inflight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.inflight {
		inflight += n
	}
	if proc == r.holdProc {
		held = r.inflight[proc]
	}
	return len(r.reqs), held, inflight
}

// answeredIDs returns the event IDs some request of which was answered 2xx
// to a sender still there.
func (r *hookReceiver) answeredIDs() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := map[string]bool{}
	for _, h := range r.reqs {
		if h.answeredOK() {
			ids[h.id] = true
		}
	}
	return ids
}

// all returns a copy of every request, in arrival order.
func (r *hookReceiver) all() []hookReq {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]hookReq, len(r.reqs))
	for i, h := range r.reqs {
		out[i] = *h
	}
	return out
}
