package live

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"flashsale/ent"
)

// BenchmarkFanout10k subscribes 10,000 readers to one product, then, per
// iteration, publishes a state and waits until all 10,000 have received
// it. It reports, as medians over the iterations, the latency from Publish
// to a subscriber's receipt at p50, p99 and max, the worst max, the time
// the Publish call itself took, and the memory one subscription costs
// (heap and goroutine stack, measured before the readers start).
//
//	go test -run '^$' -bench Fanout10k -benchtime 20x ./live/
func BenchmarkFanout10k(b *testing.B) {
	const n = 10000
	const interval = time.Millisecond // well below an iteration's length: no coalescing delay is measured
	src := newFakeSource(prod(1, 0))
	h := New(src, Config{Interval: interval, Max: n, Logger: quietLogger()})
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	chans := make([]<-chan *ent.Product, n)
	lat := make([]time.Duration, n)
	// Each subscription has its own context, as gqlgen gives each operation.
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		c, cancel := context.WithCancel(ctx)
		defer cancel()
		ctxs[i] = c
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range n {
		ch, err := h.Subscribe(ctxs[i], 1)
		if err != nil {
			b.Fatal(err)
		}
		chans[i] = ch
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	heapPer := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / n
	stackPer := float64(int64(m1.StackInuse)-int64(m0.StackInuse)) / n

	// The readers stand for gqlgen's: each takes events as they come and
	// stamps the one of the current iteration.
	var (
		epoch     = time.Now()
		published atomic.Int64 // ns since epoch of the current Publish
		want      atomic.Int64 // the version of the current iteration
		remaining atomic.Int64
		allGot    = make(chan struct{}, 1)
		readers   sync.WaitGroup
	)
	want.Store(-1)
	for i, ch := range chans {
		readers.Go(func() {
			for p := range ch {
				if int64(p.StockReserved) != want.Load() {
					continue
				}
				lat[i] = time.Since(epoch) - time.Duration(published.Load())
				if remaining.Add(-1) == 0 {
					allGot <- struct{}{}
				}
			}
		})
	}
	// Let every reader take the initial event first.
	time.Sleep(100 * time.Millisecond)

	var p50s, p99s, maxes, pubs []time.Duration
	b.ResetTimer()
	for i := range b.N {
		v := i + 1
		remaining.Store(n)
		want.Store(int64(v))
		p := prod(1, v)
		start := time.Now()
		published.Store(int64(start.Sub(epoch)))
		h.Publish(p)
		pub := time.Since(start)
		select {
		case <-allGot:
		case <-time.After(10 * time.Second):
			b.Fatalf("run %d: %d of %d subscribers have not received the state after 10s", v, remaining.Load(), n)
		}
		b.StopTimer()
		sorted := slices.Clone(lat)
		slices.Sort(sorted)
		p50, p99, mx := sorted[n/2], sorted[n*99/100], sorted[n-1]
		p50s, p99s, maxes, pubs = append(p50s, p50), append(p99s, p99), append(maxes, mx), append(pubs, pub)
		if b.N > 1 && b.N <= 50 { // not the calibration round
			b.Logf("run %2d: p50 %8v  p99 %8v  max %8v  (Publish call %v)", v, p50, p99, mx, pub)
		}
		time.Sleep(2 * interval) // the next state is not coalesced with this one
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(median(p50s).Microseconds()), "p50-µs")
	b.ReportMetric(float64(median(p99s).Microseconds()), "p99-µs")
	b.ReportMetric(float64(median(maxes).Microseconds()), "max-µs")
	b.ReportMetric(float64(slices.Max(maxes).Microseconds()), "worst-max-µs")
	b.ReportMetric(float64(median(pubs).Microseconds()), "publish-call-µs")
	b.ReportMetric(heapPer, "heap-B/sub")
	b.ReportMetric(stackPer, "stack-B/sub")
	b.ReportMetric(0, "ns/op") // an iteration's time includes the pause between states: meaningless

	cancel()
	readers.Wait()
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
