package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The subscribers scenario: hot-hold runs twice on one product, first
// alone, then while S storefronts watch that product over graphql-ws
// (one WebSocket connection each, all to the first -url, as a page per
// buyer would). It reports how long a change took from its commit to a
// subscriber (the product's updatedAt, the database clock under the row
// lock, to the event's receipt: server, database and tool share this
// machine's clock), what one subscription costs the server, and hot-hold
// with the subscribers against hot-hold without.

// subscribeQuery is what a storefront's "N left" widget asks for.
const subscribeQuery = `subscription($p: ID!) { productStock(id: $p) { stockReserved stockSellable updatedAt } }`

// Bounds of the scenario.
const (
	maxSubscribers  = 100_000
	dialParallelism = 64                      // connections being set up at once
	settleAfterLoad = 1500 * time.Millisecond // the contract's 1 s, plus room: the last changes' events
	deliveryBound   = time.Second             // the contract: changes reach subscribers within 1 s
)

// subscribersInfo is the scenario's own figures, beside the two hot-hold
// rows it adds to the scenario table.
type subscribersInfo struct {
	Server         string           `json:"server"` // all subscribers connect here
	Subscribers    int              `json:"subscribers"`
	Connected      int              `json:"connected"`
	ConnectFailed  map[string]int64 `json:"connect_failed,omitempty"`
	ConnectSeconds float64          `json:"connect_seconds"` // to open and subscribe all, first event received
	Events         int64            `json:"events"`          // received while hot-hold ran, and the settling second
	Delay          latency          `json:"delay"`           // commit (updatedAt) to receipt, of those events
	Converged      int              `json:"converged"`       // subscribers whose last event showed the product's final stock
	Ended          int64            `json:"ended_early"`     // subscriptions the server ended before the tool did
	ServerPID      int              `json:"server_pid,omitempty"`
	RSSBefore      int64            `json:"rss_before_bytes,omitempty"`
	RSSAfter       int64            `json:"rss_after_bytes,omitempty"`
	BytesPerSub    float64          `json:"bytes_per_subscription,omitempty"`
}

// watcher is one subscriber: its connection and what it received.
type watcher struct {
	conn      *websocket.Conn
	delays    []time.Duration
	last      int // stockReserved of the last event
	events    int64
	ended     atomic.Bool
	firstSeen chan struct{} // closed on the first event
}

// window is when delays count: while hot-hold runs, and a moment after.
type window struct{ from, to atomic.Int64 } // unix ns; 0: not open

func (w *window) open(t time.Time)  { w.from.Store(t.UnixNano()) }
func (w *window) close(t time.Time) { w.to.Store(t.UnixNano()) }
func (w *window) has(t time.Time) bool {
	n, from, to := t.UnixNano(), w.from.Load(), w.to.Load()
	return from != 0 && n >= from && (to == 0 || n <= to)
}

// runSubscribers runs the scenario and returns its two hot-hold rows.
func (st *state) runSubscribers() ([]scenarioResult, *subscribersInfo, error) {
	id, stock, err := st.productOf(scSubscribers)
	if err != nil {
		return nil, nil, err
	}
	n := st.opts.Subscribers
	info := &subscribersInfo{Server: st.api.base, Subscribers: n, ConnectFailed: map[string]int64{}, ServerPID: st.opts.ServerPID}
	body := gqlBody(qCreateHold, map[string]any{"p": id})

	// The baseline runs half before the subscriptions and half after them
	// (two turns of one drive), so that the machine's drift during the run
	// falls on both sides of the ratio alike.
	st.progress("%s: hot-hold on product %s (stock %d) without subscribers, %d clients for %s, half before and half after them",
		scSubscribers, id, stock, st.opts.Clients, st.opts.Duration)
	base := newTurns([]string{scSubscribersBaseline}, 2)
	st.turns = base
	defer func() { st.turns = nil }()
	var without scenarioResult
	go func() {
		defer close(base.left[scSubscribersBaseline])
		without = st.drive(scSubscribersBaseline, id, st.holdOp(body))
	}()
	base.take(scSubscribersBaseline)

	if info.ServerPID != 0 {
		info.RSSBefore, _ = rss(info.ServerPID)
	}
	st.progress("%s: opening %d subscriptions to %s", scSubscribers, n, st.api.base)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subs := st.openSubscriptions(ctx, id, info)
	info.measureRSS()
	st.progress("%s: %d subscribed in %.1fs; hot-hold again, %d clients for %s", scSubscribers, info.Connected, info.ConnectSeconds, st.opts.Clients, st.opts.Duration)

	subs.win.open(time.Now())
	with := st.drive(scSubscribers, id, st.holdOp(body))
	time.Sleep(settleAfterLoad)
	subs.win.close(time.Now())

	// Every subscriber must have been told the product's final stock.
	pctx, pcancel := context.WithTimeout(context.Background(), st.opts.Timeout)
	final, _, perr := st.api.product(pctx, id)
	pcancel()
	subs.closeAll(cancel)
	st.progress("%s: subscriptions closed; hot-hold without them again, %d clients for %s", scSubscribers, st.opts.Clients, st.opts.Duration/2)
	base.take(scSubscribersBaseline)
	<-base.left[scSubscribersBaseline]
	subs.tally(info, final, perr)
	with.Steps = append(with.Steps, stepLatency{Step: stepDelivery, Latency: info.Delay})
	with.Notes = append(with.Notes, info.notes(perr)...)
	st.subs = info
	return []scenarioResult{without, with}, info, nil
}

// subscriptions is the scenario's open subscriptions, and their readers.
type subscriptions struct {
	ws      []*watcher // nil: could not be opened
	readers sync.WaitGroup
	win     window
}

// openSubscriptions opens info.Subscribers subscriptions to the product,
// dialParallelism at a time, each counted once its first event arrived;
// their readers run until ctx ends.
func (st *state) openSubscriptions(ctx context.Context, productID string, info *subscribersInfo) *subscriptions {
	n := info.Subscribers
	subs := &subscriptions{ws: make([]*watcher, n)}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		next     atomic.Int64
		t0       = time.Now()
		wsClient = st.wsClient()
	)
	failed := func(class string) {
		mu.Lock()
		info.ConnectFailed[class]++
		mu.Unlock()
	}
	for range dialParallelism {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || st.stop.Err() != nil {
					return
				}
				w, err := subscribe(ctx, wsClient, st.api.base, productID, st.opts.Timeout)
				if err != nil {
					failed(errClass(err))
					continue
				}
				subs.ws[i] = w
				subs.readers.Go(func() { w.read(ctx, &subs.win) })
				select {
				case <-w.firstSeen:
				case <-time.After(st.opts.Timeout):
					failed("no first event")
				}
			}
		})
	}
	wg.Wait()
	info.ConnectSeconds = time.Since(t0).Seconds()
	for _, w := range subs.ws {
		if w != nil {
			info.Connected++
		}
	}
	return subs
}

// measureRSS measures the server's memory with the subscriptions open,
// against the figure before them (with -server-pid).
func (info *subscribersInfo) measureRSS() {
	if info.ServerPID == 0 {
		return
	}
	time.Sleep(time.Second) // let the server's allocations settle
	info.RSSAfter, _ = rss(info.ServerPID)
	if info.Connected > 0 && info.RSSAfter > 0 {
		info.BytesPerSub = float64(info.RSSAfter-info.RSSBefore) / float64(info.Connected)
	}
}

// closeAll closes every subscription, then ends the readers (cancel) and
// waits for them.
func (subs *subscriptions) closeAll(cancel context.CancelFunc) {
	for _, w := range subs.ws {
		if w == nil {
			continue
		}
		_ = w.conn.Close(websocket.StatusNormalClosure, "load test done")
	}
	cancel()
	subs.readers.Wait()
}

// tally adds up what the subscribers received, once their readers ended;
// final is the product's final stock (unless perr).
func (subs *subscriptions) tally(info *subscribersInfo, final productStock, perr error) {
	var delays []time.Duration
	for _, w := range subs.ws {
		if w == nil {
			continue
		}
		delays = append(delays, w.delays...)
		info.Events += w.events
		if w.ended.Load() {
			info.Ended++
		}
		if perr == nil && w.last == final.StockReserved {
			info.Converged++
		}
	}
	info.Delay = summarize(delays)
	if len(info.ConnectFailed) == 0 {
		info.ConnectFailed = nil
	}
}

// notes are the subscribers row's notes; perr: the final stock could not
// be read.
func (info *subscribersInfo) notes(perr error) []string {
	notes := []string{fmt.Sprintf("%d of %d subscriptions open while hot-hold ran (%.1fs to open them); %d events received, "+
		"delay from commit to receipt p50 %s, p99 %s, max %s; %d subscribers saw the final stock",
		info.Connected, info.Subscribers, info.ConnectSeconds, info.Events, fmtDur(info.Delay.P50), fmtDur(info.Delay.P99), fmtDur(info.Delay.Max), info.Converged)}
	switch {
	case info.BytesPerSub > 0:
		notes = append(notes, fmt.Sprintf("server memory (RSS of PID %d): %.1f MiB before the subscriptions, %.1f MiB with them: %.1f KiB per subscription",
			info.ServerPID, float64(info.RSSBefore)/(1<<20), float64(info.RSSAfter)/(1<<20), info.BytesPerSub/1024))
	case info.ServerPID == 0:
		notes = append(notes, "server memory per subscription not measured: give -server-pid")
	}
	if len(info.ConnectFailed) > 0 {
		notes = append(notes, "subscriptions that could not be opened: "+fmtErrors(info.ConnectFailed))
	}
	if info.Ended > 0 {
		notes = append(notes, fmt.Sprintf("%d subscriptions were ended by the server before the tool closed them", info.Ended))
	}
	if perr != nil {
		notes = append(notes, "could not read the final stock: "+perr.Error())
	}
	return notes
}

// stepDelivery names the delivery delay in the subscribers row.
const stepDelivery = "delivery (commit → receipt)"

// holdOp is hot-hold's operation: one createHold of qty 1.
func (st *state) holdOp(body []byte) opFunc {
	return func(ctx context.Context, w, _ int, r *recorder) {
		var out struct {
			CreateHold struct {
				ID string `json:"id"`
			} `json:"createHold"`
		}
		t0 := time.Now()
		c := st.api.post(ctx, st.buyerToken(w), body, &out)
		r.request(t0)
		if c == "" && out.CreateHold.ID == "" {
			c = "hold without id"
		}
		r.tally(c)
	}
}

// wsClient is an HTTP client for WebSocket upgrades only: loopback only,
// like the tool's other connections, and never pooled (each upgrade takes
// its connection over).
func (st *state) wsClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{DialContext: loopbackDialer().DialContext, DisableKeepAlives: true},
		Timeout:       st.opts.Timeout,
		CheckRedirect: noRedirect,
	}
}

// subscribe opens one graphql-transport-ws connection and subscribes to
// the product's stock.
func subscribe(ctx context.Context, client *http.Client, base, productID string, timeout time.Duration) (*watcher, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialGraphQLWS(dctx, client, base, "")
	if err != nil {
		return nil, err
	}
	sub, _ := json.Marshal(map[string]any{"id": "1", "type": "subscribe",
		"payload": map[string]any{"query": subscribeQuery, "variables": map[string]any{"p": productID}}})
	if err := conn.Write(dctx, websocket.MessageText, sub); err != nil {
		conn.CloseNow()
		return nil, err
	}
	return &watcher{conn: conn, firstSeen: make(chan struct{})}, nil
}

// dialGraphQLWS opens a graphql-transport-ws connection to base's
// /graphql and waits for its connection_ack; a token goes in
// connection_init, as a signed-in storefront sends it.
func dialGraphQLWS(ctx context.Context, client *http.Client, base, token string) (*websocket.Conn, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + "/graphql"
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   client,
		Subprotocols: []string{"graphql-transport-ws"},
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(64 << 10)
	init := map[string]any{"type": "connection_init"}
	if token != "" {
		init["payload"] = map[string]string{"Authorization": "Bearer " + token}
	}
	b, _ := json.Marshal(init)
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		conn.CloseNow()
		return nil, err
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			conn.CloseNow()
			return nil, err
		}
		var m struct{ Type string }
		if json.Unmarshal(b, &m) == nil && m.Type == "connection_ack" {
			return conn, nil
		}
	}
}

// wsMessage is a graphql-transport-ws message from the server.
type wsMessage struct {
	Type    string `json:"type"`
	Payload struct {
		Data *struct {
			ProductStock struct {
				StockReserved int       `json:"stockReserved"`
				UpdatedAt     time.Time `json:"updatedAt"`
			} `json:"productStock"`
		} `json:"data"`
	} `json:"payload"`
}

// read takes events until the connection ends, answering pings (a peer
// that never pongs is dropped) and noting each event's delay while the
// window is open.
func (w *watcher) read(ctx context.Context, win *window) {
	first := true
	defer func() {
		if first {
			close(w.firstSeen)
		}
	}()
	// The connection ends with ctx, and each read is given a context that
	// never ends: coder/websocket registers (and removes) a context.AfterFunc
	// for every frame read under a cancellable one, CPU the tool would take
	// from the server it measures.
	stop := context.AfterFunc(ctx, func() { w.conn.CloseNow() })
	defer stop()
	rctx := context.WithoutCancel(ctx)
	var buf bytes.Buffer
	for {
		_, r, err := w.conn.Reader(rctx)
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			if ctx.Err() == nil && websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				w.ended.Store(true)
			}
			return
		}
		now := time.Now()
		b := buf.Bytes()
		// The tool shares the machine with the server: an event, by far
		// the most common message, is read without a full JSON decode.
		if reserved, updated, ok := parseEvent(b); ok {
			w.last = reserved
			if win.has(now) {
				w.events++
				w.delays = append(w.delays, now.Sub(updated))
			}
			if first {
				first = false
				close(w.firstSeen)
			}
			continue
		}
		var m wsMessage
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		switch m.Type {
		case "ping":
			_ = w.conn.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`))
		case "next":
			if m.Payload.Data == nil {
				continue
			}
			ps := m.Payload.Data.ProductStock
			w.last = ps.StockReserved
			if win.has(now) {
				w.events++
				w.delays = append(w.delays, now.Sub(ps.UpdatedAt))
			}
			if first {
				first = false
				close(w.firstSeen)
			}
		case "error", "complete":
			w.ended.Store(true)
			return
		}
	}
}

// errClass names a connection failure for the report.
func errClass(err error) string {
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("closed %d %s", ce.Code, ce.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	for _, k := range []string{"too many open files", "connection refused", "connection reset", "cannot assign requested address", "429", "403"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// rss returns a process's resident set size (Linux /proc).
func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// parseEvent reads a "next" message of subscribeQuery the cheap way: its
// stockReserved and updatedAt. ok is false for anything else (the caller
// then decodes it in full).
func parseEvent(b []byte) (reserved int, updated time.Time, ok bool) {
	// gqlgen writes the type last ({"payload":…,"id":"1","type":"next"});
	// other servers may write it first.
	next := bytes.HasSuffix(b, []byte(`"type":"next"}`)) || bytes.Contains(b[:min(len(b), 40)], []byte(`"type":"next"`))
	if !bytes.HasPrefix(b, []byte(`{"`)) || !next {
		return 0, time.Time{}, false
	}
	num, ok1 := after(b, `"stockReserved":`, ",}")
	ts, ok2 := after(b, `"updatedAt":"`, `"`)
	if !ok1 || !ok2 {
		return 0, time.Time{}, false
	}
	n, err1 := strconv.Atoi(string(num))
	t, err2 := time.Parse(time.RFC3339Nano, string(ts))
	return n, t, err1 == nil && err2 == nil
}

// after returns what follows key in b up to the first byte of stop.
func after(b []byte, key, stop string) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	rest := b[i+len(key):]
	j := bytes.IndexAny(rest, stop)
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}
