package graph

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// wsConn is what the server keeps of one WebSocket connection: how many
// subscriptions it holds, and until when its customer token is good.
// streams.wrap makes it; gqlgen's connection context carries it.
type wsConn struct {
	subs  atomic.Int64
	until atomic.Int64 // Unix nanoseconds; 0: no end
}

type wsConnKey struct{}

func withWSConn(ctx context.Context, c *wsConn) context.Context {
	return context.WithValue(ctx, wsConnKey{}, c)
}

// wsConnOf is the WebSocket connection ctx belongs to; nil for HTTP and SSE.
func wsConnOf(ctx context.Context) *wsConn {
	c, _ := ctx.Value(wsConnKey{}).(*wsConn)
	return c
}

// expired reports whether the connection's customer token has ended.
func (c *wsConn) expired() bool {
	u := c.until.Load()
	return u != 0 && time.Now().UnixNano() >= u
}

// initConnection is the WebSocket's connection_init. A token in its payload
// ({"Authorization": "Bearer <token>"}: graphql-ws's connectionParams, for
// browsers, which cannot set headers on a WebSocket) says who is on the
// connection, over the upgrade's header; a bad one closes it with 4403. A
// connection of a customer, however authenticated, ends with the token.
func (r *Resolver) initConnection(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	id, _ := ctx.Value(callerKey{}).(identity)
	auth, given, err := authorizationOf(p)
	if err == nil && given {
		if id, err = r.identify(ctx, auth); err == nil {
			ctx = withIdentity(ctx, id)
		}
	}
	if err == nil && !id.until.IsZero() && !time.Now().Before(id.until) {
		err = fmt.Errorf("%w: the customer token has expired", ErrUnauthenticated)
	}
	if err != nil {
		// graphql-transport-ws sends the client no message here: the close
		// code is all it learns.
		ctx = transport.WithWebsocketCloseCode(ctx, closeForbidden)
		return transport.AppendCloseReason(ctx, "Forbidden"), nil, fmt.Errorf("connection_init: %w", err)
	}
	if id.until.IsZero() {
		return ctx, nil, nil
	}
	if c := wsConnOf(ctx); c != nil {
		c.until.Store(id.until.UnixNano())
	}
	// The connection's context ends with the token: gqlgen then cancels its
	// operations and closes the socket (with 4403: goingAwayConn). The
	// timer goes with the request's context, which ends with the connection.
	ctx, cancel := context.WithDeadline(ctx, id.until)
	context.AfterFunc(ctx, cancel)
	return ctx, nil, nil
}

// authorizationOf reads connection_init's Authorization, the key in any
// case. given is false when there is none (an empty value counts as none).
func authorizationOf(p transport.InitPayload) (value string, given bool, err error) {
	for k, v := range p {
		if !strings.EqualFold(k, "Authorization") {
			continue
		}
		s, ok := v.(string)
		switch {
		case !ok && v != nil:
			return "", true, fmt.Errorf("%w: Authorization in connection_init must be the string \"Bearer <token>\"", ErrUnauthenticated)
		case given && strings.TrimSpace(s) != "":
			return "", true, fmt.Errorf("%w: connection_init has more than one Authorization key", ErrUnauthenticated)
		case strings.TrimSpace(s) != "":
			value, given = s, true
		}
	}
	return value, given, nil
}

// limitPerConnection ends a subscription beyond
// MAX_SUBSCRIPTIONS_PER_CONNECTION on its WebSocket with RATE_LIMITED
// before it starts; the connection's other operations go on. A
// subscription holds its slot until its context ends (it completed, the
// client stopped it, or the connection closed).
func (s *streams) limitPerConnection(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	c := wsConnOf(ctx)
	op := graphql.GetOperationContext(ctx).Operation
	if c == nil || op == nil || op.Operation != ast.Subscription {
		return next(ctx)
	}
	if c.subs.Add(1) > int64(s.perConn) {
		c.subs.Add(-1)
		// An error message for this subscription's ID, as for MAX_SUBSCRIPTIONS.
		transport.AddSubscriptionError(ctx, &gqlerror.Error{
			Message:    fmt.Sprintf("too many subscriptions on this connection: at most %d (MAX_SUBSCRIPTIONS_PER_CONNECTION); stop one first", s.perConn),
			Extensions: map[string]any{"code": CodeRateLimited},
		})
		return func(context.Context) *graphql.Response { return nil }
	}
	context.AfterFunc(ctx, func() { c.subs.Add(-1) })
	return next(ctx)
}
