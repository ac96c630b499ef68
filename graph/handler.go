package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
)

// NewHandler returns the GraphQL API handler (for /graphql): POST and GET
// (queries only) transports, a parsed-query cache, size, depth and
// complexity limits, and the error presenter.
func NewHandler(r *Resolver, limits Limits, log *slog.Logger) http.Handler {
	limits = limits.withDefaults()
	srv := handler.New(NewExecutableSchema(Config{Resolvers: r, Complexity: complexity()}))
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.Use(extension.Introspection{}) // the playground needs it
	// Size limit first, so APQ never caches a query over it.
	srv.Use(limitExtension{limits})
	srv.Use(extension.AutomaticPersistedQuery{Cache: lru.New[string](100)})
	srv.Use(extension.FixedComplexityLimit(limits.MaxComplexity))
	if limits.Timeout > 0 {
		// The deadline covers each root field's resolution (the database
		// work), not the whole HTTP request: started before the body is read,
		// it could expire before execution, and gqlgen then answers "null".
		srv.AroundRootFields(func(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
			ctx, cancel := context.WithTimeout(ctx, limits.Timeout)
			defer cancel()
			return next(ctx)
		})
	}
	srv.SetErrorPresenter(ErrorPresenter(log))
	srv.SetRecoverFunc(RecoverFunc(log))
	return checkRequest(r.authenticate(srv))
}

// MaxBody is the largest GraphQL request body accepted.
const MaxBody = 1 << 20

// checkRequest answers what gqlgen's transports would refuse without an
// extensions.code: POST bodies that are not JSON or are too large.
func checkRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

// writeError answers a request refused before GraphQL ran, in GraphQL's
// error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []any{map[string]any{"message": msg, "extensions": map[string]string{"code": code}}},
	})
}
