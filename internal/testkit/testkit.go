// Package testkit holds test helpers shared by several packages' tests.
package testkit

import (
	"context"
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
