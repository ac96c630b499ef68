package graph

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// publicRootFields are the contract's public query fields ("Caching at
// the edge"): every other root field depends on the caller or the clock.
var publicRootFields = []string{"product", "products"}

// TestCachePolicyByOperation: a query is public when every field it
// selects, through fragments too, is; anything private anywhere, and every
// mutation and subscription, makes it private.
func TestCachePolicyByOperation(t *testing.T) {
	for _, c := range []struct {
		query  string
		public bool
	}{
		{`{ product(id: "1") { id name priceCents stockSellable saleStartsAt updatedAt } }`, true},
		{`query($p: ID!) { product(id: $p) { stockAvailable stockReserved stockSellable } }`, true},
		{`{ products(first: 5) { edges { cursor node { id name } } pageInfo { hasNextPage endCursor } } }`, true},
		{`{ __typename product(id: "1") { __typename id } }`, true},
		{`{ product(id: "1") { ...P } } fragment P on Product { id stockSellable }`, true},
		{`{ ... on Query { product(id: "1") { ... on Product { name } } } }`, true},
		{`{ a: product(id: "1") { name } b: product(id: "2") { name } }`, true},
		{`{ product(id: "1") { name } serverTime }`, false},
		{`{ ...Q } fragment Q on Query { serverTime }`, false},
		{`{ ... on Query { me { id } } product(id: "1") { id } }`, false},
		{`{ product(id: "1") { name } me @skip(if: true) { id } }`, false},
		{`{ me { id } }`, false},
		{`{ hold(id: "1") { id product { name } } }`, false},
		{`{ order(id: "1") { product { stockSellable } } }`, false},
		{`{ orders { edges { node { id } } } }`, false},
		{`{ orderEvents { edges { node { id } } } }`, false},
		{`{ operatorActions { edges { node { id } } } }`, false},
		{`{ __schema { queryType { name } } }`, false},
		{`mutation { createHold(productId: "1", qty: 1) { product { stockSellable } } }`, false},
		{`subscription { productStock(id: "1") { stockSellable } }`, false},
	} {
		if got := operationIsPublic(parseOp(t, c.query).op); got != c.public {
			t.Errorf("public = %v, want %v: %s", got, c.public, c.query)
		}
	}
	if operationIsPublic(nil) {
		t.Error("no operation is public")
	}
}

// TestEveryRootFieldHasItsPolicy walks the schema's Query: each root field,
// selected alone, is public exactly when the contract lists it, so a root
// field added without a judgement is private (and one marked public here
// without the contract saying so fails).
func TestEveryRootFieldHasItsPolicy(t *testing.T) {
	schema := NewExecutableSchema(Config{}).Schema()
	for _, f := range schema.Query.Fields {
		if strings.HasPrefix(f.Name, "__") {
			continue
		}
		q := "{ " + selectAll(schema, f, 3, map[string]bool{}) + " }"
		doc, errs := gqlparser.LoadQuery(schema, q)
		if len(errs) > 0 {
			t.Fatalf("the test's query for %s is invalid: %v\n%s", f.Name, errs, q)
		}
		want := slices.Contains(publicRootFields, f.Name)
		if got := operationIsPublic(doc.Operations[0]); got != want {
			t.Errorf("Query.%s: public = %v, want %v (contract: only %v)", f.Name, got, want, publicRootFields)
		}
	}
}

// TestUndeclaredFieldIsPrivate: a field added to a public type, or to
// Query, without @cacheControl makes every query that selects it private.
func TestUndeclaredFieldIsPrivate(t *testing.T) {
	base := NewExecutableSchema(Config{}).Schema()
	var src []*ast.Source
	for _, s := range sources {
		src = append(src, s)
	}
	src = append(src, &ast.Source{Name: "later.graphqls", Input: `
extend type Product { heldByMe: Int }
extend type ProductEdge { seenAt: String }
extend type Query { recommended: [Product!]! }
`})
	schema, err := gqlparser.LoadSchema(src...)
	if err != nil {
		t.Fatal(err)
	}
	if len(schema.Types["Product"].Fields) != len(base.Types["Product"].Fields)+1 {
		t.Fatal("the extension did not add a field")
	}
	for _, q := range []string{
		`{ product(id: "1") { name heldByMe } }`,
		`{ products { edges { seenAt node { id } } } }`,
		`{ recommended { id } }`,
	} {
		doc, errs := gqlparser.LoadQuery(schema, q)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", q, errs)
		}
		if operationIsPublic(doc.Operations[0]) {
			t.Errorf("public, want private: %s", q)
		}
	}
	// The same schema's declared fields stay public.
	doc, errs := gqlparser.LoadQuery(schema, `{ product(id: "1") { name } }`)
	if len(errs) > 0 || !operationIsPublic(doc.Operations[0]) {
		t.Errorf("product { name } is private in the extended schema (%v)", errs)
	}
}

// selectAll selects field f with made-up required arguments and, for an
// object, each of its fields down to depth levels (scalars only at the
// last), skipping types already on the path.
func selectAll(schema *ast.Schema, f *ast.FieldDefinition, depth int, onPath map[string]bool) string {
	var args []string
	for _, a := range f.Arguments {
		if a.Type.NonNull && a.DefaultValue == nil {
			args = append(args, a.Name+": "+literalFor(schema, a.Type))
		}
	}
	s := f.Name
	if len(args) > 0 {
		s += "(" + strings.Join(args, ", ") + ")"
	}
	def := schema.Types[f.Type.Name()]
	if def == nil || (def.Kind != ast.Object && def.Kind != ast.Interface) {
		return s
	}
	inner := []string{"__typename"}
	if depth > 0 && !onPath[def.Name] {
		onPath[def.Name] = true
		for _, sub := range def.Fields {
			if !strings.HasPrefix(sub.Name, "__") {
				inner = append(inner, selectAll(schema, sub, depth-1, onPath))
			}
		}
		delete(onPath, def.Name)
	}
	return s + " { " + strings.Join(inner, " ") + " }"
}

// literalFor is a valid literal of a (scalar, enum or list) type.
func literalFor(schema *ast.Schema, t *ast.Type) string {
	if t.Elem != nil {
		return "[" + literalFor(schema, t.Elem) + "]"
	}
	switch def := schema.Types[t.Name()]; {
	case def != nil && def.Kind == ast.Enum:
		return def.EnumValues[0].Name
	case t.Name() == "Int":
		return "1"
	case t.Name() == "Boolean":
		return "true"
	default:
		return fmt.Sprintf("%q", "1")
	}
}

func TestNoneMatch(t *testing.T) {
	etag := etagOf([]byte(`{"data":{}}`))
	if etag == etagOf([]byte(`{"data":{"a":1}}`)) {
		t.Fatal("two answers share an ETag")
	}
	for _, c := range []struct {
		header []string
		match  bool
	}{
		{nil, false},
		{[]string{etag}, true},
		{[]string{"W/" + etag}, true},
		{[]string{`"x", ` + etag}, true},
		{[]string{`"x"`, etag}, true},
		{[]string{"*"}, true},
		{[]string{`"x"`}, false},
		{[]string{strings.Trim(etag, `"`)}, false},
	} {
		if got := noneMatch(c.header, etag); got != c.match {
			t.Errorf("If-None-Match %q: match %v, want %v", c.header, got, c.match)
		}
	}
}
