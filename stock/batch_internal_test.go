package stock

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBatcherHandsOn: a batch that calls next lets its key's next batch
// start while it is still under way (as a hold batch does just before its
// COMMIT); one that does not keeps the queue to itself. Either way every
// call gets its own answer, and the queue goes on afterwards.
func TestBatcherHandsOn(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handsOn bool
	}{{"hands on", true}, {"keeps the queue", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var running, most, batches atomic.Int32
			queued := make(chan struct{})   // the later calls are waiting
			secondIn := make(chan struct{}) // a second batch started
			var once sync.Once
			b := &batcher[int, int]{op: "test", log: t.Logf}
			b.run = func(_ context.Context, _ int, ins []int, next func()) []result[int] {
				n := running.Add(1)
				defer running.Add(-1)
				if n > most.Load() {
					most.Store(n)
				}
				if batches.Add(1) == 1 {
					<-queued
					if tc.handsOn {
						next()
						next() // a second call changes nothing
					}
					select { // stand for the COMMIT the next batch overlaps
					case <-secondIn:
					case <-time.After(200 * time.Millisecond):
					}
				} else {
					once.Do(func() { close(secondIn) })
				}
				out := make([]result[int], len(ins))
				for i, in := range ins {
					out[i].out = in * 10
				}
				return out
			}
			ctx := context.Background()
			var wg sync.WaitGroup
			answers := make([]int, 10)
			errs := make([]error, 10)
			wg.Go(func() { answers[0], errs[0] = b.do(ctx, 7, 0) })
			for batches.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			for i := 1; i < 10; i++ {
				wg.Go(func() { answers[i], errs[i] = b.do(ctx, 7, i) })
			}
			for b.waiting(7) < 9 {
				time.Sleep(time.Millisecond)
			}
			close(queued)
			wg.Wait()
			for i := range 10 {
				if errs[i] != nil || answers[i] != i*10 {
					t.Errorf("call %d: %d, %v; want %d", i, answers[i], errs[i], i*10)
				}
			}
			if got, want := most.Load() == 2, tc.handsOn; got != want {
				t.Errorf("two batches under way at once: %v, want %v", got, want)
			}
			if got, err := b.do(ctx, 7, 42); err != nil || got != 420 {
				t.Errorf("a later call: %d, %v; the queue is stuck", got, err)
			}
		})
	}
}
