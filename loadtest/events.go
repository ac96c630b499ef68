package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"flashsale/signing"
)

// The lifecycle-events scenario: what writing and delivering order events
// costs a sale. A server's sinks are fixed when it starts, so the
// comparison needs two servers, each on its own database: -url, with no
// sink, runs lifecycle; -events-url, started with EVENTS_WEBHOOK_URL
// pointing at the tool's receiver (-events-listen), runs the very same
// work as lifecycle-events. The two take turns slice by slice in one run
// (see turns), so the ratio lifecycle-events ÷ lifecycle compares like
// with like. The receiver answers 204 to every POST, as a shop's endpoint
// that keeps up would; it counts requests and distinct webhook-ids and,
// with -events-secret, verifies every Standard Webhooks signature.
//
// After lifecycle-events' last slice the tool measures the drain: it polls
// the events server's orderEvents(status: PENDING, first: 1) (operator
// token) until no event is PENDING, and reports how long after that slice
// the last new event reached the receiver.

// Bounds of the scenario.
const (
	// eventsDrainLimit is how long after lifecycle-events' last slice the
	// tool waits for the events server's backlog.
	eventsDrainLimit = time.Minute
	// eventsDrainTarget is the target: every event delivered this soon
	// after the run.
	eventsDrainTarget = 5 * time.Second
	// The drain is polled once no new event has arrived for eventsQuiet
	// (while events stream in, the backlog is not empty: each was PENDING
	// until it arrived), then at intervals doubling from eventsPoll to
	// eventsPollMax while events stay PENDING, so that the tool's reads
	// (a scan of the deliveries, tens of ms on the events server's
	// database) do not slow the drain they measure.
	eventsQuiet   = 100 * time.Millisecond
	eventsPoll    = 100 * time.Millisecond
	eventsPollMax = time.Second
	// maxEventBody bounds what the receiver reads of one event.
	maxEventBody = 1 << 20
	// signatureTolerance is how far an event's webhook-timestamp may be
	// from the receiver's clock (Standard Webhooks' default).
	signatureTolerance = 5 * time.Minute
)

// extraOrders counts, in lifecycle-events, the orders createOrder
// answered with: each has at least its order.created event.
const extraOrders = "orders"

// eventsSide is the events server and the tool's receiver of its events.
type eventsSide struct {
	api           *api
	recv          *receiver
	pendingBefore bool // the events server had PENDING events before the run
}

// eventsFigures is what lifecycle-events measured of the order events.
type eventsFigures struct {
	Server   string `json:"server"`
	Listen   string `json:"listen"`
	Verified bool   `json:"signatures_verified"` // -events-secret given

	// Written is a lower bound on the events the scenario wrote: 2 per
	// complete lifecycle (order.created, then order.paid or
	// order.cancelled) and 1 per other order createOrder answered with (a
	// payment that failed to apply may or may not have added its event).
	// Counting them in the database (orderEvents, 20 a page) would cost
	// the events server more than the scenario; instead, once no event is
	// PENDING and none FAILED, every written event was delivered, so the
	// receiver's distinct count is the written count, and it must be at
	// least this bound.
	Written           int64   `json:"written_at_least"`
	Received          int64   `json:"received"` // distinct webhook-ids
	Requests          int64   `json:"requests"` // POSTs, duplicates included
	Duplicates        int64   `json:"duplicates"`
	SignatureFailures int64   `json:"signature_failures"`
	WithoutID         int64   `json:"without_webhook_id"`
	EventsPerSec      float64 `json:"events_per_sec"`   // Received ÷ ScenarioSeconds
	ScenarioSeconds   float64 `json:"scenario_seconds"` // lifecycle-events' own time, its slices added up
	// Drained: orderEvents(status: PENDING) came back empty within
	// eventsDrainLimit; ConfirmedSeconds is when, after the last slice.
	Drained          bool    `json:"drained"`
	ConfirmedSeconds float64 `json:"confirmed_seconds"`
	// DrainSeconds is the drain time: from the end of lifecycle-events'
	// last slice to the first receipt of the last event (0 when none came
	// after it). Not drained: how long the tool waited.
	DrainSeconds  float64 `json:"drain_seconds"`
	PendingBefore bool    `json:"pending_before,omitempty"`
	Error         string  `json:"error,omitempty"` // the drain could not be polled
}

// startEvents connects to the events server, checks that the tool may read
// its order events, and starts the receiver.
func startEvents(o options) (*eventsSide, error) {
	a, err := newAPI(o.EventsURL, o.Token, o.Secret, o.Clients, o.Timeout)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	if err := a.ping(ctx); err != nil {
		a.close()
		return nil, fmt.Errorf("%s does not answer GraphQL: %v", o.EventsURL, err)
	}
	pending, err := a.anyEvent(ctx, "PENDING")
	if err != nil {
		a.close()
		return nil, err
	}
	rc, err := newReceiver(o.EventsListen, o.EventsSecret)
	if err != nil {
		a.close()
		return nil, err
	}
	return &eventsSide{api: a, recv: rc, pendingBefore: pending}, nil
}

func (ev *eventsSide) close() {
	ev.recv.close()
	ev.api.close()
}

// qAnyEvent asks whether any order event has a delivery in a status.
const qAnyEvent = `query($s: EventStatus!) { orderEvents(status: $s, first: 1) { edges { node { id } } } }`

// anyEvent reports whether the server has an order event with a delivery
// in status (PENDING, FAILED), with the operator token.
func (a *api) anyEvent(ctx context.Context, status string) (bool, error) {
	var out struct {
		OrderEvents struct {
			Edges []struct {
				Node struct {
					ID string `json:"id"`
				} `json:"node"`
			} `json:"edges"`
		} `json:"orderEvents"`
	}
	switch c := a.post(ctx, a.token, gqlBody(qAnyEvent, map[string]any{"s": status}), &out); c {
	case "":
		return len(out.OrderEvents.Edges) > 0, nil
	case "UNAUTHENTICATED":
		return false, errors.New("orderEvents: UNAUTHENTICATED: -token must also be the events server's ADMIN_TOKEN")
	default:
		return false, fmt.Errorf("orderEvents(status: %s): %s", status, c)
	}
}

// measureEvents waits for the events server's backlog to drain after
// lifecycle-events' last slice (res.ended), and sets res.Events.
func (st *state) measureEvents(res *scenarioResult) {
	ev := st.events
	f := &eventsFigures{Server: ev.api.base, Listen: ev.recv.addr(), Verified: ev.recv.key != nil, PendingBefore: ev.pendingBefore,
		Written: res.OK + res.Extra[extraOrders], ScenarioSeconds: res.ElapsedSeconds}
	end := res.ended
	st.progress("%s: waiting for the events server's backlog (up to %s)", res.Name, eventsDrainLimit)
	deadline := end.Add(eventsDrainLimit)
	wait := eventsPoll
	for {
		if quiet := time.Since(ev.recv.counts().lastNew); quiet < eventsQuiet && time.Now().Before(deadline) {
			wait = eventsPoll // still arriving
			if !st.sleep(eventsQuiet - quiet) {
				break
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
		pending, err := ev.api.anyEvent(ctx, "PENDING")
		cancel()
		now := time.Now()
		if err != nil {
			f.Error = err.Error()
			break
		}
		if !pending {
			f.Drained, f.ConfirmedSeconds = true, now.Sub(end).Seconds()
			break
		}
		if now.After(deadline) || !st.sleep(wait) {
			break
		}
		wait = min(2*wait, eventsPollMax)
	}
	c := ev.recv.counts()
	f.Received, f.Requests, f.SignatureFailures, f.WithoutID = c.distinct, c.requests, c.badSignature, c.withoutID
	f.Duplicates = c.requests - c.withoutID - c.distinct
	if res.ElapsedSeconds > 0 {
		f.EventsPerSec = float64(c.distinct) / res.ElapsedSeconds
	}
	switch {
	case f.Drained && c.lastNew.After(end):
		f.DrainSeconds = c.lastNew.Sub(end).Seconds()
	case !f.Drained:
		f.DrainSeconds = time.Since(end).Seconds() // at least
	}
	res.Events = f
	res.Notes = append(res.Notes, f.note())
}

// sleep waits d, or until Ctrl-C; false: Ctrl-C.
func (st *state) sleep(d time.Duration) bool {
	select {
	case <-st.stop.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// note is the figures in a sentence, under the scenario.
func (f *eventsFigures) note() string {
	sig := "signatures not verified (no -events-secret)"
	if f.Verified {
		sig = fmt.Sprintf("%d signature failures", f.SignatureFailures)
	}
	drain := fmt.Sprintf("drained %.2f s after its last slice (the last new event's receipt; orderEvents PENDING empty at %.2f s)",
		f.DrainSeconds, f.ConfirmedSeconds)
	switch {
	case f.Error != "":
		drain = "the drain could not be measured: " + f.Error
	case !f.Drained:
		drain = fmt.Sprintf("NOT drained: events still PENDING %.1f s after its last slice", f.DrainSeconds)
	}
	s := fmt.Sprintf("order events: %d received (distinct webhook-ids) of at least %d written (2 per complete lifecycle, 1 per other order), "+
		"%s events/s over the scenario's %.1f s; %s; %d duplicate deliveries, %s",
		f.Received, f.Written, fmtRate(f.EventsPerSec), f.ScenarioSeconds, drain, f.Duplicates, sig)
	if f.WithoutID > 0 {
		s += fmt.Sprintf(", %d POSTs without webhook-id", f.WithoutID)
	}
	if f.PendingBefore {
		s += "; the events server had PENDING events before the run: the figures include them"
	}
	return s
}

// checkEvents checks, when lifecycle-events ran, that every event it wrote
// reached the receiver: none still PENDING or FAILED on the events server,
// at least as many distinct events received as the lifecycles wrote, and
// every signature good.
func (st *state) checkEvents(ctx context.Context, c *checkResult, f *eventsFigures) {
	if f == nil || st.events == nil {
		return
	}
	before := len(c.Violations)
	switch {
	case f.Error != "":
		c.Failed = true
		c.line("order events on %s: cannot check: %s", f.Server, f.Error)
		return
	case !f.Drained:
		c.violation("order events on %s: still PENDING %.0f s after lifecycle-events, with a receiver that answers 204", f.Server, f.DrainSeconds)
	}
	failed, err := st.events.api.anyEvent(ctx, "FAILED")
	switch {
	case err != nil:
		c.Failed = true
		c.line("order events on %s: cannot read FAILED events: %v", f.Server, err)
	case failed:
		c.violation("order events on %s: some are FAILED, with a receiver that answers 204", f.Server)
	}
	switch {
	case f.Received == 0 && f.Written > 0:
		c.violation("order events on %s: the receiver on %s got none of the %d or more written: start that server with "+
			"EVENTS_WEBHOOK_URL=http://%s/events (and EVENTS_WEBHOOK_SECRET)", f.Server, f.Listen, f.Written, f.Listen)
	case f.Drained && f.Received < f.Written:
		c.violation("order events on %s: %d received, but the lifecycles wrote at least %d and none is PENDING: LOST",
			f.Server, f.Received, f.Written)
	}
	if f.SignatureFailures > 0 {
		c.violation("order events: %d of %d deliveries' signatures do not verify with -events-secret "+
			"(it must be the events server's EVENTS_WEBHOOK_SECRET)", f.SignatureFailures, f.Requests)
	}
	if f.WithoutID > 0 {
		c.violation("order events: %d deliveries without a webhook-id", f.WithoutID)
	}
	sig := "not verified"
	if f.Verified {
		sig = fmt.Sprintf("%d of %d verified", f.Requests-f.SignatureFailures, f.Requests)
	}
	c.line("order events on %s: none PENDING or FAILED after the run, %d received ≥ %d written by the lifecycles, signatures %s: %s",
		f.Server, f.Received, f.Written, sig, verdict(len(c.Violations)-before))
}

// receiver is the tool's order-event endpoint: it answers 204 to every
// POST and counts what it got.
type receiver struct {
	key []byte // nil: signatures are not verified
	ln  net.Listener
	srv *http.Server

	requests     atomic.Int64 // POSTs
	badSignature atomic.Int64 // POSTs whose signature does not verify (key set)
	withoutID    atomic.Int64 // POSTs without a webhook-id

	mu      sync.Mutex
	ids     map[string]struct{}
	lastNew time.Time // the latest first receipt of an ID
}

// receiverCounts is a snapshot of a receiver's counts.
type receiverCounts struct {
	requests, distinct, badSignature, withoutID int64
	lastNew                                     time.Time
}

// newReceiver listens on listen (host:port) and serves. secret, when set,
// is the events server's EVENTS_WEBHOOK_SECRET.
func newReceiver(listen, secret string) (*receiver, error) {
	rc := &receiver{ids: map[string]struct{}{}}
	if secret != "" {
		key, err := signing.ParseSecret(secret)
		if err != nil {
			return nil, fmt.Errorf("-events-secret: %w", err)
		}
		rc.key = key
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("-events-listen: %w", err)
	}
	rc.ln = ln
	rc.srv = &http.Server{Handler: rc, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() { _ = rc.srv.Serve(ln) }()
	return rc, nil
}

// addr is where the receiver listens.
func (rc *receiver) addr() string { return rc.ln.Addr().String() }

func (rc *receiver) close() { _ = rc.srv.Close() }

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxEventBody))
	rc.requests.Add(1)
	if rc.key != nil && verifyWebhook(rc.key, r.Header, body, time.Now()) != nil {
		rc.badSignature.Add(1)
	}
	if id := r.Header.Get("webhook-id"); id == "" {
		rc.withoutID.Add(1)
	} else {
		rc.mu.Lock()
		if _, seen := rc.ids[id]; !seen {
			rc.ids[id] = struct{}{}
			rc.lastNew = time.Now()
		}
		rc.mu.Unlock()
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) counts() receiverCounts {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return receiverCounts{requests: rc.requests.Load(), distinct: int64(len(rc.ids)), badSignature: rc.badSignature.Load(),
		withoutID: rc.withoutID.Load(), lastNew: rc.lastNew}
}

// verifyWebhook checks a Standard Webhooks signature on its own, not with
// the library the server signs with: among the space-separated "v1,<base64>"
// of webhook-signature, one must be the HMAC-SHA256 of
// "<webhook-id>.<webhook-timestamp>.<body>" with key, and the timestamp
// must be within signatureTolerance of now.
func verifyWebhook(key []byte, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not unix seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > signatureTolerance || d < -signatureTolerance {
		return fmt.Errorf("webhook-timestamp is %s off the receiver's clock", d.Round(time.Second))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		if got, err := base64.StdEncoding.DecodeString(b64); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no v1 signature matches")
}

// checkEventsFlags checks -events-url, -events-listen and -events-secret
// together. Their errors never quote the secret.
func checkEventsFlags(o options) []error {
	var errs []error
	switch {
	case o.EventsURL == "" && o.EventsListen != "":
		errs = append(errs, errors.New("-events-listen without -events-url: the receiver is for the events server's order events"))
	case o.EventsURL == "" && o.EventsSecret != "":
		errs = append(errs, errors.New("-events-secret without -events-url: it verifies the events server's order events"))
	case o.EventsURL == "":
		return nil
	case o.EventsListen == "":
		errs = append(errs, errors.New("-events-url needs -events-listen, where the tool receives that server's order events "+
			"(its EVENTS_WEBHOOK_URL points there)"))
	}
	if o.EventsURL != "" {
		evs, err := serverURLs(o.EventsURL)
		if err != nil {
			errs = append(errs, fmt.Errorf("-events-url: %w", err))
		} else if bases, err := serverURLs(o.URL); err == nil {
			for _, e := range evs {
				if slices.Contains(bases, e) {
					errs = append(errs, fmt.Errorf("-events-url %s is also a -url: lifecycle-events needs a second server, on its own database", e))
				}
			}
		}
	}
	if o.EventsListen != "" {
		if err := checkListen(o.EventsListen); err != nil {
			errs = append(errs, fmt.Errorf("-events-listen: %w", err))
		}
	}
	if o.EventsSecret != "" {
		if _, err := signing.ParseSecret(o.EventsSecret); err != nil {
			errs = append(errs, fmt.Errorf("-events-secret: %w", err))
		}
	}
	return errs
}

// checkListen checks -events-listen: host:port, on a loopback host, with a
// port (the events server is configured with it before the tool starts).
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want host:port, like 127.0.0.1:9099", s)
	}
	if err := loopbackHost(host); err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: want a port 1..65535", s)
	}
	return nil
}
