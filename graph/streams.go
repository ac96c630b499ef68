package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"

	"flashsale/ratelimit"
)

// Long-lived requests: WebSocket connections and Server-Sent Events streams
// for subscriptions. Once started they are not bound by the server's
// request deadlines (an open subscription is never cut by a timeout;
// keepalives detect dead peers), a browser's foreign Origin is refused, one
// client IP holds at most MAX_STREAMS_PER_IP of them, and on shutdown every
// one of them is ended (WebSocket with close code 1001, going away) and
// waited for.
type streams struct {
	origins []string // CORS_ALLOWED_ORIGINS ("*": any)
	proxies ratelimit.Proxies
	perIP   int // MAX_STREAMS_PER_IP; 0: off
	perConn int // MAX_SUBSCRIPTIONS_PER_CONNECTION
	ctx     context.Context
	cancel  context.CancelFunc
	closing atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	open    map[string]int // streams open per client IP key (ipKey)
}

// defaultSubsPerConnection is MAX_SUBSCRIPTIONS_PER_CONNECTION's default.
const defaultSubsPerConnection = 25

func newStreams(opts Options) *streams {
	s := &streams{origins: opts.Origins, proxies: opts.Proxies, perIP: opts.MaxStreamsPerIP,
		perConn: opts.MaxSubscriptionsPerConnection, open: map[string]int{}}
	if s.perConn <= 0 {
		s.perConn = defaultSubsPerConnection
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// streamKind is what a request opens.
type streamKind int

const (
	notStream   streamKind = iota
	webSocket              // GET with Upgrade: websocket (no body)
	eventStream            // POST with Accept: text/event-stream (gqlgen's SSE transport)
)

func kindOf(r *http.Request) streamKind {
	switch {
	case r.Method == http.MethodGet && headerHasToken(r.Header, "Upgrade", "websocket"):
		return webSocket
	case r.Method == http.MethodPost && strings.Contains(r.Header.Get("Accept"), "text/event-stream"):
		return eventStream
	}
	return notStream
}

// isStream reports whether r opens a WebSocket or an SSE stream.
func isStream(r *http.Request) bool { return kindOf(r) != notStream }

// headerHasToken reports whether the comma-separated header name lists
// token (in any case).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// streamRetryAfter is the Retry-After of a stream refused for its IP's
// cap: a slot frees when one of that IP's streams ends, which no one can
// foretell.
const streamRetryAfter = 5 * time.Second

// wrap serves stream requests with next, and passes the others through.
func (s *streams) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := kindOf(r)
		if kind == notStream {
			next.ServeHTTP(w, r)
			return
		}
		if !s.originAllowed(r) {
			writeError(w, http.StatusForbidden, CodeUnauthenticated,
				"this Origin may not subscribe: it is neither the server's own nor in CORS_ALLOWED_ORIGINS")
			return
		}
		if s.closing.Load() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "the server is shutting down; reconnect to another")
			return
		}
		release, ok := s.take(r)
		if !ok {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(streamRetryAfter)))
			writeError(w, http.StatusTooManyRequests, CodeRateLimited, fmt.Sprintf(
				"too many live streams from this client: at most %d WebSocket connections and SSE streams at once (MAX_STREAMS_PER_IP); close one first", s.perIP))
			return
		}
		defer release()
		s.wg.Add(1)
		defer s.wg.Done()
		ctx := r.Context()
		if kind == eventStream {
			// The body is read under the request's deadlines: a client that
			// never finishes it is cut by them, not kept forever.
			if !bufferBody(w, r) {
				return
			}
		} else {
			ctx = withWSConn(ctx, &wsConn{})
		}
		// The server's read and write timeouts are for requests; a stream
		// lives as long as its peer answers keepalives.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// take counts a stream against its client IP's MAX_STREAMS_PER_IP (an IPv6
// client by its /64); ok is false when the IP has no room. release gives
// the slot back.
func (s *streams) take(r *http.Request) (release func(), ok bool) {
	if s.perIP <= 0 {
		return func() {}, true
	}
	key := ipKey(s.proxies.ClientIP(r))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[key] >= s.perIP {
		return nil, false
	}
	s.open[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.open[key]--; s.open[key] <= 0 {
			delete(s.open, key)
		}
	}, true
}

// bufferBody reads r's whole body (at most MaxBody) into memory, where
// gqlgen's SSE transport reads it from, or answers the error and returns
// false.
func bufferBody(w http.ResponseWriter, r *http.Request) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeBadUserInput, fmt.Sprintf("request body over %d bytes", MaxBody))
		} else {
			writeError(w, http.StatusBadRequest, CodeBadUserInput, "the request body could not be read in time")
		}
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return true
}

// originAllowed: no Origin (apps, servers), the server's own, or one of
// CORS_ALLOWED_ORIGINS.
func (s *streams) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, o := range s.origins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}

// shutdown ends every stream and waits for them until ctx ends.
func (s *streams) shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// websocketImpl accepts WebSocket connections with coder/websocket (the
// Origin was checked by wrap) and gives gqlgen's close codes the meaning
// graphql-transport-ws has for them (goingAwayConn).
type websocketImpl struct{ s *streams }

func (i websocketImpl) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	inner := transport.CoderWebsocketImplementation{AcceptOptions: coderws.AcceptOptions{InsecureSkipVerify: true}}
	c, err := inner.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	return goingAwayConn{c, i.s, wsConnOf(r.Context())}, nil
}

// goingAwayConn closes with 1001 (going away) when the server shuts down,
// 4408 when connection_init came too late, and 4403 when the customer
// token ended, where gqlgen would say 1000 or 1002.
type goingAwayConn struct {
	transport.WebsocketConn
	s  *streams
	ws *wsConn // nil: not through wrap
}

func (c goingAwayConn) WriteClose(code int, reason string) error {
	switch {
	case c.s.closing.Load() && code == transport.WebsocketCloseNormalClosure:
		code, reason = int(coderws.StatusGoingAway), "server shutting down"
	case code == transport.WebsocketCloseNormalClosure && c.ws != nil && c.ws.expired():
		// The connection's context ended with the token (initConnection).
		code, reason = closeForbidden, "Forbidden"
	case code == transport.WebsocketCloseProtocolError && reason == "connection initialisation timeout":
		// The code graphql-transport-ws gives this case.
		code = closeInitTimeout
	}
	return c.WebsocketConn.WriteClose(code, reason)
}

// graphql-transport-ws's close codes: 4408 for a client that sent no
// connection_init in time, 4403 for one that may not go on (a bad token in
// connection_init, or an expired one).
const (
	closeInitTimeout = 4408
	closeForbidden   = 4403
)

// SetReadLimit and SetReadDeadline pass through to the connection, which
// gqlgen asks for by type.
func (c goingAwayConn) SetReadLimit(n int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(n)
	}
}

func (c goingAwayConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}
