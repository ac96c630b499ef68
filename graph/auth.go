package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"flashsale/stock"
)

// ErrUnauthenticated refuses a call without the right credentials: an
// operator field without ADMIN_TOKEN, a customer token that fails, a buyer
// mutation without a customer token where one is required.
var ErrUnauthenticated = errors.New("unauthenticated")

// TokenVerifier checks a customer's bearer token and returns the
// customer's ID (package customer's Verifier) and the instant the token
// stops being good (its exp plus the leeway). Its errors say why, in
// words safe to show the caller.
type TokenVerifier interface {
	VerifyUntil(ctx context.Context, token string) (customer string, until time.Time, err error)
}

type callerKey struct{}

// identity is who makes a request and, for a customer, until when their
// token is good (zero: no end).
type identity struct {
	stock.Caller
	until time.Time
}

// callerOf returns who makes the request (set by authenticate, or by a
// WebSocket's connection_init).
func callerOf(ctx context.Context) stock.Caller {
	id, _ := ctx.Value(callerKey{}).(identity)
	return id.Caller
}

func withIdentity(ctx context.Context, id identity) context.Context {
	return context.WithValue(ctx, callerKey{}, id)
}

// authenticate works out who calls from the Authorization header, once per
// request. A customer token that fails is refused whatever the request
// asks for: it is never taken as anonymous.
func (r *Resolver) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h := req.Header.Get("Authorization")
		if h == "" {
			next.ServeHTTP(w, req)
			return
		}
		id, err := r.identify(req.Context(), h)
		if err != nil {
			refuse(w, strings.TrimPrefix(err.Error(), ErrUnauthenticated.Error()+": "))
			return
		}
		next.ServeHTTP(w, req.WithContext(withIdentity(req.Context(), id)))
	})
}

// identify reads an Authorization value ("Bearer <token>", the scheme in
// any case): an operator's token (package operator), a customer's (a token
// the verifier accepts), or an error wrapping ErrUnauthenticated that says
// what is wrong. The HTTP header and a WebSocket's connection_init both
// come here.
func (r *Resolver) identify(ctx context.Context, authorization string) (identity, error) {
	scheme, tok, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return identity{}, fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\"", ErrUnauthenticated)
	}
	if name, ok := r.Operators.Lookup(tok); ok {
		return identity{Caller: stock.Caller{Operator: name}}, nil
	}
	if r.Customers == nil {
		return identity{}, fmt.Errorf("%w: the bearer token is not an operator's, and this server takes no customer tokens (none is configured): buy without an Authorization header", ErrUnauthenticated)
	}
	cust, until, err := r.Customers.VerifyUntil(ctx, tok)
	if err != nil {
		return identity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return identity{Caller: stock.Caller{Customer: cust}, until: until}, nil
}

// refuse answers a request whose credentials fail, before any field runs.
func refuse(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	writeError(w, http.StatusUnauthorized, CodeUnauthenticated, msg)
}

// requireAdmin refuses operator fields to everyone but an operator.
func (r *Resolver) requireAdmin(ctx context.Context) error {
	if !r.Operators.Enabled() {
		return fmt.Errorf("%w: operator fields are disabled on this server (neither ADMIN_TOKEN nor OPERATOR_TOKENS is set)", ErrUnauthenticated)
	}
	if callerOf(ctx).Operator == "" {
		return fmt.Errorf("%w: operator fields need the header Authorization: Bearer <an operator's token>", ErrUnauthenticated)
	}
	return nil
}

// buyer returns the caller of a buyer mutation (createHold, createOrder,
// releaseHold): where customer tokens are configured, only a customer.
func (r *Resolver) buyer(ctx context.Context) (stock.Caller, error) {
	id, _ := ctx.Value(callerKey{}).(identity)
	switch {
	case r.Customers != nil && id.Customer == "":
		return id.Caller, fmt.Errorf("%w: this server needs a customer token (Authorization: Bearer <token from the shop's login>) to hold and order", ErrUnauthenticated)
	case !id.until.IsZero() && !time.Now().Before(id.until):
		// A WebSocket outlives its token; it never acts for the customer after.
		return id.Caller, fmt.Errorf("%w: the customer token has expired", ErrUnauthenticated)
	}
	return id.Caller, nil
}
