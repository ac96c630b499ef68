package stock

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
)

// CreateHold reserves qty units of a product for the hold TTL.
//
// Concurrent calls for one product are committed together (see batch.go).
// It refuses with ErrInsufficientStock when sellable stock is short; before
// refusing, the batch releases the product's overdue holds and orders, so
// stock that has lapsed is sold again without waiting for the sweeper. A
// product this process just saw sold out is refused without a database
// round trip for a short while (soldOutRecheck).
func (s *Service) CreateHold(ctx context.Context, productID, qty int) (*ent.Hold, error) {
	if qty < 1 || qty > s.cfg.MaxHoldQty {
		return nil, InvalidInput("qty must be between 1 and %d", s.cfg.MaxHoldQty)
	}
	if s.soldOut(productID) {
		return nil, fmt.Errorf("%w: %d requested, product is sold out", ErrInsufficientStock, qty)
	}
	req := &holdRequest{ctx: ctx, qty: qty, done: make(chan holdResult, 1)}
	if err := s.enqueue(productID, req); err != nil {
		return nil, err
	}
	select {
	case r := <-req.done:
		return r.hold, r.err
	case <-ctx.Done():
		// The batch may still commit this hold; nobody learns its ID, so it
		// simply expires after the hold TTL.
		return nil, classify("create hold", ctx.Err())
	}
}

// CreateOrder turns an ACTIVE, unexpired hold into a PENDING_PAYMENT order.
// The hold's units stay reserved, now for the order. A hold past its
// expires_at is refused with ErrHoldExpired even before the sweeper saw it;
// the refusal changes nothing (the sweeper releases it).
func (s *Service) CreateOrder(ctx context.Context, holdID uuid.UUID) (*ent.Order, error) {
	// The hold's product never changes, so it can be read before locking:
	// the product's lock must come first.
	h0, err := s.client.Hold.Get(ctx, holdID)
	if ent.IsNotFound(err) {
		return nil, fmt.Errorf("%w: no hold with ID %s", ErrNotFound, holdID)
	}
	if err != nil {
		return nil, classify("create order", err)
	}
	var o *ent.Order
	err = s.tx(ctx, "create order", func(tx *ent.Tx) error {
		p, now, err := s.lockProduct(ctx, tx, h0.ProductID)
		if err != nil {
			return err
		}
		h, err := s.lockHold(tx.Hold.Query().Where(hold.ID(holdID))).Only(ctx)
		if err != nil {
			return err
		}
		switch h.Status {
		case hold.StatusEXPIRED:
			return fmt.Errorf("%w: hold expired at %s", ErrHoldExpired, h.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z07:00"))
		case hold.StatusREDEEMED, hold.StatusRELEASED:
			return fmt.Errorf("%w: hold is %s", ErrHoldNotActive, h.Status)
		}
		if !now.Before(h.ExpiresAt) {
			return fmt.Errorf("%w: hold expired at %s", ErrHoldExpired, h.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z07:00"))
		}
		o, err = tx.Order.Create().
			SetHoldID(h.ID).SetProductID(p.ID).SetQty(h.Qty).
			SetAmountCents(p.PriceCents * int64(h.Qty)).
			SetStatus(order.StatusPENDING_PAYMENT).
			SetPaymentDueAt(now.Add(s.cfg.PaymentTimeout)).
			SetCreatedAt(now).SetUpdatedAt(now).
			Save(ctx)
		if err != nil {
			return err
		}
		h, err = h.Update().SetStatus(hold.StatusREDEEMED).SetUpdatedAt(now).Save(ctx)
		if err != nil {
			return err
		}
		h.Edges.Product = p
		o.Edges.Hold = h
		o.Edges.Product = p
		return nil
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Hold returns a hold, or ErrNotFound.
func (s *Service) Hold(ctx context.Context, id uuid.UUID) (*ent.Hold, error) {
	h, err := s.client.Hold.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, ErrNotFound
	}
	return h, classify("get hold", err)
}

// Order returns an order, or ErrNotFound.
func (s *Service) Order(ctx context.Context, id uuid.UUID) (*ent.Order, error) {
	o, err := s.client.Order.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, ErrNotFound
	}
	return o, classify("get order", err)
}

// OrderOfHold returns the order made from a hold, or nil if there is none.
func (s *Service) OrderOfHold(ctx context.Context, holdID uuid.UUID) (*ent.Order, error) {
	o, err := s.client.Order.Query().Where(order.HoldID(holdID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return o, classify("get order of hold", err)
}
