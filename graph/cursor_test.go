package graph

import (
	"errors"
	"testing"

	"flashsale/stock"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, id := range []int{1, 42, 1 << 40} {
		got, err := decodeCursor(encodeCursor(id))
		if err != nil || got != id {
			t.Fatalf("decodeCursor(encodeCursor(%d)) = %d, %v", id, got, err)
		}
	}
}

func TestCursorMalformed(t *testing.T) {
	for _, c := range []string{"", "!!", "cHJvZHVjdDo", "cHJvZHVjdDow", "cHJvZHVjdDot1", "aG9sZDox", "cHJvZHVjdDp4", "cHJvZHVjdDowMQ"} { // the last is "product:01"
		if _, err := decodeCursor(c); !errors.Is(err, stock.ErrInvalidInput) {
			t.Errorf("decodeCursor(%q) = %v, want ErrInvalidInput", c, err)
		}
	}
}
