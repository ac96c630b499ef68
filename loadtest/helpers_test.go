package main

import (
	"cmp"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

const (
	testToken  = "loadtest-admin-token-0123456789ab"
	testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	// Customers mode.
	testCustomerSecret = "loadtest-customer-secret-0123456789abcdef"
	testIssuer         = "https://login.loadtest.example"
	testAudience       = "flashsale-loadtest"
)

func noEnv(string) string { return "" }

// freshDatabase creates lt_<random> on the MariaDB of TEST_MYSQL_URL
// (default root@127.0.0.1:3306) and drops it when the test ends.
func freshDatabase(t *testing.T) string {
	t.Helper()
	base := cmp.Or(os.Getenv("TEST_MYSQL_URL"), "mysql://root@127.0.0.1:3306/test")
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("TEST_MYSQL_URL: %v", err)
	}
	u.Path = "/"
	admin := openSQL(t, u.String())
	name := "lt_" + randomHex(6)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("this test needs MariaDB/MySQL at %s (set TEST_MYSQL_URL): %v", u.Host, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// openSQL opens a mysql:// URL with the plain driver.
func openSQL(t *testing.T, raw string) *sql.DB {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", u.Host, strings.Trim(u.Path, "/")
	cfg.Timeout = 5 * time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// startServer builds the server from the module root, runs it on dbURL and
// returns its base URL; it is stopped with SIGTERM when the test ends.
func startServer(t *testing.T, dbURL string, env ...string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "fs")
	build := exec.Command("go", "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the server: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("PORT=%d", port), "DATABASE_URL="+dbURL, "ADMIN_TOKEN="+testToken, "WEBHOOK_SECRET="+testSecret,
		"HOLD_TTL=2m", "PAYMENT_TIMEOUT=15m", "SWEEP_INTERVAL=1s", "DB_MAX_CONNS=20", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("server exited with %v", waitErr)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("server did not stop on SIGTERM")
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("server log:\n%s", b)
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("server exited at start: %v\n%s", waitErr, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
