// Package testkit holds test helpers shared by several packages' tests.
package testkit

import (
	"context"
	"net"
	"strings"
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
