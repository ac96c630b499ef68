package graph

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"
)

// Long-lived requests: WebSocket connections and Server-Sent Events streams
// for subscriptions. They are not bound by the server's request deadlines
// (an open subscription is never cut by a timeout; keepalives detect dead
// peers), a browser's foreign Origin is refused, and on shutdown every one
// of them is ended (WebSocket with close code 1001, going away) and waited
// for.
type streams struct {
	origins []string // CORS_ALLOWED_ORIGINS ("*": any)
	ctx     context.Context
	cancel  context.CancelFunc
	closing atomic.Bool
	wg      sync.WaitGroup
}

func newStreams(origins []string) *streams {
	s := &streams{origins: origins}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// isStream reports whether r opens a WebSocket or an SSE stream.
func isStream(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// wrap serves stream requests with next, and passes the others through.
func (s *streams) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isStream(r) {
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
		s.wg.Add(1)
		defer s.wg.Done()
		// The server's read and write timeouts are for requests; a stream
		// lives as long as its peer answers keepalives.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
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
// Origin was checked by wrap) and closes them with 1001 (going away) when
// the server shuts down, where gqlgen would say 1000.
type websocketImpl struct{ s *streams }

func (i websocketImpl) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	inner := transport.CoderWebsocketImplementation{AcceptOptions: coderws.AcceptOptions{InsecureSkipVerify: true}}
	c, err := inner.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	return goingAwayConn{c, i.s}, nil
}

type goingAwayConn struct {
	transport.WebsocketConn
	s *streams
}

func (c goingAwayConn) WriteClose(code int, reason string) error {
	switch {
	case c.s.closing.Load() && code == transport.WebsocketCloseNormalClosure:
		code, reason = int(coderws.StatusGoingAway), "server shutting down"
	case code == transport.WebsocketCloseProtocolError && reason == "connection initialisation timeout":
		// The code graphql-transport-ws gives this case.
		code = closeInitTimeout
	}
	return c.WebsocketConn.WriteClose(code, reason)
}

// closeInitTimeout is graphql-transport-ws's close code for a client that
// sent no connection_init in time.
const closeInitTimeout = 4408

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
