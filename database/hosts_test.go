package database_test

import (
	"context"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/database"
	"flashsale/internal/testdb"
)

// deadHost is a TCP port that accepts and at once hangs up, counting the
// connections: a database host that is down.
func deadHost(t *testing.T) (addr string, dials *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dials = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), dials
}

// TestHostsInOrder: with several hosts in DATABASE_URL, connections go to
// the first that answers; a host that failed is passed over for a while
// instead of being tried by every new connection.
func TestHostsInOrder(t *testing.T) {
	u, err := url.Parse(testdb.URL(t, dialect.MySQL))
	if err != nil {
		t.Fatal(err)
	}
	dead, dials := deadHost(t)
	live := u.Host
	u.Host = dead + "," + live
	db, err := database.Open(u.String(), database.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if !strings.Contains(db.Redacted, dead+","+live) {
		t.Fatalf("redacted %q does not list both hosts", db.Redacted)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping with the first host down: %v", err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the dead host was dialed %d times for the first connection, want 1", n)
	}
	// More connections at once: none of them tries the dead host again yet.
	conns := make([]interface{ Close() error }, 0, 3)
	for range 3 {
		c, err := db.SQL.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if err := c.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the dead host was dialed %d times within its pause, want 1", n)
	}
	// Nor does a transaction, though its sessions are another pool's.
	tx, err := db.Ent.Tx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := tx.QueryContext(ctx, "SELECT 1")
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the dead host was dialed %d times by a transaction within its pause, want 1", n)
	}

	// Every host down: a clear error naming them, not a hang.
	dead2, _ := deadHost(t)
	u.Host = dead + "," + dead2
	down, err := database.Open(u.String(), database.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if err := down.Ping(ctx); err == nil {
		t.Fatal("ping with every host down succeeded")
	}
}
