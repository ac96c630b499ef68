package sink_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"flashsale/internal/testnats"
	"flashsale/sink"
)

// logBuffer collects a sink's log; connection callbacks may fire after the
// test has ended, so they must not write to t.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newNATS returns a sink on url and its log, shown if the test fails.
func newNATS(t *testing.T, cfg sink.NATSConfig) (*sink.NATS, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	n, err := sink.NewNATS(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewNATS: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if t.Failed() {
			t.Logf("sink log:\n%s", logs)
		}
	})
	return n, logs
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sendPromptly sends and fails the test if Send ignores its context.
func sendPromptly(t *testing.T, n sink.Sink, m sink.Message) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Send(ctx, m) }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute): // a hang guard, far beyond any bound
		t.Fatal("Send did not return; it ignores its context and timeout")
		return nil
	}
}

// sendUntilDelivered retries like the relay would, until NATS is back.
func sendUntilDelivered(t *testing.T, n sink.Sink, m sink.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		err := n.Send(ctx, m)
		if err == nil {
			return
		}
		asError(t, err)
		select {
		case <-ctx.Done():
			t.Fatalf("Send %s never succeeded; last error: %v", m.ID, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestNATSCreatesStream(t *testing.T) {
	srv := testnats.Start(t)
	n, logs := newNATS(t, sink.NATSConfig{URL: srv.URL()})
	if n.Name() != sink.NameNATS {
		t.Errorf("Name() = %q, want %q", n.Name(), sink.NameNATS)
	}
	// Concurrent first sends: the stream is looked up and created once.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := n.Send(context.Background(), msg(fmt.Sprintf("evt_%d", i), `{}`)); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()

	js := testnats.JetStream(t, srv.URL())
	s, err := js.Stream(testCtx(t), sink.DefaultNATSStream)
	if err != nil {
		t.Fatalf("stream %s: %v", sink.DefaultNATSStream, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage {
		t.Errorf("storage %v, want file", cfg.Storage)
	}
	if want := []string{sink.DefaultNATSSubject + ".>"}; !slices.Equal(cfg.Subjects, want) {
		t.Errorf("subjects %q, want %q", cfg.Subjects, want)
	}
	if cfg.Duplicates < 2*time.Minute {
		t.Errorf("duplicate window %v, want at least 2m", cfg.Duplicates)
	}
	if got := len(testnats.StreamMessages(t, js, sink.DefaultNATSStream)); got != 8 {
		t.Errorf("stream holds %d messages, want 8", got)
	}
	if c := strings.Count(logs.String(), "created stream"); c != 1 {
		t.Errorf(`"created stream" logged %d times, want once`, c)
	}
}

func TestNATSUsesExistingStream(t *testing.T) {
	srv := testnats.Start(t)
	js := testnats.JetStream(t, srv.URL())
	want := jetstream.StreamConfig{
		Name:       "SHOP",
		Subjects:   []string{"shop.>", "audit.>"},
		Storage:    jetstream.MemoryStorage,
		Duplicates: 3 * time.Minute,
		MaxMsgs:    1000,
	}
	if _, err := js.CreateStream(testCtx(t), want); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	n, logs := newNATS(t, sink.NATSConfig{URL: srv.URL(), Subject: "shop.orders", Stream: "SHOP"})
	if err := n.Send(context.Background(), msg("evt_existing", `{}`)); err != nil {
		t.Fatalf("Send: %v", err)
	}

	s, err := js.Stream(testCtx(t), "SHOP")
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	got := s.CachedInfo().Config
	if !slices.Equal(got.Subjects, want.Subjects) || got.Storage != want.Storage ||
		got.Duplicates != want.Duplicates || got.MaxMsgs != want.MaxMsgs {
		t.Errorf("stream changed: subjects %q storage %v duplicates %v max msgs %d; want %q %v %v %d",
			got.Subjects, got.Storage, got.Duplicates, got.MaxMsgs,
			want.Subjects, want.Storage, want.Duplicates, want.MaxMsgs)
	}
	if msgs := testnats.StreamMessages(t, js, "SHOP"); len(msgs) != 1 || msgs[0].Subject != "shop.orders.order.paid" {
		t.Errorf("stream holds %d messages, want 1 on shop.orders.order.paid", len(msgs))
	}
	if strings.Contains(logs.String(), "created stream") {
		t.Error(`"created stream" logged for an existing stream`)
	}
}

func TestNATSDelivers(t *testing.T) {
	srv := testnats.Start(t)
	n, _ := newNATS(t, sink.NATSConfig{URL: srv.URL(), Subject: "fs.ev", Stream: "FS_EV"})
	sent := []sink.Message{
		{ID: "evt_a", Type: "order.paid", Body: []byte(`{"id":"evt_a","note":"caf\u00e9"}`)},
		{ID: "evt_b", Type: "order.cancelled", Body: []byte("{\"id\":\"evt_b\"}\n")},
		{ID: "evt_c", Type: "order.created", Body: []byte(`{}`)},
	}
	for _, m := range sent {
		if err := n.Send(context.Background(), m); err != nil {
			t.Fatalf("Send %s: %v", m.ID, err)
		}
	}
	msgs := testnats.StreamMessages(t, testnats.JetStream(t, srv.URL()), "FS_EV")
	if len(msgs) != len(sent) {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), len(sent))
	}
	for i, m := range sent {
		got := msgs[i]
		if want := "fs.ev." + m.Type; got.Subject != want {
			t.Errorf("message %d subject %q, want %q", i, got.Subject, want)
		}
		if id := got.Header.Get("Nats-Msg-Id"); id != m.ID {
			t.Errorf("message %d Nats-Msg-Id %q, want %q", i, id, m.ID)
		}
		if !bytes.Equal(got.Data, m.Body) {
			t.Errorf("message %d body %q, want %q", i, got.Data, m.Body)
		}
	}
}

func TestNATSDuplicateID(t *testing.T) {
	srv := testnats.Start(t)
	n, _ := newNATS(t, sink.NATSConfig{URL: srv.URL()})
	for _, body := range []string{`{"try":1}`, `{"try":2}`} {
		if err := n.Send(context.Background(), msg("evt_dup", body)); err != nil {
			t.Fatalf("Send: %v (a duplicate counts as delivered)", err)
		}
	}
	msgs := testnats.StreamMessages(t, testnats.JetStream(t, srv.URL()), sink.DefaultNATSStream)
	if len(msgs) != 1 || string(msgs[0].Data) != `{"try":1}` {
		t.Errorf("stream holds %d messages (%q), want only the first", len(msgs), testnats.MsgIDs(msgs))
	}
}

func TestNATSOutageAndReconnect(t *testing.T) {
	srv := testnats.Start(t)
	n, logs := newNATS(t, sink.NATSConfig{URL: srv.URL()})
	a, b, c := msg("evt_a", `{"n":"a"}`), msg("evt_b", `{"n":"b"}`), msg("evt_c", `{"n":"c"}`)
	if err := n.Send(context.Background(), a); err != nil {
		t.Fatalf("Send a: %v", err)
	}

	srv.Stop()
	e := asError(t, sendPromptly(t, n, b))
	if e.Reason == "" {
		t.Error("failed attempt has no reason")
	}
	t.Logf("while NATS is down: %v", e)

	srv.Restart()
	sendUntilDelivered(t, n, b)
	// The relay may resend an event whose ack it missed: dropped as a duplicate.
	for _, m := range []sink.Message{a, c} {
		if err := n.Send(context.Background(), m); err != nil {
			t.Fatalf("Send %s after restart: %v", m.ID, err)
		}
	}
	ids := testnats.MsgIDs(testnats.StreamMessages(t, testnats.JetStream(t, srv.URL()), sink.DefaultNATSStream))
	if want := []string{"evt_a", "evt_b", "evt_c"}; !slices.Equal(ids, want) {
		t.Errorf("stream holds %q, want each of %q once", ids, want)
	}
	if !strings.Contains(logs.String(), "NATS reconnected") {
		t.Error("reconnection not logged")
	}
}

func TestNATSDownAtStart(t *testing.T) {
	srv := testnats.Start(t)
	srv.Stop()
	n, logs := newNATS(t, sink.NATSConfig{URL: srv.URL()})
	e := asError(t, sendPromptly(t, n, msg("evt_early", `{}`)))
	if e.Reason != "nats: not connected" {
		t.Errorf("Reason %q (%v), want nats: not connected", e.Reason, e)
	}

	srv.Restart()
	sendUntilDelivered(t, n, msg("evt_early", `{}`))
	ids := testnats.MsgIDs(testnats.StreamMessages(t, testnats.JetStream(t, srv.URL()), sink.DefaultNATSStream))
	if !slices.Equal(ids, []string{"evt_early"}) {
		t.Errorf("stream holds %q, want [evt_early]", ids)
	}
	if !strings.Contains(logs.String(), "created stream") {
		t.Error(`"created stream" not logged`)
	}
}

// unreachable returns a NATS URL nothing listens on.
func unreachable(t *testing.T) string { return "nats://" + closedPort(t) }

func TestNATSSendRefusesBadMessages(t *testing.T) {
	n, _ := newNATS(t, sink.NATSConfig{URL: unreachable(t)})
	for _, m := range []sink.Message{
		{ID: "", Type: "order.paid"},
		{ID: "evt_1", Type: ""},
		{ID: "evt_1", Type: "order paid"},
		{ID: "evt_1", Type: "order.*"},
		{ID: "evt_1", Type: "order..paid"},
	} {
		if e := asError(t, n.Send(context.Background(), m)); !strings.HasPrefix(e.Reason, "invalid") {
			t.Errorf("Send(%+v): reason %q, want an invalid message", m, e.Reason)
		}
	}
}

func TestNATSClosed(t *testing.T) {
	n, _ := newNATS(t, sink.NATSConfig{URL: unreachable(t)})
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if e := asError(t, sendPromptly(t, n, msg("evt_1", `{}`))); e.Reason != "nats: connection closed" {
		t.Errorf("Reason %q, want nats: connection closed", e.Reason)
	}
}

func TestNewNATSConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  sink.NATSConfig
		want string
	}{
		{"no URL", sink.NATSConfig{}, "empty"},
		{"http URL", sink.NATSConfig{URL: "http://127.0.0.1:4222"}, `"http"`},
		{"bad subject", sink.NATSConfig{URL: "nats://127.0.0.1:4222", Subject: "events.>"}, "subject"},
		{"bad stream", sink.NATSConfig{URL: "nats://127.0.0.1:4222", Stream: "my.stream"}, "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := sink.NewNATS(context.Background(), tt.cfg)
			if err == nil {
				n.Close()
				t.Fatal("NewNATS succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// checkTable runs a Check function over valid ("" wanted) and invalid
// inputs, each error having to mention the wanted text.
func checkTable(t *testing.T, check func(string) error, tests map[string]string) {
	t.Helper()
	for in, want := range tests {
		err := check(in)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v, want valid", in, err)
		case want != "" && err == nil:
			t.Errorf("%q accepted, want an error mentioning %q", in, want)
		case want != "" && !strings.Contains(err.Error(), want):
			t.Errorf("%q: error %q does not mention %q", in, err, want)
		}
	}
}

func TestCheckNATSURL(t *testing.T) {
	checkTable(t, sink.CheckNATSURL, map[string]string{
		"nats://127.0.0.1:4222":                      "",
		"nats://nats.internal":                       "",
		"tls://nats.example:4222":                    "",
		"nats://user:pass@nats.example:4222":         "",
		"nats://a:4222,nats://b:4222, nats://c:4222": "",
		"ws://nats.example:8080,wss://other:443":     "",
		"":                                           "empty",
		"   ":                                        "empty",
		"127.0.0.1:4222":                             "no scheme",
		"http://nats.example:4222":                   `"http"`,
		"nats://":                                    "no host",
		"nats://a:4222,":                             "2 of 2 is empty",
		"nats://a:4222,,nats://b:4222":               "2 of 3 is empty",
		"nats://a:4222,ftp://b":                      `2 of 2 has scheme "ftp"`,
		"nats://a:4222,ws://b:8080":                  "mixes websocket",
		"nats://a:port":                              "not a valid URL",
	})
	if err := sink.CheckNATSURL("nats://user:hunter2@a:bad"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v: want one that does not quote the password", err)
	}
}

func TestCheckNATSSubject(t *testing.T) {
	checkTable(t, sink.CheckNATSSubject, map[string]string{
		"flashsale.events":  "",
		"events":            "",
		"shop-1.order_evts": "",
		"":                  "empty",
		".events":           "empty token",
		"events.":           "empty token",
		"flash..events":     "empty token",
		"flash sale":        "' '",
		"flash\tsale":       `'\t'`,
		"events.*":          "'*'",
		"events.>":          "'>'",
		"ev*nts":            "'*'",
	})
}

func TestCheckNATSStream(t *testing.T) {
	checkTable(t, sink.CheckNATSStream, map[string]string{
		"FLASHSALE_EVENTS": "",
		"shop-events-1":    "",
		"":                 "empty",
		"FLASH SALE":       "' '",
		"FLASH.SALE":       "'.'",
		"FLASH*":           "'*'",
		"FLASH>":           "'>'",
		"FLASH/SALE":       "'/'",
		`FLASH\SALE`:       `'\\'`,
		"FLASH\nSALE":      `'\n'`,
	})
}
