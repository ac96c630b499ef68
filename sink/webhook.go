package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"flashsale/signing"
)

// Defaults of WebhookConfig.
const (
	DefaultWebhookTimeout     = 10 * time.Second
	DefaultWebhookConcurrency = 16
	DefaultUserAgent          = "flashsale-events/1"
)

// maxDrain is how much of a response body is read (and thrown away) so the
// connection can be reused; a longer body costs a new connection instead.
const maxDrain = 64 << 10

// maxRetryAfter caps a Retry-After so a silly value cannot overflow.
const maxRetryAfter = 24 * time.Hour

// WebhookConfig configures NewWebhook.
type WebhookConfig struct {
	URL    string // http or https
	Secret string // "whsec_" + base64 of >= 24 bytes (Standard Webhooks)
	// Timeout bounds the whole attempt: connect, request, response
	// headers and the bounded body read (default 10s).
	Timeout time.Duration
	// Concurrency is the number of attempts expected in flight; it sizes
	// the idle connection pool (default 16).
	Concurrency int
	UserAgent   string // default "flashsale-events/1"
}

// Webhook POSTs events to the shop's endpoint. Safe for concurrent use.
type Webhook struct {
	url     string
	signer  *signing.Signer
	client  *http.Client
	ua      string
	timeout time.Duration
}

var _ Sink = (*Webhook)(nil)

// NewWebhook checks the URL and the secret and returns the sink. Its errors
// never quote the secret.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := CheckWebhookURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	signer, err := signing.NewSigner(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("sink: webhook secret: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultWebhookTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultWebhookConcurrency
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	return &Webhook{
		url:    cfg.URL,
		signer: signer,
		client: &http.Client{
			Transport: newTransport(cfg.Timeout, cfg.Concurrency),
			// A redirect is a failed attempt: the shop must configure the
			// final URL, and a signed event must not wander elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		ua:      cfg.UserAgent,
		timeout: cfg.Timeout,
	}, nil
}

// newTransport returns a transport of the sink's own, so no other code's
// settings (or http.DefaultTransport's mutations) reach it.
func newTransport(timeout time.Duration, concurrency int) *http.Transport {
	dialer := &net.Dialer{Timeout: min(timeout, 30*time.Second), KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   min(timeout, 10*time.Second),
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          max(100, concurrency),
		MaxIdleConnsPerHost:   concurrency,
		IdleConnTimeout:       90 * time.Second,
	}
}

// CheckWebhookURL reports what is wrong with a webhook URL: it must be
// http or https with a host. Its errors never quote the URL, which may hold
// credentials.
func CheckWebhookURL(raw string) error {
	switch {
	case raw == "":
		return errors.New("webhook URL is empty")
	case strings.TrimSpace(raw) != raw:
		return errors.New("webhook URL has leading or trailing spaces")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the whole URL
		}
		return fmt.Errorf("webhook URL is not a valid URL: %w", err)
	}
	switch {
	case u.Scheme == "":
		return errors.New("webhook URL has no scheme: write it as https://host/path")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("webhook URL scheme is %q, want http or https", u.Scheme)
	case u.Opaque != "" || u.Hostname() == "":
		return errors.New("webhook URL has no host: write it as https://host/path")
	}
	return nil
}

// Name returns NameWebhook.
func (w *Webhook) Name() string { return NameWebhook }

// Close releases idle connections.
func (w *Webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

// Send POSTs m's body, signed, and reports delivered only on a 2xx answer
// within the timeout.
func (w *Webhook) Send(ctx context.Context, m Message) error {
	if m.ID == "" {
		return fail("invalid message: empty id", nil)
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(m.Body))
	if err != nil {
		return fail("invalid request", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.ua)
	if err := w.signer.Sign(req.Header, m.ID, time.Now(), m.Body); err != nil {
		return fail("signing failed", err)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the URL, query included
		}
		return fail(transportReason(err), err)
	}
	// The body is never kept: drain a bounded part so the connection can
	// be reused, then close.
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	_ = resp.Body.Close()
	return statusError(resp, time.Now())
}

// statusError returns nil for a 2xx answer, else the failed attempt.
func statusError(resp *http.Response, now time.Time) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		return &Error{Reason: fmt.Sprintf("redirect (HTTP %d), not followed", code)}
	}
	e := &Error{Reason: "HTTP " + strconv.Itoa(code)}
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	}
	return e
}

// parseRetryAfter reads a Retry-After value, delay-seconds or HTTP-date.
// It returns 0 for an absent, negative or unreadable value and for a date
// in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	secs, err := strconv.ParseUint(v, 10, 64)
	switch {
	case err == nil && secs <= uint64(maxRetryAfter/time.Second):
		return time.Duration(secs) * time.Second
	case err == nil || errors.Is(err, strconv.ErrRange):
		return maxRetryAfter
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}

// transportReason names a failed request for operators, without details
// that could leak the URL.
func transportReason(err error) string {
	var (
		ne       net.Error
		dnsErr   *net.DNSError
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		alertErr tls.AlertError
		recErr   tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &dnsErr):
		return "host not found"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &hostErr):
		return "TLS certificate rejected"
	case errors.As(err, &alertErr), errors.As(err, &recErr):
		return "TLS handshake failed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by server"
	}
	return "connection failed"
}
