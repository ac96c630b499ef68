package events

import (
	"context"
	"time"

	"entgo.io/ent/dialect/sql"

	"flashsale/ent"
	"flashsale/ent/eventdelivery"
	"flashsale/ent/orderevent"
	"flashsale/stock"
)

// retainBatch is how many events one retention transaction deletes.
const retainBatch = 1000

// maxRetainRounds bounds one retention run; the next run goes on.
const maxRetainRounds = 50

// Retain deletes the events older than retention that every sink has
// delivered (events written with no sink configured count as delivered),
// with their deliveries, and returns how many. Events with a PENDING or
// FAILED delivery are kept, however old, until they are delivered.
func (r *Relay) Retain(ctx context.Context, retention time.Duration) (int, error) {
	now, err := r.clock.Now(ctx)
	if err != nil {
		return 0, err
	}
	cutoff := now.Add(-retention)
	total := 0
	for range maxRetainRounds {
		n := 0
		err := r.tx(ctx, func(tx *ent.Tx) error {
			ids, err := tx.OrderEvent.Query().
				Where(orderevent.OccurredAtLT(cutoff), allDelivered).
				Order(orderevent.ByOccurredAt()).Limit(retainBatch).IDs(ctx)
			if err != nil || len(ids) == 0 {
				return err
			}
			if _, err := tx.EventDelivery.Delete().Where(eventdelivery.EventIDIn(ids...)).Exec(ctx); err != nil {
				return err
			}
			n, err = tx.OrderEvent.Delete().Where(orderevent.IDIn(ids...)).Exec(ctx)
			return err
		})
		if err != nil {
			return total, stock.Classify("delete delivered order events", err)
		}
		total += n
		if n < retainBatch {
			break
		}
	}
	return total, nil
}

// allDelivered keeps events with no delivery other than DELIVERED.
func allDelivered(s *sql.Selector) {
	t := sql.Table(eventdelivery.Table)
	s.Where(sql.NotExists(sql.Select(t.C(eventdelivery.FieldID)).From(t).Where(sql.And(
		sql.ColumnsEQ(t.C(eventdelivery.EventColumn), s.C(orderevent.FieldID)),
		sql.NEQ(t.C(eventdelivery.FieldStatus), eventdelivery.StatusDELIVERED),
	))))
}
