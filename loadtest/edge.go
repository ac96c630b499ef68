package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"flashsale/deploy/nginx"
)

// The edge scenario: what a cache in front saves the server. The tool
// starts nginx with the repository's configuration (deploy/nginx, one
// worker) in front of the first -url, and -clients storefronts refresh one
// product's stock by GET, with the persisted query's hash only, as Apollo
// Client does, while one buyer holds a unit of it -edge-holds times a
// second. Two rows take turns slice by slice: edge-origin sends the reads
// to the server itself, edge through nginx. It reports the share of edge's
// answers nginx served from its cache, how often nginx asked the server
// for that query (its log of upstream requests, background refreshes
// included), and how stale the stock each read showed was: a read showing
// the stock after k holds is stale from the moment hold k+1 was made (the
// buyer is the product's only writer, one hold at a time). Between edge's
// slices one reader keeps the page viewed through nginx every 100 ms, as a
// hot product's page is; without it each slice would start after a quiet
// spell, when every first reader goes to the server (deploy/nginx).

// edgeQuery is what a product page's "N left" asks for.
const edgeQuery = `query EdgeStock($p: ID!) { product(id: $p) { stockSellable } }`

// scEdgeOrigin names edge's baseline row: the same reads, straight to the
// server (a row of the report, not a scenario to choose).
const scEdgeOrigin = "edge-origin"

// Targets of the scenario (the issue's, on this machine).
const (
	edgeFromCacheTarget = 0.95 // share of edge's answers from nginx's cache
	edgeOriginTarget    = 2.0  // requests/s nginx sends the server for the query
	edgeSpeedupTarget   = 3.0  // edge reads/s ÷ edge-origin reads/s
)

// edgeFigures is what the edge scenario measured beyond its two rows.
type edgeFigures struct {
	Proxy         string           `json:"proxy"`           // nginx's URL
	MaxAge        int              `json:"max_age_seconds"` // the server's READ_CACHE_MAX_AGE, from its answers
	Holds         int64            `json:"holds"`           // made while the rows ran
	HoldErrors    int64            `json:"hold_errors"`     // a failed hold may have committed: staleness is then approximate
	HoldsPerSec   float64          `json:"holds_per_sec"`
	CacheStatus   map[string]int64 `json:"cache_status"`     // edge's answers by X-Cache-Status
	FromCache     float64          `json:"from_cache_share"` // HIT, STALE or UPDATING
	OriginReqs    int64            `json:"origin_requests"`  // nginx → server for the query, while both rows ran
	OriginPerSec  float64          `json:"origin_requests_per_sec"`
	MaxStale      float64          `json:"max_stale_seconds"`        // through nginx
	StaleP99      float64          `json:"stale_p99_seconds"`        // through nginx
	OriginMax     float64          `json:"origin_max_stale_seconds"` // straight to the server: the measure's own error
	StaleBound    float64          `json:"stale_bound_seconds"`      // 2 × max-age + 1
	Unexplained   int64            `json:"unexplained"`              // reads of either row whose stock no count of holds explains
	Error         string           `json:"error,omitempty"`
	driveSeconds  float64          // both rows' time, taking turns: nginx served the page all along
	originBefore  int64            // upstream requests for the query before the rows ran
	holdsStarted  time.Time
	holdsFinished time.Time
}

// edgeRead is one read's receipt time (Unix ns) and the stock it showed.
type edgeRead struct {
	at       int64
	sellable int64
}

// edgeBuyer holds one unit at a time at a fixed rate and remembers when
// each successful hold was made: the truth's timeline.
type edgeBuyer struct {
	mu      sync.Mutex
	initial int64       // stockSellable before the first hold
	made    []time.Time // the k-th successful hold's createdAt
	errors  int64
}

// qEdgeHold is the buyer's hold. Its createdAt is the database clock read
// under the product's lock, just before the commit that changes the stock
// (the tool, the server and the database share this machine's clock).
const qEdgeHold = `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id createdAt } }`

// runEdge runs the scenario and returns its two rows.
func (st *state) runEdge() ([]scenarioResult, error) {
	id, _, err := st.productOf(scEdge)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "loadtest-edge-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	u, _ := url.Parse(st.api.base)
	if u.Scheme != "http" {
		return nil, fmt.Errorf("it needs an http:// -url (nginx proxies plain HTTP to it, and its readers speak plain HTTP), not %s", st.api.base)
	}
	px, err := nginx.Start(context.Background(), nginx.Options{Upstream: u.Host, Dir: dir, Workers: 1, UpstreamLog: true})
	if err != nil {
		return nil, err
	}
	defer px.Stop()
	path, err := st.edgePrepare(id)
	if err != nil {
		return nil, err
	}
	fig := &edgeFigures{Proxy: px.URL, CacheStatus: map[string]int64{}}
	if fig.MaxAge, err = st.edgeMaxAge(px.URL + path); err != nil {
		return nil, err
	}
	// The requests before the rows (the first miss above) are not theirs.
	if fig.originBefore, err = countUpstream(px.UpstreamLogPath(), path); err != nil {
		return nil, err
	}
	buyer, err := st.edgeStartBuyer(id)
	if err != nil {
		return nil, err
	}
	st.progress("%s: product %s, %d clients refresh it by GET (persisted query, hash only), through nginx %s (deploy/nginx, 1 worker) "+
		"and straight to %s, taking turns, for %s each, while one buyer holds %d units a second",
		scEdge, id, st.opts.Clients, px.URL, st.api.base, st.opts.Duration, st.opts.EdgeHolds)
	stopWarm := keepWarm(px.URL+path, st.opts.Timeout)
	began := time.Now()
	rows, reads := st.edgeDrive(id, st.api.base+path, px.URL+path, fig)
	stopBuyer := time.Now()
	fig.driveSeconds = stopBuyer.Sub(began).Seconds()
	stopWarm()
	buyer.stop()
	fig.holdsStarted, fig.holdsFinished = buyer.started, stopBuyer
	st.edgeMeasure(fig, buyer.edgeBuyer, reads, px, path)
	rows[1].Edge = fig
	rows[1].Notes = append(rows[1].Notes, fig.note())
	return rows, nil
}

// edgePrepare registers the persisted query (one POST with the query and
// its hash, as a client does after PersistedQueryNotFound) and returns the
// hash-only GET path every storefront then shares.
func (st *state) edgePrepare(id string) (string, error) {
	sum := sha256.Sum256([]byte(edgeQuery))
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	vars := map[string]any{"p": id}
	body, _ := json.Marshal(map[string]any{"query": edgeQuery, "variables": vars, "extensions": ext})
	ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
	defer cancel()
	var out struct {
		Product *productStock `json:"product"`
	}
	if c := st.api.post(ctx, "", body, &out); c != "" || out.Product == nil {
		return "", fmt.Errorf("registering the persisted query: %s", cmp.Or(c, "product null"))
	}
	q := url.Values{}
	v, _ := json.Marshal(vars)
	e, _ := json.Marshal(ext)
	q.Set("operationName", "EdgeStock")
	q.Set("variables", string(v))
	q.Set("extensions", string(e))
	return "/graphql?" + q.Encode(), nil
}

// edgeMaxAge reads the server's READ_CACHE_MAX_AGE from a public answer's
// Cache-Control; a server that caches nothing cannot run the scenario.
func (st *state) edgeMaxAge(rawURL string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	resp, err := st.api.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET through nginx: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	cc := resp.Header.Get("Cache-Control")
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 && strings.HasPrefix(cc, "public") {
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("the product's GET answer says Cache-Control %q, not public with a max-age: is the server's READ_CACHE_MAX_AGE 0?", cc)
}

// runningBuyer is an edgeBuyer at work until stop.
type runningBuyer struct {
	*edgeBuyer
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
}

func (b *runningBuyer) stop() { b.cancel(); <-b.done }

// edgeStartBuyer reads the product's stock, then holds one unit of it
// -edge-holds times a second until stopped.
func (st *state) edgeStartBuyer(id string) (*runningBuyer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
	p, ok, err := st.api.product(ctx, id)
	cancel()
	if err != nil || !ok {
		return nil, fmt.Errorf("reading product %s: %v (exists: %v)", id, err, ok)
	}
	b := &runningBuyer{edgeBuyer: &edgeBuyer{initial: int64(p.StockSellable)}, started: time.Now(), done: make(chan struct{})}
	var bctx context.Context
	bctx, b.cancel = context.WithCancel(context.Background())
	body := gqlBody(qEdgeHold, map[string]any{"p": id})
	go func() {
		defer close(b.done)
		tick := time.NewTicker(time.Second / time.Duration(st.opts.EdgeHolds))
		defer tick.Stop()
		for {
			select {
			case <-bctx.Done():
				return
			case <-tick.C:
			}
			var out struct {
				CreateHold struct {
					ID        string    `json:"id"`
					CreatedAt time.Time `json:"createdAt"`
				} `json:"createHold"`
			}
			c := st.api.post(context.Background(), "", body, &out)
			b.mu.Lock()
			if c == "" && out.CreateHold.ID != "" {
				b.made = append(b.made, out.CreateHold.CreatedAt)
			} else {
				b.errors++
			}
			b.mu.Unlock()
		}
	}()
	return b, nil
}

// edgeDrive runs edge-origin and edge taking turns and returns their rows
// and each one's reads.
func (st *state) edgeDrive(id, originURL, edgeURL string, fig *edgeFigures) ([]scenarioResult, [2][][]edgeRead) {
	names := []string{scEdgeOrigin, scEdge}
	urls := []string{originURL, edgeURL}
	t := newTurns(names, sliceCount(st.opts))
	st.turns = t
	defer func() { st.turns = nil }()
	var reads [2][][]edgeRead
	rows := make([]scenarioResult, 2)
	statuses := make([]map[string]int64, st.opts.Clients)
	var wg sync.WaitGroup
	for i, name := range names {
		reads[i] = make([][]edgeRead, st.opts.Clients)
		getters := make([]*rawGetter, st.opts.Clients)
		wg.Go(func() {
			defer close(t.left[name])
			rows[i] = st.drive(name, id, func(_ context.Context, w, _ int, r *recorder) {
				if getters[w] == nil {
					getters[w], _ = newRawGetter(urls[i], st.opts.Timeout) // both URLs are checked http:// loopback
				}
				t0 := time.Now()
				a, err := getters[w].get()
				r.request(t0)
				if err != nil {
					r.fail(transportClass(err))
					return
				}
				v, c := parseStock(a)
				r.tally(c)
				if c != "" {
					return
				}
				reads[i][w] = append(reads[i][w], edgeRead{time.Now().UnixNano(), v})
				if i == 1 {
					if statuses[w] == nil {
						statuses[w] = map[string]int64{}
					}
					statuses[w][cmp.Or(a.cache, "none")]++
				}
			})
			for _, g := range getters {
				if g != nil {
					g.close()
				}
			}
		})
	}
	t.run()
	wg.Wait()
	for _, m := range statuses {
		for k, v := range m {
			fig.CacheStatus[k] += v
		}
	}
	return rows, reads
}

// keepWarm reads rawURL every 100 ms until stopped (see the top).
func keepWarm(rawURL string, timeout time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g, err := newRawGetter(rawURL, timeout)
		if err != nil {
			return
		}
		defer g.close()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = g.get()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// parseStock reads an answer's stockSellable without a JSON decode:
// {"data":{"product":{"stockSellable":N}}}; else the error's class.
func parseStock(a rawAnswer) (sellable int64, errClass string) {
	rest, ok := bytes.CutPrefix(a.body, []byte(`{"data":{"product":{"stockSellable":`))
	end := bytes.IndexByte(rest, '}')
	if ok && end > 0 && a.status == http.StatusOK {
		if n, err := strconv.ParseInt(string(rest[:end]), 10, 64); err == nil {
			return n, ""
		}
	}
	if code, ok := refusalCode(a.body); ok {
		return 0, code
	}
	return 0, "HTTP " + strconv.Itoa(a.status) + " unexpected answer"
}

// edgeMeasure derives the scenario's figures from the buyer's holds, the
// reads and nginx's log of upstream requests.
func (st *state) edgeMeasure(fig *edgeFigures, b *edgeBuyer, reads [2][][]edgeRead, px *nginx.Proxy, path string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fig.Holds, fig.HoldErrors = int64(len(b.made)), b.errors
	if d := fig.holdsFinished.Sub(fig.holdsStarted).Seconds(); d > 0 {
		fig.HoldsPerSec = float64(fig.Holds) / d
	}
	var all, cached int64
	for k, v := range fig.CacheStatus {
		all += v
		if k == "HIT" || k == "STALE" || k == "UPDATING" {
			cached += v
		}
	}
	if all > 0 {
		fig.FromCache = float64(cached) / float64(all)
	}
	fig.StaleBound = float64(2*fig.MaxAge + 1)
	var originOdd, edgeOdd int64
	var edgeStale []time.Duration
	fig.OriginMax, _, originOdd = b.staleness(slices.Concat(reads[0]...))
	fig.MaxStale, edgeStale, edgeOdd = b.staleness(slices.Concat(reads[1]...))
	fig.Unexplained = originOdd + edgeOdd
	fig.StaleP99 = summarize(edgeStale).P99.Seconds()
	n, err := countUpstream(px.UpstreamLogPath(), path)
	if err != nil {
		fig.Error = err.Error()
		return
	}
	fig.OriginReqs = n - fig.originBefore
	if fig.driveSeconds > 0 {
		fig.OriginPerSec = float64(fig.OriginReqs) / fig.driveSeconds
	}
}

// staleness is, for each read, how long before its receipt the stock it
// showed had stopped being true (0 while it was): the read showing the
// stock after k holds is stale from hold k+1's createdAt on. It returns
// the largest, all of them, and how many reads no count of holds explains.
func (b *edgeBuyer) staleness(reads []edgeRead) (float64, []time.Duration, int64) {
	all := make([]time.Duration, 0, len(reads))
	var worst time.Duration
	var unexplained int64
	for _, r := range reads {
		k := b.initial - r.sellable
		if k < 0 || k > int64(len(b.made)) {
			unexplained++
			continue
		}
		var d time.Duration
		if k < int64(len(b.made)) {
			d = max(0, time.Duration(r.at-b.made[k].UnixNano()))
		}
		all = append(all, d)
		worst = max(worst, d)
	}
	return worst.Seconds(), all, unexplained
}

// countUpstream counts the lines of nginx's upstream log (deploy/nginx's
// format: time, cache status, upstream status, URI) for path.
func countUpstream(logPath, path string) (int64, error) {
	b, err := os.ReadFile(logPath)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("nginx's upstream log: %w", err)
	}
	var n int64
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 4 && f[3] == path {
			n++
		}
	}
	return n, nil
}

// note sums the figures up for the report.
func (f *edgeFigures) note() string {
	return fmt.Sprintf("through nginx %s (max-age %d s): %.1f%% of answers from its cache %v; it asked the server %d times for the "+
		"query (%.2f/s over both rows' time, background refreshes included); stock seen at most %.2f s stale (p99 %.2f s; bound 2×%d+1 = %.0f s; "+
		"straight from the server: %.3f s), %d reads unexplained; %d holds (%.1f/s), %d failed",
		f.Proxy, f.MaxAge, 100*f.FromCache, f.CacheStatus, f.OriginReqs, f.OriginPerSec, f.MaxStale, f.StaleP99,
		f.MaxAge, f.StaleBound, f.OriginMax, f.Unexplained, f.Holds, f.HoldsPerSec, f.HoldErrors)
}
