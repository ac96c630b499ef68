package database

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMySQLConfig(t *testing.T) {
	for _, tc := range []struct {
		url                       string
		user, pass, addr, db, tls string
		timeout                   time.Duration
		hosts                     []string // when more than the one of addr
		redacted                  string
		wantErr                   string
	}{
		{url: "mysql://root@127.0.0.1:3306/shop", user: "root", addr: "127.0.0.1:3306", db: "shop", timeout: 3 * time.Second},
		{url: "mysql://app:p%40ss%3Aw@db.internal/shop?tls=skip-verify&timeout=1s", user: "app", pass: "p@ss:w", addr: "db.internal:3306", db: "shop", tls: "skip-verify", timeout: time.Second},
		{url: "mysql://root@127.0.0.1:3306/", wantErr: "database name"},
		{url: "mysql://root@127.0.0.1:3306/x?timeout=soon", wantErr: "DATABASE_URL"},
		{url: "mysql://root@127.0.0.1:3306/x?allowAllFiles=true", wantErr: "allowAllFiles"},
		{url: "mysql://root@127.0.0.1:3306/x?multiStatements=true", wantErr: "multiStatements"},
		{url: "mysql://root@127.0.0.1:3306/x?autocommit=0", wantErr: "autocommit"},
		{url: "mysql://root@127.0.0.1:3306/x?AutoCommit=1", wantErr: "autocommit"},
		{url: "mysql://root@127.0.0.1:3306/x?allowCleartextPasswords=true", wantErr: "allowCleartextPasswords"},
		{url: "mysql://root@127.0.0.1:3306/x?allowCleartextPasswords=true&tls=preferred", wantErr: "allowCleartextPasswords"},
		{url: "mysql://root@127.0.0.1:3306/x?allowCleartextPasswords=true&tls=true", user: "root", addr: "127.0.0.1:3306", db: "x", tls: "true", timeout: 3 * time.Second},
		{url: "mysql://app:secret@h1:3306,h2,h3:3307/shop", user: "app", pass: "secret", addr: "h1:3306", db: "shop", timeout: 3 * time.Second,
			hosts: []string{"h1:3306", "h2:3306", "h3:3307"}, redacted: "mysql://app@h1:3306,h2:3306,h3:3307/shop"},
		{url: "mysql://root@h1:3306,/shop", wantErr: "not a host"},
		{url: "mysql://root@h1:3306,h2:port/shop", wantErr: "not a host"},
		{url: "mysql://root@/shop", wantErr: "not a host"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			src, err := ParseURL(tc.url)
			cfg := src.mysql
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.User != tc.user || cfg.Passwd != tc.pass || cfg.Addr != tc.addr || cfg.DBName != tc.db ||
				cfg.TLSConfig != tc.tls || cfg.Timeout != tc.timeout || !cfg.ParseTime || cfg.Loc != time.UTC || !cfg.InterpolateParams {
				t.Fatalf("got %+v", cfg)
			}
			want := tc.hosts
			if want == nil {
				want = []string{tc.addr}
			}
			if !slices.Equal(src.hosts, want) {
				t.Fatalf("hosts %q, want %q", src.hosts, want)
			}
			if tc.redacted != "" && src.Redacted != tc.redacted {
				t.Fatalf("redacted %q, want %q", src.Redacted, tc.redacted)
			}
			if tc.pass != "" && strings.Contains(src.Redacted, tc.pass) {
				t.Fatalf("redacted URL shows the password: %q", src.Redacted)
			}
		})
	}
}

func TestEmbedded(t *testing.T) {
	for url, want := range map[string]bool{
		"":                       true,
		DefaultURL:               true,
		"sqlite:///tmp/x.db":     true,
		"mysql://root@h:3306/db": false,
	} {
		src, err := ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		if got := src.Embedded(); got != want {
			t.Errorf("ParseURL(%q).Embedded() = %v, want %v", url, got, want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	for url, want := range map[string]string{
		"flashsale.db":             "want mysql://",
		"postgres://x/y":           "unsupported scheme",
		"sqlite://":                "needs a file path",
		"mysql://u:secret@h:1/%zz": "not a valid URL",
	} {
		_, err := Open(url, Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q): %v, want %q", url, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error reveals the password: %v", url, err)
		}
	}
}
