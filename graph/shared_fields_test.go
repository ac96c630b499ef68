package graph

import (
	"testing"

	"github.com/vektah/gqlparser/v2/ast"
)

// TestSharedProductFieldsAreCallerFree: subscribers of one operation share
// one response per product state (shared.go), which is right only while no
// field under Product depends on the caller or the clock. Every field of
// Product, and of any object type it leads to, must be declared so in
// schema.graphqls with @cacheControl(scope: PUBLIC), the declaration a CDN
// is trusted with too (cache.go): a new field fails this test until
// someone has judged it.
func TestSharedProductFieldsAreCallerFree(t *testing.T) {
	schema := NewExecutableSchema(Config{}).Schema()
	seen := map[string]bool{}
	var walk func(typeName, path string)
	walk = func(typeName, path string) {
		def := schema.Types[typeName]
		if def == nil || def.Kind != ast.Object || seen[typeName] {
			return
		}
		seen[typeName] = true
		for _, f := range def.Fields {
			if len(f.Name) > 1 && f.Name[:2] == "__" {
				continue
			}
			name := path + f.Name
			if !fieldIsPublic(f) {
				t.Errorf("Product field %s is not declared @cacheControl(scope: PUBLIC): if it can depend on who asks (or on the time), subscriptions must not share its responses (graph/shared.go)", name)
			}
			walk(f.Type.Name(), name+".")
		}
	}
	walk("Product", "")
	if len(seen) == 0 {
		t.Fatal("the schema has no Product type")
	}
}
