package graph

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"flashsale/graph/scalar"
	"flashsale/live"
	"flashsale/stock"
)

// The contract's error codes (errors[].extensions.code).
const (
	CodeBadUserInput      = "BAD_USER_INPUT"
	CodeNotFound          = "NOT_FOUND"
	CodeInsufficientStock = "INSUFFICIENT_STOCK"
	CodeHoldExpired       = "HOLD_EXPIRED"
	CodeHoldNotActive     = "HOLD_NOT_ACTIVE"
	CodePurchaseLimit     = "PURCHASE_LIMIT_EXCEEDED"
	CodeKeyReused         = "IDEMPOTENCY_KEY_REUSED"
	CodeSaleNotStarted    = "SALE_NOT_STARTED"
	CodeSaleEnded         = "SALE_ENDED"
	CodeUnauthenticated   = "UNAUTHENTICATED"
	CodeUnavailable       = "UNAVAILABLE"
	CodeInternal          = "INTERNAL_SERVER_ERROR"
	CodeQueueRequired     = "QUEUE_REQUIRED"
	CodeNotAdmitted       = "NOT_ADMITTED"
)

// codes maps the domain's error kinds to the contract's codes. Their
// messages are written for API users and are shown as they are.
var codes = []struct {
	err  error
	code string
}{
	{stock.ErrInvalidInput, CodeBadUserInput},
	{scalar.ErrInvalid, CodeBadUserInput},
	{stock.ErrNotFound, CodeNotFound},
	{stock.ErrInsufficientStock, CodeInsufficientStock},
	{stock.ErrHoldExpired, CodeHoldExpired},
	{stock.ErrHoldNotActive, CodeHoldNotActive},
	{stock.ErrPurchaseLimit, CodePurchaseLimit},
	{stock.ErrKeyReused, CodeKeyReused},
	{stock.ErrSaleNotStarted, CodeSaleNotStarted},
	{stock.ErrSaleEnded, CodeSaleEnded},
	{stock.ErrQueueRequired, CodeQueueRequired},
	{stock.ErrNotAdmitted, CodeNotAdmitted},
	{ErrUnauthenticated, CodeUnauthenticated},
	{live.ErrNotFound, CodeNotFound},
	{live.ErrTooMany, CodeRateLimited},
}

var errPanic = errors.New("panic in resolver")

// ErrorPresenter gives every error an extensions.code, the one place where
// domain errors become GraphQL errors. Unexpected errors are logged in full
// and shown without internals.
func ErrorPresenter(log *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gqlErr := graphql.DefaultErrorPresenter(ctx, err)
		code, known := domainCode(err)
		switch {
		case code == CodeUnavailable:
			log.WarnContext(ctx, "graphql: database unavailable", "path", gqlErr.Path.String(), "err", err)
			gqlErr.Message = "the service is temporarily unavailable; nothing was changed, retry is safe"
			return withCode(gqlErr, CodeUnavailable)
		case known:
			return withDetails(withCode(gqlErr, code), err)
		case len(gqlErr.Path) > 0 && gqlErr.Path[0] == ast.PathName("variable"):
			// A variable of the wrong type is the caller's input, as in Apollo.
			return withCode(gqlErr, CodeBadUserInput)
		case gqlErr.Extensions["code"] != nil && !errors.Is(err, errPanic):
			// gqlgen's own parse and validation errors already carry a code.
			return gqlErr
		case len(gqlErr.Path) == 0 && !errors.Is(err, errPanic):
			// Outside any resolver: the request itself was unusable (body not
			// JSON, no such operation). Don't echo the body back.
			gqlErr.Message = requestProblem(gqlErr.Message)
			return withCode(gqlErr, CodeBadUserInput)
		}
		log.ErrorContext(ctx, "graphql: internal error", "path", gqlErr.Path.String(), "err", err)
		gqlErr.Message = "internal server error"
		return withCode(gqlErr, CodeInternal)
	}
}

// withDetails adds what the caller may act on to a domain error's
// extensions: when a sale opens (for a countdown), and a queue ticket's
// status, position and estimated admission.
func withDetails(e *gqlerror.Error, err error) *gqlerror.Error {
	var notYet *stock.SaleNotStartedError
	if errors.As(err, &notYet) {
		e.Extensions["saleStartsAt"] = notYet.StartsAt.UTC().Format(time.RFC3339Nano)
	}
	var q *stock.QueueError
	if errors.As(err, &q) {
		if q.TicketStatus != "" {
			e.Extensions["ticketStatus"] = q.TicketStatus.String()
		}
		if errors.Is(err, stock.ErrNotAdmitted) {
			e.Extensions["position"] = q.Position
			var at any // null while unknown
			if q.EstimatedAt != nil {
				at = q.EstimatedAt.UTC().Format(time.RFC3339Nano)
			}
			e.Extensions["estimatedAdmissionAt"] = at
		}
	}
	return e
}

// requestProblem rewrites gqlgen's message for a body it could not decode
// in the caller's terms: it echoes the body (cut off here) and names Go
// types ("Go struct field RawParams.query of type string"), which say
// nothing to a client and something about the server.
func requestProblem(msg string) string {
	msg, _, _ = strings.Cut(msg, " body:")
	detail, ok := strings.CutPrefix(msg, "json request body could not be decoded: ")
	if !ok {
		return msg
	}
	const bad = "the request body must be a JSON object with \"query\" (a string) and optionally \"variables\", \"operationName\" and \"extensions\""
	if m := jsonFieldType.FindStringSubmatch(detail); m != nil {
		want := "an object"
		if m[2] == "query" || m[2] == "operationName" {
			want = "a string"
		}
		return fmt.Sprintf("the request body's %q must be %s, not %s", m[2], want, aJSON(m[1]))
	}
	if m := jsonValueType.FindStringSubmatch(detail); m != nil {
		return fmt.Sprintf("%s, not %s", bad, aJSON(m[1]))
	}
	return "the request body is not valid JSON; " + bad
}

var (
	jsonFieldType = regexp.MustCompile(`cannot unmarshal (\w+) into Go struct field \w+\.(\w+) of type`)
	jsonValueType = regexp.MustCompile(`cannot unmarshal (\w+) into Go value of type`)
)

// aJSON names a JSON kind with its article: "an array", "a number".
func aJSON(kind string) string {
	if strings.IndexByte("aeiou", kind[0]) >= 0 {
		return "an " + kind
	}
	return "a " + kind
}

// domainCode is the contract's code for a domain error (one of codes, or
// the database being unavailable); known is false for anything else.
func domainCode(err error) (code string, known bool) {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, true
		}
	}
	if errors.Is(err, stock.ErrUnavailable) || errors.Is(err, live.ErrClosed) {
		return CodeUnavailable, true
	}
	return "", false
}

// RecoverFunc turns a resolver panic into an internal error, logging the stack.
func RecoverFunc(log *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, v any) error {
		log.ErrorContext(ctx, "graphql: panic", "panic", v, "stack", string(debug.Stack()))
		return errPanic
	}
}

func withCode(e *gqlerror.Error, code string) *gqlerror.Error {
	if e.Extensions == nil {
		e.Extensions = map[string]any{}
	}
	e.Extensions["code"] = code
	return e
}
