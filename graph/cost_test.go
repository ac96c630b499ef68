package graph

import (
	"context"
	"fmt"
	"strings"
	"testing"

	gqlcomplexity "github.com/99designs/gqlgen/complexity"
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// parseOp parses and validates query against the schema.
func parseOp(t *testing.T, query string) *costCase {
	t.Helper()
	es := NewExecutableSchema(Config{Resolvers: &Resolver{}, Complexity: complexity()})
	doc, errs := gqlparser.LoadQuery(es.Schema(), query)
	if len(errs) > 0 {
		t.Fatalf("invalid query %q: %v", query, errs)
	}
	return &costCase{es: es, op: doc.Operations[0]}
}

type costCase struct {
	es graphql.ExecutableSchema
	op *ast.OperationDefinition
}

// TestCostMatchesGqlgen: without introspection, cost is gqlgen's
// complexity, pages and fragments included.
func TestCostMatchesGqlgen(t *testing.T) {
	for _, q := range []string{
		`{ product(id: "1") { id name stockSellable } }`,
		`{ products(first: 50) { edges { node { id name } } pageInfo { hasNextPage } } }`,
		`{ products { edges { node { ...P } } } } fragment P on Product { id name priceCents }`,
		`{ me { holds(first: 10) { edges { node { id product { id } } } } orders(first: 3) { edges { node { id } } } } }`,
		`mutation { a: createHold(productId: "1", qty: 1) { id } b: createHold(productId: "1", qty: 2) { id expiresAt } }`,
		`{ ... on Query { serverTime } a: serverTime __typename }`,
	} {
		c := parseOp(t, q)
		want := gqlcomplexity.Calculate(context.Background(), c.es, c.op, nil)
		if got := cost(context.Background(), c.es, c.op, nil); got != want {
			t.Errorf("cost %d, gqlgen %d: %s", got, want, q)
		}
	}
}

// TestCostOfIntrospection: introspection costs introspectionWeight per
// field; GraphiQL's query passes the default limit, two of it or hundreds
// of aliased __schema selections do not.
func TestCostOfIntrospection(t *testing.T) {
	limit := DefaultLimits.MaxComplexity
	full := parseOp(t, graphiqlIntrospection)
	c := cost(context.Background(), full.es, full.op, nil)
	if c > limit || c < 100*introspectionWeight {
		t.Errorf("GraphiQL's introspection costs %d (limit %d)", c, limit)
	}
	t.Logf("GraphiQL's introspection query costs %d of %d", c, limit)
	var b strings.Builder
	for i := range 120 {
		fmt.Fprintf(&b, "s%d: __schema { types { name } } ", i)
	}
	for name, q := range map[string]string{
		"120 aliased __schema":   "{" + b.String() + "}",
		"GraphiQL's query twice": strings.Replace(graphiqlIntrospection, "__schema {", "again: __schema { types { ...FullType } } __schema {", 1),
		"120 aliased __type":     "{" + aliasedType(120) + "}",
	} {
		op := parseOp(t, q)
		if c := cost(context.Background(), op.es, op.op, nil); c <= limit {
			t.Errorf("%s costs %d, within the limit %d", name, c, limit)
		}
	}
}

func aliasedType(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `t%d: __type(name: "Query") { fields { name } } `, i)
	}
	return b.String()
}

// graphiqlIntrospection is graphql-js 16's getIntrospectionQuery with every
// option on (descriptions, specifiedByURL, isRepeatable, the schema's
// description, deprecated input values), the largest GraphiQL sends.
const graphiqlIntrospection = `query IntrospectionQuery {
  __schema {
    description
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) { name description args(includeDeprecated: true) { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue isDeprecated deprecationReason }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }
}`

// TestCostOfNestedFragments: fragments that spread the next one twice,
// 60 deep, cost 2^60 walks in gqlgen's complexity; here they are walked
// once each, and the cost saturates instead of overflowing.
func TestCostOfNestedFragments(t *testing.T) {
	var b strings.Builder
	b.WriteString("{ ...A0 }\n")
	const n = 60
	for i := range n {
		fmt.Fprintf(&b, "fragment A%d on Query { ...A%d ...A%d }\n", i, i+1, i+1)
	}
	fmt.Fprintf(&b, "fragment A%d on Query { serverTime }\n", n)
	op := parseOp(t, b.String())
	if c := cost(context.Background(), op.es, op.op, nil); c != 1<<n {
		t.Errorf("cost %d, want 2^%d", c, n)
	}
}
