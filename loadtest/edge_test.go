package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"flashsale/deploy/nginx"
)

// TestEdgeStaleness: a read showing the stock after k holds is stale from
// hold k+1 on, never before; a stock no count of holds explains is
// counted apart.
func TestEdgeStaleness(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) int64 { return t0.Add(time.Duration(ms) * time.Millisecond).UnixNano() }
	b := &edgeBuyer{initial: 100, made: []time.Time{t0.Add(100 * time.Millisecond), t0.Add(200 * time.Millisecond)}}
	worst, all, unexplained := b.staleness([]edgeRead{
		{at(50), 100},  // before any hold: fresh
		{at(150), 100}, // 50 ms after hold 1
		{at(150), 99},  // fresh
		{at(900), 99},  // 700 ms after hold 2
		{at(900), 98},  // the latest: fresh
		{at(10), 98},   // ahead of the holds' clock: fresh, not negative
		{at(900), 101}, // more than ever: unexplained
		{at(900), 97},  // a hold the buyer never made: unexplained
	})
	if worst != 0.7 || unexplained != 2 || len(all) != 6 {
		t.Fatalf("worst %v s, %d unexplained, %d measured; want 0.7, 2, 6", worst, unexplained, len(all))
	}
	if !slices.Equal(all, []time.Duration{0, 50 * time.Millisecond, 0, 700 * time.Millisecond, 0, 0}) {
		t.Fatalf("staleness %v", all)
	}
}

// TestRawGetter: the edge readers' bare HTTP/1.1 client reads a body by
// its Content-Length, nginx's cache status, reconnects after Connection:
// close, and refuses what it cannot read (a chunked body).
func TestRawGetter(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		switch r.URL.Query().Get("case") {
		case "chunked":
			w.(http.Flusher).Flush() // no Content-Length: chunked
			fmt.Fprint(w, `{"data":{}}`)
			return
		case "close":
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("X-Cache-Status", "HIT")
		w.Header().Set("Content-Length", "48")
		fmt.Fprint(w, `{"data":{"product":{"stockSellable":42}}}       `)
	}))
	defer srv.Close()
	for _, c := range []string{"keep", "close"} {
		g, err := newRawGetter(srv.URL+"/graphql?case="+c, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			a, err := g.get()
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			if v, class := parseStock(a); v != 42 || class != "" || a.cache != "HIT" {
				t.Fatalf("%s: stock %d (%q), cache %q; want 42, HIT", c, v, class, a.cache)
			}
			if (c == "close") != (g.conn == nil) {
				t.Fatalf("%s: connection kept %v", c, g.conn != nil)
			}
		}
		g.close()
	}
	g, _ := newRawGetter(srv.URL+"/graphql?case=chunked", 5*time.Second)
	if _, err := g.get(); err == nil {
		t.Fatal("a chunked answer was read")
	}
	if _, err := newRawGetter("https://127.0.0.1/graphql", time.Second); err == nil {
		t.Fatal("an https:// URL was accepted")
	}
}

// TestEdgeAgainstServer runs the edge scenario behind a real nginx for a
// second: both rows run, nginx serves from its cache and asks the server
// for the query, every read is explained by the holds made.
func TestEdgeAgainstServer(t *testing.T) {
	if _, err := nginx.Binary(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI is set, so a missing nginx fails instead of skipping)", err)
		}
		t.Skipf("%v", err)
	}
	dbURL := freshDatabase(t)
	srv := startServer(t, dbURL)
	jsonFile := filepath.Join(t.TempDir(), "figures.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"loadtest", "-url", srv, "-token", testToken, "-secret", testSecret, "-db", dbURL,
		"-clients", "8", "-duration", "1s", "-timeout", "30s", "-scenarios", "edge", "-json", jsonFile}, noEnv, &out, &errb)
	t.Logf("output:\n%s", out.String())
	if code != exitOK {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, errb.String())
	}
	for _, want := range []string{"\nedge-origin ", "\nedge ", "edge reads/s ÷ edge-origin reads/s", "edge answers from nginx's cache ÷ all",
		"edge server requests/s for the query ÷ 2/s", "edge max staleness ÷ (2 × max-age + 1) s", "verdict: OK"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	raw, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	e := findScenario(rep.Scenarios, scEdge)
	o := findScenario(rep.Scenarios, scEdgeOrigin)
	if e == nil || o == nil || e.Edge == nil || e.OK == 0 || o.OK == 0 || len(e.Errors)+len(o.Errors) > 0 {
		t.Fatalf("rows: %+v\n%+v", e, o)
	}
	f := e.Edge
	if f.MaxAge != 1 || f.FromCache <= 0 || f.CacheStatus["HIT"] == 0 || f.OriginReqs < 1 || f.Holds == 0 || f.Unexplained != 0 ||
		f.MaxStale < 0 || f.StaleBound != 3 || f.Error != "" {
		t.Fatalf("edge figures: %+v", f)
	}
}
