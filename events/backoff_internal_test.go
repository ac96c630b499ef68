package events

import (
	"testing"
	"time"
)

// TestBackoff: the wait after failed attempt n is never under RetryMin,
// grows by doubling with jitter in the upper half of its ceiling, stops at
// RetryMax, and is longer when the sink asked (capped at RetryMax).
func TestBackoff(t *testing.T) {
	c := Config{RetryMin: 5 * time.Second, RetryMax: time.Hour}
	c.defaults()
	for _, tc := range []struct {
		n          int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{1, 0, 5 * time.Second, 5 * time.Second},
		{2, 0, 5 * time.Second, 10 * time.Second},
		{3, 0, 10 * time.Second, 20 * time.Second},
		{10, 0, 1280 * time.Second, 2560 * time.Second},
		{11, 0, 30 * time.Minute, time.Hour},
		{15, 0, 30 * time.Minute, time.Hour},
		{64, 0, 30 * time.Minute, time.Hour}, // no overflow
		{1, 90 * time.Second, 90 * time.Second, 90 * time.Second},
		{1, 3 * time.Hour, time.Hour, time.Hour},
		{3, 12 * time.Second, 12 * time.Second, 20 * time.Second}, // a shorter ask does not shorten the backoff
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := c.backoff(tc.n, tc.retryAfter)
			if d < tc.lo || d > tc.hi {
				t.Fatalf("backoff(%d, %s) = %s, want %s..%s", tc.n, tc.retryAfter, d, tc.lo, tc.hi)
			}
			seen[d] = true
		}
		if tc.lo < tc.hi && tc.retryAfter == 0 && len(seen) < 2 {
			t.Errorf("backoff(%d) has no jitter", tc.n)
		}
	}
}

// TestTimeoutLeavesRoomInTheLease: an attempt can never outlast its lease,
// whatever EVENTS_TIMEOUT says.
func TestTimeoutLeavesRoomInTheLease(t *testing.T) {
	for _, tc := range []struct{ timeout, lease, want time.Duration }{
		{10 * time.Second, 0, 10 * time.Second},
		{MaxTimeout, 0, MaxTimeout},
		{time.Minute, 0, MaxTimeout},
		{5 * time.Second, 2 * time.Second, 1200 * time.Millisecond},
		{time.Second, 2 * time.Second, time.Second},
	} {
		c := Config{Timeout: tc.timeout, Lease: tc.lease}
		c.defaults()
		if c.Timeout != tc.want {
			t.Errorf("Timeout %s, lease %s: %s, want %s", tc.timeout, tc.lease, c.Timeout, tc.want)
		}
	}
}
