package graph

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"flashsale/metrics"
	"flashsale/ratelimit"
)

// CodeRateLimited: more mutations than RATE_LIMIT allows (HTTP 429), or no
// room for another subscription (MAX_SUBSCRIPTIONS).
const CodeRateLimited = "RATE_LIMITED"

// rateLimits caps the mutations of one caller, one token per mutation
// field (package ratelimit keeps the buckets): a customer by ID, anyone else, the operator included, by client
// IP (X-Forwarded-For believed only from TRUSTED_PROXIES). Queries and
// subscriptions are not limited; the webhook is another handler.
type rateLimits struct {
	rate    ratelimit.Rate
	limiter *ratelimit.Limiter
	proxies ratelimit.Proxies
	metrics *metrics.Metrics // nil: off
}

type limitNoteKey struct{}

// limitNote carries a refusal from the operation interceptor to the HTTP
// response: when set, the answer is 429 with Retry-After.
type limitNote struct {
	clientIP   string
	retryAfter time.Duration
}

// wrap notes the client's IP for the interceptor and turns a refused
// operation's answer into 429.
func (l *rateLimits) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		note := &limitNote{clientIP: l.proxies.ClientIP(r)}
		ctx := context.WithValue(r.Context(), limitNoteKey{}, note)
		if isStream(r) {
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		next.ServeHTTP(&limitedWriter{ResponseWriter: w, note: note}, r.WithContext(ctx))
	})
}

// intercept refuses a mutation over its caller's limit before it runs: it
// changes nothing.
func (l *rateLimits) intercept(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	note, _ := ctx.Value(limitNoteKey{}).(*limitNote)
	if oc.Operation == nil || oc.Operation.Operation != ast.Mutation || note == nil {
		return next(ctx)
	}
	key := "ip:" + ipKey(note.clientIP)
	if c := callerOf(ctx).Customer; c != "" {
		key = "customer:" + c
	}
	// Every mutation field costs one, aliases included: one request of 400
	// aliased createHolds is 400 mutations.
	n := rootFieldCount(oc.Operation, "")
	ok, wait := l.limiter.AllowN(key, n)
	if ok {
		return next(ctx)
	}
	note.retryAfter = wait
	for range rootFieldCount(oc.Operation, "createHold") {
		l.metrics.Hold(CodeRateLimited)
	}
	secs := retryAfterSeconds(wait)
	msg := fmt.Sprintf("too many mutations: this caller may send %s; retry in %d s", l.rate, secs)
	if n > l.limiter.Burst() {
		msg = fmt.Sprintf("this operation has %d mutation fields, and a caller may send at most %d at once (%s): send fewer per operation", n, l.limiter.Burst(), l.rate)
	}
	return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{
		Message:    msg,
		Extensions: map[string]any{"code": CodeRateLimited, "retryAfter": secs},
	}}})
}

// ipKey is the bucket of an anonymous caller's IP: the address itself, or
// for IPv6 its /64, which one host usually holds whole (one bucket per
// address would be one per request for it).
func ipKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// retryAfterSeconds rounds up, so a client that waits that long finds a token.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// limitedWriter answers 429 with Retry-After when the operation was refused.
type limitedWriter struct {
	http.ResponseWriter
	note  *limitNote
	wrote bool
}

func (w *limitedWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		if w.note.retryAfter > 0 && code == http.StatusOK {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(w.note.retryAfter)))
			code = http.StatusTooManyRequests
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *limitedWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *limitedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
