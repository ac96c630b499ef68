package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"flashsale/graph"
)

// TestDocsCoverTheAPI keeps the hand-written docs true to the code: every
// root field of the schema and every error code is in docs/api.md, and
// every setting the server reads is in docs/operations.md's table. A field,
// code or setting added without its documentation fails here.
func TestDocsCoverTheAPI(t *testing.T) {
	api := readDoc(t, "docs/api.md")
	ops := readDoc(t, "docs/operations.md")
	src, err := os.ReadFile("schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	schema, gqlErr := gqlparser.LoadSchema(&ast.Source{Name: "schema.graphqls", Input: string(src)})
	if gqlErr != nil {
		t.Fatal(gqlErr)
	}
	for _, root := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		for _, f := range root.Fields {
			if strings.HasPrefix(f.Name, "__") {
				continue
			}
			if !regexp.MustCompile(`\b` + f.Name + `\b`).MatchString(api) {
				t.Errorf("docs/api.md does not mention %s.%s", root.Name, f.Name)
			}
		}
	}
	for _, code := range []string{
		graph.CodeBadUserInput, graph.CodeNotFound, graph.CodeInsufficientStock, graph.CodeHoldExpired,
		graph.CodeHoldNotActive, graph.CodePurchaseLimit, graph.CodeKeyReused, graph.CodeSaleNotStarted,
		graph.CodeSaleEnded, graph.CodeUnauthenticated, graph.CodeUnavailable, graph.CodeInternal,
		graph.CodeQueryTooLarge, graph.CodeQueryTooDeep, graph.CodeComplexityLimit, graph.CodeRateLimited,
		graph.CodeQueueRequired, graph.CodeNotAdmitted,
	} {
		if !strings.Contains(api, "`"+code+"`") {
			t.Errorf("docs/api.md does not explain the error code %s", code)
		}
	}
	for _, v := range envVars {
		if !strings.Contains(ops, "`"+v.name+"`") {
			t.Errorf("docs/operations.md's configuration does not list %s", v.name)
		}
	}
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
