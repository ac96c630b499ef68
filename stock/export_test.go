package stock

import "github.com/google/uuid"

// BatchStats is how many batches and calls a kind of request ran.
type BatchStats struct{ Batches, Calls int64 }

// Test hooks into the group commit (batch.go).

func (s *Service) HoldBatches() BatchStats  { return stats(s.holds) }
func (s *Service) OrderBatches() BatchStats { return stats(s.orders) }
func (s *Service) PaymentBatches() BatchStats {
	return stats(s.payments)
}
func (s *Service) JoinBatches() BatchStats { return stats(s.joins) }

func stats[In, Out any](b *batcher[In, Out]) BatchStats {
	return BatchStats{Batches: b.batches.Load(), Calls: b.calls.Load()}
}

// OrdersWaiting and PaymentsWaiting count the calls queued behind the batch
// under way in a hold's order queue, or in the payment queue.
func (s *Service) OrdersWaiting(holdID uuid.UUID) int { return s.orders.waiting(orderShard(holdID)) }
func (s *Service) PaymentsWaiting() int               { return s.payments.waiting(0) }

// OrderShard is the order queue a hold's createOrder goes to.
func OrderShard(holdID uuid.UUID) int { return orderShard(holdID) }
