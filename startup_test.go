package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"flashsale/internal/testkit"
)

// TestPermanentDatabaseErrors: a database that does not exist, or a user
// who may not use it, stops the server at once with what to do, instead
// of a minute of retries.
func TestPermanentDatabaseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		want      []string
	}{
		{"unknown database", "mysql://root@127.0.0.1:3306/fs_no_such_database_0f3a", []string{"Unknown database", "CREATE DATABASE"}},
		{"wrong password", "mysql://root:wrong-password@127.0.0.1:3306/test", []string{"Access denied", "password in DATABASE_URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"PORT": fmt.Sprint(testkit.FreePort(t)), "DATABASE_URL": tc.url, "WEBHOOK_SECRET": testSecret}
			var logs testkit.SyncBuffer
			err := run(context.Background(), []string{"flashsale"}, func(k string) string { return env[k] }, &logs)
			if err == nil {
				t.Fatal("run started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "wrong-password") {
				t.Errorf("error quotes the password: %v", err)
			}
			if strings.Contains(logs.String(), "waiting for the database") {
				t.Errorf("it retried:\n%s", logs.String())
			}
		})
	}
}

// TestVersionFlag: -version prints the build and starts nothing.
func TestVersionFlag(t *testing.T) {
	var out testkit.SyncBuffer
	if err := run(context.Background(), []string{"flashsale", "-version"}, func(string) string { return "" }, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "flashsale ") || !strings.Contains(got, "go1.") || strings.Count(got, "\n") != 1 {
		t.Errorf("-version printed %q", got)
	}
}
