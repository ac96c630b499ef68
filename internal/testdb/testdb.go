// Package testdb gives each test its own freshly migrated database: a new
// database on the MariaDB/MySQL server named by TEST_MYSQL_URL, or a new
// SQLite file. MySQL tests fail, never skip, when the server is unreachable.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/go-sql-driver/mysql"

	"flashsale/database"
)

// DefaultMySQLURL is the server the tests use when TEST_MYSQL_URL is unset.
const DefaultMySQLURL = "mysql://root@127.0.0.1:3306/test"

// Dialects lists both stores, for tests that must pass on each.
var Dialects = []string{dialect.MySQL, dialect.SQLite}

// Open returns a fresh migrated database of the given dialect, dropped (or
// deleted) when the test ends.
func Open(t testing.TB, d string, opts database.Options) *database.DB {
	t.Helper()
	u := URL(t, d)
	db, err := database.Open(u, opts)
	if err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// URL creates a fresh, empty database and returns its DATABASE_URL.
func URL(t testing.TB, d string) string {
	t.Helper()
	if d == dialect.SQLite {
		return "sqlite://" + filepath.Join(t.TempDir(), "test.db")
	}
	base := os.Getenv("TEST_MYSQL_URL")
	if base == "" {
		base = DefaultMySQLURL
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("TEST_MYSQL_URL: %v", err)
	}
	pass, _ := u.User.Password()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = u.User.Username(), pass, "tcp", u.Host
	cfg.Timeout = 5 * time.Second
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("TEST_MYSQL_URL: %v", err)
	}
	defer admin.Close()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "fs_" + strings.ToLower(hex.EncodeToString(b))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("MySQL tests need a MariaDB/MySQL server at %s (set TEST_MYSQL_URL): %v", u.Host, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			return
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
