// Package gcfloor keeps the Go garbage collector from running far more often
// than the machine needs when the live heap is small.
//
// With the default GOGC=100 a cycle starts whenever the heap has doubled. A
// flash-sale server keeps little alive (a few MiB) but allocates fast (every
// request is a few KiB of garbage), so under load it collects dozens of
// times a second, and each cycle also scans the stacks of every goroutine
// parked in a request: measured on a hot product, a fifth of the server's
// CPU. Start raises GOGC after each cycle just enough that the next one
// waits until the heap reaches the floor; once the live heap is above half
// the floor it leaves GOGC at the process's own setting, so a large heap
// (ten thousand subscriptions) grows no more than it would without it.
//
// This is the "GC tuner" of Uber's and ByteDance's services, kept to its core:
// a heap floor, never a ceiling. A memory limit (GOMEMLIMIT) still bounds
// the heap, whatever GOGC says, and an explicit GOGC in the environment
// (including off) turns the floor off: the operator's setting wins.
package gcfloor

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// maxPercent bounds the GOGC the floor sets: on an almost empty heap the
// floor alone decides, and the arithmetic stays far from overflow.
const maxPercent = 10000

// Start keeps the collector's heap goal at or above floor bytes until stop
// is called, unless the GOGC environment variable is set (then it does
// nothing). Only one floor should be active in a process.
func Start(floor uint64) (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set || floor == 0 {
		return func() {}
	}
	base := debug.SetGCPercent(100) // read the setting (there is no getter)…
	debug.SetGCPercent(base)        // …and put it back
	t := &tuner{floor: floor, base: base, set: base}
	t.samples = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.stopped {
			t.stopped = true
			debug.SetGCPercent(t.base)
		}
	}
}

type tuner struct {
	floor uint64
	base  int // GOGC the process started with

	mu      sync.Mutex // so that no tuning lands after stop restored base
	stopped bool
	set     int // GOGC the tuner last set
	samples []metrics.Sample
}

// arm registers a cleanup that runs once the next cycle has found an object
// unreachable, i.e. right after that cycle: each run tunes, then re-arms.
func (t *tuner) arm() {
	// 16 bytes: smaller objects without pointers share the tiny allocator's
	// blocks, and a block that stays reachable would never run the cleanup.
	runtime.AddCleanup(new([16]byte), func(t *tuner) {
		if t.tune() {
			t.arm()
		}
	}, t)
}

// tune sets GOGC so that the next goal, live × (1 + GOGC/100), is at least
// the floor, and never below the process's own setting. It reports false
// once stopped.
func (t *tuner) tune() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.samples)
	var live uint64
	if s := t.samples[0]; s.Value.Kind() == metrics.KindUint64 {
		live = s.Value.Uint64()
	}
	p := Percent(live, t.floor, t.base)
	if p != t.set {
		t.set = p
		debug.SetGCPercent(p)
	}
	return true
}

// Percent is the GOGC that makes a heap of live bytes grow to floor before
// the next cycle, and never less than base.
func Percent(live, floor uint64, base int) int {
	if live == 0 || live >= floor {
		return base
	}
	p := math.Ceil((float64(floor)/float64(live) - 1) * 100)
	return max(base, int(min(p, maxPercent)))
}
