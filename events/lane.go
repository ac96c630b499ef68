package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"entgo.io/ent/dialect/sql"

	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/ent/orderevent"
	"flashsale/sink"
	"flashsale/stock"
)

// lane delivers one sink's events: a claimer (run) takes due deliveries
// in batches while it holds fewer than maxHeld, Concurrency workers
// attempt them, and a recorder writes the outcomes in batches, which
// frees room for the next claim (an order's next event becomes claimable
// only once the previous one's outcome is written).
type lane struct {
	r    *Relay
	sink sink.Sink
	name eventdelivery.Sink
	wake chan struct{}
	held atomic.Int64 // claimed, outcome not written yet

	warnMu     sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// claimed is one delivery this process owns until its lease ends.
type claimed struct {
	id       int
	lease    string
	attempts int // including this one
	msg      sink.Message
	dbAt     time.Time // the database clock when claimed
	localAt  time.Time // the process's (monotonic) clock then
}

// dbNow estimates the database clock now, from the claim's reading.
func (c *claimed) dbNow() time.Time { return c.dbAt.Add(time.Since(c.localAt)) }

// outcome is what became of a claimed delivery.
type outcome struct {
	c    *claimed
	kind outcomeKind
	err  string        // the failure's reason
	wait time.Duration // retry: until the next attempt
}

type outcomeKind int

const (
	delivered outcomeKind = iota
	retry                 // failed; attempted again after wait
	dead                  // failed the last attempt: FAILED
	released              // not attempted: back to due now
)

func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// maxHeld bounds the deliveries a lane holds at once: enough to keep every
// worker busy between claims, few enough that each starts long before its
// lease ends.
func (l *lane) maxHeld() int { return 4 * l.r.cfg.Concurrency }

// maxClaimRaces bounds the claims one wake-up retries after losing a race.
const maxClaimRaces = 3

// statsEvery is how often the pending gauges are refreshed.
const statsEvery = 5 * time.Second

func (l *lane) run(ctx context.Context) {
	cfg := &l.r.cfg
	queue := make(chan *claimed, l.maxHeld())
	done := make(chan outcome, l.maxHeld())
	var workers, recorder sync.WaitGroup
	for range cfg.Concurrency {
		workers.Go(func() {
			for c := range queue {
				// Once stopping, what is queued is given back unsent.
				done <- l.attempt(ctx, c, ctx.Err() != nil)
			}
		})
	}
	recorder.Go(func() { l.record(done) })

	poll := time.NewTicker(cfg.Poll)
	defer poll.Stop()
	stats := time.NewTicker(statsEvery)
	defer stats.Stop()
	l.refreshStats(ctx)
	for ctx.Err() == nil {
		l.claimAll(ctx, queue)
		select {
		case <-ctx.Done():
		case <-l.wake:
		case <-poll.C:
		case <-stats.C:
			l.refreshStats(ctx)
		}
	}
	// Shutdown: queued deliveries are given back, attempts in flight end.
	close(queue)
	workers.Wait()
	close(done)
	recorder.Wait()
}

// claimAll claims due deliveries until there are none or the lane holds
// maxHeld.
func (l *lane) claimAll(ctx context.Context, queue chan<- *claimed) {
	races := 0
	for ctx.Err() == nil {
		held := int(l.held.Load())
		room := l.maxHeld() - held
		if room <= 0 || (held > 0 && room < l.maxHeld()/2) {
			// Busy: claim when half the room is free, in one batch rather
			// than a claim per outcome (the recorder wakes the lane).
			return
		}
		cs, err := l.claim(ctx, room)
		if stock.Retryable(err) {
			// Another process's claim took these rows first (on Galera, its
			// lease won at COMMIT): claim again, others are due; after a few
			// lost races, at the next poll. It is how claims share work.
			if races++; races <= maxClaimRaces {
				continue
			}
			l.r.cfg.Logger.DebugContext(ctx, "order events: claims keep losing lock races; trying at the next poll", "sink", l.name, "err", err)
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				l.warn(ctx, "order events: claiming deliveries failed; retrying at the next poll", "err", err)
			}
			return
		}
		l.held.Add(int64(len(cs)))
		for _, c := range cs {
			queue <- c
		}
		if len(cs) < room {
			return
		}
	}
}

// claim takes up to n due deliveries and commits a lease on them before
// anything is sent. Due: PENDING, next_attempt_at passed (a retry's wait,
// or a dead process's lease), and no earlier event of the same order still
// PENDING on this sink. On MySQL the rows are locked with SKIP LOCKED, so
// concurrent claims take different rows; on Galera, where that lock holds
// on one node only, two nodes' claims of a row conflict at COMMIT and one
// fails, so one lease survives. The events' bodies are read after the
// commit, without locks.
func (l *lane) claim(ctx context.Context, n int) ([]*claimed, error) {
	tx, err := l.r.client.Tx(ctx)
	if err != nil {
		return nil, err
	}
	ds, now, err := l.due(ctx, tx, n)
	if err == nil && len(ds) > 0 {
		err = tx.EventDelivery.Update().Where(eventdelivery.IDIn(idsOf(ds)...)).
			SetLease(*ds[0].Lease).SetNextAttemptAt(now.Add(l.r.cfg.Lease)).AddAttempts(1).SetLastAttemptAt(now).
			Exec(ctx)
	}
	if err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	// Commit even when nothing was claimed: a rolled-back session is not
	// reused (package database), and a poll should not cost a connection.
	if err := tx.Commit(); err != nil || len(ds) == 0 {
		return nil, err
	}
	localAt := time.Now()
	evs, err := l.r.client.OrderEvent.Query().Where(orderevent.IDIn(eventIDsOf(ds)...)).All(ctx)
	if err != nil {
		// The leases lapse and the deliveries are claimed again.
		return nil, err
	}
	byID := make(map[string]*ent.OrderEvent, len(evs))
	for _, e := range evs {
		byID[e.ID] = e
	}
	cs := make([]*claimed, 0, len(ds))
	for _, d := range ds {
		e := byID[d.EventID]
		cs = append(cs, &claimed{id: d.ID, lease: *d.Lease, attempts: d.Attempts, dbAt: now, localAt: localAt,
			msg: sink.Message{ID: e.ID, Type: e.Type.String(), Body: []byte(e.Payload)}})
	}
	return cs, nil
}

// nowColumn carries the database clock in the claim's locking read.
const nowColumn = "db_now"

// due locks up to n due deliveries and returns them as they will be once
// leased (attempts counted, lease set), with the database clock. On MySQL
// the clock comes with the rows, judged by the database; on SQLite, which
// one process uses, it is the process's.
func (l *lane) due(ctx context.Context, tx *ent.Tx, n int) ([]*ent.EventDelivery, time.Time, error) {
	now := time.Now().UTC()
	q := tx.EventDelivery.Query().
		Where(eventdelivery.SinkEQ(l.name), eventdelivery.StatusEQ(eventdelivery.StatusPENDING), noEarlierPending(l.r.mysql)).
		Order(eventdelivery.ByNextAttemptAt(), eventdelivery.ByID()).Limit(n).
		Select(eventdelivery.FieldID, eventdelivery.FieldAttempts, eventdelivery.FieldEventID)
	if l.r.mysql {
		q.Where(func(s *sql.Selector) {
			s.Where(sql.P(func(b *sql.Builder) {
				b.Ident(s.C(eventdelivery.FieldNextAttemptAt)).WriteString(" <= UTC_TIMESTAMP(6)")
			}))
		})
		q.Modify(func(s *sql.Selector) { s.AppendSelectExprAs(sql.Raw("UTC_TIMESTAMP(6)"), nowColumn) })
		q.ForUpdate(sql.WithLockAction(sql.SkipLocked))
	} else {
		q.Where(eventdelivery.NextAttemptAtLTE(now))
	}
	ds, err := q.All(ctx)
	if err != nil || len(ds) == 0 {
		return nil, now, err
	}
	if l.r.mysql {
		v, err := ds[0].Value(nowColumn)
		t, ok := v.(time.Time)
		if err != nil || !ok {
			return nil, now, fmt.Errorf("database clock: got %T (%v)", v, err)
		}
		now = t.UTC()
	}
	lease := newLease()
	for _, d := range ds {
		d.Attempts++
		d.Lease = &lease
	}
	return ds, now, nil
}

func idsOf(ds []*ent.EventDelivery) []int {
	ids := make([]int, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
	}
	return ids
}

func eventIDsOf(ds []*ent.EventDelivery) []string {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.EventID
	}
	return ids
}

// deliveryOrderIndex is the index of event_deliveries on (order_id, sink,
// sequence) (ent/schema/event_delivery.go).
const deliveryOrderIndex = "eventdelivery_order_id_sink_sequence"

// noEarlierPending keeps deliveries whose order has no earlier event still
// PENDING on the same sink: an order's event n+1 waits for event n. The
// check names the (order, sink, sequence) index, a few rows per candidate:
// MariaDB plans it with the statistics of the table when it was empty and
// keeps scanning every PENDING delivery of the sink per candidate instead
// (2 s a claim at a 20,000-event backlog; see docs/performance.md).
func noEarlierPending(mysql bool) func(*sql.Selector) {
	hint := " INDEXED BY `" + deliveryOrderIndex + "`" // SQLite
	if mysql {
		hint = " FORCE INDEX (`" + deliveryOrderIndex + "`)"
	}
	return func(s *sql.Selector) {
		s.Where(sql.P(func(b *sql.Builder) {
			b.WriteString("NOT EXISTS (SELECT 1 FROM `" + eventdelivery.Table + "` AS `earlier`" + hint + " WHERE ")
			b.WriteString("`earlier`.`" + eventdelivery.FieldOrderID + "` = ").Ident(s.C(eventdelivery.FieldOrderID))
			b.WriteString(" AND `earlier`.`" + eventdelivery.FieldSink + "` = ").Ident(s.C(eventdelivery.FieldSink))
			b.WriteString(" AND `earlier`.`" + eventdelivery.FieldStatus + "` = 'PENDING'")
			b.WriteString(" AND `earlier`.`" + eventdelivery.FieldSequence + "` < ").Ident(s.C(eventdelivery.FieldSequence))
			b.WriteString(")")
		}))
	}
}

func newLease() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// leaseMargin is the time an attempt keeps in hand before its lease ends,
// for recording its outcome.
func leaseMargin(lease time.Duration) time.Duration { return lease / 5 }

// attempt makes one attempt of c, unless the lane is stopping or c's lease
// no longer leaves room for a whole attempt: then c is given back. An
// attempt whose predecessor's outcome was never recorded (its process
// died) past the last attempt is not made again: c is FAILED.
func (l *lane) attempt(ctx context.Context, c *claimed, stopping bool) outcome {
	cfg := &l.r.cfg
	if stopping || time.Since(c.localAt)+cfg.Timeout+leaseMargin(cfg.Lease) > cfg.Lease {
		return outcome{c: c, kind: released}
	}
	if c.attempts > cfg.MaxAttempts {
		return outcome{c: c, kind: dead, err: "no outcome recorded for the last attempt (its server stopped)"}
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Timeout)
	defer cancel()
	err := l.sink.Send(actx, c.msg)
	if err == nil {
		return outcome{c: c, kind: delivered}
	}
	var se *sink.Error
	reason, after := "send failed", time.Duration(0)
	if errors.As(err, &se) {
		reason, after = se.Reason, se.RetryAfter
	}
	if c.attempts >= cfg.MaxAttempts {
		l.r.cfg.Logger.WarnContext(ctx, "order event FAILED: its last attempt failed; an operator may redeliver it",
			"sink", l.name, "event_id", c.msg.ID, "attempts", c.attempts, "reason", reason)
		return outcome{c: c, kind: dead, err: reason}
	}
	l.warn(ctx, "order event delivery failed; will retry", "event_id", c.msg.ID,
		"attempt", c.attempts, "reason", reason, "err", err)
	return outcome{c: c, kind: retry, err: reason, wait: cfg.backoff(c.attempts, after)}
}

// warnEvery bounds a lane's repeated warnings (a receiver that is down
// fails every attempt).
const warnEvery = 10 * time.Second

func (l *lane) warn(ctx context.Context, msg string, args ...any) {
	l.warnMu.Lock()
	if time.Since(l.lastWarn) < warnEvery {
		l.suppressed++
		l.warnMu.Unlock()
		return
	}
	n := l.suppressed
	l.lastWarn, l.suppressed = time.Now(), 0
	l.warnMu.Unlock()
	l.r.cfg.Logger.WarnContext(ctx, msg, append(args, "sink", l.name, "similar_warnings_suppressed", n)...)
}
