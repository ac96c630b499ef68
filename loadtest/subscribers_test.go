package main

import (
	"testing"
)

func TestParseEvent(t *testing.T) {
	for _, tc := range []struct {
		in       string
		reserved int
		ok       bool
	}{
		{`{"type":"next","id":"1","payload":{"data":{"productStock":{"stockReserved":42,"stockSellable":8,"updatedAt":"2026-12-01T04:50:00.123456Z"}}}}`, 42, true},
		{`{"id":"1","type":"next","payload":{"data":{"productStock":{"stockSellable":8,"updatedAt":"2026-12-01T04:50:00Z","stockReserved":7}}}}`, 7, true},
		// gqlgen's order: the type last.
		{`{"payload":{"data":{"productStock":{"stockReserved":9,"stockSellable":1,"updatedAt":"2026-12-01T04:50:00.5Z"}}},"id":"1","type":"next"}`, 9, true},
		{`{"type":"ping"}`, 0, false},
		{`{"payload":{"data":{"productStock":{"stockReserved":9,"updatedAt":"2026-12-01T04:50:00Z"}}},"id":"1","type":"complete"}`, 0, false},
		{`{"type":"next","id":"1","payload":{"errors":[{"message":"x"}]}}`, 0, false},
		{`{"type":"next","payload":{"data":{"productStock":{"stockReserved":"x","updatedAt":"2026-12-01T04:50:00Z"}}}}`, 0, false},
	} {
		n, ts, ok := parseEvent([]byte(tc.in))
		if ok != tc.ok || n != tc.reserved || (ok && ts.Year() != 2026) {
			t.Errorf("parseEvent(%s) = %d %v %v", tc.in, n, ts, ok)
		}
	}
}
