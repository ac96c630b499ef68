package events

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	"github.com/google/uuid"

	"flashsale/audit"
	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/ent/orderevent"
	"flashsale/stock"
)

// Filter narrows an operator's list of events.
type Filter struct {
	OrderID *uuid.UUID
	// Status: events with any delivery in this status.
	Status *eventdelivery.Status
}

// List returns up to first events, oldest first, after the event with ID
// after ("": from the oldest), each with its deliveries, and whether more
// follow.
func (r *Relay) List(ctx context.Context, f Filter, first int, after string) ([]*ent.OrderEvent, bool, error) {
	if err := stock.CheckFirst(first); err != nil {
		return nil, false, err
	}
	q := r.client.OrderEvent.Query()
	if f.OrderID != nil {
		q.Where(orderevent.OrderID(*f.OrderID))
	}
	if f.Status != nil {
		q.Where(orderevent.HasDeliveriesWith(eventdelivery.StatusEQ(*f.Status)))
	}
	if after != "" {
		q.Where(orderevent.IDGT(after))
	}
	es, err := q.Order(orderevent.ByID()).Limit(first + 1).WithDeliveries(byDeliverySink).All(ctx)
	if err != nil {
		return nil, false, stock.Classify("list order events", err)
	}
	if len(es) > first {
		return es[:first], true, nil
	}
	return es, false, nil
}

func byDeliverySink(q *ent.EventDeliveryQuery) { q.Order(eventdelivery.BySink()) }

// MaxRedeliver bounds the events one redeliverEvents names.
const MaxRedeliver = 100

var eventIDPattern = regexp.MustCompile(`^evt_[0-9a-f]{32}$`)

// ParseEventID checks an event ID's form (BAD_USER_INPUT otherwise).
func ParseEventID(id string) (string, error) {
	if !eventIDPattern.MatchString(id) {
		return "", stock.InvalidInput("malformed event ID %q", stock.Truncate(id))
	}
	return id, nil
}

// Redeliver sets every delivery of the events back to PENDING, due now,
// with its attempts counted afresh, whatever its status (a DELIVERED one
// is sent again: a replay). A delivery being attempted right now is left
// to finish. An unknown ID refuses the whole call (NOT_FOUND). act goes in
// the operator action log in the same transaction (nil: not an operator's).
func (r *Relay) Redeliver(ctx context.Context, act *audit.Action, ids []string) ([]*ent.OrderEvent, error) {
	if len(ids) == 0 || len(ids) > MaxRedeliver {
		return nil, stock.InvalidInput("ids must name 1 to %d events", MaxRedeliver)
	}
	for _, id := range ids {
		if _, err := ParseEventID(id); err != nil {
			return nil, err
		}
	}
	now, err := r.clock.Now(ctx)
	if err != nil {
		return nil, err
	}
	err = r.tx(ctx, func(tx *ent.Tx) error {
		found, err := tx.OrderEvent.Query().Where(orderevent.IDIn(ids...)).IDs(ctx)
		if err != nil {
			return err
		}
		if missing := missingOf(ids, found); missing != "" {
			return fmt.Errorf("%w: no order event with ID %q", stock.ErrNotFound, missing)
		}
		if err := tx.EventDelivery.Update().
			Where(eventdelivery.EventIDIn(ids...), eventdelivery.LeaseIsNil()).
			SetStatus(eventdelivery.StatusPENDING).SetAttempts(0).SetNextAttemptAt(now).ClearDeliveredAt().
			Exec(ctx); err != nil {
			return err
		}
		return audit.Record(ctx, tx, act, now, nil, nil)
	})
	if err != nil {
		return nil, stock.Classify("redeliver order events", err)
	}
	r.Wake()
	es, err := r.client.OrderEvent.Query().Where(orderevent.IDIn(ids...)).
		Order(orderevent.ByID()).WithDeliveries(byDeliverySink).All(ctx)
	return es, stock.Classify("read order events", err)
}

// RedeliverFailed sets every FAILED delivery back to PENDING, due now,
// with its attempts counted afresh, and returns how many there were. act
// goes in the operator action log in the same transaction (nil: not an
// operator's), also when there were none.
func (r *Relay) RedeliverFailed(ctx context.Context, act *audit.Action) (int, error) {
	now, err := r.clock.Now(ctx)
	if err != nil {
		return 0, err
	}
	var n int
	err = r.tx(ctx, func(tx *ent.Tx) error {
		var err error
		if n, err = tx.EventDelivery.Update().
			Where(eventdelivery.StatusEQ(eventdelivery.StatusFAILED)).
			SetStatus(eventdelivery.StatusPENDING).SetAttempts(0).SetNextAttemptAt(now).
			Save(ctx); err != nil {
			return err
		}
		return audit.Record(ctx, tx, act, now, nil, nil)
	})
	if err != nil {
		return 0, stock.Classify("redeliver failed order events", err)
	}
	r.Wake()
	return n, nil
}

// missingOf returns an ID of want that is not in got, or "".
func missingOf(want, got []string) string {
	have := make(map[string]bool, len(got))
	for _, id := range got {
		have[id] = true
	}
	for _, id := range want {
		if !have[id] {
			return id
		}
	}
	return ""
}

// tx runs fn in a transaction.
func (r *Relay) tx(ctx context.Context, fn func(*ent.Tx) error) error {
	tx, err := r.client.Tx(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// WarnOrphans logs a warning when deliveries are PENDING on a sink this
// process does not have: every process on one database must configure the
// same sinks, or those events wait for a process that has it.
func (r *Relay) WarnOrphans(ctx context.Context) {
	var rows []struct {
		Sink  string `json:"sink"`
		Count int    `json:"count"`
	}
	err := r.client.EventDelivery.Query().Where(eventdelivery.StatusEQ(eventdelivery.StatusPENDING)).
		GroupBy(eventdelivery.FieldSink).Aggregate(ent.Count()).Scan(ctx, &rows)
	if err != nil {
		r.cfg.Logger.WarnContext(ctx, "order events: could not count pending deliveries", "err", err)
		return
	}
	for _, row := range rows {
		if !slices.Contains(r.Sinks(), row.Sink) {
			r.cfg.Logger.WarnContext(ctx, "order events are waiting for a sink this server does not have: configure it here too (every server on one database needs the same sinks)",
				"sink", row.Sink, "pending", row.Count)
		}
	}
}
