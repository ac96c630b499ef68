// Package sweeper runs the scheduled jobs on gocron: every SWEEP_INTERVAL
// it calls stock.Service.Sweep, which expires overdue holds and cancels
// orders whose payment timed out; twice a second it moves the waiting
// rooms on (stock.Service.TickQueues); every few minutes it deletes the order
// events every sink has delivered once EVENTS_RETENTION has passed, and
// lapsed holds and payment-event audit rows older than RETENTION. The
// jobs keep no state of their own (everything they need is in the
// database), so a restarted server catches up on its first runs, and
// several servers may run them on the same database at once.
package sweeper

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-co-op/gocron/v2"

	"flashsale/events"
	"flashsale/stock"
)

// Job names, in gocron and in logs.
const (
	JobName         = "release-expired"
	EventsRetainJob = "delete-delivered-events"
	PurgeJob        = "delete-old-records"
	QueueJob        = "waiting-rooms"
	// queueEach: admission at least once a second, sell-out and expired
	// passes seen within one.
	queueEach        = 500 * time.Millisecond
	eventsRetainEach = 5 * time.Minute
	purgeEach        = 10 * time.Minute
)

// Config configures the jobs.
type Config struct {
	Interval time.Duration // SWEEP_INTERVAL
	Logger   *slog.Logger
	// Events, when set, gets a retention job: events delivered to every
	// sink and older than EventsRetention are deleted.
	Events          *events.Relay
	EventsRetention time.Duration
	// Retention, when set, gets a job deleting lapsed holds that never
	// became orders, and payment-event audit rows, older than it.
	Retention time.Duration
	// PassTTL, when set, gets the waiting rooms' job (stock.TickQueues):
	// how long an admitted ticket may take its hold (QUEUE_PASS_TTL).
	PassTTL time.Duration
}

// Sweeper owns the gocron scheduler.
type Sweeper struct {
	s gocron.Scheduler
}

// Start schedules the jobs, starting now. Runs of one job never overlap: a
// run that outlasts its interval makes the next one wait for its turn.
func Start(svc *stock.Service, cfg Config) (*Sweeper, error) {
	s, err := gocron.NewScheduler(gocron.WithLogger(cfg.Logger), gocron.WithStopTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("sweeper: %w", err)
	}
	for _, j := range jobs(svc, cfg) {
		if err = every(s, j.name, j.interval, j.run); err != nil {
			_ = s.Shutdown()
			return nil, fmt.Errorf("sweeper: %w", err)
		}
	}
	s.Start()
	return &Sweeper{s: s}, nil
}

type job struct {
	name     string
	interval time.Duration
	run      func(context.Context)
}

// jobs are the jobs cfg asks for.
func jobs(svc *stock.Service, cfg Config) []job {
	log := cfg.Logger
	// A run may take longer than one interval under load, never unboundedly.
	runTimeout := max(10*cfg.Interval, 30*time.Second)
	js := []job{{JobName, cfg.Interval, func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, runTimeout)
		defer cancel()
		start := time.Now()
		res, err := svc.Sweep(ctx)
		if err != nil {
			log.WarnContext(ctx, "sweep failed; the next run retries", "job", JobName, "err", err,
				"holds_expired", res.HoldsExpired, "orders_cancelled", res.OrdersCancelled)
			return
		}
		if res.HoldsExpired > 0 || res.OrdersCancelled > 0 {
			log.InfoContext(ctx, "sweep released stock", "job", JobName,
				"holds_expired", res.HoldsExpired, "orders_cancelled", res.OrdersCancelled, "took", time.Since(start))
		}
	}}}
	if cfg.PassTTL > 0 {
		js = append(js, job{QueueJob, queueEach, func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, runTimeout)
			defer cancel()
			if _, err := svc.TickQueues(ctx, cfg.PassTTL); err != nil {
				log.WarnContext(ctx, "moving the waiting rooms on failed; the next run retries", "job", QueueJob, "err", err)
			}
		}})
	}
	if cfg.Events != nil {
		js = append(js, job{EventsRetainJob, eventsRetainEach, func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, eventsRetainEach)
			defer cancel()
			n, err := cfg.Events.Retain(ctx, cfg.EventsRetention)
			if err != nil {
				log.WarnContext(ctx, "deleting delivered order events failed; the next run retries", "job", EventsRetainJob, "err", err, "deleted", n)
			} else if n > 0 {
				log.InfoContext(ctx, "deleted delivered order events", "job", EventsRetainJob, "deleted", n, "older_than", cfg.EventsRetention)
			}
		}})
	}
	if cfg.Retention > 0 {
		js = append(js, job{PurgeJob, purgeEach, func(ctx context.Context) { purge(ctx, svc, cfg) }})
	}
	return js
}

// purge deletes the records older than cfg.Retention.
func purge(ctx context.Context, svc *stock.Service, cfg Config) {
	ctx, cancel := context.WithTimeout(ctx, purgeEach)
	defer cancel()
	res, err := svc.Purge(ctx, cfg.Retention)
	if err != nil {
		cfg.Logger.WarnContext(ctx, "deleting old records failed; the next run retries", "job", PurgeJob, "err", err,
			"holds", res.Holds, "payment_events", res.PaymentEvents)
	} else if res.Holds+res.PaymentEvents > 0 {
		cfg.Logger.InfoContext(ctx, "deleted old records", "job", PurgeJob, "holds", res.Holds,
			"payment_events", res.PaymentEvents, "older_than", cfg.Retention)
	}
}

// every schedules task every interval, starting now, one run at a time.
func every(s gocron.Scheduler, name string, interval time.Duration, task func(context.Context)) error {
	_, err := s.NewJob(
		gocron.DurationJob(interval),
		gocron.NewTask(task),
		gocron.WithName(name),
		gocron.WithSingletonMode(gocron.LimitModeReschedule),
		gocron.WithStartAt(gocron.WithStartImmediately()),
	)
	return err
}

// Stop cancels running jobs (their transactions roll back, nothing is
// lost) and waits for them to end.
func (sw *Sweeper) Stop(ctx context.Context) error {
	return sw.s.ShutdownWithContext(ctx)
}
