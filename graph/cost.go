package graph

import (
	"context"
	"math"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// introspectionWeight is what one introspection field (__schema, __type
// and everything under them) costs toward GRAPHQL_MAX_COMPLEXITY. An
// introspection answer repeats the whole schema, so its fields cost more
// than one; at 3, GraphiQL's full introspection query (about 200 fields)
// costs about 600 and passes the default limit of 1000 once per
// operation, while hundreds of aliased __schema selections do not.
const introspectionWeight = 3

// cost is an operation's complexity, as gqlgen's complexity package would
// give it (one per field plus what it selects; the schema's complexity
// functions for pages), with two differences that close holes: gqlgen
// skips __schema entirely, so one small query of hundreds of aliased
// __schema selections answered megabytes for free, and it walks a
// fragment each time it is spread, so fragments spreading fragments twice
// over cost it 2^depth steps. Here introspection costs introspectionWeight
// per field, and each fragment is walked once.
func cost(ctx context.Context, es graphql.ExecutableSchema, op *ast.OperationDefinition, vars map[string]any) int {
	w := costWalker{ctx: ctx, es: es, schema: es.Schema(), vars: vars, memo: map[fragmentKey]int{}}
	return w.set(op.SelectionSet, false)
}

type fragmentKey struct {
	name  string
	intro bool
}

type costWalker struct {
	ctx    context.Context
	es     graphql.ExecutableSchema
	schema *ast.Schema
	vars   map[string]any
	memo   map[fragmentKey]int
}

func (w *costWalker) set(set ast.SelectionSet, intro bool) int {
	total := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			total = satAdd(total, w.field(s, intro))
		case *ast.InlineFragment:
			total = satAdd(total, w.set(s.SelectionSet, intro))
		case *ast.FragmentSpread:
			if s.Definition == nil {
				continue
			}
			// A fragment's cost does not depend on where it is spread (its
			// arguments come from the operation's variables).
			k := fragmentKey{s.Name, intro}
			c, ok := w.memo[k]
			if !ok {
				w.memo[k] = 0 // validation rejects cycles; this only stops a loop
				c = w.set(s.Definition.SelectionSet, intro)
				w.memo[k] = c
			}
			total = satAdd(total, c)
		}
	}
	return total
}

func (w *costWalker) field(f *ast.Field, intro bool) int {
	intro = intro || f.Name == "__schema" || f.Name == "__type"
	child := 0
	if len(f.SelectionSet) > 0 {
		child = w.set(f.SelectionSet, intro)
	}
	if intro {
		return satAdd(introspectionWeight, child)
	}
	if f.ObjectDefinition == nil {
		return satAdd(1, child)
	}
	args := f.ArgumentMap(w.vars)
	// An interface's field costs what its dearest implementation's does.
	objects := []*ast.Definition{f.ObjectDefinition}
	if f.ObjectDefinition.Kind == ast.Interface {
		objects = w.schema.GetPossibleTypes(f.ObjectDefinition)
	}
	most := 0
	for _, obj := range objects {
		c, ok := w.es.Complexity(w.ctx, obj.Name, f.Name, child, args)
		if !ok || c < 1 {
			c = satAdd(1, child)
		}
		most = max(most, c)
	}
	return most
}

// satAdd adds without overflowing (costs are never negative).
func satAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}
