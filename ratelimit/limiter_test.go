package ratelimit

import (
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTestLimiter returns a limiter for r read off a fake clock.
func newTestLimiter(t testing.TB, r Rate, maxKeys int) (*Limiter, *fakeClock) {
	t.Helper()
	l := NewSized(r, maxKeys)
	c := newFakeClock()
	l.now = c.Now
	return l, c
}

func TestBurstThenRefuse(t *testing.T) {
	tests := []struct {
		rate     Rate
		wantWait time.Duration // Per/Events
	}{
		{Rate{5, time.Second}, 200 * time.Millisecond},
		{Rate{20, time.Second}, 50 * time.Millisecond},
		{Rate{600, time.Minute}, 100 * time.Millisecond},
		{Rate{3, 10 * time.Second}, 3333333333 * time.Nanosecond},
		{Rate{1, time.Hour}, time.Hour},
		{Rate{7, time.Second}, 142857142 * time.Nanosecond},
	}
	for _, tt := range tests {
		t.Run(tt.rate.String(), func(t *testing.T) {
			l, _ := newTestLimiter(t, tt.rate, 0)
			for i := range tt.rate.Events {
				if ok, wait := l.Allow("k"); !ok {
					t.Fatalf("event %d of a burst of %d refused (wait %v)", i+1, tt.rate.Events, wait)
				}
			}
			ok, wait := l.Allow("k")
			if ok {
				t.Fatalf("event %d allowed past a burst of %d", tt.rate.Events+1, tt.rate.Events)
			}
			if wait < tt.wantWait || wait > tt.wantWait+time.Microsecond {
				t.Fatalf("retryAfter = %v, want %v (exact, not rounded)", wait, tt.wantWait)
			}
			// A refusal takes nothing: asking again gives the same answer.
			if ok2, wait2 := l.Allow("k"); ok2 || wait2 != wait {
				t.Fatalf("second refusal = %v, %v; want false, %v", ok2, wait2, wait)
			}
		})
	}
}

func TestRefill(t *testing.T) {
	for _, r := range []Rate{{5, time.Second}, {3, 10 * time.Second}, {7, time.Second}, {600, time.Minute}} {
		t.Run(r.String(), func(t *testing.T) {
			l, clock := newTestLimiter(t, r, 0)
			for range r.Events {
				l.Allow("k")
			}
			_, wait := l.Allow("k")

			// Just short of retryAfter: still refused, and the wait shrank.
			clock.Advance(wait - time.Millisecond)
			ok, wait2 := l.Allow("k")
			if ok {
				t.Fatalf("allowed %v before retryAfter", time.Millisecond)
			}
			if wait2 <= 0 || wait2 > time.Millisecond+time.Microsecond {
				t.Fatalf("retryAfter 1ms before the token = %v, want about 1ms", wait2)
			}
			// Waiting exactly what Allow said is enough.
			clock.Advance(wait2)
			if ok, w := l.Allow("k"); !ok {
				t.Fatalf("refused after waiting retryAfter (wait %v)", w)
			}
			if ok, _ := l.Allow("k"); ok {
				t.Fatal("one refill period's token allowed twice")
			}

			// After a long idle spell the bucket is full, never fuller.
			clock.Advance(100 * r.Per)
			for i := range r.Events {
				if ok, _ := l.Allow("k"); !ok {
					t.Fatalf("event %d refused after a long idle spell", i+1)
				}
			}
			if ok, _ := l.Allow("k"); ok {
				t.Fatal("bucket held more than a burst after a long idle spell")
			}

			// Steady state: one event every Per/Events.
			step := r.Per / time.Duration(r.Events)
			for i := range 3 * r.Events {
				clock.Advance(step + 1)
				if ok, _ := l.Allow("k"); !ok {
					t.Fatalf("steady event %d refused", i+1)
				}
				if ok, _ := l.Allow("k"); ok {
					t.Fatalf("steady event %d allowed twice", i+1)
				}
			}
		})
	}
}

func TestIndependentKeys(t *testing.T) {
	l, _ := newTestLimiter(t, Rate{3, time.Minute}, 0)
	for range 3 {
		l.Allow("customer:a")
	}
	if ok, _ := l.Allow("customer:a"); ok {
		t.Fatal("customer:a not limited")
	}
	for _, k := range []string{"customer:b", "ip:192.0.2.1", "ip:2001:db8::1", ""} {
		for i := range 3 {
			if ok, _ := l.Allow(k); !ok {
				t.Fatalf("%q: event %d refused because of another key", k, i+1)
			}
		}
	}
	if got := l.Len(); got != 5 {
		t.Fatalf("Len() = %d, want 5", got)
	}
}

func TestOff(t *testing.T) {
	for _, l := range []*Limiter{New(Rate{}), New(Rate{Events: 5}), nil} {
		for range 1000 {
			if ok, wait := l.Allow("k"); !ok || wait != 0 {
				t.Fatalf("off limiter refused: %v, %v", ok, wait)
			}
		}
		if l.Len() != 0 {
			t.Fatalf("off limiter holds %d keys", l.Len())
		}
		if l.String() != "off" {
			t.Fatalf("off limiter String() = %q", l.String())
		}
	}
}

func TestLimiterString(t *testing.T) {
	l := New(Rate{20, time.Second})
	if got := fmt.Sprintf("%s", l); got != "20/s" {
		t.Fatalf("%%s of a limiter = %q, want 20/s", got)
	}
	if l.Rate() != (Rate{20, time.Second}) {
		t.Fatalf("Rate() = %v", l.Rate())
	}
}

// A key in use stays; the least recently used goes when the map is full.
func TestLRUKeepsBusyKeys(t *testing.T) {
	l, _ := newTestLimiter(t, Rate{2, time.Hour}, 2)
	l.Allow("busy")
	l.Allow("busy")
	l.Allow("idle")
	if ok, _ := l.Allow("busy"); ok { // uses busy again: idle is now the oldest
		t.Fatal("busy not limited")
	}
	l.Allow("new") // evicts idle
	if got := l.Len(); got != 2 {
		t.Fatalf("Len() = %d, want 2", got)
	}
	if ok, _ := l.Allow("busy"); ok {
		t.Fatal("busy key was evicted instead of the least recently used one")
	}
}

// Keys whose buckets are full again are dropped as later calls come.
func TestIdleKeysDropped(t *testing.T) {
	r := Rate{4, 10 * time.Second}
	l, clock := newTestLimiter(t, r, 0)
	for i := range 100 { // drained: full again only after a whole period
		for range r.Events {
			l.Allow("ip:" + strconv.Itoa(i))
		}
	}
	for range r.Events {
		l.Allow("busy")
	}
	if got := l.Len(); got != 101 {
		t.Fatalf("Len() = %d, want 101", got)
	}

	// Not yet a period: every bucket is short of full.
	clock.Advance(r.Per - time.Millisecond)
	for range 10 {
		l.Allow("other")
	}
	if got := l.Len(); got != 102 {
		t.Fatalf("Len() = %d before a period passed, want 102 (nothing dropped)", got)
	}

	// A period on, every bucket but the one in use is full: they go, two a
	// call.
	clock.Advance(time.Millisecond)
	for range 60 {
		l.Allow("other")
	}
	if got := l.Len(); got != 1 {
		t.Fatalf("Len() = %d after a period, want 1 (other)", got)
	}
	if ok, _ := l.Allow("busy"); !ok {
		t.Fatal("busy refused a period after draining")
	}
}

// A bucket still refilling is never dropped as idle.
func TestDrainedKeyKept(t *testing.T) {
	r := Rate{2, time.Minute}
	l, clock := newTestLimiter(t, r, 0)
	l.Allow("drained")
	l.Allow("drained")
	clock.Advance(r.Per / 2)
	for i := range 10 {
		l.Allow("ip:" + strconv.Itoa(i))
	}
	if ok, _ := l.Allow("drained"); !ok {
		t.Fatal("half a period refilled no token")
	}
	if ok, _ := l.Allow("drained"); ok {
		t.Fatal("drained bucket was dropped and handed out afresh")
	}
}

func TestBoundedMemory(t *testing.T) {
	const maxKeys, inserts = 10_000, 1_000_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	l, _ := newTestLimiter(t, Rate{10, time.Second}, maxKeys)
	buf := make([]byte, 0, 32)
	for i := range inserts {
		buf = strconv.AppendInt(append(buf[:0], "ip:"...), int64(i), 10)
		if ok, _ := l.Allow(string(buf)); !ok {
			t.Fatalf("fresh key %d refused", i)
		}
		if i%100_000 == 0 && l.Len() > maxKeys {
			t.Fatalf("after %d keys Len() = %d > %d", i+1, l.Len(), maxKeys)
		}
	}
	if got := l.Len(); got > maxKeys || got < maxKeys/2 {
		t.Fatalf("Len() = %d, want about %d (and never more)", got, maxKeys)
	}

	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d keys held after %d distinct ones: heap grew %.1f MiB (%d B/key)",
		l.Len(), inserts, float64(grown)/(1<<20), grown/int64(l.Len()))
	// About 250 B a key: 2.5 MiB. 1,000,000 keys held would be hundreds of MiB.
	if grown > 16<<20 {
		t.Fatalf("heap grew %d MiB for %d keys held", grown>>20, l.Len())
	}
	runtime.KeepAlive(l)
}

func TestConcurrent(t *testing.T) {
	const goroutines, perG = 64, 500
	r := Rate{100, time.Hour}

	t.Run("frozen clock", func(t *testing.T) {
		// With time frozen each bucket yields exactly its burst, however the
		// goroutines interleave (this also checks that concurrent first uses
		// of a key share one bucket).
		l, _ := newTestLimiter(t, r, 0)
		var hot atomic.Int64
		own := make([]int, goroutines)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				key := "ip:" + strconv.Itoa(g)
				for range perG {
					if ok, _ := l.Allow("hot"); ok {
						hot.Add(1)
					}
					if ok, wait := l.Allow(key); ok {
						own[g]++
					} else if wait <= 0 {
						t.Errorf("refused with retryAfter %v", wait)
					}
				}
			})
		}
		wg.Wait()
		if got := hot.Load(); got != int64(r.Events) {
			t.Errorf("hot key allowed %d times, want %d", got, r.Events)
		}
		for g, n := range own {
			if n != r.Events {
				t.Errorf("goroutine %d's key allowed %d times, want %d", g, n, r.Events)
			}
		}
	})

	t.Run("moving clock and evictions", func(t *testing.T) {
		l, clock := newTestLimiter(t, Rate{5, 10 * time.Millisecond}, 50)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range perG {
					if g == 0 {
						clock.Advance(time.Millisecond)
					}
					l.Allow("hot")
					l.Allow("k" + strconv.Itoa((g*perG+i)%200))
					_ = l.Len()
				}
			})
		}
		wg.Wait()
		if l.Len() > 50 {
			t.Fatalf("Len() = %d > 50", l.Len())
		}
	})

	t.Run("real clock", func(t *testing.T) {
		l := New(Rate{1000, time.Second})
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range perG {
					l.Allow("hot")
					l.Allow(strconv.Itoa(g) + "/" + strconv.Itoa(i%10))
				}
			})
		}
		wg.Wait()
	})
}

func BenchmarkAllow(b *testing.B) {
	r := Rate{1_000_000, time.Second} // mostly allowed: the common path
	keys := make([]string, 1<<20)
	for i := range keys {
		keys[i] = "ip:198.51." + strconv.Itoa(i>>8&0xff) + "." + strconv.Itoa(i&0xff) + "/" + strconv.Itoa(i>>16)
	}

	b.Run("hot key", func(b *testing.B) {
		l := New(r)
		for b.Loop() {
			l.Allow("customer:hot")
		}
	})
	b.Run("hot key refused", func(b *testing.B) {
		l := New(Rate{1, time.Hour})
		for b.Loop() {
			l.Allow("customer:hot")
		}
	})
	b.Run("distinct keys", func(b *testing.B) {
		// 2^20 keys cycling through a 100,000-key map: nearly every call
		// creates a bucket and evicts one.
		l := New(r)
		i := 0
		for b.Loop() {
			l.Allow(keys[i&(len(keys)-1)])
			i++
		}
	})
	b.Run("hot key parallel", func(b *testing.B) {
		l := New(r)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow("customer:hot")
			}
		})
	})
	b.Run("distinct keys parallel", func(b *testing.B) {
		l := New(r)
		var n atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			i := int(n.Add(1 << 16))
			for pb.Next() {
				l.Allow(keys[i&(len(keys)-1)])
				i++
			}
		})
	})
}

// TestAllowN: an operation of n mutations takes n tokens or none; refused,
// it says how long until n are back (for n above the burst: until full).
func TestAllowN(t *testing.T) {
	r := Rate{5, time.Minute} // a token every 12 s
	for _, tc := range []struct {
		name     string
		spend    int // taken first, one at a time
		n        int
		ok       bool
		wantWait time.Duration
	}{
		{"whole burst at once", 0, 5, true, 0},
		{"more than the burst", 0, 6, false, 0},
		{"more than left", 2, 4, false, 12 * time.Second},
		{"exactly what is left", 2, 3, true, 0},
		{"none left, two asked", 5, 2, false, 24 * time.Second},
		{"over the burst when drained", 5, 400, false, time.Minute},
		{"zero costs nothing", 5, 0, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newTestLimiter(t, r, 0)
			for range tc.spend {
				if ok, _ := l.Allow("k"); !ok {
					t.Fatal("setup refused")
				}
			}
			ok, wait := l.AllowN("k", tc.n)
			if ok != tc.ok || (tc.wantWait != 0 && wait != tc.wantWait) || (!ok && wait <= 0) {
				t.Fatalf("AllowN(%d) after %d = %v, %v; want %v, %v", tc.n, tc.spend, ok, wait, tc.ok, tc.wantWait)
			}
			// A refusal takes nothing: what was left is still there.
			if left := r.Events - tc.spend; !ok && left > 0 {
				if ok, _ := l.AllowN("k", left); !ok {
					t.Errorf("after a refused AllowN, the %d tokens left are gone", left)
				}
			}
		})
	}
}
