package cluster

import (
	"database/sql"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// tables lists the tables of the flashsale database.
func (c *checker) tables() []string {
	c.t.Helper()
	var names []string
	var name string
	c.rows("SHOW TABLES", func() []any { return []any{&name} }, func() { names = append(names, name) })
	slices.Sort(names)
	return names
}

// dump reads a whole table: each row rendered in full, keyed by its first
// column (each table's primary key).
func (c *checker) dump(table string) map[string]string {
	c.t.Helper()
	q := "SELECT * FROM `" + table + "`"
	rs, err := c.db.SQL.QueryContext(c.ctx, q)
	if err != nil {
		c.t.Fatalf("%s%s: %v", c.where, q, err)
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		c.t.Fatalf("%s%s: %v", c.where, q, err)
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	out := map[string]string{}
	for rs.Next() {
		if err := rs.Scan(ptrs...); err != nil {
			c.t.Fatalf("%s%s: %v", c.where, q, err)
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			if v == nil {
				parts[i] = cols[i] + "=NULL"
			} else {
				parts[i] = cols[i] + "=" + strconv.Quote(string(v))
			}
		}
		out[string(vals[0])] = strings.Join(parts, " ")
	}
	if err := rs.Err(); err != nil {
		c.t.Fatalf("%s%s: %v", c.where, q, err)
	}
	return out
}

// compareNodes checks that every node holds the same tables with the same
// rows, byte for byte, as node 0, and returns a line for the summary.
func compareNodes(t *testing.T, g *galera, checkers []*checker) string {
	t.Helper()
	tables := checkers[0].tables()
	var sizes []string
	disagree := 0
	for i, ck := range checkers[1:] {
		if got := ck.tables(); !slices.Equal(got, tables) {
			t.Errorf("%s has tables %v, %s has %v", g.nodes[0], tables, g.nodes[i+1], got)
			disagree++
		}
	}
	keep := os.Getenv("CLUSTER_LOG_DIR")
	for _, table := range tables {
		base := checkers[0].dump(table)
		sizes = append(sizes, fmt.Sprintf("%s %d", table, len(base)))
		if keep != "" {
			// For a post-mortem: node 0's rows, one a line.
			rows := slices.Sorted(maps.Values(base))
			path := filepath.Join(keep, "galera-node0-"+table+".txt")
			if err := os.WriteFile(path, []byte(strings.Join(rows, "\n")+"\n"), 0o644); err != nil {
				t.Errorf("CLUSTER_LOG_DIR: %v", err)
			}
		}
		for i, ck := range checkers[1:] {
			other := ck.dump(table)
			var only0, onlyK, differ []string
			for k, v := range base {
				switch w, ok := other[k]; {
				case !ok:
					only0 = append(only0, k)
				case w != v:
					differ = append(differ, fmt.Sprintf("%s: %s has {%s}, %s has {%s}", k, g.nodes[0], v, g.nodes[i+1], w))
				}
			}
			for k := range other {
				if _, ok := base[k]; !ok {
					onlyK = append(onlyK, k)
				}
			}
			if len(only0)+len(onlyK)+len(differ) == 0 {
				continue
			}
			disagree++
			slices.Sort(only0)
			slices.Sort(onlyK)
			slices.Sort(differ)
			t.Errorf("the nodes disagree on table %s: %s has %d rows, %s has %d; %d rows only on the first (%s), %d only on the second (%s), %d rows differ (%s)",
				table, g.nodes[0], len(base), g.nodes[i+1], len(other), len(only0), examples(only0), len(onlyK), examples(onlyK), len(differ), examples(differ))
		}
	}
	if disagree > 0 {
		return fmt.Sprintf("the nodes DISAGREE (%d table comparisons differ; see the test's errors); node 0 has %s", disagree, strings.Join(sizes, ", "))
	}
	return fmt.Sprintf("all %d nodes agree row for row: %s", len(checkers), strings.Join(sizes, ", "))
}
