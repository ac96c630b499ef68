package stock

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"flashsale/ent"
	"flashsale/ent/hold"
)

// Group commit for holds.
//
// In a flash sale every buyer wants the same product row. One transaction
// per hold makes each buyer wait for the previous one's lock hand-off and
// commit, which caps a product at a few thousand holds a second. Instead,
// CreateHold queues its request on the product, and one goroutine per busy
// product drains the queue: each batch is whatever queued while the
// previous batch was committing (no timer, no added latency when idle), and
// runs as one transaction that locks the product row, admits requests in
// arrival order while sellable stock lasts, inserts all their holds in one
// statement and updates the product once. Each caller gets its own answer.
// The row lock still serializes batches across server processes, so the
// invariants hold exactly as with one transaction per hold.

const (
	// maxBatch caps one batch: one INSERT of this many rows stays small.
	maxBatch = 256
	// maxQueue caps the requests waiting on one product; beyond it callers
	// get ErrUnavailable at once instead of an unbounded queue.
	maxQueue = 8192
	// batchTimeout bounds one batch transaction, whoever is waiting on it.
	batchTimeout = 10 * time.Second
)

type holdRequest struct {
	ctx  context.Context
	qty  int
	done chan holdResult // buffered: the batch never blocks on a caller
}

type holdResult struct {
	hold *ent.Hold
	err  error
}

// holdQueue is one product's waiting requests.
type holdQueue struct {
	mu      sync.Mutex
	pending []*holdRequest
	running bool // a drain goroutine owns the queue
}

// enqueue adds req to the product's queue and starts a drain if none runs.
func (s *Service) enqueue(productID int, req *holdRequest) error {
	v, _ := s.queues.LoadOrStore(productID, &holdQueue{})
	q := v.(*holdQueue)
	q.mu.Lock()
	if len(q.pending) >= maxQueue {
		q.mu.Unlock()
		return fmt.Errorf("create hold: %w: %d holds already waiting on product %d", ErrUnavailable, maxQueue, productID)
	}
	q.pending = append(q.pending, req)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go s.drain(productID, q)
	}
	return nil
}

// drain runs batches until the queue is empty.
func (s *Service) drain(productID int, q *holdQueue) {
	for {
		q.mu.Lock()
		n := min(len(q.pending), maxBatch)
		if n == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		batch := make([]*holdRequest, n)
		copy(batch, q.pending)
		q.pending = append(q.pending[:0], q.pending[n:]...)
		q.mu.Unlock()
		s.holdBatch(productID, batch)
	}
}

// holdBatch runs one batch transaction and answers every request in it.
func (s *Service) holdBatch(productID int, batch []*holdRequest) {
	defer func() {
		// A bug here must not leave the product's queue stuck: answer
		// whoever has no answer yet, and let the drain go on.
		if v := recover(); v != nil {
			s.log.Error("create hold: panic in batch", "product_id", productID, "panic", v, "stack", string(debug.Stack()))
			for _, r := range batch {
				select {
				case r.done <- holdResult{err: fmt.Errorf("create hold: batch failed: %v", v)}:
				default: // already answered
				}
			}
		}
	}()
	// Callers that gave up while queued are not served.
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- holdResult{err: classify("create hold", err)}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(live[0].ctx), batchTimeout)
	defer cancel()

	results := make([]holdResult, len(live))
	var product *ent.Product
	err := s.tx(ctx, "create hold", func(tx *ent.Tx) error {
		p, now, err := s.lockProduct(ctx, tx, productID)
		if err != nil {
			return err
		}
		want := 0
		for _, r := range live {
			want += r.qty
		}
		if Sellable(p) < want {
			// Lapsed holds may be what stands between these buyers and the stock.
			if _, _, err := s.releaseOverdue(ctx, tx, p, now, s.cfg.SweepBatch); err != nil {
				return err
			}
		}
		// Admit in arrival order while stock lasts; a request that does not
		// fit is refused without stopping smaller ones behind it, as if each
		// had run alone at its turn.
		builders := make([]*ent.HoldCreate, 0, len(live))
		admitted := make([]int, 0, len(live))
		taken := 0
		for i, r := range live {
			if left := Sellable(p) - taken; r.qty > left {
				results[i] = holdResult{err: fmt.Errorf("%w: %d requested, %d sellable", ErrInsufficientStock, r.qty, max(left, 0))}
				continue
			}
			taken += r.qty
			admitted = append(admitted, i)
			builders = append(builders, tx.Hold.Create().
				SetProductID(p.ID).SetQty(r.qty).SetStatus(hold.StatusACTIVE).
				SetExpiresAt(now.Add(s.cfg.HoldTTL)).SetCreatedAt(now).SetUpdatedAt(now))
		}
		if taken == 0 {
			product = p
			return nil
		}
		holds, err := tx.Hold.CreateBulk(builders...).Save(ctx)
		if err != nil {
			return err
		}
		if err := tx.Product.UpdateOneID(p.ID).AddStockReserved(taken).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
		p.StockReserved += taken
		p.UpdatedAt = now
		for j, i := range admitted {
			holds[j].Edges.Product = p
			results[i] = holdResult{hold: holds[j]}
		}
		product = p
		return nil
	})
	if err != nil {
		for _, r := range live {
			r.done <- holdResult{err: err}
		}
		return
	}
	s.productChanged(product)
	for i, r := range live {
		r.done <- results[i]
	}
}
