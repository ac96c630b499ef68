package graph

import (
	"slices"
	"testing"

	"github.com/vektah/gqlparser/v2/ast"
)

// TestSharedProductFieldsAreCallerFree: subscribers of one operation share
// one response per product state (shared.go), which is right only while no
// field under Product depends on the caller. Every field of Product, and
// of any object type it leads to, must be declared caller-free in
// callerFreeProductFields: a new field fails this test until someone has
// judged it.
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
			if !slices.Contains(callerFreeProductFields, name) {
				t.Errorf("Product field %s is not in callerFreeProductFields: if it can depend on who asks (or on the time), subscriptions must not share its responses (graph/shared.go)", name)
			}
			walk(f.Type.Name(), name+".")
		}
	}
	walk("Product", "")
	for _, f := range callerFreeProductFields {
		if !slices.ContainsFunc(schema.Types["Product"].Fields, func(d *ast.FieldDefinition) bool { return d.Name == f }) && !containsDot(f) {
			t.Errorf("callerFreeProductFields names %s, which Product does not have", f)
		}
	}
}

func containsDot(s string) bool { return slices.Contains([]byte(s), '.') }
