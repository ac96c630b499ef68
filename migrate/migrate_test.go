package migrate_test

import (
	"context"
	"strings"
	"testing"

	"entgo.io/ent/dialect/sql/schema"

	"flashsale/database"
	"flashsale/internal/testdb"
)

// TestNoDrift applies the versioned migrations to a fresh database and asks
// Atlas what it would still change to reach the ent schema: the answer must
// be nothing. A schema change without `go run ./migrate/gen -name ...`
// fails here.
func TestNoDrift(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			db := testdb.Open(t, d, database.Options{MaxConns: 2})
			var plan strings.Builder
			if err := db.Ent.Schema.WriteTo(context.Background(), &plan,
				schema.WithDropColumn(true), schema.WithDropIndex(true)); err != nil {
				t.Fatal(err)
			}
			var changes []string
			for _, line := range strings.Split(plan.String(), "\n") {
				if line = strings.TrimSpace(line); line != "" && line != "BEGIN;" && line != "COMMIT;" {
					changes = append(changes, line)
				}
			}
			if len(changes) > 0 {
				t.Fatalf("migrations drift from the ent schema; run `go run ./migrate/gen -name <change>`. Pending:\n%s",
					strings.Join(changes, "\n"))
			}
		})
	}
}

// TestUpIsIdempotent: a second start applies nothing and fails nothing.
func TestUpIsIdempotent(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			db := testdb.Open(t, d, database.Options{MaxConns: 2})
			if err := db.Migrate(context.Background(), testLogger(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}
