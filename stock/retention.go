package stock

import (
	"context"
	"time"

	"entgo.io/ent/dialect/sql"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/holdkey"
	"flashsale/ent/order"
	"flashsale/ent/paymentevent"
)

// PurgeResult counts what one Purge deleted.
type PurgeResult struct {
	Holds, PaymentEvents int
}

// purgeBatch is how many rows one purge transaction deletes: small enough
// that no table is locked for long while a sale runs.
const purgeBatch = 1000

// maxPurgeRounds bounds one Purge; the next run goes on.
const maxPurgeRounds = 50

// Purge deletes, in batches of their own transactions, what is older than
// retention and no longer matters to stock: holds that expired or were
// released without ever becoming an order (with their idempotency keys;
// holds that became orders stay with them), and payment-event audit rows
// (a provider's redelivery of a key that old finds its order decided, and
// is ignored or applied as the transition table says).
func (s *Service) Purge(ctx context.Context, retention time.Duration) (PurgeResult, error) {
	var res PurgeResult
	now, err := s.Now(ctx)
	if err != nil {
		return res, err
	}
	cutoff := now.Add(-retention)
	for range maxPurgeRounds {
		n, err := s.purgeHolds(ctx, cutoff)
		res.Holds += n
		if err != nil {
			return res, classify("delete old holds", err)
		}
		if n < purgeBatch {
			break
		}
	}
	for range maxPurgeRounds {
		n, err := s.purgePaymentEvents(ctx, cutoff)
		res.PaymentEvents += n
		if err != nil {
			return res, classify("delete old payment events", err)
		}
		if n < purgeBatch {
			break
		}
	}
	return res, nil
}

// purgeHolds deletes one batch of lapsed holds without orders.
func (s *Service) purgeHolds(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	err := s.tx(ctx, "delete old holds", func(tx *ent.Tx) error {
		ids, err := tx.Hold.Query().
			Where(hold.StatusIn(hold.StatusEXPIRED, hold.StatusRELEASED), hold.ExpiresAtLT(cutoff), withoutOrder).
			Limit(purgeBatch).IDs(ctx)
		if err != nil || len(ids) == 0 {
			return err
		}
		if _, err := tx.HoldKey.Delete().Where(holdkey.HoldIDIn(ids...)).Exec(ctx); err != nil {
			return err
		}
		n, err = tx.Hold.Delete().Where(hold.IDIn(ids...)).Exec(ctx)
		return err
	})
	return n, err
}

// withoutOrder keeps holds no order was made from.
func withoutOrder(s *sql.Selector) {
	t := sql.Table(order.Table)
	s.Where(sql.NotExists(sql.Select(t.C(order.FieldID)).From(t).Where(sql.ColumnsEQ(t.C(order.FieldHoldID), s.C(hold.FieldID)))))
}

// purgePaymentEvents deletes one batch of payment events older than cutoff.
func (s *Service) purgePaymentEvents(ctx context.Context, cutoff time.Time) (int, error) {
	ids, err := s.client.PaymentEvent.Query().Where(paymentevent.CreatedAtLT(cutoff)).
		Order(paymentevent.ByCreatedAt()).Limit(purgeBatch).IDs(ctx)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	return s.client.PaymentEvent.Delete().Where(paymentevent.IDIn(ids...)).Exec(ctx)
}
