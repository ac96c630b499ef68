// Package sweeper runs the expiry job: every SWEEP_INTERVAL, gocron calls
// stock.Service.Sweep, which expires overdue holds and cancels orders whose
// payment timed out. The job keeps no state of its own (everything it needs
// is in the database), so a restarted server catches up on its first run,
// and several servers may sweep the same database at once.
package sweeper

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-co-op/gocron/v2"

	"flashsale/stock"
)

// JobName names the job in gocron and in logs.
const JobName = "release-expired"

// Sweeper owns the gocron scheduler.
type Sweeper struct {
	s gocron.Scheduler
}

// Start schedules the sweep every interval, starting now. Runs never overlap:
// a run that outlasts the interval makes the next one wait for its turn.
func Start(svc *stock.Service, interval time.Duration, log *slog.Logger) (*Sweeper, error) {
	s, err := gocron.NewScheduler(gocron.WithLogger(log), gocron.WithStopTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("sweeper: %w", err)
	}
	// A run may take longer than one interval under load, never unboundedly.
	runTimeout := max(10*interval, 30*time.Second)
	task := func(ctx context.Context) {
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
	}
	_, err = s.NewJob(
		gocron.DurationJob(interval),
		gocron.NewTask(task),
		gocron.WithName(JobName),
		gocron.WithSingletonMode(gocron.LimitModeReschedule),
		gocron.WithStartAt(gocron.WithStartImmediately()),
	)
	if err != nil {
		_ = s.Shutdown()
		return nil, fmt.Errorf("sweeper: %w", err)
	}
	s.Start()
	return &Sweeper{s: s}, nil
}

// Stop cancels a running sweep (its transaction rolls back, nothing is lost)
// and waits for it to end.
func (sw *Sweeper) Stop(ctx context.Context) error {
	return sw.s.ShutdownWithContext(ctx)
}
