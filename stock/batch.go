package stock

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit.
//
// In a flash sale every buyer wants the same product row. One transaction
// per request makes each buyer wait for the previous one's lock hand-off and
// commit, which caps a product at a few thousand changes a second. Instead,
// holds, orders and payments queue up, and one goroutine per busy queue
// drains it: each batch is whatever queued while the previous batch was
// committing (no timer, no added latency when idle), and runs as one
// transaction that takes its locks once, decides every request in arrival
// order as if each had run alone at its turn, and writes all their rows in
// a few statements. Each caller gets its own answer, and only after the
// batch really committed. The row locks still serialize batches across
// server processes, so the invariants hold exactly as with one transaction
// per request.
//
// A batch whose decisions are made and rows written, with only its commit
// left, may let the key's next batch start (next): that one then waits for
// the row lock in the database, and gets it as the commit releases it,
// instead of starting only once the commit's answer came back and its
// callers were answered. The lock still orders the two batches; a hot
// product then uses up to two connections for its holds.
//
// Holds queue per product (they are admitted against its sellable stock).
// Orders and payments are queued before anything is read, so a call costs
// no round trip of its own: orders on orderShards queues keyed by the hold
// ID (two batches under way use both of a small database's cores; they
// lock disjoint holds), payments on one queue, since their batches lock the
// products and would only wait for each other on a hot one. The same hold
// or order always lands in the same queue.

const (
	// maxBatch caps one batch: one INSERT of this many rows stays small.
	maxBatch = 256
	// maxQueue caps the requests waiting in one queue; beyond it callers get
	// ErrUnavailable at once instead of an unbounded queue.
	maxQueue = 8192
	// batchTimeout bounds one batch transaction, whoever is waiting on it.
	batchTimeout = 10 * time.Second
	// orderShards is how many order batches may be under way at once.
	orderShards = 2
)

// result is one request's answer.
type result[Out any] struct {
	out Out
	err error
}

// call is one queued request.
type call[In, Out any] struct {
	ctx  context.Context
	in   In
	done chan result[Out] // buffered: a batch never blocks on a caller
}

// batcher queues requests by key and runs each key's queue in batches.
type batcher[In, Out any] struct {
	op string // for errors and logs, e.g. "create hold"
	// run decides and commits one batch, returning one result per input,
	// in order. It may call next, at most once in effect, when only its
	// commit is left, to let the key's next batch start. It must not
	// panic; if it does, every caller still gets an answer and the queue
	// goes on.
	run    func(ctx context.Context, key int, ins []In, next func()) []result[Out]
	log    func(msg string, args ...any)
	queues sync.Map // key → *queue[In, Out]

	batches, calls atomic.Int64 // run so far, for tests and (later) metrics
}

type queue[In, Out any] struct {
	mu      sync.Mutex
	pending []*call[In, Out]
	running bool // a drain goroutine owns the queue: it takes the next batch
}

// do queues in under key and waits for its answer. A caller that leaves
// early gets its context's error; its request may still commit (see the
// callers for what that means).
func (b *batcher[In, Out]) do(ctx context.Context, key int, in In) (Out, error) {
	c := &call[In, Out]{ctx: ctx, in: in, done: make(chan result[Out], 1)}
	var zero Out
	if err := b.enqueue(key, c); err != nil {
		return zero, err
	}
	select {
	case r := <-c.done:
		return r.out, r.err
	case <-ctx.Done():
		return zero, classify(b.op, ctx.Err())
	}
}

// waiting returns how many calls are queued under key, not yet in a batch.
func (b *batcher[In, Out]) waiting(key int) int {
	v, ok := b.queues.Load(key)
	if !ok {
		return 0
	}
	q := v.(*queue[In, Out])
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

func (b *batcher[In, Out]) enqueue(key int, c *call[In, Out]) error {
	v, _ := b.queues.LoadOrStore(key, &queue[In, Out]{})
	q := v.(*queue[In, Out])
	q.mu.Lock()
	if len(q.pending) >= maxQueue {
		q.mu.Unlock()
		return fmt.Errorf("%s: %w: %d requests already waiting", b.op, ErrUnavailable, maxQueue)
	}
	q.pending = append(q.pending, c)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go b.drain(key, q)
	}
	return nil
}

// drain runs batches until the queue is empty, or until a batch hands the
// queue on to the next drain.
func (b *batcher[In, Out]) drain(key int, q *queue[In, Out]) {
	for {
		q.mu.Lock()
		n := min(len(q.pending), maxBatch)
		if n == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		batch := make([]*call[In, Out], n)
		copy(batch, q.pending)
		q.pending = append(q.pending[:0], q.pending[n:]...)
		q.mu.Unlock()
		if b.runBatch(key, q, batch) {
			return
		}
	}
}

// runBatch runs one batch and answers every call in it. handedOn reports
// whether the batch gave up the queue (next), which a new drain then owns.
func (b *batcher[In, Out]) runBatch(key int, q *queue[In, Out], batch []*call[In, Out]) (handedOn bool) {
	next := func() {
		if handedOn {
			return
		}
		handedOn = true
		q.mu.Lock()
		defer q.mu.Unlock()
		if len(q.pending) == 0 {
			q.running = false // the next enqueue starts a drain
			return
		}
		go b.drain(key, q)
	}
	defer func() {
		// A bug must not leave the queue stuck: answer whoever has no
		// answer yet, and let the drain go on.
		if v := recover(); v != nil {
			b.log(b.op+": panic in batch", "key", key, "panic", v, "stack", string(debug.Stack()))
			for _, c := range batch {
				select {
				case c.done <- result[Out]{err: fmt.Errorf("%s: batch failed: %v", b.op, v)}:
				default: // already answered
				}
			}
		}
	}()
	// Callers that gave up while queued are not served.
	live := batch[:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- result[Out]{err: classify(b.op, err)}
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(live[0].ctx), batchTimeout)
	defer cancel()
	ins := make([]In, len(live))
	for i, c := range live {
		ins[i] = c.in
	}
	b.batches.Add(1)
	b.calls.Add(int64(len(ins)))
	results := b.run(ctx, key, ins, next)
	for i, c := range live {
		c.done <- results[i]
	}
	return handedOn
}

// fail answers every request of a batch with err.
func fail[Out any](n int, err error) []result[Out] {
	rs := make([]result[Out], n)
	for i := range rs {
		rs[i].err = err
	}
	return rs
}
