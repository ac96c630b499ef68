package live

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"flashsale/ent"
)

func newHub(t testing.TB, src Source, cfg Config) *Hub {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = testInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	return New(src, cfg)
}

func TestInitialEvent(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 3))
	h := newHub(t, src, Config{})
	defer h.Close()
	ctx := t.Context()

	start := time.Now()
	ch, err := h.Subscribe(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := recv(t, ch, generous)
	if !same(p, prod(1, 3)) {
		t.Fatalf("first event %+v, want version 3", p)
	}
	t.Logf("first event after %v", time.Since(start))
	if got := h.Count(); got != 1 {
		t.Fatalf("Count = %d, want 1", got)
	}
	// Nothing changes: no further event.
	noEvent(t, ch, 5*testInterval)
	h.Close()
	waitClosed(t, ch, generous)
}

func TestPublishReachesAllSubscribers(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 0), prod(2, 0))
	h := newHub(t, src, Config{})
	defer h.Close()
	ctx := t.Context()

	var chans []<-chan *ent.Product
	for range 50 {
		ch, err := h.Subscribe(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		recv(t, ch, generous)
		chans = append(chans, ch)
	}
	other, err := h.Subscribe(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, other, generous)

	// The stock package commits version 1 and publishes it.
	src.set(prod(1, 1))
	h.Publish(prod(1, 1))
	for i, ch := range chans {
		if p := recv(t, ch, generous); p.StockReserved != 1 {
			t.Fatalf("subscriber %d got version %d, want 1", i, p.StockReserved)
		}
	}
	// Subscribers of another product hear nothing.
	noEvent(t, other, 3*testInterval)
	// A product nobody subscribes to is ignored.
	h.Publish(prod(99, 1))
	h.Publish(nil)
}

func TestChangeOnlyInDatabaseReachesSubscribers(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 0))
	h := newHub(t, src, Config{})
	defer h.Close()
	ctx := t.Context()

	var chans []<-chan *ent.Product
	for range 3 {
		ch, err := h.Subscribe(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		recv(t, ch, generous)
		chans = append(chans, ch)
	}
	// Another process commits version 7: only the database knows.
	changed := time.Now()
	src.set(prod(1, 7))
	for _, ch := range chans {
		if p := recv(t, ch, time.Second); p.StockReserved != 7 {
			t.Fatalf("got version %d, want 7", p.StockReserved)
		}
	}
	t.Logf("a change seen only by polling reached 3 subscribers after %v (interval %v)", time.Since(changed), testInterval)
}

func TestCoalescing(t *testing.T) {
	defer verifyNoLeaks(t)()
	for _, tc := range []struct {
		name    string
		spacing time.Duration
	}{
		{"burst", 0},
		{"spread over intervals", time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource(prod(1, 0))
			h := newHub(t, src, Config{})
			defer h.Close()
			ch, err := h.Subscribe(t.Context(), 1)
			if err != nil {
				t.Fatal(err)
			}
			recv(t, ch, generous)
			times := []time.Time{time.Now()}

			const final = 100
			start := time.Now()
			go func() {
				for v := 1; v <= final; v++ {
					src.set(prod(1, v))
					h.Publish(prod(1, v))
					if tc.spacing > 0 {
						time.Sleep(tc.spacing)
					}
				}
			}()
			var got []int
			for len(got) == 0 || got[len(got)-1] != final {
				p := recv(t, ch, generous)
				times = append(times, time.Now())
				if len(got) > 0 && p.StockReserved <= got[len(got)-1] {
					t.Fatalf("version %d after %d: went back", p.StockReserved, got[len(got)-1])
				}
				got = append(got, p.StockReserved)
			}
			elapsed := time.Since(start)
			noEvent(t, ch, 3*testInterval)

			// At most one event per interval, plus the one due at once.
			if most := int(elapsed/testInterval) + 2; len(got) > most {
				t.Errorf("%d events in %v, want at most %d: %v", len(got), elapsed, most, got)
			}
			// No two events closer than Interval. The receiver stamps an
			// event a moment after the hub hands it over, so allow a
			// quarter of the interval for that.
			for i := 1; i < len(times); i++ {
				if gap := times[i].Sub(times[i-1]); gap < testInterval-testInterval/4 {
					t.Errorf("events %d and %d only %v apart (interval %v)", i-1, i, gap, testInterval)
				}
			}
			t.Logf("%d states published in %v; events carried %v", final, elapsed, got)
		})
	}
}

func TestSlowSubscriberDelaysNobodyAndGetsLatest(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 0))
	h := newHub(t, src, Config{})
	defer h.Close()
	ctx := t.Context()
	slow, err := h.Subscribe(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := h.Subscribe(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, slow, generous)
	recv(t, fast, generous)

	// slow stops reading; ten changes follow over several intervals.
	go func() {
		for v := 1; v <= 10; v++ {
			src.set(prod(1, v))
			h.Publish(prod(1, v))
			time.Sleep(testInterval / 2)
		}
	}()
	start := time.Now()
	for {
		p := recv(t, fast, generous)
		if p.StockReserved == 10 {
			break
		}
	}
	t.Logf("fast subscriber had the last state after %v", time.Since(start))
	time.Sleep(5 * testInterval)

	// slow reads again: the latest state, not the ones it missed.
	if p := recv(t, slow, generous); p.StockReserved != 10 {
		t.Fatalf("slow subscriber got version %d, want the latest, 10", p.StockReserved)
	}
	noEvent(t, slow, 3*testInterval)
}

func TestMaxSubscriptions(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 0), prod(2, 0))
	h := newHub(t, src, Config{Max: 3})
	defer h.Close()

	var cancels []context.CancelFunc
	var chans []<-chan *ent.Product
	for i := range 3 {
		ctx, cancel := context.WithCancel(t.Context())
		cancels = append(cancels, cancel)
		ch, err := h.Subscribe(ctx, 1+i%2)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	if got := h.Count(); got != 3 {
		t.Fatalf("Count = %d, want 3", got)
	}
	if _, err := h.Subscribe(t.Context(), 1); !errors.Is(err, ErrTooMany) {
		t.Fatalf("4th Subscribe: %v, want ErrTooMany", err)
	}
	if got := h.Count(); got != 3 {
		t.Fatalf("Count after refusal = %d, want 3", got)
	}

	// The first one goes away without ever reading.
	cancels[0]()
	waitClosed(t, chans[0], generous)
	if got := h.Count(); got != 2 {
		t.Fatalf("Count after cancel = %d, want 2", got)
	}
	ch, err := h.Subscribe(t.Context(), 1)
	if err != nil {
		t.Fatalf("Subscribe after a release: %v", err)
	}
	recv(t, ch, generous)
	for _, c := range cancels {
		c()
	}
}

func TestUnknownProductAndReadErrors(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 0))
	h := newHub(t, src, Config{Max: 1})
	defer h.Close()

	for _, id := range []int{2, 0, -1} {
		if _, err := h.Subscribe(t.Context(), id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Subscribe(%d): %v, want ErrNotFound", id, err)
		}
	}
	boom := errors.New("database unreachable")
	src.setErr(boom)
	if _, err := h.Subscribe(t.Context(), 1); !errors.Is(err, boom) {
		t.Fatalf("Subscribe with a failing source: %v, want it wrapping %v", err, boom)
	}
	if got := h.Count(); got != 0 {
		t.Fatalf("Count = %d, want 0: failed subscriptions must not count", got)
	}
	src.setErr(nil)

	// A subscriber that leaves during the initial read.
	release := make(chan struct{})
	src.setHook(func([]int) { <-release })
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := h.Subscribe(ctx, 1)
		errc <- err
	}()
	eventually(t, "subscription counted", func() bool { return h.Count() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with ctx cancelled during the read: %v", err)
	}
	if got := h.Count(); got != 0 {
		t.Fatalf("Count = %d, want 0", got)
	}
	close(release)
	src.setHook(nil)
	ch, err := h.Subscribe(t.Context(), 1) // Max 1: the slot is free again
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, generous)
}

func TestClose(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 0), prod(2, 0))
	h := newHub(t, src, Config{})
	defer h.Close()

	var chans []<-chan *ent.Product
	for i := range 20 {
		ch, err := h.Subscribe(t.Context(), 1+i%2)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			recv(t, ch, generous) // some read, some never do
		}
		chans = append(chans, ch)
	}
	// One more is in its initial read when Close comes.
	release := make(chan struct{})
	src.setHook(func([]int) { <-release })
	errc := make(chan error, 1)
	go func() {
		_, err := h.Subscribe(t.Context(), 1)
		errc <- err
	}()
	eventually(t, "21 subscriptions", func() bool { return h.Count() == 21 })

	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe in flight during Close: %v, want ErrClosed", err)
	}
	close(release)
	<-closed
	for _, ch := range chans {
		waitClosed(t, ch, generous)
	}
	if got := h.Count(); got != 0 {
		t.Fatalf("Count after Close = %d, want 0", got)
	}
	if _, err := h.Subscribe(t.Context(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	h.Publish(prod(1, 5)) // harmless
	h.Close()             // again: nothing
}

func TestOneSourceCallPerIntervalForManyProducts(t *testing.T) {
	defer verifyNoLeaks(t)()
	const products = 1000
	src := newFakeSource()
	for id := 1; id <= products; id++ {
		src.set(prod(id, 0))
	}
	h := newHub(t, src, Config{})
	defer h.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var chans []<-chan *ent.Product
	for id := 1; id <= products; id++ {
		for range 2 {
			ch, err := h.Subscribe(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			chans = append(chans, ch)
		}
	}
	src.stats(true)
	const intervals = 10
	time.Sleep(intervals * testInterval)
	calls, maxIDs := src.stats(true)
	t.Logf("%d products, %d subscriptions: %d Source calls in %d intervals, at most %d IDs per call",
		products, len(chans), calls, intervals, maxIDs)
	if calls > 2*(intervals+2) {
		t.Errorf("%d Source calls in %d intervals, want at most 2 per interval", calls, intervals)
	}
	if calls < 2 {
		t.Errorf("%d Source calls in %d intervals: the poller does not poll", calls, intervals)
	}
	if maxIDs > maxIDsPerCall {
		t.Errorf("a call had %d IDs, want at most %d", maxIDs, maxIDsPerCall)
	}

	// A change of one product among the thousand is seen.
	src.set(prod(777, 1))
	for {
		if p := recv(t, chans[2*776], time.Second); p.StockReserved == 1 {
			break
		}
	}

	// Without subscribers the poller stops.
	cancel()
	for _, ch := range chans {
		waitClosed(t, ch, generous)
	}
	time.Sleep(3 * testInterval) // the poller's next tick sees nobody
	src.stats(true)
	time.Sleep(5 * testInterval)
	if calls, _ := src.stats(false); calls != 0 {
		t.Errorf("%d Source calls without subscribers, want 0", calls)
	}
}

func TestSubscribeCrowdSharesInitialReads(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource()
	for id := 1; id <= 100; id++ {
		src.set(prod(id, 0))
	}
	src.delay = 5 * time.Millisecond
	h := newHub(t, src, Config{Interval: time.Hour}) // no polls: count the initial reads
	defer h.Close()

	const n = 1000
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range n {
		wg.Go(func() {
			ch, err := h.Subscribe(t.Context(), 1+i%100)
			if err != nil {
				failed.Add(1)
				return
			}
			if p := <-ch; p == nil || p.ID != 1+i%100 {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d subscriptions failed", failed.Load())
	}
	calls, _ := src.stats(false)
	t.Logf("%d concurrent subscriptions to 100 products: %d Source calls", n, calls)
	if calls > n/10 {
		t.Errorf("%d Source calls for %d subscriptions, want initial reads shared", calls, n)
	}
}

func TestStalePollDoesNotUndoPublish(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 1))
	h := newHub(t, src, Config{})
	defer h.Close()
	ch, err := h.Subscribe(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, generous)

	// A poll reads version 1, then stalls before returning it.
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src.setHook(func([]int) {
		once.Do(func() {
			close(started)
			<-release
		})
	})
	<-started
	// Meanwhile this process commits version 2 and publishes it.
	src.set(prod(1, 2))
	h.Publish(prod(1, 2))
	if p := recv(t, ch, generous); p.StockReserved != 2 {
		t.Fatalf("got version %d, want 2", p.StockReserved)
	}
	close(release) // the stalled poll returns version 1
	noEvent(t, ch, 5*testInterval)

	// A Publish older than the known state is ignored too.
	h.Publish(prod(1, 1))
	noEvent(t, ch, 3*testInterval)
}

func TestDatabaseWinsOverAPublishItKeepsContradicting(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 1))
	h := newHub(t, src, Config{})
	defer h.Close()
	ch, err := h.Subscribe(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, generous)

	// A state is published that the database, read after it, never shows:
	// the ordering by updated_at broke (say, two database nodes' clocks).
	published := time.Now()
	h.Publish(prod(1, 5))
	if p := recv(t, ch, generous); p.StockReserved != 5 {
		t.Fatalf("got version %d, want 5", p.StockReserved)
	}
	// For a while polls that contradict it are taken for a lagging read...
	noEvent(t, ch, 10*testInterval)
	// ...then the database wins.
	p := recv(t, ch, 3*time.Second)
	if p.StockReserved != 1 {
		t.Fatalf("got version %d, want the database's 1", p.StockReserved)
	}
	if d := time.Since(published); d < h.staleGrace() {
		t.Fatalf("the database won after %v, before the grace of %v", d, h.staleGrace())
	}
}

func TestPollErrorsAreLoggedRarelyAndRetried(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 0))
	logs := &recordingHandler{}
	h := newHub(t, src, Config{Logger: slog.New(logs)})
	defer h.Close()
	ch, err := h.Subscribe(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, generous)

	src.setErr(errors.New("database unreachable"))
	time.Sleep(10 * testInterval)
	if calls, _ := src.stats(false); calls < 5 {
		t.Errorf("%d calls: polls are not retried", calls)
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings for 10 failed polls, want 1 (rate-limited)", n)
	}
	if got := h.Count(); got != 1 {
		t.Fatalf("Count = %d: a failing poll must not end subscriptions", got)
	}

	src.set(prod(1, 3))
	src.setErr(nil)
	if p := recv(t, ch, time.Second); p.StockReserved != 3 {
		t.Fatalf("got version %d, want 3", p.StockReserved)
	}
	eventually(t, "recovery logged", func() bool { return logs.count(slog.LevelInfo) == 1 })
}

func TestNoLeakAfterCancellingThousandSubscriptions(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource()
	for id := 1; id <= 10; id++ {
		src.set(prod(id, 0))
	}
	h := New(src, Config{Interval: testInterval, Logger: quietLogger()})
	ctx, cancel := context.WithCancel(t.Context())

	const n = 1000
	chans := make([]<-chan *ent.Product, n)
	for i := range n {
		ch, err := h.Subscribe(ctx, 1+i%10)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			recv(t, ch, generous) // the other half never reads
		}
		chans[i] = ch
	}
	// A change everyone is offered, nobody reads.
	h.Publish(prod(3, 1))
	src.set(prod(4, 1))
	time.Sleep(3 * testInterval)

	cancel()
	for _, ch := range chans {
		waitClosed(t, ch, generous)
	}
	if got := h.Count(); got != 0 {
		t.Fatalf("Count = %d, want 0", got)
	}
	// No Close: cancelling must release everything by itself, the poller
	// included (verifyNoLeaks checks).
	h.mu.RLock()
	topics := len(h.topics)
	h.mu.RUnlock()
	if topics != 0 {
		t.Fatalf("%d topics left, want 0", topics)
	}
}

func TestPublishDuringInitialReadIsNotLost(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 1))
	h := newHub(t, src, Config{Interval: time.Hour}) // no polls to repair a loss
	defer h.Close()

	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src.setHook(func([]int) {
		once.Do(func() {
			close(started)
			<-release
		})
	})
	type result struct {
		ch  <-chan *ent.Product
		err error
	}
	res := make(chan result, 1)
	go func() {
		ch, err := h.Subscribe(t.Context(), 1)
		res <- result{ch, err}
	}()
	<-started // the initial read has read version 1
	src.set(prod(1, 2))
	h.Publish(prod(1, 2))
	close(release)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if p := recv(t, r.ch, generous); p.StockReserved != 2 {
		t.Fatalf("first event has version %d, want 2, published during the initial read", p.StockReserved)
	}
}

func TestPublishedStateReadBackAtDatabasePrecision(t *testing.T) {
	defer verifyNoLeaks(t)()
	src := newFakeSource(prod(1, 1))
	h := newHub(t, src, Config{})
	defer h.Close()
	ch, err := h.Subscribe(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, generous)

	// This process commits version 2 with a nanosecond clock; the database
	// keeps microseconds.
	p := prod(1, 2)
	p.UpdatedAt = p.UpdatedAt.Add(789 * time.Nanosecond)
	stored := *p
	stored.UpdatedAt = p.UpdatedAt.Truncate(time.Microsecond)
	src.set(&stored)
	h.Publish(p)
	if got := recv(t, ch, generous); got.StockReserved != 2 {
		t.Fatalf("got version %d, want 2", got.StockReserved)
	}
	// Polls read it back: the same state, not an older one.
	noEvent(t, ch, 10*testInterval)
	h.mu.RLock()
	tp := h.topics[1]
	h.mu.RUnlock()
	tp.mu.Lock()
	contradicted := !tp.contradicted.IsZero()
	tp.mu.Unlock()
	if contradicted {
		t.Fatal("polls took the stored state for an older one")
	}
}

// TestSpacing: a subscription's events are Interval apart until the
// subscriptions together would pass EventBudget events per second; then
// further apart, but never so far that a change could miss the second.
func TestSpacing(t *testing.T) {
	h := New(newFakeSource(), Config{Interval: 10 * time.Millisecond, EventBudget: 100, Logger: quietLogger()})
	defer h.Close()
	for _, tc := range []struct {
		subs int64
		want time.Duration
	}{
		{0, 10 * time.Millisecond},
		{1, 10 * time.Millisecond},
		{5, 50 * time.Millisecond},
		{50, 500 * time.Millisecond},
		{1000, maxSpacing * 4 / 5},
	} {
		h.live.Store(tc.subs)
		if got := h.spacing(); got != tc.want {
			t.Errorf("%d subscriptions: spacing %s, want %s", tc.subs, got, tc.want)
		}
		if j := jitter(tc.want); j < 0 || tc.want+j > maxSpacing {
			t.Errorf("jitter %s on %s passes %s", j, tc.want, maxSpacing)
		}
	}
}
