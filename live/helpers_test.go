package live

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"flashsale/ent"
)

// testInterval is the Interval of most tests: short, so they are fast.
const testInterval = 20 * time.Millisecond

// generous bounds a wait for something that must happen within the
// contract's 1 second (or at once): failing it is a bug, not a slow runner.
const generous = 2 * time.Second

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// prod returns product id at version v: v units reserved, updated at base+v ms.
func prod(id, v int) *ent.Product {
	return &ent.Product{
		ID: id, Name: "product " + strconv.Itoa(id), PriceCents: 999,
		StockReceived: 1000, StockAvailable: 1000, StockReserved: v,
		CreatedAt: base, UpdatedAt: base.Add(time.Duration(v) * time.Millisecond),
	}
}

// fakeSource is the database: a map of products, counting calls.
type fakeSource struct {
	mu       sync.Mutex
	products map[int]*ent.Product
	calls    int
	maxIDs   int
	err      error
	delay    time.Duration
	// hook, if set, runs after the call read its state and before it
	// returns (it may block, e.g. to make that state stale).
	hook func(ids []int)
}

func newFakeSource(ps ...*ent.Product) *fakeSource {
	s := &fakeSource{products: map[int]*ent.Product{}}
	for _, p := range ps {
		s.set(p)
	}
	return s
}

func (s *fakeSource) set(p *ent.Product) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *p
	s.products[p.ID] = &cp
}

func (s *fakeSource) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *fakeSource) setHook(f func(ids []int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = f
}

// stats returns the calls and the most IDs of one call since the last reset.
func (s *fakeSource) stats(reset bool) (calls, maxIDs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls, maxIDs = s.calls, s.maxIDs
	if reset {
		s.calls, s.maxIDs = 0, 0
	}
	return calls, maxIDs
}

func (s *fakeSource) Products(ctx context.Context, ids []int) ([]*ent.Product, error) {
	s.mu.Lock()
	s.calls++
	s.maxIDs = max(s.maxIDs, len(ids))
	err, delay, hook := s.err, s.delay, s.hook
	var out []*ent.Product
	for _, id := range ids {
		if p, ok := s.products[id]; ok {
			cp := *p
			out = append(out, &cp)
		}
	}
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if hook != nil {
		hook(ids)
	}
	if err != nil {
		return nil, err
	}
	return out, ctx.Err()
}

// recv returns the next event, failing the test if none comes within d.
func recv(t testing.TB, ch <-chan *ent.Product, d time.Duration) *ent.Product {
	t.Helper()
	select {
	case p, ok := <-ch:
		if !ok {
			t.Fatal("channel closed; want an event")
		}
		return p
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
		return nil
	}
}

// noEvent fails if an event comes within d.
func noEvent(t testing.TB, ch <-chan *ent.Product, d time.Duration) {
	t.Helper()
	select {
	case p, ok := <-ch:
		if !ok {
			t.Fatal("channel closed; want it open and quiet")
		}
		t.Fatalf("unexpected event: reserved=%d updated=%v", p.StockReserved, p.UpdatedAt)
	case <-time.After(d):
	}
}

// waitClosed drains ch until it is closed.
func waitClosed(t testing.TB, ch <-chan *ent.Product, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("channel not closed within %v", d)
		}
	}
}

// eventually fails unless cond holds within generous.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(generous)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", generous, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recordingHandler is a slog.Handler keeping the records.
type recordingHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) count(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level == level {
			n++
		}
	}
	return n
}

// quietLogger discards everything.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// settle gives goroutines that are winding down up to 5 s to end
// (goleak's own retries last under half a second).
func settle(opts ...goleak.Option) {
	for i := 0; i < 50 && goleak.Find(opts...) != nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// verifyNoLeaks is deferred at the top of a test: goroutines that test
// started must have ended by then.
func verifyNoLeaks(t testing.TB) func() {
	ignore := goleak.IgnoreCurrent()
	return func() {
		t.Helper()
		settle(ignore)
		goleak.VerifyNone(t, ignore)
	}
}

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		settle()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "live: goroutines leaked after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
