package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of NATSConfig.
const (
	DefaultNATSSubject = "flashsale.events"
	DefaultNATSStream  = "FLASHSALE_EVENTS"
	DefaultNATSTimeout = 10 * time.Second
)

// StreamDuplicates is the duplicate window of a stream the sink creates.
// The relay's contract needs at least 2 minutes: a retry of an attempt
// whose ack was lost must land inside the window to be dropped.
const StreamDuplicates = 10 * time.Minute

// minDuplicates is the contract's floor; an existing stream with a shorter
// window is used anyway (it is the operator's), with a warning.
const minDuplicates = 2 * time.Minute

// reconnectWait is the pause between rounds of reconnection attempts.
const reconnectWait = time.Second

// NATSConfig configures NewNATS.
type NATSConfig struct {
	URL     string        // nats://host:4222; a comma-separated list is allowed (schemes nats, tls, ws, wss)
	Subject string        // subject prefix (default "flashsale.events"): events go to <Subject>.<Type>
	Stream  string        // stream name (default "FLASHSALE_EVENTS")
	Timeout time.Duration // bound on one publish (default 10s)
	Logger  *slog.Logger  // connection events; default slog.Default()
}

// NATS publishes events to a JetStream stream. Safe for concurrent use.
type NATS struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	subject string
	stream  string
	timeout time.Duration
	log     *slog.Logger

	streamOK atomic.Bool   // the stream was found or created on this connection
	ensuring chan struct{} // one slot: one stream check at a time, waited for with a context
}

var _ Sink = (*NATS)(nil)

// NewNATS checks the configuration and starts connecting in the background:
// it neither fails nor waits for long when NATS is down (the client keeps
// reconnecting for ever); Send fails until a connection is up. Only a
// malformed configuration is an error. The connection outlives ctx, which
// is only checked for cancellation and passed to the log.
func NewNATS(ctx context.Context, cfg NATSConfig) (*NATS, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	if cfg.Subject == "" {
		cfg.Subject = DefaultNATSSubject
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultNATSStream
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultNATSTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, err := range []error{CheckNATSURL(cfg.URL), CheckNATSSubject(cfg.Subject), CheckNATSStream(cfg.Stream)} {
		if err != nil {
			return nil, fmt.Errorf("sink: %w", err)
		}
	}
	n := &NATS{
		subject:  cfg.Subject,
		stream:   cfg.Stream,
		timeout:  cfg.Timeout,
		log:      cfg.Logger.With("sink", NameNATS),
		ensuring: make(chan struct{}, 1),
	}
	nc, err := nats.Connect(cfg.URL, n.connOptions()...)
	if err != nil {
		return nil, fmt.Errorf("sink: nats: %w", err)
	}
	n.nc = nc
	if n.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("sink: jetstream: %w", err)
	}
	if !nc.IsConnected() {
		n.log.WarnContext(ctx, "NATS unreachable, connecting in the background", "stream", n.stream)
	}
	return n, nil
}

// connOptions make a connection that never gives up and never buffers:
// while disconnected a publish fails at once, and the relay retries later.
func (n *NATS) connOptions() []nats.Option {
	return []nats.Option{
		nats.Name("flashsale-events"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(c *nats.Conn) {
			n.log.Info("NATS connected", "server", c.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			// The server may be a new one, or may have lost the stream.
			n.streamOK.Store(false)
			n.log.Info("NATS reconnected", "server", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.log.Warn("NATS error", "err", err)
		}),
	}
}

// Name returns NameNATS.
func (n *NATS) Name() string { return NameNATS }

// Close closes the connection.
func (n *NATS) Close() error {
	n.nc.Close()
	return nil
}

// Send publishes m to <Subject>.<Type> and reports delivered once JetStream
// has stored it (or already had it: the same ID within the duplicate
// window is acknowledged as a duplicate).
func (n *NATS) Send(ctx context.Context, m Message) error {
	if m.ID == "" {
		return fail("invalid message: empty id", nil)
	}
	if err := checkSubject(m.Type); err != nil {
		return fail("invalid event type for a NATS subject", err)
	}
	// Fail at once rather than wait for a reconnection.
	if !n.nc.IsConnected() {
		if n.nc.IsClosed() {
			return fail("nats: connection closed", nats.ErrConnectionClosed)
		}
		return fail("nats: not connected", nats.ErrDisconnected)
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	if err := n.ensureStream(ctx); err != nil {
		return fail(natsReason(err), err)
	}

	msg := nats.NewMsg(n.subject + "." + m.Type)
	msg.Header.Set(jetstream.MsgIDHeader, m.ID)
	// Never land in another stream that happens to bind the subject.
	msg.Header.Set(jetstream.ExpectedStreamHeader, n.stream)
	msg.Data = m.Body
	if _, err := n.js.PublishMsg(ctx, msg); err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			n.streamOK.Store(false) // the stream may be gone: look again next time
		}
		return fail(natsReason(err), err)
	}
	return nil
}

// ensureStream finds the stream, or creates it if absent, once per
// connection. An existing stream is used as it is, never updated: it may
// have been set up by an operator.
func (n *NATS) ensureStream(ctx context.Context) error {
	if n.streamOK.Load() {
		return nil
	}
	select {
	case n.ensuring <- struct{}{}:
		defer func() { <-n.ensuring }()
	case <-ctx.Done():
		return ctx.Err()
	}
	if n.streamOK.Load() {
		return nil // another Send did it while this one waited
	}
	s, err := n.js.Stream(ctx, n.stream)
	switch {
	case err == nil:
		cfg := s.CachedInfo().Config
		n.log.Debug("using existing stream", "stream", n.stream, "subjects", cfg.Subjects, "duplicates", cfg.Duplicates)
		if cfg.Duplicates < minDuplicates {
			n.log.Warn("existing stream's duplicate window is shorter than 2 minutes; a retried event may be stored twice",
				"stream", n.stream, "duplicates", cfg.Duplicates)
		}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if err := n.createStream(ctx); err != nil {
			return err
		}
	default:
		return fmt.Errorf("look up stream %s: %w", n.stream, err)
	}
	n.streamOK.Store(true)
	return nil
}

func (n *NATS) createStream(ctx context.Context) error {
	cfg := jetstream.StreamConfig{
		Name:        n.stream,
		Description: "flashsale order events",
		Subjects:    []string{n.subject + ".>"},
		Storage:     jetstream.FileStorage,
		Duplicates:  StreamDuplicates,
	}
	_, err := n.js.CreateStream(ctx, cfg)
	switch {
	case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
		return nil // another server instance created it first
	case err != nil:
		return fmt.Errorf("create stream %s: %w", n.stream, err)
	}
	n.log.Info("created stream", "stream", n.stream, "subjects", cfg.Subjects,
		"storage", cfg.Storage.String(), "duplicates", cfg.Duplicates)
	return nil
}

// natsReason names a failed publish for operators.
func natsReason(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "timeout"
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return "nats: no responders"
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return "nats: JetStream not enabled"
	case errors.Is(err, nats.ErrConnectionClosed):
		return "nats: connection closed"
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrInvalidConnection):
		return "nats: not connected"
	case errors.As(err, &apiErr) && apiErr.Description != "":
		return "nats: " + clip(apiErr.Description, 100)
	}
	return "nats: publish failed"
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// CheckNATSURL reports what is wrong with a NATS URL or comma-separated
// list of URLs: each needs a scheme (nats, tls, ws or wss) and a host.
// Its errors never quote a URL, which may hold credentials.
func CheckNATSURL(raw string) error {
	if strings.TrimSpace(raw) == "" {
		return errors.New("NATS URL is empty")
	}
	entries := strings.Split(raw, ",")
	var ws, plain bool
	for i, e := range entries {
		which := "NATS URL"
		if len(entries) > 1 {
			which = fmt.Sprintf("NATS URL %d of %d", i+1, len(entries))
		}
		scheme, err := checkNATSEntry(strings.TrimSpace(e))
		if err != nil {
			return fmt.Errorf("%s %w", which, err)
		}
		if scheme == "ws" || scheme == "wss" {
			ws = true
		} else {
			plain = true
		}
	}
	if ws && plain {
		return errors.New("NATS URL list mixes websocket (ws, wss) and non-websocket URLs; the client accepts only one kind")
	}
	return nil
}

// checkNATSEntry checks one URL of the list; its errors follow "NATS URL ".
func checkNATSEntry(e string) (scheme string, err error) {
	if e == "" {
		return "", errors.New("is empty")
	}
	if !strings.Contains(e, "://") {
		return "", errors.New("has no scheme: write it as nats://host:4222")
	}
	u, err := url.Parse(e)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the whole URL
		}
		return "", fmt.Errorf("is not a valid URL: %w", err)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return "", fmt.Errorf("has scheme %q, want nats, tls, ws or wss", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", errors.New("has no host: write it as nats://host:4222")
	}
	return u.Scheme, nil
}

// CheckNATSSubject reports what is wrong with a subject prefix: tokens
// separated by '.', none empty, without whitespace or the wildcards '*'
// and '>'. The empty string is not valid (NewNATS applies the default
// first).
func CheckNATSSubject(s string) error {
	if err := checkSubject(s); err != nil {
		return fmt.Errorf("NATS subject %w", err)
	}
	return nil
}

// checkSubject checks a literal subject; its errors follow "NATS subject ".
func checkSubject(s string) error {
	if s == "" {
		return errors.New("is empty")
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return fmt.Errorf("%q has an empty token (a leading, trailing or doubled '.')", s)
		}
		if i := strings.IndexFunc(tok, badSubjectRune); i >= 0 {
			r, _ := utf8.DecodeRuneInString(tok[i:])
			return fmt.Errorf("%q contains %q; use letters, digits, '-' or '_' separated by '.'", s, r)
		}
	}
	return nil
}

func badSubjectRune(r rune) bool {
	return r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r)
}

// CheckNATSStream reports what is wrong with a stream name: it must be
// non-empty, without whitespace, '.', '*', '>', '/' or '\'.
func CheckNATSStream(s string) error {
	if s == "" {
		return errors.New("NATS stream name is empty")
	}
	if i := strings.IndexFunc(s, func(r rune) bool {
		return strings.ContainsRune(".*>/\\", r) || unicode.IsSpace(r) || unicode.IsControl(r)
	}); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Errorf("NATS stream name %q contains %q; use letters, digits, '-' or '_'", s, r)
	}
	return nil
}
