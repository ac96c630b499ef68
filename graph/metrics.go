package graph

import (
	"context"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"flashsale/metrics"
)

// RootFields are the schema's query, mutation and subscription fields: the
// values the duration histogram's operation label may take.
func RootFields() []string {
	s := NewExecutableSchema(Config{}).Schema()
	var names []string
	for _, def := range []*ast.Definition{s.Query, s.Mutation, s.Subscription} {
		if def == nil {
			continue
		}
		for _, f := range def.Fields {
			if f.Name[0] != '_' { // __schema, __type, __typename
				names = append(names, f.Name)
			}
		}
	}
	return names
}

// timeOperations observes each query's and mutation's duration under its
// first root field (subscriptions are long-lived streams, not requests).
func timeOperations(m *metrics.Metrics) graphql.OperationMiddleware {
	return func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		oc := graphql.GetOperationContext(ctx)
		if oc.Operation == nil || oc.Operation.Operation == ast.Subscription {
			return next(ctx)
		}
		start, name := time.Now(), firstRootField(oc.Operation)
		h := next(ctx)
		done := false
		return func(ctx context.Context) *graphql.Response {
			resp := h(ctx)
			if !done {
				done = true
				m.GraphQLRequest(name, time.Since(start))
			}
			return resp
		}
	}
}

// firstRootField names an operation by its first root field ("" when it
// starts with a fragment: metrics counts that as "other").
func firstRootField(op *ast.OperationDefinition) string {
	if len(op.SelectionSet) > 0 {
		if f, ok := op.SelectionSet[0].(*ast.Field); ok {
			return f.Name
		}
	}
	return ""
}

// rootFieldCount counts an operation's root fields named name ("": all of
// them), aliases each counted, looking through fragments. Fragments are
// counted once each and memoized, so spreads nested in spreads cost a walk
// linear in the query, not exponential; the count saturates rather than
// overflow. (GraphQL merges two fields of one response key into one run:
// counting both only errs toward refusing.)
func rootFieldCount(op *ast.OperationDefinition, name string) int {
	if op == nil {
		return 0
	}
	memo := map[string]int{}
	var count func(ast.SelectionSet) int
	count = func(set ast.SelectionSet) int {
		n := 0
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				if name == "" || s.Name == name {
					n = satAdd(n, 1)
				}
			case *ast.InlineFragment:
				n = satAdd(n, count(s.SelectionSet))
			case *ast.FragmentSpread:
				if s.Definition == nil {
					continue
				}
				c, ok := memo[s.Name]
				if !ok {
					memo[s.Name] = 0 // validation rejects cycles; this only stops a loop
					c = count(s.Definition.SelectionSet)
					memo[s.Name] = c
				}
				n = satAdd(n, c)
			}
		}
		return n
	}
	return count(op.SelectionSet)
}

// holdResult is createHold's answer as flashsale_holds_total labels it:
// "created", or the code the error presenter gives err.
func holdResult(err error) string {
	if err == nil {
		return "created"
	}
	if code, known := domainCode(err); known {
		return code
	}
	return CodeInternal
}
