package live

import (
	"context"
	"slices"
	"time"

	"flashsale/ent"
)

const (
	// maxIDsPerCall bounds the IDs of one Source call, keeping a statement
	// small: 1,000 subscribed products are read with 2 calls per Interval.
	maxIDsPerCall = 500
	// readTimeout bounds one Source call.
	readTimeout = 5 * time.Second
	// logEvery is the least time between two log records of failing polls.
	logEvery = 10 * time.Second
)

// initialRead is one Source read serving Subscribe calls' first events.
// Subscribe calls that arrive while a read is in flight join the next one,
// which begins when that one ends: each subscriber's first state was read
// after it subscribed, and a crowd subscribing at once (a sale's start)
// costs a few reads, not one per subscriber.
type initialRead struct {
	want map[int]struct{}
	done chan struct{} // closed when got and errs are set
	got  map[int]*ent.Product
	errs map[int]error
}

// enqueueRead adds id to the next initial read and starts it unless one is
// in flight. h.mu must be held.
func (h *Hub) enqueueRead(id int) *initialRead {
	if h.next == nil {
		h.next = &initialRead{want: map[int]struct{}{}, done: make(chan struct{})}
	}
	r := h.next
	r.want[id] = struct{}{}
	if !h.reading {
		h.reading = true
		h.next = nil
		h.wg.Add(1)
		go h.readLoop(r)
	}
	return r
}

// readLoop runs initial reads until none is waiting.
func (h *Hub) readLoop(r *initialRead) {
	defer h.wg.Done()
	for r != nil {
		h.runInitialRead(r)
		h.mu.Lock()
		r, h.next = h.next, nil
		if r == nil {
			h.reading = false
		}
		h.mu.Unlock()
	}
}

func (h *Hub) runInitialRead(r *initialRead) {
	defer close(r.done)
	ids := make([]int, 0, len(r.want))
	for id := range r.want {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	r.got = make(map[int]*ent.Product, len(ids))
	for chunk := range slices.Chunk(ids, maxIDsPerCall) {
		ps, err := h.read(chunk)
		if err != nil {
			if r.errs == nil {
				r.errs = map[int]error{}
			}
			for _, id := range chunk {
				r.errs[id] = err
			}
			continue
		}
		for _, p := range ps {
			if p != nil {
				r.got[p.ID] = p
			}
		}
	}
}

// awaitRead waits for id's initial read, which has offered its state to
// the topic by then.
func (h *Hub) awaitRead(ctx context.Context, r *initialRead, id int) error {
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-h.done:
		return ErrClosed
	}
	if err := r.errs[id]; err != nil {
		return h.wrapReadErr(id, err)
	}
	if r.got[id] == nil {
		return ErrNotFound
	}
	return nil
}

// read reads products with one Source call and offers them to their
// topics.
func (h *Hub) read(ids []int) ([]*ent.Product, error) {
	ctx, cancel := context.WithTimeout(h.ctx, readTimeout)
	defer cancel()
	at := time.Now()
	ps, err := h.src.Products(ctx, ids)
	if err != nil {
		return nil, err
	}
	grace := h.staleGrace()
	h.mu.RLock()
	ts := make([]*topic, len(ps))
	for i, p := range ps {
		if p != nil {
			ts[i] = h.topics[p.ID]
		}
	}
	h.mu.RUnlock()
	for i, t := range ts {
		if t == nil {
			continue
		}
		if ch := t.offer(ps[i], at, fromRead, grace); ch != nil {
			close(ch) // wakes the subscribers; this goroutine has time
		}
	}
	return ps, nil
}

// poll is the Hub's poller: once per Interval, while there are
// subscriptions, it reads every subscribed product through Source
// (maxIDsPerCall per call) and offers what it read, so changes made by
// other processes reach subscribers. It ends when the last subscription
// does (Subscribe starts another) or on Close.
func (h *Hub) poll() {
	defer h.wg.Done()
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	var ids []int
	for {
		select {
		case <-h.done:
			return
		case <-tick.C:
		}
		h.mu.Lock()
		if len(h.topics) == 0 || h.closed {
			h.polling = false
			h.mu.Unlock()
			return
		}
		ids = ids[:0]
		for id := range h.topics {
			ids = append(ids, id)
		}
		h.mu.Unlock()
		slices.Sort(ids)
		for chunk := range slices.Chunk(ids, maxIDsPerCall) {
			_, err := h.read(chunk)
			if h.ctx.Err() != nil {
				return
			}
			h.pollLog.result(h, err, len(chunk))
		}
	}
}

// pollLog rate-limits the logging of failed polls: the first failure is
// logged, then at most one record per logEvery with the number of failures
// in between, and a record when polls succeed again.
type pollLog struct {
	failing    bool
	last       time.Time // last record
	suppressed int
}

func (l *pollLog) result(h *Hub, err error, n int) {
	now := time.Now()
	if err == nil {
		if l.failing {
			h.log.Info("live stock: polling products works again", "failures_not_logged", l.suppressed)
			*l = pollLog{}
		}
		return
	}
	if l.failing && now.Sub(l.last) < logEvery {
		l.suppressed++
		return
	}
	h.log.Warn("live stock: polling products failed; retrying every interval",
		"err", err, "products", n, "failures_not_logged", l.suppressed, "interval", h.interval)
	l.failing, l.last, l.suppressed = true, now, 0
}
