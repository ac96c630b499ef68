package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"flashsale/stock"
)

func TestErrorPresenter(t *testing.T) {
	var logs bytes.Buffer
	present := ErrorPresenter(slog.New(slog.NewTextHandler(&logs, nil)))
	secret := "dial tcp 10.1.2.3:3306: connection refused"
	for _, tc := range []struct {
		name    string
		err     error
		code    string
		message string // exact, when set
		logged  bool
	}{
		{"input", stock.InvalidInput("qty must be between 1 and 10"), CodeBadUserInput, "invalid input: qty must be between 1 and 10", false},
		{"not found", fmt.Errorf("%w: no hold", stock.ErrNotFound), CodeNotFound, "", false},
		{"stock", fmt.Errorf("%w: 3 requested", stock.ErrInsufficientStock), CodeInsufficientStock, "", false},
		{"expired", stock.ErrHoldExpired, CodeHoldExpired, "", false},
		{"not active", stock.ErrHoldNotActive, CodeHoldNotActive, "", false},
		{"auth", fmt.Errorf("%w: no token", ErrUnauthenticated), CodeUnauthenticated, "", false},
		{"outage", fmt.Errorf("create hold: %w (%s)", stock.ErrUnavailable, secret), CodeUnavailable,
			"the service is temporarily unavailable; nothing was changed, retry is safe", true},
		{"unexpected", errors.New("Error 1146: Table 'x.holds' doesn't exist"), CodeInternal, "internal server error", true},
		{"panic", RecoverFunc(slog.New(slog.NewTextHandler(&logs, nil)))(context.Background(), "boom"), CodeInternal, "internal server error", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			// Resolver errors reach the presenter with a path.
			ctx := graphql.WithPathContext(context.Background(), graphql.NewPathWithField("createHold"))
			got := present(ctx, tc.err)
			if got.Extensions["code"] != tc.code {
				t.Fatalf("code %v, want %s", got.Extensions["code"], tc.code)
			}
			if tc.message != "" && got.Message != tc.message {
				t.Fatalf("message %q, want %q", got.Message, tc.message)
			}
			if strings.Contains(got.Message, "10.1.2.3") || strings.Contains(got.Message, "1146") {
				t.Fatalf("message reveals internals: %q", got.Message)
			}
			if tc.logged != (logs.Len() > 0) {
				t.Fatalf("logged %v, want %v: %s", logs.Len() > 0, tc.logged, logs.String())
			}
		})
	}
}

func TestErrorPresenterRequestErrors(t *testing.T) {
	present := ErrorPresenter(slog.New(slog.DiscardHandler))
	// A variable of the wrong type is the caller's input.
	varErr := &gqlerror.Error{Message: "cannot use string as Int", Path: ast.Path{ast.PathName("variable"), ast.PathName("q")},
		Extensions: map[string]any{"code": "GRAPHQL_VALIDATION_FAILED"}}
	if got := present(context.Background(), varErr); got.Extensions["code"] != CodeBadUserInput {
		t.Fatalf("variable error: %v", got.Extensions)
	}
	// gqlgen's own validation errors keep their code.
	valErr := &gqlerror.Error{Message: "Cannot query field", Extensions: map[string]any{"code": "GRAPHQL_VALIDATION_FAILED"}}
	if got := present(context.Background(), valErr); got.Extensions["code"] != "GRAPHQL_VALIDATION_FAILED" {
		t.Fatalf("validation error: %v", got.Extensions)
	}
	// A body that is not JSON: BAD_USER_INPUT, without echoing the body.
	bodyErr := gqlerror.Errorf("json request body could not be decoded: invalid character body:{secret")
	got := present(context.Background(), bodyErr)
	if got.Extensions["code"] != CodeBadUserInput || strings.Contains(got.Message, "secret") {
		t.Fatalf("body error: %q %v", got.Message, got.Extensions)
	}
}

// TestRequestProblem: a body gqlgen cannot decode is explained in the
// caller's terms, without Go types or the body echoed back.
func TestRequestProblem(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`json request body could not be decoded: json: cannot unmarshal number into Go struct field RawParams.query of type string body:{"query":5}`,
			`the request body's "query" must be a string, not a number`},
		{`json request body could not be decoded: json: cannot unmarshal number into Go struct field RawParams.variables of type map[string]interface {} body:x`,
			`the request body's "variables" must be an object, not a number`},
		{`json request body could not be decoded: json: cannot unmarshal array into Go struct field RawParams.operationName of type string body:x`,
			`the request body's "operationName" must be a string, not an array`},
		{`json request body could not be decoded: json: cannot unmarshal array into Go value of type graphql.RawParams body:[1]`,
			`the request body must be a JSON object with "query" (a string) and optionally "variables", "operationName" and "extensions", not an array`},
		{`json request body could not be decoded: unexpected EOF body:{"query"`,
			`the request body is not valid JSON; the request body must be a JSON object with "query" (a string) and optionally "variables", "operationName" and "extensions"`},
		{`no operation provided`, `no operation provided`},
	} {
		got := requestProblem(tc.in)
		if got != tc.want {
			t.Errorf("requestProblem(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "Go ") || strings.Contains(got, "RawParams") {
			t.Errorf("%q names Go types", got)
		}
	}
}
