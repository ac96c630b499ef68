// Package testnats runs a real nats-server with JetStream for tests: one
// process per test, on a free loopback port, storing in the test's temporary
// directory. Stop and Restart let a test take NATS away and bring it back
// with its streams intact. Tests skip when the binary is missing, except
// under CI (CI non-empty), where a missing service must fail the build.
package testnats

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FallbackBinary is the nats-server used when none is on $PATH (the Debian
// package's location).
const FallbackBinary = "/usr/sbin/nats-server"

// readyTimeout bounds the wait for a starting server; generous because a
// busy CI machine can be slow, and a healthy start takes milliseconds.
const readyTimeout = 30 * time.Second

// Binary returns the nats-server to run: the one on $PATH, else
// FallbackBinary. It fails when neither exists.
func Binary() (string, error) {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat(FallbackBinary); err != nil {
		return "", fmt.Errorf("nats-server is not on $PATH and %s is missing: %w", FallbackBinary, err)
	}
	return FallbackBinary, nil
}

// Server is one nats-server process (and its restarts) owned by a test.
type Server struct {
	t    testing.TB
	bin  string
	dir  string // JetStream store, kept across restarts
	port int

	mu   sync.Mutex
	proc *process // nil while stopped
	logs bytes.Buffer
}

// process is one run of the binary.
type process struct {
	cmd  *exec.Cmd
	out  *readyWriter
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // Wait's result, set before done is closed
}

// Start runs nats-server with JetStream on a free loopback port and returns
// when it accepts connections. The server is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("testnats: %v (CI is set, so a missing NATS fails instead of skipping)", err)
		}
		t.Skipf("testnats: %v", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("nats-server output:\n%s", s.logs.String())
			s.mu.Unlock()
		}
	})
	// The free port is found by closing a listener, so another process may
	// take it before the server binds it: try a few ports.
	for attempt := 1; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			t.Fatalf("testnats: %v", err)
		}
		err = s.start()
		if err == nil {
			return s
		}
		if attempt == 3 || !errors.Is(err, errPortInUse) {
			t.Fatalf("testnats: %v", err)
		}
	}
}

// URL is the server's client URL; it stays the same across restarts.
func (s *Server) URL() string { return "nats://" + s.addr() }

func (s *Server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Stop shuts the server down and waits for it to exit. It sends SIGTERM
// (nats-server then closes its clients and flushes its stores, so a test
// can count on acknowledged messages surviving) and kills it if it lingers.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(readyTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Restart starts the server again on the same port with the same store,
// after stopping it if it runs, and returns when it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("testnats: restart: %v", err)
	}
}

var errPortInUse = errors.New("port already in use")

// start runs one process and waits until it is ready or has died.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-sd", s.dir)
	out := &readyWriter{ready: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		s.mu.Lock()
		s.logs.WriteString(out.String())
		s.mu.Unlock()
		close(p.done)
	}()

	select {
	case <-out.ready:
	case <-p.done:
		if strings.Contains(out.String(), "address already in use") {
			return fmt.Errorf("%w: %d", errPortInUse, s.port)
		}
		return fmt.Errorf("nats-server exited before it was ready (%v):\n%s", p.err, out.String())
	case <-time.After(readyTimeout):
		_ = cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("nats-server not ready after %v:\n%s", readyTimeout, out.String())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	// "Server is ready" is logged once the listener is up; a dial proves it.
	c, err := net.DialTimeout("tcp", s.addr(), readyTimeout)
	if err != nil {
		return fmt.Errorf("nats-server said it was ready but %s refuses connections: %w", s.addr(), err)
	}
	return c.Close()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// readyWriter collects a process's output and closes ready when the
// server logs that it is ready.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	seen  bool
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.seen && bytes.Contains(w.buf.Bytes(), []byte("Server is ready")) {
		w.seen = true
		close(w.ready)
	}
	return len(p), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// JetStream is the test's own client of the server at url, closed when
// the test ends.
func JetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("test client: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("test client: %v", err)
	}
	return js
}

// StreamMessages returns every message stored in the stream, in order.
func StreamMessages(t testing.TB, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("stream %s message %d: %v", name, seq, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// MsgIDs returns the Nats-Msg-Id of each message.
func MsgIDs(msgs []*jetstream.RawStreamMsg) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.Header.Get(jetstream.MsgIDHeader)
	}
	return ids
}
