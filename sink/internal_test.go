package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999", maxRetryAfter},
		{"86401", maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"Sun, 01 Mar 2026 12:02:00 GMT", 2 * time.Minute},
		{"Sunday, 01-Mar-26 12:02:00 GMT", 2 * time.Minute}, // RFC 850, still allowed by HTTP
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0},                // in the past
		{"Sun, 01 Mar 2030 12:00:00 GMT", maxRetryAfter},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.value, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.value, got, tt.want)
		}
	}
}

func TestTransportReason(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	tests := []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("wrapped: %w", context.Canceled), "canceled"},
		{&net.DNSError{Err: "no such host", Name: "shop.invalid", IsNotFound: true}, "host not found"},
		{&net.DNSError{Err: "i/o timeout", Name: "shop.example", IsTimeout: true}, "timeout"},
		{opErr(syscall.ECONNREFUSED), "connection refused"},
		{opErr(syscall.ECONNRESET), "connection reset"},
		{io.EOF, "connection closed by server"},
		{io.ErrUnexpectedEOF, "connection closed by server"},
		{errors.New("something odd"), "connection failed"},
	}
	for _, tt := range tests {
		if got := transportReason(tt.err); got != tt.want {
			t.Errorf("transportReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestNATSReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout"},
		{nats.ErrTimeout, "timeout"},
		{context.Canceled, "canceled"},
		{jetstream.ErrNoStreamResponse, "nats: no responders"},
		{nats.ErrNoResponders, "nats: no responders"},
		{fmt.Errorf("look up stream: %w", jetstream.ErrJetStreamNotEnabled), "nats: JetStream not enabled"},
		{nats.ErrConnectionClosed, "nats: connection closed"},
		{nats.ErrDisconnected, "nats: not connected"},
		{nats.ErrReconnectBufExceeded, "nats: not connected"},
		{fmt.Errorf("nats: %w", &jetstream.APIError{Code: 400, ErrorCode: 10060, Description: "expected stream does not match"}),
			"nats: expected stream does not match"},
		{errors.New("something odd"), "nats: publish failed"},
	}
	for _, tt := range tests {
		if got := natsReason(tt.err); got != tt.want {
			t.Errorf("natsReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	inner := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	e := &Error{Reason: "connection refused", Err: inner}
	if !errors.Is(e, inner) {
		t.Error("errors.Is does not reach the underlying error")
	}
	if got, want := e.Error(), "connection refused: "+inner.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := (&Error{Reason: "HTTP 500"}).Error(); got != "HTTP 500" {
		t.Errorf("Error() = %q, want HTTP 500", got)
	}
}
