package graph

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrUnauthenticated refuses an operator mutation without the right token.
var ErrUnauthenticated = errors.New("unauthenticated")

type bearerKey struct{}

// WithBearer stores the request's bearer token in its context for requireAdmin.
func WithBearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			r = r.WithContext(context.WithValue(r.Context(), bearerKey{}, strings.TrimSpace(tok)))
		}
		next.ServeHTTP(w, r)
	})
}

// requireAdmin checks the bearer token in constant time (hashing both sides
// first so that not even the token's length leaks through timing).
func (r *Resolver) requireAdmin(ctx context.Context) error {
	if r.AdminToken == "" {
		return fmt.Errorf("%w: operator mutations are disabled on this server (ADMIN_TOKEN is not set)", ErrUnauthenticated)
	}
	tok, _ := ctx.Value(bearerKey{}).(string)
	got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(r.AdminToken))
	if tok == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return fmt.Errorf("%w: operator mutations need the header Authorization: Bearer <ADMIN_TOKEN>", ErrUnauthenticated)
	}
	return nil
}
