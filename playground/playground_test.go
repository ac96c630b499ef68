package playground

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"html"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

const testOrigin = "http://api.example:8080"

func serve(t *testing.T, h http.Handler, method, target string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, testOrigin+target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testAssets(t *testing.T) map[string]*asset {
	t.Helper()
	a, err := loadAssets()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// parseCSP splits a policy into its directives' source lists.
func parseCSP(t *testing.T, policy string) map[string][]string {
	t.Helper()
	d := make(map[string][]string)
	for _, part := range strings.Split(policy, ";") {
		f := strings.Fields(part)
		if len(f) == 0 {
			continue
		}
		if _, dup := d[f[0]]; dup {
			t.Errorf("CSP names %s twice: %s", f[0], policy)
		}
		d[f[0]] = f[1:]
	}
	return d
}

func TestPageHeaders(t *testing.T) {
	h := Handler("/graphql")
	resp := serve(t, h, http.MethodGet, "/")
	page := string(body(t, resp))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":               "text/html; charset=utf-8",
		"X-Content-Type-Options":     "nosniff",
		"Referrer-Policy":            "no-referrer",
		"Cache-Control":              "no-store",
		"X-Frame-Options":            "DENY",
		"Cross-Origin-Opener-Policy": "same-origin",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}

	nonce := regexp.MustCompile(`nonce="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(nonce) != 1 || len(nonce[0][1]) < 22 {
		t.Fatalf("want one nonce of at least 128 bits (on bootstrap.js), got %q", nonce)
	}
	csp := parseCSP(t, resp.Header.Get("Content-Security-Policy"))
	want := map[string][]string{
		"default-src":     {"'self'"},
		"script-src":      {"'self'"},
		"style-src":       {"'self'", "'nonce-" + html.UnescapeString(nonce[0][1]) + "'"},
		"img-src":         {"'self'", "data:"},
		"font-src":        {"'self'", "data:"},
		"connect-src":     {"'self'", "ws://api.example:8080", "wss://api.example:8080"},
		"object-src":      {"'none'"},
		"base-uri":        {"'none'"},
		"form-action":     {"'none'"},
		"frame-ancestors": {"'none'"},
	}
	for name, sources := range want {
		if !slices.Equal(csp[name], sources) {
			t.Errorf("CSP %s: %q, want %q", name, csp[name], sources)
		}
	}
	for name, sources := range csp {
		if want[name] == nil {
			t.Errorf("CSP has an unexpected directive %s %q", name, sources)
		}
		for _, s := range sources {
			switch {
			case s == "'unsafe-inline'", s == "'unsafe-eval'", s == "'unsafe-hashes'", s == "'wasm-unsafe-eval'",
				s == "'strict-dynamic'", strings.Contains(s, "*"), strings.HasPrefix(s, "http"),
				s == "blob:", s == "filesystem:", s == "mediastream:":
				t.Errorf("CSP %s allows %s", name, s)
			}
		}
	}

	// Each response gets its own nonce.
	again := serve(t, h, http.MethodGet, "/")
	if n2 := parseCSP(t, again.Header.Get("Content-Security-Policy"))["style-src"]; slices.Equal(n2, csp["style-src"]) {
		t.Errorf("two responses share the nonce %q", n2)
	}

	head := serve(t, h, http.MethodHead, "/")
	if head.StatusCode != http.StatusOK || len(body(t, head)) != 0 || head.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("HEAD /: %d, %d bytes, CSP %q", head.StatusCode, len(body(t, head)), head.Header.Get("Content-Security-Policy"))
	}
}

// TestCSPHost: the WebSocket sources come from the Host header, so a Host
// that is not a plain host[:port] must not reach the policy.
func TestCSPHost(t *testing.T) {
	h := Handler("/graphql")
	for host, want := range map[string]string{
		"localhost:8080":             "'self' ws://localhost:8080 wss://localhost:8080",
		"api.example":                "'self' ws://api.example wss://api.example",
		"127.0.0.1:1234":             "'self' ws://127.0.0.1:1234 wss://127.0.0.1:1234",
		"[::1]:8080":                 "'self' ws://[::1]:8080 wss://[::1]:8080",
		"flash_sale-api:80":          "'self' ws://flash_sale-api:80 wss://flash_sale-api:80",
		"evil.example;script-src *":  "'self'",
		"evil.example script-src":    "'self'",
		"evil.example,other.example": "'self'",
		"a'b":                        "'self'",
		"":                           "'self'",
		"host:port":                  "'self'",
		"-bad.example":               "'self'",
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		policy := rec.Header().Get("Content-Security-Policy")
		csp := parseCSP(t, policy)
		if got := strings.Join(csp["connect-src"], " "); got != want {
			t.Errorf("Host %q: connect-src %q, want %q", host, got, want)
		}
		if len(csp) != 10 || strings.Count(policy, ";") != 9 {
			t.Errorf("Host %q changed the policy's shape: %s", host, policy)
		}
	}
}

// pageRefs is what the page's HTML refers to.
type pageRefs struct {
	scripts, styles []ref  // <script src>, <link rel=stylesheet href>
	others          []ref  // every other URL-valued attribute
	endpoint        string // #graphiql's data-endpoint
	problems        []string
}

type ref struct{ url, integrity string }

// parseHTML reads the page with encoding/xml in its HTML mode: enough for a
// page that we write ourselves, and it sees every element and attribute.
func parseHTML(t *testing.T, page string) pageRefs {
	t.Helper()
	var r pageRefs
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	var inScript bool
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("parse the page: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			attr := func(name string) string {
				for _, a := range tok.Attr {
					if strings.EqualFold(a.Name.Local, name) {
						return a.Value
					}
				}
				return ""
			}
			el := strings.ToLower(tok.Name.Local)
			for _, a := range tok.Attr {
				n := strings.ToLower(a.Name.Local)
				switch {
				case strings.HasPrefix(n, "on"):
					r.problems = append(r.problems, "inline event handler "+el+" "+n)
				case n == "style":
					r.problems = append(r.problems, "inline style on "+el)
				case n == "src" && el == "script":
					r.scripts = append(r.scripts, ref{a.Value, attr("integrity")})
				case n == "href" && el == "link" && attr("rel") == "stylesheet":
					r.styles = append(r.styles, ref{a.Value, attr("integrity")})
				case n == "src", n == "href", n == "action", n == "formaction", n == "srcset",
					n == "poster", n == "data", n == "manifest", n == "background", n == "ping":
					r.others = append(r.others, ref{url: a.Value})
				case n == "data-endpoint":
					r.endpoint = a.Value
				case n == "http-equiv":
					r.problems = append(r.problems, "meta http-equiv "+attr("content"))
				}
			}
			switch el {
			case "script":
				if attr("src") == "" {
					r.problems = append(r.problems, "inline <script>")
				}
				inScript = true
			case "style", "iframe", "object", "embed", "base", "form", "frame":
				r.problems = append(r.problems, "<"+el+"> element")
			}
		case xml.CharData:
			if inScript && strings.TrimSpace(string(tok)) != "" {
				r.problems = append(r.problems, "inline script text "+string(tok))
			}
		case xml.EndElement:
			if strings.EqualFold(tok.Name.Local, "script") {
				inScript = false
			}
		}
	}
	return r
}

// sameOrigin resolves u against the page and reports whether a browser
// would fetch it from the page's origin (data: URLs fetch nothing).
func sameOrigin(t *testing.T, u string) bool {
	t.Helper()
	base, _ := url.Parse(testOrigin + "/")
	p, err := url.Parse(u)
	if err != nil {
		t.Errorf("bad URL %q: %v", u, err)
		return false
	}
	if p.Scheme == "data" {
		return true
	}
	abs := base.ResolveReference(p)
	return abs.Scheme == base.Scheme && abs.Host == base.Host
}

// TestPageReferences: every URL in the page is same-origin, every asset it
// names is served with the right type and integrity, and it names them all.
func TestPageReferences(t *testing.T) {
	h := Handler("/graphql")
	page := string(body(t, serve(t, h, http.MethodGet, "/")))
	refs := parseHTML(t, page)
	for _, p := range refs.problems {
		t.Errorf("the page has %s", p)
	}
	if refs.endpoint != "/graphql" {
		t.Errorf("data-endpoint %q, want /graphql", refs.endpoint)
	}
	for _, o := range refs.others {
		if !sameOrigin(t, o.url) {
			t.Errorf("the page refers to another origin: %s", o.url)
		}
	}

	assets := testAssets(t)
	check := func(kind string, got []ref, names []string, ctype string) {
		var urls []string
		for _, r := range got {
			urls = append(urls, r.url)
		}
		var want []string
		for _, n := range names {
			want = append(want, assets[n].URL)
		}
		if !slices.Equal(urls, want) {
			t.Errorf("%s: the page loads %q, want %q", kind, urls, want)
		}
		for _, r := range got {
			if !sameOrigin(t, r.url) || !strings.HasPrefix(r.url, Prefix) {
				t.Errorf("%s %s is not a path under %s", kind, r.url, Prefix)
				continue
			}
			resp := serve(t, h, http.MethodGet, r.url)
			b := body(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %d", r.url, resp.StatusCode)
				continue
			}
			if got := resp.Header.Get("Content-Type"); got != ctype {
				t.Errorf("%s: Content-Type %q, want %q", r.url, got, ctype)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%s: X-Content-Type-Options %q", r.url, got)
			}
			if got := resp.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
				t.Errorf("%s: Cache-Control %q", r.url, got)
			}
			sum := sha256.Sum256(b)
			if want := "sha256-" + base64.StdEncoding.EncodeToString(sum[:]); r.integrity != want {
				t.Errorf("%s: integrity %q, want %q", r.url, r.integrity, want)
			}
			// The path carries the content's hash: a new version is a new URL.
			if !strings.Contains(r.url, "/"+hex.EncodeToString(sum[:8])+"/") {
				t.Errorf("%s: the path lacks the content hash %x", r.url, sum[:8])
			}
		}
	}
	check("stylesheets", refs.styles, styles, "text/css; charset=utf-8")
	check("scripts", refs.scripts, scripts, "text/javascript; charset=utf-8")
}

// TestEndpointEscaped: the endpoint reaches the page only as an escaped
// attribute value.
func TestEndpointEscaped(t *testing.T) {
	page := string(body(t, serve(t, Handler(`/g"><script>alert(1)</script>`), http.MethodGet, "/")))
	if strings.Contains(page, "<script>alert") {
		t.Fatalf("endpoint not escaped:\n%s", page)
	}
	if got := parseHTML(t, page).endpoint; got != `/g"><script>alert(1)</script>` {
		t.Errorf("data-endpoint %q", got)
	}
}

func TestHandlerRejectsOtherOrigins(t *testing.T) {
	for _, e := range []string{"", "graphql", "//evil.example/graphql", "http://evil.example/graphql", "/a b", `/\evil.example`} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handler(%q) did not panic", e)
				}
			}()
			Handler(e)
		}()
	}
}

// jsStrings returns the string literals of a script (comments skipped).
func jsStrings(src string) []string {
	var out []string
	for i := 0; i < len(src); i++ {
		switch c := src[i]; {
		case c == '/' && i+1 < len(src) && src[i+1] == '/':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return out
			}
			i += end + 3
		case c == '"' || c == '\'' || c == '`':
			var b strings.Builder
			for i++; i < len(src) && src[i] != c; i++ {
				if src[i] == '\\' && i+1 < len(src) {
					i++
				}
				b.WriteByte(src[i])
			}
			out = append(out, b.String())
		}
	}
	return out
}

// TestBootstrapURLs: the bootstrap names no origin: every URL it uses comes
// from the page's location and data-endpoint, and it loads nothing itself.
func TestBootstrapURLs(t *testing.T) {
	src, err := fs.ReadFile(embedded, "assets/app/bootstrap.js")
	if err != nil {
		t.Fatal(err)
	}
	absolute := regexp.MustCompile(`(?i)^[a-z][a-z0-9+.-]*:|^//|^\\\\`)
	strs := jsStrings(string(src))
	if len(strs) < 5 {
		t.Fatalf("found only %d string literals: %q", len(strs), strs)
	}
	for _, s := range strs {
		if s == "https:" || s == "wss:" || s == "ws:" {
			continue // protocol names, to derive ws(s):// from the page's URL
		}
		if absolute.MatchString(s) || strings.Contains(s, "://") {
			t.Errorf("bootstrap.js names a URL with its own origin: %q", s)
		}
	}
	for _, forbidden := range []string{"fetch(", "XMLHttpRequest", "import(", "new WebSocket", "new Worker", "eval(", "new Function", ".src", "innerHTML", "document.write"} {
		if bytes.Contains(src, []byte(forbidden)) {
			t.Errorf("bootstrap.js uses %s: it should leave all loading to GraphiQL's fetcher", forbidden)
		}
	}
	for _, must := range []string{`getAttribute("data-endpoint")`, "window.location.href", "url.origin !== window.location.origin"} {
		if !bytes.Contains(src, []byte(must)) {
			t.Errorf("bootstrap.js lacks %s", must)
		}
	}
}

// The hosts whose URLs the vendored code only mentions (XML namespaces,
// links in comments and error messages), never loads. A new host here needs
// a look: the browser test would catch a request to it, this names it.
var mentionedHosts = map[string]bool{
	"www.w3.org":       true, // SVG/XHTML/MathML namespaces
	"reactjs.org":      true, // react-dom's minified error messages
	"github.com":       true, // license comments, graphiql's error messages
	"radix-ui.com":     true, // a Radix warning's docs link
	"commonmark.org":   true, // markdown-it comment
	"codemirror.net":   true, // CodeMirror comment
	"en.wikipedia.org": true, // a comment
}

// TestVendoredAssetsLoadNothing checks the embedded JS and CSS for what
// could make the browser reach another host, or need a looser CSP. (Plain
// string scans: regexp over 1.5 MB is slow under -race.)
func TestVendoredAssetsLoadNothing(t *testing.T) {
	// CDN host names, with or without a scheme (not the words: graphiql's
	// error messages mention "jsdelivr, unpkg" in prose).
	cdns := []string{"unpkg.com", "jsdelivr.net", "jsdelivr.com", "googleapis.com", "gstatic.com", "cdnjs.",
		"esm.sh", "esm.run", "skypack.dev", "cloudflare.com", "jspm.io", "//cdn."}
	for name, a := range testAssets(t) {
		src := strings.ToLower(string(a.body)) // every pattern below is lower case
		context := func(i, n int) string { return src[max(0, i-60):min(len(src), i+n+60)] }
		for _, cdn := range cdns {
			if i := strings.Index(src, cdn); i >= 0 {
				t.Errorf("%s names a CDN: …%s…", name, context(i, len(cdn)))
			}
		}
		// Every scheme://host and every protocol-relative //host.
		for off := 0; ; {
			i := strings.Index(src[off:], "//")
			if i < 0 {
				break
			}
			i += off
			off = i + 2
			host := src[off:]
			if j := strings.IndexFunc(host, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-')
			}); j >= 0 {
				host = host[:j]
			}
			if !strings.Contains(host, ".") || strings.HasPrefix(host, ".") {
				continue // a comment, a regexp, "//" in code: no host
			}
			before := src[max(0, i-6):i]
			switch {
			case strings.HasSuffix(before, "https:"), strings.HasSuffix(before, "http:"),
				strings.HasSuffix(before, "wss:"), strings.HasSuffix(before, "ws:"):
				if !mentionedHosts[host] {
					t.Errorf("%s names %s: check it is never loaded, then add it to mentionedHosts: …%s…", name, host, context(i, 2))
				}
			case strings.HasSuffix(before, `"`), strings.HasSuffix(before, "'"), strings.HasSuffix(before, "("),
				strings.HasSuffix(before, "="), strings.HasSuffix(before, "`"):
				t.Errorf("%s has a protocol-relative URL: …%s…", name, context(i, 2))
			}
		}
		if strings.Contains(src, "sourcemappingurl") {
			t.Errorf("%s still names its source map (refresh.sh drops it)", name)
		}
		switch path.Ext(name) {
		case ".css":
			for off := 0; ; {
				i := strings.Index(src[off:], "url(")
				if i < 0 {
					break
				}
				off += i + 4
				u := strings.TrimLeft(src[off:], " \t\"'")
				if !strings.HasPrefix(u, "data:") {
					t.Errorf("%s: url(%s) would be fetched; only data: URLs are expected", name, u[:min(len(u), 60)])
				}
			}
			if strings.Contains(src, "@import") {
				t.Errorf("%s has an @import", name)
			}
		case ".js":
			// Anything the CSP forbids (eval) or that would need more sources.
			for _, f := range []string{"new function(", "eval(", "import(", "importscripts(", "new worker(",
				"new sharedworker(", "serviceworker.register", "sendbeacon("} {
				if i := strings.Index(src, f); i >= 0 {
					t.Errorf("%s uses %s: …%s…", name, f, context(i, len(f)))
				}
			}
		}
	}
}

// TestManifest: the vendored files are refresh.sh's output, unedited.
func TestManifest(t *testing.T) {
	f, err := os.Open("assets/vendor/MANIFEST")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) != 4 {
			t.Fatalf("MANIFEST line %q: want 4 tab-separated columns", line)
		}
		listed["vendor/"+cols[0]] = cols[3]
	}
	assets := testAssets(t)
	for name, a := range assets {
		if !strings.HasPrefix(name, "vendor/") {
			continue
		}
		sum := sha256.Sum256(a.body)
		if want, ok := listed[name]; !ok {
			t.Errorf("%s is embedded but not in MANIFEST", name)
		} else if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: sha256 %s, MANIFEST says %s (edited by hand? run refresh.sh)", name, got, want)
		}
	}
	for name := range listed {
		if assets[name] == nil {
			t.Errorf("MANIFEST lists %s, which is not embedded", name)
		}
	}
}

func TestAssetCaching(t *testing.T) {
	h := Handler("/graphql")
	for name, a := range testAssets(t) {
		plain := serve(t, h, http.MethodGet, a.URL)
		etag := plain.Header.Get("ETag")
		if plain.StatusCode != http.StatusOK || etag == "" || plain.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: %d, ETag %q, Content-Encoding %q", name, plain.StatusCode, etag, plain.Header.Get("Content-Encoding"))
		}
		if !bytes.Equal(body(t, plain), a.body) {
			t.Errorf("%s: body differs from the embedded file", name)
		}
		if r := serve(t, h, http.MethodGet, a.URL, "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
			t.Errorf("%s: If-None-Match %s: %d, want 304", name, etag, r.StatusCode)
		}
		if r := serve(t, h, http.MethodHead, a.URL); r.StatusCode != http.StatusOK || len(body(t, r)) != 0 {
			t.Errorf("%s: HEAD: %d", name, r.StatusCode)
		}
		gz := serve(t, h, http.MethodGet, a.URL, "Accept-Encoding", "br, gzip;q=0.8")
		if gz.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("%s: Vary %q", name, gz.Header.Get("Vary"))
		}
		b := body(t, gz)
		if gz.Header.Get("Content-Encoding") == "gzip" {
			if gz.Header.Get("ETag") == etag {
				t.Errorf("%s: gzip and identity share the ETag %s", name, etag)
			}
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		} else if len(a.body) > 4096 {
			t.Errorf("%s (%d bytes) not gzipped", name, len(a.body))
		}
		if !bytes.Equal(b, a.body) {
			t.Errorf("%s: gzip body differs from the embedded file", name)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for ae, want := range map[string]bool{
		"":                  false,
		"gzip":              true,
		"GZIP":              true,
		"br, gzip, deflate": true,
		"gzip;q=0.5":        true,
		"gzip;q=0":          false,
		"gzip; q=0.000":     false,
		"identity":          false,
		"x-gzip":            false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Accept-Encoding", ae)
		if got := acceptsGzip(r); got != want {
			t.Errorf("Accept-Encoding %q: %v, want %v", ae, got, want)
		}
	}
}

func TestNotFound(t *testing.T) {
	h := Handler("/graphql")
	js := testAssets(t)["vendor/graphiql.min.js"].URL
	for _, p := range []string{
		"/nope",
		"/index.html",
		"/favicon.ico",
		Prefix,
		strings.TrimSuffix(Prefix, "/"),
		Prefix + "vendor/graphiql.min.js", // no hash
		Prefix + "0000000000000000/vendor/graphiql.min.js",   // wrong hash
		strings.Replace(js, "graphiql.min.js", "nope.js", 1), // right hash, other name
		js + "/",
		js + ".map",
		strings.Replace(js, "/vendor/", "/vendor/../vendor/", 1),
		Prefix + "MANIFEST",
	} {
		if r := serve(t, h, http.MethodGet, p); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.StatusCode)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		for _, p := range []string{"/", js} {
			r := serve(t, h, m, p)
			if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d, Allow %q; want 405, GET, HEAD", m, p, r.StatusCode, r.Header.Get("Allow"))
			}
		}
	}
}

// TestEmbeddedSize keeps the binary's share in view.
func TestEmbeddedSize(t *testing.T) {
	var total, gz int
	for name, a := range testAssets(t) {
		total += len(a.body)
		z := len(a.body)
		if a.gzipped() != nil {
			z = len(a.gzipped())
		}
		gz += z
		t.Logf("%-36s %9d bytes, %8d gzipped", name, len(a.body), z)
	}
	t.Logf("embedded: %d bytes (%.2f MiB), %d bytes on the wire gzipped", total, float64(total)/(1<<20), gz)
	if total > 3<<20 {
		t.Errorf("the embedded assets grew to %d bytes (budget 3 MiB)", total)
	}
}

func TestMissingAssetFails(t *testing.T) {
	// readAssets refuses a tree without a file the page loads (the build
	// cannot embed nothing: go:embed patterns must match files).
	partial := fstest.MapFS{"app/page.css": {Data: []byte("body{}")}, "app/bootstrap.js": {Data: []byte(";")}}
	if _, err := readAssets(partial); err == nil || !strings.Contains(err.Error(), "refresh.sh") {
		t.Errorf("readAssets without the page's files: %v", err)
	}
}
