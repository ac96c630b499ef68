// Command gen writes a new versioned migration for each dialect from the
// difference between the ent schema and the migrations already in migrate/.
//
//	go run ./migrate/gen -name add_something
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
	flag.Parse()
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
	return diff(ctx, entsql.OpenDB(dialect.SQLite, db), dir, name)
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
