// Package ratelimit owns the per-caller rate limits of mutations (RATE_LIMIT:
// one token bucket per caller key) and who the caller is behind proxies
// (TRUSTED_PROXIES: whose X-Forwarded-For is believed).
//
// It knows nothing of GraphQL or HTTP status codes: the caller picks the key
// (customer ID or client IP), asks [Limiter.Allow], and turns a refusal into
// 429 with Retry-After (rounding the returned duration up to whole seconds).
package ratelimit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Bounds on what [Parse] accepts. They keep the arithmetic far from overflow
// and reject settings that are surely typos.
const (
	MaxEvents = 1_000_000        // most events per period
	MinPer    = time.Millisecond // shortest period
	MaxPer    = 24 * time.Hour   // longest period
)

// Rate is a number of events per period, parsed from RATE_LIMIT.
// The zero Rate is off (no limit).
type Rate struct {
	Events int
	Per    time.Duration
}

// Off reports whether r imposes no limit (the zero Rate, or any Rate with no
// events or no period).
func (r Rate) Off() bool { return r.Events <= 0 || r.Per <= 0 }

// String gives r the way [Parse] reads it: "20/s", "600/m", "3600/h",
// "100/10s", or "off".
func (r Rate) String() string {
	if r.Off() {
		return "off"
	}
	switch r.Per {
	case time.Second:
		return strconv.Itoa(r.Events) + "/s"
	case time.Minute:
		return strconv.Itoa(r.Events) + "/m"
	case time.Hour:
		return strconv.Itoa(r.Events) + "/h"
	}
	return strconv.Itoa(r.Events) + "/" + r.Per.String()
}

const wantRate = `want EVENTS/PERIOD such as "20/s", "600/m", "3600/h" or "100/10s" (PERIOD a unit s, m, h, ms or a Go duration), or "off"`

// Parse reads a RATE_LIMIT value: "20/s", "600/m", "3600/h", or with a count
// or any Go duration as the period, "20/1s", "100/10s", "5/500ms". "" and
// "off" (any case) are the zero Rate: no limit. Events must be 1..[MaxEvents]
// and the period [MinPer]..[MaxPer]; "0/s" is an error (say "off" to turn the
// limit off).
func Parse(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "off") {
		return Rate{}, nil
	}
	ev, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate limit %q: %s", s, wantRate)
	}
	if ev == "" || strings.Trim(ev, "0123456789") != "" {
		return Rate{}, fmt.Errorf("rate limit %q: events %q is not a whole number; %s", s, ev, wantRate)
	}
	n, err := strconv.Atoi(ev)
	if err != nil || n < 1 || n > MaxEvents {
		return Rate{}, fmt.Errorf("rate limit %q: events must be 1 to %d (\"off\" turns the limit off)", s, MaxEvents)
	}
	if per == "" {
		return Rate{}, fmt.Errorf("rate limit %q: missing period; %s", s, wantRate)
	}
	if c := per[0]; 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
		per = "1" + per // "s" means "1s"
	}
	d, err := time.ParseDuration(per)
	if err != nil {
		return Rate{}, fmt.Errorf("rate limit %q: period %q: %s", s, per, wantRate)
	}
	if d < MinPer || d > MaxPer {
		return Rate{}, fmt.Errorf("rate limit %q: period must be %v to %v", s, MinPer, MaxPer)
	}
	return Rate{Events: n, Per: d}, nil
}
