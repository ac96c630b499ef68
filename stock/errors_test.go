package stock

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		retry bool
		want  error // the kind classify must keep or give; nil: none (internal)
	}{
		{"deadlock", &mysql.MySQLError{Number: 1213}, true, ErrUnavailable},
		{"lock wait timeout", fmt.Errorf("x: %w", &mysql.MySQLError{Number: 1205}), true, ErrUnavailable},
		{"Galera node not ready", &mysql.MySQLError{Number: 1047}, true, ErrUnavailable},
		{"too many connections", &mysql.MySQLError{Number: 1040}, false, ErrUnavailable},
		{"bad conn", driver.ErrBadConn, false, ErrUnavailable},
		{"invalid conn", mysql.ErrInvalidConn, false, ErrUnavailable},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false, ErrUnavailable},
		{"deadline", context.DeadlineExceeded, false, ErrUnavailable},
		{"caller gone", context.Canceled, false, ErrUnavailable},
		{"duplicate key", &mysql.MySQLError{Number: 1062}, false, nil},
		{"no such table", &mysql.MySQLError{Number: 1146}, false, nil},
		{"domain kind kept", fmt.Errorf("%w: 3 requested", ErrInsufficientStock), false, ErrInsufficientStock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryable(tc.err); got != tc.retry {
				t.Errorf("retryable = %v, want %v", got, tc.retry)
			}
			got := classify("op", tc.err)
			for _, k := range domainErrors {
				if errors.Is(got, k) != (k == tc.want) {
					t.Errorf("classify(%v) = %v: errors.Is(%v) = %v", tc.err, got, k, errors.Is(got, k))
				}
			}
		})
	}
}

// TestBackoff: waits between attempts stay within their growing ceiling,
// which stops at 64 ms, so twelve attempts fit well inside a request.
func TestBackoff(t *testing.T) {
	total := time.Duration(0)
	for n := 1; n < maxAttempts; n++ {
		ceiling := min(2*time.Millisecond<<n, 64*time.Millisecond) + time.Millisecond
		for range 200 {
			if b := backoff(n); b < time.Millisecond || b > ceiling {
				t.Fatalf("backoff(%d) = %v, want 1ms..%v", n, b, ceiling)
			}
		}
		total += ceiling
	}
	if total > time.Second {
		t.Fatalf("the waits of %d attempts add up to %v", maxAttempts, total)
	}
}

func TestShortError(t *testing.T) {
	for _, tc := range []struct {
		err  *ShortError
		want string
	}{
		{&ShortError{Requested: 1, SoldOut: true}, "insufficient stock: 1 requested, product is sold out"},
		{&ShortError{Requested: 5, Sellable: 3}, "insufficient stock: 5 requested, 3 sellable"},
		{&ShortError{Requested: 12, Sellable: 0}, "insufficient stock: 12 requested, 0 sellable"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%+v: %q, want %q", *tc.err, got, tc.want)
		}
		if err := fmt.Errorf("wrapped: %w", tc.err); !errors.Is(err, ErrInsufficientStock) {
			t.Errorf("%+v is not ErrInsufficientStock", *tc.err)
		}
	}
}
