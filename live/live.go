// Package live owns live stock: one source of product changes per process,
// fanned out in memory to every subscriber.
//
// A Hub keeps one topic per subscribed product, holding the product's latest
// known state. Two things feed the topics:
//
//   - Publish: a state this process just committed (package stock's own
//     changes), delivered at once;
//   - the poller: one goroutine per Hub that, while there are subscribers,
//     reads every subscribed product once per Interval through Source, at
//     most maxIDsPerCall IDs per call, and so sees the changes made by the
//     other server processes, which are only visible in the database.
//
// A state replaces a topic's only if it is newer (see topic.offer): updated_at
// comes from the database clock under the product's row lock, so it orders a
// product's states, and a poll that read an older state never undoes a newer
// one that was published meanwhile.
//
// Fan-out costs nothing on the Source side: each state carries a channel that
// is closed when a newer state replaces it, a broadcast every subscriber of
// the product waits on (for published states a notifier goroutine closes it,
// so Publish costs the same with one subscriber or 10,000). Each
// subscription has one goroutine, which hands the latest state to the
// subscriber's unbuffered channel, at most once per Interval; a slow reader
// only makes its own goroutine wait, and when it reads it gets the latest
// state, never an intermediate one.
//
// Subscribe reads the product through Source before the first event;
// subscriptions arriving while such a read is in flight share the next one
// (see initialRead), so a crowd subscribing at a sale's start costs a few
// reads, not one per subscriber.
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"flashsale/ent"
)

// Defaults of Config (STOCK_PUSH_INTERVAL and MAX_SUBSCRIPTIONS).
const (
	DefaultInterval = 250 * time.Millisecond
	DefaultMax      = 10000
)

// Source reads products' current state from the database: one call for many IDs.
//
// The Hub keeps the products it gets and hands them to subscribers, so the
// Source must not change them afterwards.
type Source interface {
	Products(ctx context.Context, ids []int) ([]*ent.Product, error) // missing IDs are left out
}

// SourceFunc adapts a function, such as (*stock.Service).ProductsNow, to Source.
type SourceFunc func(ctx context.Context, ids []int) ([]*ent.Product, error)

// Products calls f.
func (f SourceFunc) Products(ctx context.Context, ids []int) ([]*ent.Product, error) {
	return f(ctx, ids)
}

// Config configures a Hub. Zero fields take their defaults.
type Config struct {
	Interval time.Duration // STOCK_PUSH_INTERVAL: least time between two events of one subscription, and the poll period (default 250ms)
	Max      int           // MAX_SUBSCRIPTIONS per process (default 10000)
	// EventBudget is how many events per second the process sends over all
	// its subscriptions before it spaces each one's events further apart
	// than Interval (up to maxSpacing, so changes still arrive within the
	// contract's second). Fan-out then never crowds out the requests that
	// sell. Default: 4,000 per CPU (GOMAXPROCS).
	EventBudget int
	Logger      *slog.Logger // default slog.Default()
}

// maxSpacing bounds the spacing of a subscription's events, its jitter
// included: a change made just after an event is handed out waits at most
// this long, which leaves the write room within the contract's 1 second.
const maxSpacing = 800 * time.Millisecond

var (
	ErrTooMany  = errors.New("too many subscriptions")      // Max reached: the caller maps it to RATE_LIMITED
	ErrNotFound = errors.New("no such product")             // the caller maps it to NOT_FOUND
	ErrClosed   = errors.New("live stock is shutting down") // Subscribe after (or during) Close
)

// Hub fans product changes out to subscribers. Its methods are safe for
// concurrent use. Close it when done: it stops the poller and ends every
// subscription.
type Hub struct {
	src      Source
	interval time.Duration
	max      int
	budget   int          // EventBudget
	live     atomic.Int64 // count, read without the lock by every subscription's goroutine
	log      *slog.Logger

	ctx    context.Context // cancelled by Close; bounds every Source call
	cancel context.CancelFunc
	done   <-chan struct{} // ctx.Done()

	mu        sync.RWMutex
	topics    map[int]*topic // subscribed products
	subs      map[*subscription]struct{}
	count     int // subscriptions, including those still in their initial read
	closed    bool
	polling   bool         // a poller goroutine runs
	notifying bool         // a notifier goroutine runs
	reading   bool         // an initial read runs (readLoop)
	next      *initialRead // initial reads waiting for the one in flight
	wg        sync.WaitGroup

	wakeMu sync.Mutex
	wakeQ  []chan struct{} // superseded states' channels Publish left to the notifier
	kick   chan struct{}   // wakes the notifier; buffer 1

	pollLog pollLog // only touched by the poller goroutine
}

// New returns a Hub reading products through src. It starts no goroutine
// until the first subscription.
func New(src Source, cfg Config) *Hub {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.EventBudget <= 0 {
		cfg.EventBudget = 4000 * runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		src:      src,
		interval: cfg.Interval,
		max:      cfg.Max,
		budget:   cfg.EventBudget,
		log:      cfg.Logger,
		ctx:      ctx,
		cancel:   cancel,
		done:     ctx.Done(),
		topics:   map[int]*topic{},
		subs:     map[*subscription]struct{}{},
		kick:     make(chan struct{}, 1),
	}
}

// Subscribe returns a channel that gets the product now (read through
// Source, so never stale), then again after every change, at most one per
// Interval; when ctx ends, or Close is called, the channel is closed and
// everything of this subscription is released. A slow reader never blocks
// anything: intermediate states are dropped for it and it always gets the
// latest.
//
// The products received are shared by all subscribers of the product and
// must not be modified.
//
// It returns ErrTooMany when Max subscriptions are live, ErrNotFound for an
// unknown product, ErrClosed after Close, ctx's error if ctx ends first, and
// the Source's error (wrapped) if the initial read fails.
func (h *Hub) Subscribe(ctx context.Context, productID int) (<-chan *ent.Product, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, ErrClosed
	case productID <= 0: // no such ID is ever made; spare the database
		h.mu.Unlock()
		return nil, ErrNotFound
	case h.count >= h.max:
		h.mu.Unlock()
		return nil, ErrTooMany
	}
	h.count++
	h.live.Store(int64(h.count))
	// The topic exists before the initial read starts, so a Publish made
	// while it runs is not lost.
	t := h.topics[productID]
	if t == nil {
		t = newTopic(productID)
		h.topics[productID] = t
	}
	t.refs++
	if !h.polling {
		h.polling = true
		h.wg.Add(1)
		go h.poll()
	}
	if !h.notifying {
		h.notifying = true
		h.wg.Add(1)
		go h.notifier()
	}
	r := h.enqueueRead(productID)
	h.mu.Unlock()

	if err := h.awaitRead(ctx, r, productID); err != nil {
		h.release(t, nil)
		return nil, err
	}
	// Close ends the subscription through its own channel, not a shared
	// one: thousands of goroutines selecting on one channel would contend
	// for its lock at every event.
	s := &subscription{quit: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.release(t, nil)
		return nil, ErrClosed
	}
	h.subs[s] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	out := make(chan *ent.Product) // unbuffered: a value is never queued behind a newer one
	go h.serve(ctx, s, t, out)
	return out, nil
}

// subscription is what Close needs to end a subscription.
type subscription struct {
	quit chan struct{} // closed by Close
}

// serve is a subscription's goroutine: it hands out the topic's latest
// state, whenever it differs from the last one handed out and at least
// Interval has passed since then. It has one select, so that its stack
// stays within a goroutine's first 2 KB.
func (h *Hub) serve(ctx context.Context, s *subscription, t *topic, out chan<- *ent.Product) {
	defer h.wg.Done()
	defer close(out)
	defer h.release(t, s) // runs first: the count is down when out closes
	var (
		sent  *state
		last  time.Time // when the last event was taken; zero: the first event is due now
		timer *time.Timer
	)
	for {
		st := t.cur.Load()
		var ( // nil channels: cases that do not apply now
			send    chan<- *ent.Product
			changed <-chan struct{}
			due     <-chan time.Time
		)
		wait, spacing := time.Duration(0), h.spacing()
		if !last.IsZero() {
			wait = spacing - time.Since(last)
		}
		switch {
		case wait > 0:
			// Too soon after the last event: wait, then hand out whatever
			// is latest by then. Not woken by changes meanwhile: on a hot
			// product that would be a second wake-up for every event.
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			due = timer.C
		case st == sent || st.p == nil:
			changed = st.changed // nothing new: wait for a change
		default:
			// Hand it out, unless a newer state comes first (a slow reader
			// then gets that one).
			send, changed = out, st.changed
		}
		idle := st == sent && !last.IsZero()
		select {
		case send <- st.p:
			// A random part of an interval more before the next event
			// spreads the subscribers' turns: subscribers woken by one
			// change all hand out at once, and with equal spacing they would
			// stay in step, thousands of goroutines runnable together every
			// interval, and a hold's request would queue behind them all.
			sent, last = st, time.Now().Add(jitter(spacing))
		case <-changed:
			if idle {
				// Every idle subscriber of the product wakes on this one
				// change: each hands it out after a random part of its
				// spacing, not all in the same instant.
				last = later(last, time.Now().Add(jitter(spacing)-spacing))
			}
		case <-due:
		case <-ctx.Done():
			return
		case <-s.quit:
			return
		}
	}
}

// release gives back a subscription's share of its topic and of Max; s is
// nil if it never started.
func (h *Hub) release(t *topic, s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s != nil {
		delete(h.subs, s)
	}
	h.count--
	h.live.Store(int64(h.count))
	if t.refs--; t.refs == 0 && h.topics[t.id] == t {
		delete(h.topics, t.id)
		if len(h.topics) == 0 {
			h.kickNotifier() // so that it ends
		}
	}
}

// Publish tells subscribers of p's product about a state this process just
// committed (the stock package's own changes), without waiting for the next
// poll. It keeps a copy of p. It never blocks and its cost does not grow
// with subscribers: waking them (closing the superseded state's channel,
// which readies every waiting goroutine) is left to the notifier goroutine.
// A product nobody subscribes to costs a map lookup.
func (h *Hub) Publish(p *ent.Product) {
	if p == nil {
		return
	}
	h.mu.RLock()
	t := h.topics[p.ID]
	h.mu.RUnlock()
	if t == nil {
		return
	}
	cp := *p
	if ch := t.offer(&cp, time.Now(), fromPublish, h.staleGrace()); ch != nil {
		h.wakeMu.Lock()
		h.wakeQ = append(h.wakeQ, ch)
		h.wakeMu.Unlock()
		h.kickNotifier()
	}
}

func (h *Hub) kickNotifier() {
	select {
	case h.kick <- struct{}{}:
	default: // already kicked
	}
}

// notifier wakes the subscribers of published states, so Publish, called
// in package stock's commit path, does not pay for waking thousands of
// goroutines (nor get preempted behind them). It ends with the last
// subscription (Subscribe starts another) or on Close.
func (h *Hub) notifier() {
	defer h.wg.Done()
	var q []chan struct{}
	for {
		select {
		case <-h.kick:
		case <-h.done:
			return
		}
		h.wakeMu.Lock()
		q, h.wakeQ = h.wakeQ, q[:0]
		h.wakeMu.Unlock()
		for i, ch := range q {
			close(ch)
			q[i] = nil
		}
		h.mu.Lock()
		if len(h.topics) == 0 {
			h.notifying = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// Count returns the number of live subscriptions (those still in their
// initial read included: they count towards Max).
func (h *Hub) Count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.count
}

// Close ends every subscription (their channels close) and stops the
// poller; Subscribe then returns ErrClosed. It returns once every goroutine
// of the Hub has ended. Calling it again does nothing.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		h.cancel()
		for s := range h.subs {
			close(s.quit)
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// staleGrace is how long reads that began after a state was learned may
// keep contradicting it with an older one before the database wins (see
// topic.offer).
func (h *Hub) staleGrace() time.Duration { return max(time.Second, 4*h.interval) }

func (h *Hub) wrapReadErr(id int, err error) error {
	if h.ctx.Err() != nil {
		return ErrClosed
	}
	return fmt.Errorf("live: read product %d: %w", id, err)
}

// spacing is the least time between two events of one subscription now:
// Interval, or more while the subscriptions would together take more than
// EventBudget events per second, at most maxSpacing less its jitter.
func (h *Hub) spacing() time.Duration {
	s := time.Duration(h.live.Load()) * time.Second / time.Duration(h.budget)
	return min(max(s, h.interval), maxSpacing*4/5)
}

// jitter is a random wait of up to a quarter of spacing, added to it
// (see serve).
func jitter(spacing time.Duration) time.Duration {
	return rand.N(spacing/4 + 1)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
