// Package testkit holds test helpers shared by several packages' tests.
package testkit

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"flashsale/stock"
)

// MustAudit fails the test now if any of the contract's stock invariants
// is broken (stock.Service.Audit), listing every violation.
func MustAudit(t testing.TB, ctx context.Context, svc *stock.Service) {
	t.Helper()
	bad, err := svc.Audit(ctx)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	if len(bad) > 0 {
		t.Fatalf("invariants violated:\n%s", strings.Join(bad, "\n"))
	}
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server the test starts itself.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// SyncBuffer is a bytes.Buffer that may be written and read at once from
// several goroutines: a server's log, read by the test while it runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
