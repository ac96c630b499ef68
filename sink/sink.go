// Package sink sends one order event to one destination: the shop's
// webhook endpoint, signed the Standard Webhooks way, or a NATS JetStream
// stream. It owns the transport of a single attempt and saying how that
// attempt failed, in words safe to store and show to operators. It keeps no
// state about events: the outbox relay in package events decides what to
// send, when to retry and when to give up.
package sink

import (
	"context"
	"time"
)

// Names of the sinks, used as a metric label and stored in the database.
const (
	NameWebhook = "webhook"
	NameNATS    = "nats"
)

// Message is one delivery attempt's content.
type Message struct {
	ID   string // the event's id ("evt_…"): webhook-id header, NATS Nats-Msg-Id header
	Type string // e.g. "order.paid": NATS subject suffix
	Body []byte // the exact JSON body
}

// Sink sends messages to one destination. Safe for concurrent use.
type Sink interface {
	Name() string // NameWebhook or NameNATS
	// Send makes one attempt. nil means delivered; a non-nil error is a
	// failed attempt, and it is an *Error.
	Send(ctx context.Context, m Message) error
	Close() error
}

// Error is a failed attempt.
type Error struct {
	// Reason is short and safe to store and show operators: "HTTP 500",
	// "timeout", "connection refused", "nats: not connected", ... It never
	// holds a response body, a secret or a URL's credentials or query.
	Reason string
	// RetryAfter is >0 when the destination asked to wait that long
	// (HTTP 429 or 503 with a Retry-After header).
	RetryAfter time.Duration
	// Err is the underlying error, for logs; it may be nil.
	Err error
}

// Error returns the reason, followed by the underlying error if any.
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// fail returns a failed attempt.
func fail(reason string, err error) *Error { return &Error{Reason: reason, Err: err} }
