package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"flashsale/internal/respond"
	"flashsale/metrics"
	"flashsale/ratelimit"
)

// Options configure the GraphQL handler.
type Options struct {
	Limits
	// Origins are CORS_ALLOWED_ORIGINS: besides the server's own, the
	// browser origins that may open a subscription ("*": any).
	Origins []string
	// RateLimit caps one caller's mutations (RATE_LIMIT; zero: off);
	// Proxies are the TRUSTED_PROXIES whose X-Forwarded-For is believed.
	RateLimit ratelimit.Rate
	Proxies   ratelimit.Proxies
	Logger    *slog.Logger
	// Metrics, if set, times operations and counts rate-limited holds
	// (createHold's other answers are counted by its resolver).
	Metrics *metrics.Metrics

	// MaxSubscriptionsPerConnection caps the subscriptions on one WebSocket
	// (zero: 25); MaxStreamsPerIP the WebSocket connections plus SSE
	// streams open at once from one client IP, by Proxies.ClientIP (zero: off).
	MaxSubscriptionsPerConnection int
	MaxStreamsPerIP               int

	// ReadCacheMaxAge is READ_CACHE_MAX_AGE, in seconds: how long a CDN may
	// keep a public GET answer (cache.go); zero: every answer is no-store.
	ReadCacheMaxAge int
}

// Handler is the GraphQL API (for /graphql).
type Handler struct {
	http.Handler
	streams *streams
}

// Shutdown ends every subscription stream, WebSocket connections with
// close code 1001, and waits for them until ctx ends. Call it before the
// HTTP server's Shutdown, which does not see upgraded connections.
func (h *Handler) Shutdown(ctx context.Context) error { return h.streams.shutdown(ctx) }

// keepAlive is how often an idle subscription hears from the server
// (the contract: at least every 30 seconds).
const keepAlive = 20 * time.Second

// NewHandler returns the GraphQL API handler: POST and GET (queries only)
// transports, subscriptions over WebSocket (graphql-transport-ws) and
// Server-Sent Events, a parsed-query cache, size, depth and complexity
// limits, mutation rate limits, and the error presenter.
func NewHandler(r *Resolver, opts Options) *Handler {
	limits := opts.Limits.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	st := newStreams(opts)
	srv := handler.New(NewExecutableSchema(Config{Resolvers: r, Complexity: complexity()}))
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.Websocket{
		Implementation:        websocketImpl{st},
		InitFunc:              r.initConnection,
		InitTimeout:           3 * time.Second, // connection_init must come within it
		PingPongInterval:      keepAlive,       // graphql-transport-ws: ping, and a peer that never pongs is dropped
		KeepAlivePingInterval: keepAlive,       // the older graphql-ws protocol's keepalive
	})
	srv.AddTransport(transport.SSE{KeepAlivePingInterval: keepAlive})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.Use(extension.Introspection{}) // the playground needs it
	// Size limit first, so APQ never caches a query over it.
	srv.Use(&limitExtension{Limits: limits})
	srv.Use(extension.AutomaticPersistedQuery{Cache: lru.New[string](apqCacheSize)})
	if opts.Metrics != nil {
		srv.AroundOperations(timeOperations(opts.Metrics))
	}
	srv.AroundOperations(shareResponses())
	srv.AroundOperations(st.limitPerConnection)
	var rl *rateLimits
	if !opts.RateLimit.Off() {
		rl = &rateLimits{rate: opts.RateLimit, limiter: ratelimit.New(opts.RateLimit), proxies: opts.Proxies, metrics: opts.Metrics}
		srv.AroundOperations(rl.intercept)
	}
	edge := newEdgeCache(opts.ReadCacheMaxAge)
	srv.AroundOperations(edge.aroundOperations) // last: it sees every other middleware's answer
	if limits.Timeout > 0 {
		// The deadline covers each root field's resolution (the database
		// work), not the whole HTTP request: started before the body is read,
		// it could expire before execution, and gqlgen then answers "null".
		// A subscription is long-lived: its own reads have their deadlines.
		srv.AroundRootFields(func(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
			if op := graphql.GetOperationContext(ctx).Operation; op != nil && op.Operation == ast.Subscription {
				return next(ctx)
			}
			ctx, cancel := context.WithTimeout(ctx, limits.Timeout)
			defer cancel()
			return next(ctx)
		})
	}
	srv.SetErrorPresenter(ErrorPresenter(log))
	srv.SetRecoverFunc(RecoverFunc(log))
	var h http.Handler = r.authenticate(r.withLoaders(srv))
	if rl != nil {
		h = rl.wrap(h)
	}
	return &Handler{Handler: edge.wrap(checkRequest(st.wrap(h))), streams: st}
}

// apqCacheSize is how many persisted queries (hash → query, each at most
// GRAPHQL_MAX_QUERY_BYTES) a process keeps. Storefronts send a handful,
// but a cached URL carries only the hash: one evicted costs a round trip
// (PersistedQueryNotFound, then the query again), so keep room for many.
const apqCacheSize = 1000

// MaxBody is the largest GraphQL request body accepted.
const MaxBody = 1 << 20

// checkRequest answers what gqlgen's transports would refuse without an
// extensions.code: POST bodies that are not JSON or are too large; and
// marks every answer nosniff.
func checkRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every answer is JSON (or an event stream): a browser must never
		// sniff one into HTML.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.Method == http.MethodGet {
			// gqlgen answers these without an extensions.code.
			q := r.URL.Query()
			for _, p := range []string{"variables", "extensions"} {
				if v := q.Get(p); v != "" && !isJSONObject(v) {
					writeError(w, http.StatusBadRequest, CodeBadUserInput, fmt.Sprintf("the %q parameter must be a JSON object", p))
					return
				}
			}
		}
		if r.Method == http.MethodPost {
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, CodeBadUserInput, "POST /graphql needs Content-Type: application/json")
				return
			}
			if r.ContentLength > MaxBody {
				writeError(w, http.StatusRequestEntityTooLarge, CodeBadUserInput, fmt.Sprintf("request body over %d bytes", MaxBody))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		}
		next.ServeHTTP(w, r)
	})
}

func isJSONObject(s string) bool {
	s = strings.TrimSpace(s)
	return strings.HasPrefix(s, "{") && json.Valid([]byte(s))
}

// writeError answers a request refused before GraphQL ran, in GraphQL's
// error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	respond.JSON(w, status, map[string]any{
		"errors": []any{map[string]any{"message": msg, "extensions": map[string]string{"code": code}}},
	})
}
