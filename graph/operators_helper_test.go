package graph_test

import (
	"testing"

	"flashsale/operator"
)

// mustOperators is the operator set of one ADMIN_TOKEN.
func mustOperators(tb testing.TB, adminToken string) *operator.Tokens {
	tb.Helper()
	ops, err := operator.Parse("", adminToken, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ops
}
