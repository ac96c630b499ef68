// Package playground owns the operator's GraphiQL page and its assets.
//
// Handler serves the page at / and its assets under Prefix, all built into
// the binary (go:embed): the page makes no request to any other host and
// works with no internet access. The assets are GraphiQL's own browser build
// and React's, fetched from the npm registry at the versions pinned in
// assets-src/package-lock.json and copied into assets/vendor/ by refresh.sh;
// assets/app/ holds the page's bootstrap script and stylesheet.
//
// The page runs under a strict Content-Security-Policy (see csp): scripts
// and stylesheets only from this origin, no inline script and no eval, one
// inline <style> admitted by a per-response nonce, requests only to this
// origin (and its ws:// and wss:// for subscriptions), and no framing. Asset
// URLs carry a hash of their content, so browsers keep them for a year; the
// page itself (1 KB, with a fresh nonce) is fetched anew on every load.
//
// To upgrade GraphiQL or React, see refresh.sh.
package playground

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Prefix is the path under which Handler serves the page's assets. Mount
// Handler at both "GET /{$}" and "GET "+Prefix.
const Prefix = "/playground/"

//go:embed page.html
var pageTemplate string

//go:embed assets/vendor/*.js assets/vendor/*.css assets/app/*.js assets/app/*.css
var embedded embed.FS

// The page's stylesheets and scripts, in the order it loads them (the
// scripts are deferred, so they run in this order once the page is parsed).
var (
	styles  = []string{"vendor/graphiql.min.css", "app/page.css"}
	scripts = []string{
		"vendor/react.production.min.js",
		"vendor/react-dom.production.min.js",
		"vendor/graphiql.min.js",
		"app/bootstrap.js",
	}
)

var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
}

// asset is one embedded file, served at URL.
type asset struct {
	Name      string // path under assets/, e.g. "vendor/graphiql.min.js"
	URL       string // Prefix + content hash + "/" + Name
	Integrity string // subresource integrity, "sha256-…"
	body      []byte
	ctype     string
	etag      string

	gzOnce sync.Once
	gz     []byte // gzip of body, made on first use; nil if it does not pay
}

// The embedded files, read once. They cannot change while the process runs.
var loadAssets = sync.OnceValues(func() (map[string]*asset, error) {
	sub, err := fs.Sub(embedded, "assets")
	if err != nil {
		return nil, err
	}
	return readAssets(sub)
})

func readAssets(files fs.FS) (map[string]*asset, error) {
	byName := make(map[string]*asset)
	err := fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("playground: asset %s: no content type for its extension", name)
		}
		sum := sha256.Sum256(body)
		version := hex.EncodeToString(sum[:8])
		byName[name] = &asset{
			Name:      name,
			URL:       Prefix + version + "/" + name,
			Integrity: "sha256-" + base64.StdEncoding.EncodeToString(sum[:]),
			body:      body,
			ctype:     ctype,
			etag:      `"` + version + `"`,
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, name := range append(append([]string(nil), styles...), scripts...) {
		if byName[name] == nil {
			return nil, fmt.Errorf("playground: asset %s is missing (run playground/refresh.sh)", name)
		}
	}
	return byName, nil
}

// Handler returns the handler of the playground: GraphiQL at "/", talking to
// endpoint (a path on the same origin, such as "/graphql", for both HTTP and
// WebSocket), and its assets under Prefix. Any other path is 404, any method
// but GET and HEAD 405. It panics if endpoint is not an absolute path, or if
// the embedded assets are incomplete (a build without refresh.sh's output).
func Handler(endpoint string) http.Handler {
	if !strings.HasPrefix(endpoint, "/") || strings.HasPrefix(endpoint, "//") || strings.ContainsAny(endpoint, "\\ \t\r\n") {
		panic(fmt.Sprintf("playground: endpoint %q is not a path on this origin (such as /graphql)", endpoint))
	}
	assets, err := loadAssets()
	if err != nil {
		panic(err)
	}
	page, err := template.New("page").Parse(pageTemplate)
	if err != nil {
		panic(err)
	}
	h := &handler{page: page, endpoint: endpoint, assets: make(map[string]*asset, len(assets))}
	for _, name := range styles {
		h.styles = append(h.styles, assets[name])
	}
	for _, name := range scripts {
		h.scripts = append(h.scripts, assets[name])
	}
	for _, a := range assets {
		h.assets[a.URL] = a
	}
	// Render once now, so that a broken template fails here and not on a request.
	if _, err := h.render("nonce"); err != nil {
		panic(err)
	}
	return h
}

type handler struct {
	page            *template.Template
	endpoint        string
	styles, scripts []*asset
	assets          map[string]*asset // by URL path
}

// render renders the page with the CSP nonce of its response.
func (h *handler) render(nonce string) ([]byte, error) {
	var buf bytes.Buffer
	err := h.page.Execute(&buf, struct {
		Title, Endpoint, Nonce string
		Styles, Scripts        []*asset
	}{"Flash-sale API · GraphiQL", h.endpoint, nonce, h.styles, h.scripts})
	return buf.Bytes(), err
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == "/" {
		h.servePage(w, r)
		return
	}
	a := h.assets[r.URL.Path]
	if a == nil {
		http.NotFound(w, r)
		return
	}
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
	hdr.Set("Vary", "Accept-Encoding")
	body, etag := a.body, a.etag
	if gz := a.gzipped(); gz != nil && acceptsGzip(r) {
		body, etag = gz, strings.TrimSuffix(a.etag, `"`)+`-gzip"`
		hdr.Set("Content-Encoding", "gzip")
	}
	hdr.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// servePage serves the page with a fresh nonce. The nonce is for the one
// <style> element GraphiQL adds itself (react-remove-scroll's, while a dialog
// is open): bootstrap.js hands it on as __webpack_nonce__, which that
// library reads. Since the nonce is new on every response, the page is never
// stored (no-store), never revalidated against an old copy.
func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	nonce := rand.Text() // 130 random bits in base32: nothing to escape in HTML
	page, err := h.render(nonce)
	if err != nil {
		http.Error(w, "playground: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Content-Security-Policy", csp(r.Host, nonce))
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(page))
}

// gzipped returns the asset compressed, or nil where that saves under 10%.
func (a *asset) gzipped() []byte {
	a.gzOnce.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(a.body)
		if zw.Close() == nil && buf.Len() < len(a.body)*9/10 {
			a.gz = buf.Bytes()
		}
	})
	return a.gz
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(params, " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// hostRE is what csp accepts as the request's host[:port] before writing it
// into the policy: a DNS name or IP literal, nothing that could end a source
// or a directive (Go's server lets ';' and ',' through in Host).
var hostRE = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$`)

// csp is the page's Content-Security-Policy for a request to host:
//
//   - default-src 'self': anything not named below only from this origin.
//   - script-src 'self': the four scripts, no inline script, no eval.
//   - style-src 'self' 'nonce-…': graphiql.min.css and page.css, and the one
//     <style> element GraphiQL adds (see servePage), by its nonce. Style
//     attributes set by React and CodeMirror through the CSSOM need no
//     'unsafe-inline'.
//   - img-src and font-src 'self' data:: graphiql.min.css inlines its fonts
//     and icons as data: URIs (no request leaves the page for them).
//   - connect-src 'self' ws://host wss://host: the GraphQL endpoint over
//     HTTP, and over WebSocket for subscriptions ('self' does not cover ws:
//     in every browser, so the page's own host is named, from Host).
//   - object-src 'none', base-uri 'none', form-action 'none',
//     frame-ancestors 'none': no plugins, no <base> rewriting every relative
//     URL, no form posting anywhere, no framing (clickjacking).
func csp(host, nonce string) string {
	connect := "'self'"
	if hostRE.MatchString(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return strings.Join([]string{
		"default-src 'self'",
		"script-src 'self'",
		"style-src 'self' 'nonce-" + nonce + "'",
		"img-src 'self' data:",
		"font-src 'self' data:",
		"connect-src " + connect,
		"object-src 'none'",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}
