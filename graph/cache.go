package graph

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"flashsale/graph/model"
)

// Caching at the edge (the contract's section of that name; docs/caching.md).
//
// A hyped product page is refreshed by far more people than an origin
// should serve; a CDN or nginx in front absorbs them when the answers say
// they may. An answer is cacheable only when everything about it is the
// same for everyone, so each GET answer is judged on three things:
//
//   - the operation: a query whose every selected field is declared
//     @cacheControl(scope: PUBLIC) in schema.graphqls. A field without the
//     declaration is private, so a field added later is never cached until
//     someone has judged it;
//   - the caller: a request with Authorization is never cacheable (and
//     answers vary by it, so a cache never serves it a public answer);
//   - the outcome: an answer with errors, or not 200, is never cacheable.
//
// Everything else, every POST (mutations, event streams) included, is
// answered Cache-Control: no-store.

// directiveCacheControl is the schema directive that declares a field public.
const directiveCacheControl = "cacheControl"

// fieldIsPublic reports whether a field definition is declared
// @cacheControl(scope: PUBLIC): its value depends on neither the caller nor
// the clock. Without the declaration a field is private.
func fieldIsPublic(def *ast.FieldDefinition) bool {
	if def == nil {
		return false
	}
	d := def.Directives.ForName(directiveCacheControl)
	if d == nil {
		return false
	}
	scope := d.Arguments.ForName("scope")
	return scope != nil && scope.Value != nil && scope.Value.Raw == string(model.CacheControlScopePublic)
}

// operationIsPublic reports whether op is a query whose every field, in
// fragments too, is public. @skip and @include are not evaluated: a private
// field that is skipped still makes the query private.
func operationIsPublic(op *ast.OperationDefinition) bool {
	return op != nil && op.Operation == ast.Query && selectionIsPublic(op.SelectionSet)
}

func selectionIsPublic(set ast.SelectionSet) bool {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			// __typename names a type: the same for everyone.
			if s.Name != "__typename" && !fieldIsPublic(s.Definition) {
				return false
			}
			if !selectionIsPublic(s.SelectionSet) {
				return false
			}
		case *ast.InlineFragment:
			if !selectionIsPublic(s.SelectionSet) {
				return false
			}
		case *ast.FragmentSpread:
			// Validation rejects fragment cycles before execution.
			if s.Definition == nil || !selectionIsPublic(s.Definition.SelectionSet) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// edgeCache writes every /graphql answer's Cache-Control (and, for public
// ones, ETag and 304s).
type edgeCache struct {
	public string // the public answers' Cache-Control; "": READ_CACHE_MAX_AGE is 0, nothing is public
}

func newEdgeCache(maxAgeSeconds int) *edgeCache {
	c := &edgeCache{}
	if maxAgeSeconds > 0 {
		n := strconv.Itoa(maxAgeSeconds)
		// stale-while-revalidate as long as max-age: a cache refreshes in the
		// background instead of making a viewer wait, and what it shows is at
		// most 2N seconds (plus its clock's granularity) old.
		c.public = "public, max-age=" + n + ", stale-while-revalidate=" + n
	}
	return c
}

// cacheVerdict is what the GraphQL side found out about one candidate
// request (see aroundOperations); a request it never reached stays private.
type cacheVerdict struct {
	public bool // a query of public fields only
	failed bool // its answer had errors, or there was no single answer
}

type cacheVerdictKey struct{}

// aroundOperations judges the operation of a candidate request (one wrap
// buffers) and notes whether its answer has errors. Installed last, so it
// sees the answers of every other operation middleware.
func (c *edgeCache) aroundOperations(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	v, ok := ctx.Value(cacheVerdictKey{}).(*cacheVerdict)
	if !ok {
		return next(ctx)
	}
	v.public = operationIsPublic(graphql.GetOperationContext(ctx).Operation)
	h := next(ctx)
	return func(ctx context.Context) *graphql.Response {
		resp := h(ctx)
		if resp == nil || len(resp.Errors) > 0 || (resp.HasNext != nil && *resp.HasNext) {
			v.failed = true
		}
		return resp
	}
}

// wrap sets Cache-Control on every answer of next. A candidate (a GET
// without Authorization, with caching on) is buffered, so that its headers
// can follow its outcome; everything else is no-store from the start.
func (c *edgeCache) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch kindOf(r) {
		case webSocket: // a 101 and a tunnel: nothing for a cache
			next.ServeHTTP(w, r)
			return
		case eventStream: // gqlgen's SSE transport sets no-cache itself
			next.ServeHTTP(&noStoreWriter{ResponseWriter: w}, r)
			return
		}
		h := w.Header()
		if r.Method == http.MethodGet {
			// A cache that would serve one answer to every caller must ask
			// the origin again for a caller with a token.
			h.Add("Vary", "Authorization")
		}
		_, authorized := r.Header["Authorization"]
		if c.public == "" || r.Method != http.MethodGet || authorized {
			h.Set("Cache-Control", "no-store")
			next.ServeHTTP(w, r)
			return
		}
		v := &cacheVerdict{}
		bw := &bufferedWriter{header: h, status: http.StatusOK}
		next.ServeHTTP(bw, r.WithContext(context.WithValue(r.Context(), cacheVerdictKey{}, v)))
		c.answer(w, r, bw, v.public && !v.failed && bw.status == http.StatusOK)
	})
}

// answer writes a buffered answer with its caching headers, or a 304 when
// the client (or a cache revalidating) already has it.
func (c *edgeCache) answer(w http.ResponseWriter, r *http.Request, bw *bufferedWriter, public bool) {
	h := w.Header()
	if !public {
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(bw.status)
		_, _ = w.Write(bw.body)
		return
	}
	etag := etagOf(bw.body)
	h.Set("Cache-Control", c.public)
	h.Set("ETag", etag)
	if noneMatch(r.Header.Values("If-None-Match"), etag) {
		h.Del("Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(bw.body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(bw.body)
}

// etagOf is a strong validator of an answer's bytes: 128 bits of SHA-256
// are plenty to tell two answers apart.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// noneMatch reports whether If-None-Match lists etag (or is "*"), by the
// weak comparison RFC 9110 prescribes for it.
func noneMatch(values []string, etag string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == "*" || t == etag {
				return true
			}
		}
	}
	return false
}

// bufferedWriter holds a GET answer until its caching headers are known.
// It shares the real writer's header map; no Unwrap, so nothing can write
// around the buffer.
type bufferedWriter struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        []byte
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if !b.wroteHeader {
		b.status, b.wroteHeader = code, true
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.wroteHeader = true
	b.body = append(b.body, p...)
	return len(p), nil
}

// noStoreWriter makes an event stream's Cache-Control no-store, whatever
// the transport set, and tells a proxy not to buffer it, before its first
// byte.
type noStoreWriter struct {
	http.ResponseWriter
	sent bool
}

func (n *noStoreWriter) before() {
	if !n.sent {
		n.sent = true
		n.Header().Set("Cache-Control", "no-store")
		// nginx would otherwise buffer the events (deploy/nginx).
		n.Header().Set("X-Accel-Buffering", "no")
	}
}

func (n *noStoreWriter) WriteHeader(code int) {
	n.before()
	n.ResponseWriter.WriteHeader(code)
}

func (n *noStoreWriter) Write(p []byte) (int, error) {
	n.before()
	return n.ResponseWriter.Write(p)
}

// Flush: gqlgen's SSE transport needs an http.Flusher.
func (n *noStoreWriter) Flush() {
	n.before()
	_ = http.NewResponseController(n.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (streams.go
// clears its deadlines).
func (n *noStoreWriter) Unwrap() http.ResponseWriter { return n.ResponseWriter }
