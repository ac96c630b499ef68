package playground

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// The browser test drives Debian's Chromium (bash .ci/browser.sh installs
// it) through chromedp against Handler and a fake GraphQL endpoint: the page
// must load GraphiQL under its CSP, introspect, run a query over HTTP and a
// subscription over WebSocket, and ask nothing of any other host. CHROMIUM
// names another binary. Set PLAYGROUND_SCREENSHOT_DIR to keep the
// screenshot (it goes to t.TempDir() otherwise).

const (
	productName = "Playground test sneaker"
	tickText    = "tick from the fake server"
	editorSel   = ".graphiql-query-editor .CodeMirror"
	responseSel = ".graphiql-response .CodeMirror"
)

func TestBrowser(t *testing.T) {
	browser := startBrowser(t)

	t.Run("GraphiQL works under its CSP and talks only to its origin", func(t *testing.T) {
		fake := newFakeGraphQL(t)
		srv := httptest.NewServer(serveWith(Handler("/graphql"), fake))
		defer srv.Close()
		tab, rec := openTab(t, browser)
		start := time.Now()

		if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/")); err != nil {
			t.Fatalf("navigate: %v", err)
		}
		if err := waitFor(tab, 20*time.Second, chromedp.WaitVisible(editorSel)); err != nil {
			t.Fatalf("the query editor never appeared: %v\n%s", err, rec)
		}
		t.Logf("editor visible %v after navigating", time.Since(start).Round(time.Millisecond))

		// The schema arrives by introspection: the docs list the root type.
		waitUntil(t, rec, 20*time.Second, func() bool { return fake.introspections.Load() > 0 },
			func() string { return "introspection request" })
		mustDo(t, tab, rec, chromedp.Click(`[aria-label="Show Documentation Explorer"]`))
		waitText(t, tab, rec, ".graphiql-doc-explorer-content", "Query")

		// A query over HTTP.
		setQuery(t, tab, rec, "query Products {\n  products {\n    edges { node { id name } }\n  }\n}\n", "Products")
		mustDo(t, tab, rec, chromedp.Click(".graphiql-execute-button"))
		got := waitResponse(t, tab, rec, productName)
		if !strings.Contains(got, `"id": "1"`) {
			t.Errorf("response pane lacks the product's id:\n%s", got)
		}
		if fake.products.Load() == 0 {
			t.Error("the fake endpoint never got the products query")
		}

		// What an operator sees: the schema's docs, the query, its answer.
		shot, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		dir := os.Getenv("PLAYGROUND_SCREENSHOT_DIR")
		if dir == "" {
			dir = t.TempDir()
		}
		shotPath := filepath.Join(dir, "playground.png")
		if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", shotPath)

		// A subscription over WebSocket (graphql-transport-ws): proves the
		// bundled graphql-ws client runs and connect-src lets ws:// through.
		setQuery(t, tab, rec, "subscription Ticks {\n  tick\n}\n", "Ticks")
		mustDo(t, tab, rec, chromedp.Click(".graphiql-execute-button"))
		waitResponse(t, tab, rec, tickText)
		if fake.subscriptions.Load() == 0 {
			t.Error("the fake endpoint never got the subscription")
		}

		// A dialog (Radix: focus trap, scroll lock) also renders under the CSP.
		mustDo(t, tab, rec, chromedp.Click(`[aria-label="Open settings dialog"]`))
		waitText(t, tab, rec, ".graphiql-dialog", "Settings")
		// Its scroll lock is a <style> element, admitted by the page's nonce
		// (bootstrap.js hands it to react-remove-scroll).
		styled, err := chromedp.Run(tab, chromedp.Evaluate[bool](
			`[...document.querySelectorAll("style")].some((s) => s.sheet && s.sheet.cssRules.length > 0)`))
		if err != nil || !styled {
			t.Errorf("no <style> element in effect while the dialog is open (%v): did the nonce reach react-remove-scroll?", err)
		}

		violations := cspViolations(t, tab)
		for _, v := range violations {
			t.Errorf("CSP violation: %s", v)
		}

		// Every request went to the test server: each asset the page names,
		// the endpoint, the WebSocket. Nothing else.
		srvURL, _ := url.Parse(srv.URL)
		requests := rec.requestURLs()
		for _, u := range requests {
			if !sameHost(u, srvURL.Host) {
				t.Errorf("the page asked another host: %s", u)
			}
		}
		a, _ := loadAssets()
		for _, name := range append(slices.Clone(styles), scripts...) {
			if status := rec.status(srv.URL + a[name].URL); status != http.StatusOK {
				t.Errorf("%s: status %d, want 200", a[name].URL, status)
			}
		}
		wantWS := "ws://" + srvURL.Host + "/graphql"
		if !slices.Contains(requests, wantWS) {
			t.Errorf("no WebSocket to %s among the page's requests:\n%s", wantWS, strings.Join(requests, "\n"))
		}
		for _, e := range rec.exceptionList() {
			t.Errorf("uncaught exception in the page: %s", e)
		}
		t.Logf("%d requests, all to %s:\n  %s", len(requests), srvURL.Host, strings.Join(requests, "\n  "))

		// The browser enforces the policy: an injected inline script does not run.
		ran, err := chromedp.Run(tab, chromedp.Evaluate[bool](`(() => {
			const s = document.createElement("script");
			s.textContent = "window.__inlineRan = true";
			document.body.appendChild(s);
			return window.__inlineRan === true;
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		if ran {
			t.Error("an inline script ran: the page's CSP is not enforced")
		}
		if after := cspViolations(t, tab); len(after) != len(violations)+1 || !strings.HasPrefix(after[len(after)-1], "script-src-elem") {
			t.Errorf("the inline script left no script-src violation: %q", after)
		}
		if t.Failed() {
			t.Logf("browser log:\n%s", rec)
		}
		t.Logf("whole browser scenario took %v", time.Since(start).Round(time.Millisecond))
	})

	// Without its assets the page must stay blank: this is what the test
	// above would see if go:embed or refresh.sh lost the files, and shows its
	// wait for the editor can fail.
	for _, tc := range []struct {
		name    string
		missing string // path prefix answered 404
		text    string // what the page shows instead of GraphiQL
	}{
		{"no assets at all", Prefix, "Loading GraphiQL"},
		{"graphiql.min.js missing", "", "GraphiQL's scripts did not load"},
	} {
		t.Run(tc.name+": the editor never appears", func(t *testing.T) {
			a, _ := loadAssets()
			missing := tc.missing
			if missing == "" {
				missing = a["vendor/graphiql.min.js"].URL
			}
			h := Handler("/graphql")
			broken := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, missing) {
					http.NotFound(w, r)
					return
				}
				h.ServeHTTP(w, r)
			})
			srv := httptest.NewServer(serveWith(broken, newFakeGraphQL(t)))
			defer srv.Close()
			tab, rec := openTab(t, browser)
			if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/")); err != nil {
				t.Fatalf("navigate: %v", err)
			}
			err := waitFor(tab, 5*time.Second, chromedp.WaitVisible(editorSel))
			if err == nil {
				t.Fatal("the query editor appeared without its assets")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("waiting for the editor: %v, want a timeout", err)
			}
			waitText(t, tab, rec, "#graphiql", tc.text)
			if status := rec.status(srv.URL + missing); tc.missing == "" && status != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404", missing, status)
			}
		})
	}
}

// startBrowser starts headless Chromium for the test, or skips (fails in CI)
// when there is none.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		if inCI() {
			t.Fatalf("CI is set and there is no Chromium at %s (%v): run `bash .ci/browser.sh` before the tests", path, err)
		}
		t.Skipf("no Chromium at %s: skipping the playground's browser test outside CI (install it with `bash .ci/browser.sh`, or set CHROMIUM)", path)
	}
	dir, err := os.MkdirTemp("", "playground-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Chromium's helpers may still write there for a moment after it exits.
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // we run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(dir),
	)
	browser, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	start := time.Now()
	version, err := chromedp.Run(browser, chromedp.Evaluate[string](`navigator.userAgent`))
	if err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	t.Logf("%s started in %v: %s", path, time.Since(start).Round(time.Millisecond), version)
	return browser
}

func inCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "0" && !strings.EqualFold(v, "false")
}

// cspRecorder collects, in the page, every securitypolicyviolation event.
// DevTools adds it; the page's CSP does not apply to DevTools' scripts.
const cspRecorder = `window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.effectiveDirective + " blocked " + (e.blockedURI || "?") +
    " in " + e.sourceFile + ":" + e.lineNumber + " sample " + JSON.stringify(e.sample));
});`

// openTab opens a tab of the browser that records what the page does.
func openTab(t *testing.T, browser context.Context) (context.Context, *recorder) {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	rec := &recorder{statuses: make(map[string]int64)}
	if err := chromedp.Listen(tab, rec.event); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder}); err != nil {
		t.Fatal(err)
	}
	return tab, rec
}

// recorder keeps the page's requests, their answers, exceptions and log lines.
type recorder struct {
	mu         sync.Mutex
	requests   []string
	statuses   map[string]int64
	exceptions []string
	log        []string
}

func (r *recorder) event(ev any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		u := ev.Request.URL
		if strings.HasPrefix(u, "data:") && len(u) > 40 {
			u = u[:40] + "…" // graphiql.min.css's inlined fonts: long, and local
		}
		r.requests = append(r.requests, u)
	case *network.EventWebSocketCreated:
		r.requests = append(r.requests, ev.URL)
	case *network.EventResponseReceived:
		r.statuses[ev.Response.URL] = ev.Response.Status
	case *network.EventLoadingFailed:
		r.log = append(r.log, fmt.Sprintf("loading failed (%s): %s %s", ev.Type, ev.ErrorText, ev.BlockedReason))
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		r.exceptions = append(r.exceptions, fmt.Sprintf("%s (%s:%d)", msg, d.URL, d.LineNumber))
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			if a.Value != nil {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		r.log = append(r.log, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
	case *cdplog.EventEntryAdded:
		r.log = append(r.log, fmt.Sprintf("log %s/%s: %s %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
	}
}

func (r *recorder) requestURLs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

func (r *recorder) status(u string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statuses[u]
}

func (r *recorder) exceptionList() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.exceptions)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, l := range r.requests {
		fmt.Fprintf(&b, "  request %s -> %d\n", l, r.statuses[l])
	}
	for _, l := range r.exceptions {
		fmt.Fprintf(&b, "  exception %s\n", l)
	}
	for _, l := range r.log {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	return b.String()
}

// sameHost reports whether the page's request u went to host (data: URLs,
// such as graphiql.min.css's inlined fonts, go nowhere).
func sameHost(u, host string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	switch p.Scheme {
	case "data":
		return true
	case "http", "ws":
		return p.Host == host
	}
	return false
}

// waitFor runs the action with a deadline.
func waitFor(tab context.Context, d time.Duration, a chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(tab, d)
	defer cancel()
	return chromedp.Do(ctx, a)
}

func mustDo(t *testing.T, tab context.Context, rec *recorder, a chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := waitFor(tab, 20*time.Second, a); err != nil {
		t.Fatalf("%v\n%s", err, rec)
	}
}

// waitUntil polls cond for up to d, and fails the test with what it waited
// for. (chromedp.Poll would not do: it builds its predicate in the page with
// new Function, which the page's CSP forbids.)
func waitUntil(t *testing.T, rec *recorder, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v\n%s", what(), d, rec)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitText waits until the text of the element sel contains want.
func waitText(t *testing.T, tab context.Context, rec *recorder, sel, want string) {
	t.Helper()
	var last string
	expr := fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel)
	waitUntil(t, rec, 20*time.Second, func() bool {
		last, _ = chromedp.Run(tab, chromedp.Evaluate[string](expr))
		return strings.Contains(last, want)
	}, func() string { return fmt.Sprintf("%q in %s (it shows %q)", want, sel, last) })
}

// setQuery puts q, whose operation is named op, in the query editor through
// CodeMirror, as typing would, and waits until GraphiQL has parsed it (it
// does so a moment after each change; running before would send the
// previous document's operation).
func setQuery(t *testing.T, tab context.Context, rec *recorder, q, op string) {
	t.Helper()
	b, _ := json.Marshal(q)
	expr := fmt.Sprintf(`document.querySelector(%q).CodeMirror.setValue(%s)`, editorSel, b)
	if _, err := chromedp.Run(tab, chromedp.Evaluate[*runtime.RemoteObject](expr)); err != nil {
		t.Fatalf("set the query: %v\n%s", err, rec)
	}
	var got string
	parsed := fmt.Sprintf(`document.querySelector(%q).CodeMirror.operationName || ""`, editorSel)
	waitUntil(t, rec, 20*time.Second, func() bool {
		got, _ = chromedp.Run(tab, chromedp.Evaluate[string](parsed))
		return got == op
	}, func() string { return fmt.Sprintf("operation %q in the editor (GraphiQL sees %q)", op, got) })
}

// waitResponse waits until the response pane contains want, and returns it.
func waitResponse(t *testing.T, tab context.Context, rec *recorder, want string) string {
	t.Helper()
	var got string
	expr := fmt.Sprintf(`(() => { const cm = document.querySelector(%q); return cm ? cm.CodeMirror.getValue() : ""; })()`, responseSel)
	waitUntil(t, rec, 20*time.Second, func() bool {
		got, _ = chromedp.Run(tab, chromedp.Evaluate[string](expr))
		return strings.Contains(got, want)
	}, func() string { return fmt.Sprintf("%q in the response pane (it shows %q)", want, got) })
	return got
}

func cspViolations(t *testing.T, tab context.Context) []string {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`window.__cspViolations`))
	if err != nil {
		t.Fatalf("read CSP violations: %v", err)
	}
	return v
}

// serveWith serves the playground at / and Prefix, as server.go does, and
// the fake endpoint at /graphql.
func serveWith(playground, graphql http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", playground)
	mux.Handle("GET "+Prefix, playground)
	mux.Handle("/graphql", graphql)
	return mux
}

// fakeGraphQL answers introspection with testdata/introspection.json (the
// real schema's, captured once from the server), the products query with
// one product, and any subscription over graphql-transport-ws with one tick.
type fakeGraphQL struct {
	t              *testing.T
	introspection  []byte
	introspections atomic.Int64
	products       atomic.Int64
	subscriptions  atomic.Int64
}

func newFakeGraphQL(t *testing.T) *fakeGraphQL {
	b, err := os.ReadFile("testdata/introspection.json")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeGraphQL{t: t, introspection: b}
}

func (f *fakeGraphQL) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		f.serveWebSocket(w, r)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req struct {
		Query         string `json:"query"`
		OperationName string `json:"operationName"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.Contains(req.Query, "__schema"):
		f.introspections.Add(1)
		_, _ = w.Write(f.introspection)
	case strings.Contains(req.Query, "products"):
		f.products.Add(1)
		fmt.Fprintf(w, `{"data":{"products":{"edges":[{"node":{"id":"1","name":%q}}]}}}`, productName)
	default:
		f.t.Logf("fake endpoint: unexpected request over HTTP: %+v", req)
		fmt.Fprintf(w, `{"errors":[{"message":"the fake endpoint knows no such query"}]}`)
	}
}

// serveWebSocket speaks just enough graphql-transport-ws: ack the
// connection, answer each subscribe with one next and a complete.
func (f *fakeGraphQL) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		f.t.Errorf("websocket accept: %v", err)
		return
	}
	defer c.CloseNow()
	if c.Subprotocol() != "graphql-transport-ws" {
		c.Close(websocket.StatusPolicyViolation, "graphql-transport-ws only")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	send := func(msg map[string]any) error {
		b, _ := json.Marshal(msg)
		return c.Write(ctx, websocket.MessageText, b)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return // the page closed it, or the test ended
		}
		var msg struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		}
		if json.Unmarshal(b, &msg) != nil {
			c.Close(4400, "bad message")
			return
		}
		switch msg.Type {
		case "connection_init":
			err = send(map[string]any{"type": "connection_ack"})
		case "ping":
			err = send(map[string]any{"type": "pong"})
		case "subscribe":
			f.subscriptions.Add(1)
			err = send(map[string]any{"type": "next", "id": msg.ID, "payload": map[string]any{"data": map[string]any{"tick": tickText}}})
			if err == nil {
				err = send(map[string]any{"type": "complete", "id": msg.ID})
			}
		}
		if err != nil {
			return
		}
	}
}
