package schema

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

// checkIDs draws n IDs from gen and reports how they fail the contract's
// rules: version 7 layout with the creation time first, and every bit
// after the time (but the version and variant) random. A clock or counter
// in rand_a (google/uuid's NewV7 has one) shows as rand_a rising within a
// millisecond far more often than the half of the time chance gives.
func checkIDs(gen func() uuid.UUID, n int) error {
	before := time.Now().UnixMilli()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = gen()
	}
	after := time.Now().UnixMilli()
	var ones [128]int
	rising, sameMs := 0, 0
	for i, u := range ids {
		if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			return fmt.Errorf("%s: version %d, variant %v", u, u.Version(), u.Variant())
		}
		ms := int64(u[0])<<40 | int64(u[1])<<32 | int64(u[2])<<24 | int64(u[3])<<16 | int64(u[4])<<8 | int64(u[5])
		if ms < before || ms > after {
			return fmt.Errorf("%s: time %d, not within [%d, %d]", u, ms, before, after)
		}
		for b := range 128 {
			ones[b] += int(u[b/8]>>(7-b%8)) & 1
		}
		if i > 0 && [6]byte(u[:6]) == [6]byte(ids[i-1][:6]) {
			sameMs++
			if randA(u) > randA(ids[i-1]) {
				rising++
			}
		}
	}
	if sameMs < 100 {
		return fmt.Errorf("only %d pairs of IDs shared a millisecond: too few to judge rand_a", sameMs)
	}
	if frac := float64(rising) / float64(sameMs); frac > 0.6 {
		return fmt.Errorf("rand_a rose in %.0f%% of %d pairs within a millisecond: a clock, not random bits", 100*frac, sameMs)
	}
	random := 0
	for b := 48; b < 128; b++ {
		if b >= 48 && b < 52 || b == 64 || b == 65 { // version and variant
			continue
		}
		if f := float64(ones[b]) / float64(n); f < 0.45 || f > 0.55 {
			return fmt.Errorf("bit %d is set in %.1f%% of IDs, not about half", b, 100*f)
		}
		random++
	}
	if random < 64 {
		return fmt.Errorf("%d random bits, want at least 64", random)
	}
	return nil
}

func randA(u uuid.UUID) int { return int(u[6]&0x0f)<<8 | int(u[7]) }

// TestIDEntropy: hold and order IDs are time-ordered with 74 random bits.
func TestIDEntropy(t *testing.T) {
	if err := checkIDs(newID, 20000); err != nil {
		t.Fatal(err)
	}
}

// TestIDEntropyCheckCatchesAClock: the check above fails on google/uuid's
// NewV7, whose rand_a is a sub-millisecond clock (62 random bits), which
// these IDs were before.
func TestIDEntropyCheckCatchesAClock(t *testing.T) {
	if err := checkIDs(func() uuid.UUID { return uuid.Must(uuid.NewV7()) }, 20000); err == nil {
		t.Fatal("the entropy check passes IDs with a clock in rand_a")
	} else {
		t.Logf("as expected: %v", err)
	}
}
