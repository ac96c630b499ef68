package stock

import (
	"context"
	"slices"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
)

// SweepResult counts what one sweep released.
type SweepResult struct {
	HoldsExpired    int
	OrdersCancelled int
}

// maxSweepRounds bounds one sweep's work; the next sweep picks up the rest.
const maxSweepRounds = 20

// Sweep expires ACTIVE holds past expires_at and cancels PENDING_PAYMENT
// orders older than the payment timeout, freeing their stock.
//
// It finds candidates with a plain read, then releases each product's
// overdue rows in one transaction under that product's lock, re-checking
// them there. Several sweepers (on several servers) may run at once: the
// second to take a product's lock finds nothing left to release, so no hold
// is released twice. Everything it needs is in the database, so a restarted
// server releases all that fell due while it was down on its first sweep.
func (s *Service) Sweep(ctx context.Context) (SweepResult, error) {
	var total SweepResult
	for range maxSweepRounds {
		products, err := s.overdueProducts(ctx)
		if err != nil {
			return total, classify("sweep", err)
		}
		if len(products) == 0 {
			return total, nil
		}
		for _, id := range products {
			var (
				hs, os  int
				product *ent.Product
			)
			err := s.tx(ctx, "sweep", func(tx *ent.Tx) error {
				p, now, err := s.lockProduct(ctx, tx, id)
				if err != nil {
					return err
				}
				ob := s.newOutbox(tx)
				var cancelled []uuid.UUID
				if hs, cancelled, err = s.releaseOverdue(ctx, tx, ob, p, now, s.cfg.SweepBatch); err != nil {
					return err
				}
				os = len(cancelled)
				product = p
				return ob.flush(ctx)
			})
			if err != nil {
				return total, err
			}
			if hs+os > 0 {
				s.productChanged(product)
			}
			s.observer.Released("hold", hs)
			s.observer.Released("order", os)
			total.HoldsExpired += hs
			total.OrdersCancelled += os
		}
	}
	return total, nil
}

// overdueProducts returns the IDs of products that have overdue holds or
// orders, judged by the database clock.
func (s *Service) overdueProducts(ctx context.Context) ([]int, error) {
	now, err := s.now(ctx, s.client)
	if err != nil {
		return nil, err
	}
	ids, err := s.client.Hold.Query().
		Where(hold.StatusEQ(hold.StatusACTIVE), hold.ExpiresAtLTE(now)).
		Limit(s.cfg.SweepBatch).
		Select(hold.FieldProductID).Ints(ctx)
	if err != nil {
		return nil, err
	}
	orders, err := s.client.Order.Query().
		Where(order.StatusEQ(order.StatusPENDING_PAYMENT), order.PaymentDueAtLTE(now)).
		Limit(s.cfg.SweepBatch).
		Select(order.FieldProductID).Ints(ctx)
	if err != nil {
		return nil, err
	}
	ids = append(ids, orders...)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}
