package graph

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"flashsale/stock"
)

// ErrUnauthenticated refuses a call without the right credentials: an
// operator field without ADMIN_TOKEN, a customer token that fails, a buyer
// mutation without a customer token where one is required.
var ErrUnauthenticated = errors.New("unauthenticated")

// TokenVerifier checks a customer's bearer token and returns the
// customer's ID (package customer's Verifier). Its errors say why, in
// words safe to show the caller.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (string, error)
}

type callerKey struct{}

// callerOf returns who makes the request (set by authenticate).
func callerOf(ctx context.Context) stock.Caller {
	c, _ := ctx.Value(callerKey{}).(stock.Caller)
	return c
}

// authenticate works out who calls from the Authorization header, once per
// request: the operator (the ADMIN_TOKEN, compared in constant time, after
// hashing both sides so that not even its length leaks), a customer (a
// token the verifier accepts), or an anonymous buyer (no token). A customer
// token that fails is refused whatever the request asks for: it is never
// taken as anonymous.
func (r *Resolver) authenticate(next http.Handler) http.Handler {
	var admin [sha256.Size]byte
	if r.AdminToken != "" {
		admin = sha256.Sum256([]byte(r.AdminToken))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h := req.Header.Get("Authorization")
		if h == "" {
			next.ServeHTTP(w, req)
			return
		}
		tok, ok := strings.CutPrefix(h, "Bearer ")
		tok = strings.TrimSpace(tok)
		var c stock.Caller
		switch got := sha256.Sum256([]byte(tok)); {
		case !ok || tok == "":
			refuse(w, "the Authorization header must be \"Bearer <token>\"")
			return
		case r.AdminToken != "" && subtle.ConstantTimeCompare(got[:], admin[:]) == 1:
			c.Operator = true
		case r.Customers == nil:
			refuse(w, "the bearer token is not the operator's, and this server takes no customer tokens (none is configured): buy without an Authorization header")
			return
		default:
			id, err := r.Customers.Verify(req.Context(), tok)
			if err != nil {
				refuse(w, err.Error())
				return
			}
			c.Customer = id
		}
		next.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), callerKey{}, c)))
	})
}

// refuse answers a request whose credentials fail, before any field runs.
func refuse(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	writeError(w, http.StatusUnauthorized, CodeUnauthenticated, msg)
}

// requireAdmin refuses operator fields to everyone but the operator.
func (r *Resolver) requireAdmin(ctx context.Context) error {
	if r.AdminToken == "" {
		return fmt.Errorf("%w: operator fields are disabled on this server (ADMIN_TOKEN is not set)", ErrUnauthenticated)
	}
	if !callerOf(ctx).Operator {
		return fmt.Errorf("%w: operator fields need the header Authorization: Bearer <ADMIN_TOKEN>", ErrUnauthenticated)
	}
	return nil
}

// buyer returns the caller of a buyer mutation (createHold, createOrder,
// releaseHold): where customer tokens are configured, only a customer.
func (r *Resolver) buyer(ctx context.Context) (stock.Caller, error) {
	c := callerOf(ctx)
	if r.Customers != nil && c.Customer == "" {
		return c, fmt.Errorf("%w: this server needs a customer token (Authorization: Bearer <token from the shop's login>) to hold and order", ErrUnauthenticated)
	}
	return c, nil
}
