package events

import (
	"context"
	"time"

	"flashsale/ent"
	"flashsale/ent/eventdelivery"
)

// maxRecord bounds the outcomes one write records.
const maxRecord = 256

// recordTimeout bounds one outcome write, which must not hang shutdown.
const recordTimeout = 10 * time.Second

// record writes outcomes as they come, whatever accumulated while the last
// write ran in one go (delivered ones in one statement), until done is
// closed. Each written outcome frees room for the lane's next claim.
func (l *lane) record(done <-chan outcome) {
	batch := make([]outcome, 0, maxRecord)
	for o := range done {
		batch = append(batch[:0], o)
	more:
		for len(batch) < maxRecord {
			select {
			case o, ok := <-done:
				if !ok {
					break more
				}
				batch = append(batch, o)
			default:
				break more
			}
		}
		l.write(batch)
		l.held.Add(-int64(len(batch)))
		l.poke()
	}
}

// write records a batch of outcomes, each only while its lease is still
// this process's. A write that fails is retried a few times; if it still
// fails (the database is down), the leases lapse and the deliveries are
// attempted again, which a receiver deduplicates by event ID.
func (l *lane) write(batch []outcome) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	var ok []*claimed
	for _, o := range batch {
		if o.kind == delivered {
			ok = append(ok, o.c)
			continue
		}
		l.retrying(ctx, "record an attempt's outcome", func() error { return l.writeOne(ctx, o) })
	}
	if len(ok) > 0 {
		l.retrying(ctx, "record deliveries", func() error { return l.writeDelivered(ctx, ok) })
	}
	m := l.r.cfg.Metrics
	for _, o := range batch {
		switch o.kind {
		case delivered:
			m.EventAttempt(string(l.name), "delivered")
		case retry:
			m.EventAttempt(string(l.name), "failed")
		case dead:
			m.EventAttempt(string(l.name), "dead")
		}
	}
}

func (l *lane) retrying(ctx context.Context, what string, f func() error) {
	var err error
	for i := range 4 {
		if err = f(); err == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(50<<i) * time.Millisecond):
		}
	}
	if err != nil {
		l.r.cfg.Logger.Warn("order events: could not "+what+"; the lease will lapse and the delivery be attempted again",
			"sink", l.name, "err", err)
	}
}

// writeDelivered marks deliveries DELIVERED in one statement.
func (l *lane) writeDelivered(ctx context.Context, cs []*claimed) error {
	ids := make([]int, len(cs))
	leases := make([]string, 0, 1)
	for i, c := range cs {
		ids[i] = c.id
		if len(leases) == 0 || leases[len(leases)-1] != c.lease {
			leases = append(leases, c.lease)
		}
	}
	return l.r.client.EventDelivery.Update().
		Where(eventdelivery.IDIn(ids...), eventdelivery.LeaseIn(leases...)).
		SetStatus(eventdelivery.StatusDELIVERED).SetDeliveredAt(cs[len(cs)-1].dbNow()).
		ClearLease().ClearLastError().
		Exec(ctx)
}

// writeOne records a failed, dead or given-back delivery.
func (l *lane) writeOne(ctx context.Context, o outcome) error {
	now := o.c.dbNow()
	u := l.r.client.EventDelivery.Update().
		Where(eventdelivery.ID(o.c.id), eventdelivery.Lease(o.c.lease)).ClearLease()
	switch o.kind {
	case retry:
		u.SetNextAttemptAt(now.Add(o.wait)).SetLastError(o.err)
	case dead:
		u.SetStatus(eventdelivery.StatusFAILED).SetNextAttemptAt(now).SetLastError(o.err)
	case released:
		// Not attempted: it did not count, and is due again at once.
		u.SetNextAttemptAt(now).AddAttempts(-1)
	}
	return u.Exec(ctx)
}

// refreshStats reports the sink's PENDING deliveries and the oldest one's
// age (all processes' together: the numbers are the database's).
func (l *lane) refreshStats(ctx context.Context) {
	var rows []struct {
		Count  int        `json:"count"`
		Oldest *time.Time `json:"min"`
	}
	err := l.r.client.EventDelivery.Query().
		Where(eventdelivery.SinkEQ(l.name), eventdelivery.StatusEQ(eventdelivery.StatusPENDING)).
		Aggregate(ent.Count(), ent.Min(eventdelivery.FieldCreatedAt)).Scan(ctx, &rows)
	if err != nil || len(rows) == 0 {
		return
	}
	var age time.Duration
	if rows[0].Oldest != nil {
		if now, err := l.r.clock.Now(ctx); err == nil {
			age = max(now.Sub(*rows[0].Oldest), 0)
		}
	}
	l.r.cfg.Metrics.EventsPending(string(l.name), rows[0].Count, age)
}
