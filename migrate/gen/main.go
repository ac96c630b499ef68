// Command gen writes a new versioned migration for each dialect from the
// difference between the ent schema and the migrations already in migrate/.
//
//	go run ./migrate/gen -name add_something
//
// A generated migration may be edited by hand (a data backfill, say); then
//
//	go run ./migrate/gen -rehash
//
// rewrites both atlas.sum files so the integrity check accepts the edit.
//
// It replays the existing migrations on a scratch database (a temporary
// MariaDB/MySQL database, and an in-memory SQLite one), diffs the result
// against the ent schema with Atlas, and writes goose-format files. Nothing is
// written when the schema has not changed.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/sqltool"
	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/schema"
	"github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite"

	entmigrate "flashsale/ent/migrate"
)

func main() {
	name := flag.String("name", "", "migration name, e.g. add_refunds (required)")
	dir := flag.String("dir", "migrate", "directory holding the mysql/ and sqlite/ migration folders")
	dsn := flag.String("mysql", envOr("DEV_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/"), "MySQL DSN of a server where a scratch database may be created")
	rehash := flag.Bool("rehash", false, "only rewrite atlas.sum after a migration was edited by hand")
	flag.Parse()
	if *rehash {
		for _, d := range []string{"mysql", "sqlite"} {
			if err := writeSum(filepath.Join(*dir, d)); err != nil {
				log.Fatalf("%s: %v", d, err)
			}
		}
		return
	}
	if *name == "" {
		flag.Usage()
		os.Exit(2)
	}
	ctx := context.Background()
	if err := diffMySQL(ctx, *dsn, filepath.Join(*dir, "mysql"), *name); err != nil {
		log.Fatalf("mysql: %v", err)
	}
	if err := diffSQLite(ctx, filepath.Join(*dir, "sqlite"), *name); err != nil {
		log.Fatalf("sqlite: %v", err)
	}
}

func diffMySQL(ctx context.Context, dsn, dir, name string) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return err
	}
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer admin.Close()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	scratch := "atlas_dev_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+scratch); err != nil {
		return err
	}
	defer admin.ExecContext(context.Background(), "DROP DATABASE "+scratch)
	cfg.DBName = scratch
	cfg.ParseTime = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	return diff(ctx, entsql.OpenDB(dialect.MySQL, db), dir, name)
}

func diffSQLite(ctx context.Context, dir, name string) error {
	db, err := sql.Open("sqlite", "file:atlas_dev?mode=memory&_pragma=foreign_keys(1)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection, one in-memory database
	if err := diff(ctx, entsql.OpenDB(dialect.SQLite, db), dir, name); err != nil {
		return err
	}
	return rebuildOutsideTx(dir)
}

// Atlas brackets a table rebuild on SQLite with "PRAGMA foreign_keys" off
// and on. That pragma does nothing inside a transaction, where goose runs a
// migration by default, and then dropping the old table trips the foreign
// keys of the rows that point at it (deferring the checks does not help:
// SQLite counts the violation at the DROP and never uncounts it). So such a
// migration runs outside goose's transaction, as SQLite's documented
// procedure for table changes says: foreign keys off, the rebuild in its
// own transaction, foreign keys on. goose runs a migration's statements
// over one connection, so the pragma and the transaction share a session.
const (
	sqliteFKOff = "-- disable the enforcement of foreign-keys constraints\nPRAGMA foreign_keys = off;\n"
	sqliteFKOn  = "-- enable back the enforcement of foreign-keys constraints\nPRAGMA foreign_keys = on;\n"
)

// rebuildOutsideTx rewrites the newest SQLite migration as described at
// sqliteFKOff and updates atlas.sum.
func rebuildOutsideTx(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(files) == 0 {
		return err
	}
	newest := files[len(files)-1] // names start with their version
	b, err := os.ReadFile(newest)
	if err != nil {
		return err
	}
	s := string(b)
	const noTx = "-- +goose NO TRANSACTION\n"
	if !strings.Contains(s, sqliteFKOff) || strings.HasPrefix(s, noTx) {
		return nil // nothing to rebuild, or rewritten already (no new migration this run)
	}
	s = noTx + s
	s = strings.Replace(s, sqliteFKOff, sqliteFKOff+"BEGIN;\n", 1)
	s = strings.Replace(s, sqliteFKOn, "COMMIT;\n"+sqliteFKOn, 1)
	if err := os.WriteFile(newest, []byte(s), 0o644); err != nil {
		return err
	}
	return writeSum(dir)
}

// writeSum rewrites dir's atlas.sum from the migration files in it.
func writeSum(dir string) error {
	ld, err := migrate.NewLocalDir(dir)
	if err != nil {
		return err
	}
	sum, err := ld.Checksum()
	if err != nil {
		return err
	}
	return migrate.WriteSumFile(ld, sum)
}

func diff(ctx context.Context, drv dialect.Driver, dir, name string) error {
	d, err := sqltool.NewGooseDir(dir)
	if err != nil {
		return err
	}
	m, err := schema.NewMigrate(drv,
		schema.WithDir(d),
		schema.WithMigrationMode(schema.ModeReplay),
		schema.WithFormatter(sqltool.GooseFormatter),
		schema.WithDropColumn(true),
		schema.WithDropIndex(true),
	)
	if err != nil {
		return err
	}
	err = m.NamedDiff(ctx, name, entmigrate.Tables...)
	if errors.Is(err, migrate.ErrNoPlan) {
		fmt.Printf("%s: no changes\n", dir)
		return nil
	}
	if err == nil {
		fmt.Printf("%s: wrote migration %q\n", dir, name)
	}
	return err
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
