package events

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/sink"
)

// DefaultLease is how long a claim owns its deliveries. A process that
// dies mid-attempt leaves them to another process after at most this long
// (the contract allows 30 s).
const DefaultLease = 25 * time.Second

// MaxTimeout is the longest attempt the default lease leaves room for
// (see leaseMargin).
const MaxTimeout = DefaultLease - 2*DefaultLease/5

// Config tunes delivery (the EVENTS_* settings).
type Config struct {
	Timeout     time.Duration // one attempt, at most MaxTimeout (default 10s)
	RetryMin    time.Duration // least wait after a failed attempt (default 5s)
	RetryMax    time.Duration // most wait (default 1h)
	MaxAttempts int           // failed attempts before FAILED (default 15)
	Concurrency int           // attempts in flight per sink (default 16)
	// Poll is how often a relay looks for deliveries it was not woken
	// for: other processes' events and retries falling due (default 500ms).
	Poll time.Duration
	// Lease is how long a claim owns its deliveries (default DefaultLease;
	// tests shorten it). Timeout is capped to leave room in it.
	Lease   time.Duration
	Logger  *slog.Logger
	Metrics Metrics // nil: none
}

// Metrics is what the relay reports (*metrics.Metrics is one).
type Metrics interface {
	EventAttempt(sink, outcome string)                      // outcome: delivered, failed, dead
	EventsPending(sink string, n int, oldest time.Duration) // PENDING deliveries on sink, and the oldest one's age
}

// Clock is the database clock (*stock.Service is one): leases and retries
// are judged by it, so every process agrees on them.
type Clock interface {
	Now(ctx context.Context) (time.Time, error)
}

func (c *Config) defaults() {
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	c.Timeout = min(c.Timeout, c.Lease-2*leaseMargin(c.Lease))
	if c.RetryMin <= 0 {
		c.RetryMin = 5 * time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(time.Hour, c.RetryMin)
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 15
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.Poll <= 0 {
		c.Poll = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
}

type noMetrics struct{}

func (noMetrics) EventAttempt(string, string)              {}
func (noMetrics) EventsPending(string, int, time.Duration) {}

// backoff is how long to wait after failed attempt number n (1, 2, ...):
// a ceiling that doubles from RetryMin up to RetryMax, with jitter over
// its upper half so that a recovering receiver is not hit by every retry
// at once, never less than RetryMin; longer if the sink asked (capped at
// RetryMax).
func (c *Config) backoff(n int, retryAfter time.Duration) time.Duration {
	ceiling := c.RetryMax
	if n-1 < 40 {
		if d := c.RetryMin << (n - 1); d > 0 && d < ceiling {
			ceiling = d
		}
	}
	d := max(ceiling/2+rand.N(ceiling/2+1), c.RetryMin)
	if retryAfter > d {
		d = min(retryAfter, c.RetryMax)
	}
	return d
}

// Relay delivers order events to the configured sinks: one lane per sink,
// each with its own delivery state. It also serves operators' reads and
// redeliveries, and retention.
type Relay struct {
	client *ent.Client
	mysql  bool
	clock  Clock
	cfg    Config
	lanes  []*lane
}

// New returns a relay over the database for sinks (none: events are only
// kept for operators). d is dialect.MySQL or dialect.SQLite.
func New(client *ent.Client, d string, clock Clock, sinks []sink.Sink, cfg Config) *Relay {
	cfg.defaults()
	r := &Relay{client: client, mysql: d == dialect.MySQL, clock: clock, cfg: cfg}
	for _, s := range sinks {
		r.lanes = append(r.lanes, &lane{r: r, sink: s, name: eventdelivery.Sink(s.Name()), wake: make(chan struct{}, 1)})
	}
	return r
}

// Sinks names the configured sinks, for package stock's Config.EventSinks.
func (r *Relay) Sinks() []string {
	names := make([]string, len(r.lanes))
	for i, l := range r.lanes {
		names[i] = string(l.name)
	}
	return names
}

// Wake makes every lane look for due deliveries now (new events were
// committed, or redelivered). It never blocks.
func (r *Relay) Wake() {
	for _, l := range r.lanes {
		l.poke()
	}
}

// Run delivers until ctx ends, then lets the attempts in flight finish
// (each bounded by Timeout), records them, gives back the deliveries it
// claimed but did not start, and returns.
func (r *Relay) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range r.lanes {
		wg.Go(func() { l.run(ctx) })
	}
	wg.Wait()
}

// Close closes the sinks. Call it after Run returned.
func (r *Relay) Close() error {
	var errs []error
	for _, l := range r.lanes {
		errs = append(errs, l.sink.Close())
	}
	return errors.Join(errs...)
}
