// Package migrate holds the versioned SQL migrations, one folder per dialect,
// and applies them at start with goose.
//
// The files are generated from the ent schema by `go run ./migrate/gen -name
// NAME`; TestNoDrift proves that applying them yields exactly the ent schema.
package migrate

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"time"

	"entgo.io/ent/dialect"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed mysql/*.sql sqlite/*.sql
var files embed.FS

// FS returns the migration files of one dialect (dialect.MySQL or dialect.SQLite).
func FS(d string) (fs.FS, error) {
	switch d {
	case dialect.MySQL:
		return fs.Sub(files, "mysql")
	case dialect.SQLite:
		return fs.Sub(files, "sqlite")
	}
	return nil, fmt.Errorf("migrate: unsupported dialect %q", d)
}

// Up applies every pending migration. On MySQL a lock table serializes
// servers that start at the same time, so each migration runs once.
func Up(ctx context.Context, db *sql.DB, d string, log *slog.Logger) error {
	return UpTo(ctx, db, d, log, math.MaxInt64)
}

// UpTo applies the pending migrations up to and including version (tests
// use it to build a database as an older release left it).
func UpTo(ctx context.Context, db *sql.DB, d string, log *slog.Logger, version int64) error {
	fsys, err := FS(d)
	if err != nil {
		return err
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	gd := goose.DialectSQLite3
	if d == dialect.MySQL {
		gd = goose.DialectMySQL
		locker, err := lock.NewMySQLTableLocker(
			lock.WithTableLockTimeout(time.Second, 300), // wait up to 5 minutes for another server's migration
			lock.WithTableLogger(log),
		)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		opts = append(opts, goose.WithLocker(locker))
	}
	p, err := goose.NewProvider(gd, db, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	results, err := p.UpTo(ctx, version)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		log.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "took", r.Duration)
	}
	return nil
}
