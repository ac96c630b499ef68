package stock

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"entgo.io/ent/dialect/sql"
	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/product"
)

// CreateHold reserves qty units of a product for the hold TTL.
//
// Concurrent calls for one product are committed together (holdBatch). It
// refuses with ErrInsufficientStock when sellable stock is short; before
// refusing, the batch releases the product's overdue holds and orders, so
// stock that has lapsed is sold again without waiting for the sweeper. A
// product this process just saw sold out is refused without a database
// round trip for a short while (soldOutRecheck).
//
// A caller that leaves before its answer may still get its hold committed;
// nobody learns its ID, so it simply expires after the hold TTL.
func (s *Service) CreateHold(ctx context.Context, productID, qty int) (*ent.Hold, error) {
	if qty < 1 || qty > s.cfg.MaxHoldQty {
		return nil, InvalidInput("qty must be between 1 and %d", s.cfg.MaxHoldQty)
	}
	if s.soldOut(productID) {
		return nil, fmt.Errorf("%w: %d requested, product is sold out", ErrInsufficientStock, qty)
	}
	return s.holds.do(ctx, productID, qty)
}

// holdBatch is one transaction for concurrent holds of a product: lock the
// row, admit requests in arrival order while sellable stock lasts, insert
// all their holds in one statement and update the product once.
func (s *Service) holdBatch(ctx context.Context, productID int, qtys []int) []result[*ent.Hold] {
	var (
		results []result[*ent.Hold]
		changed *ent.Product
	)
	err := s.tx(ctx, "create hold", func(tx *ent.Tx) error {
		results = make([]result[*ent.Hold], len(qtys))
		p, now, err := s.lockProduct(ctx, tx, productID)
		if err != nil {
			return err
		}
		want := 0
		for _, q := range qtys {
			want += q
		}
		if Sellable(p) < want {
			// Lapsed holds may be what stands between these buyers and the stock.
			if _, _, err := s.releaseOverdue(ctx, tx, p, now, s.cfg.SweepBatch); err != nil {
				return err
			}
		}
		// A request that does not fit is refused without stopping smaller
		// ones behind it, as if each had run alone at its turn.
		builders := make([]*ent.HoldCreate, 0, len(qtys))
		admitted := make([]int, 0, len(qtys))
		taken := 0
		for i, q := range qtys {
			if left := Sellable(p) - taken; q > left {
				results[i].err = fmt.Errorf("%w: %d requested, %d sellable", ErrInsufficientStock, q, max(left, 0))
				continue
			}
			taken += q
			admitted = append(admitted, i)
			builders = append(builders, tx.Hold.Create().
				SetProductID(p.ID).SetQty(q).SetStatus(hold.StatusACTIVE).
				SetExpiresAt(now.Add(s.cfg.HoldTTL)).SetCreatedAt(now).SetUpdatedAt(now))
		}
		changed = p
		if taken == 0 {
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
			results[i].out = holds[j]
		}
		return nil
	})
	if err != nil {
		return fail[*ent.Hold](len(qtys), err)
	}
	s.productChanged(changed)
	return results
}

// priceColumn carries a hold's product price in orderBatch's locking read.
const priceColumn = "unit_price_cents"

// withPrice adds the product's price to a read of holds, from a subquery
// that takes no lock (MySQL and MariaDB lock only the rows of the outer
// SELECT ... FOR UPDATE): an order never waits for the product's row, and
// needs no round trip of its own for the price.
func withPrice(sel *sql.Selector) {
	sel.AppendSelectExprAs(sql.Raw(fmt.Sprintf("(SELECT `%s` FROM `%s` WHERE `%s`.`%s` = %s)",
		product.FieldPriceCents, product.Table, product.Table, product.FieldID, sel.C(hold.FieldProductID))), priceColumn)
}

// priceOf returns the price read by withPrice.
func priceOf(h *ent.Hold) (int64, error) {
	v, err := h.Value(priceColumn)
	if err != nil {
		return 0, err
	}
	switch p := v.(type) {
	case int64:
		return p, nil
	case []byte: // a driver that returns integers as text
		return strconv.ParseInt(string(p), 10, 64)
	}
	return 0, fmt.Errorf("price of hold %s: got %T", h.ID, v)
}

// CreateOrder turns an ACTIVE, unexpired hold into a PENDING_PAYMENT order.
// The hold's units stay reserved, now for the order, so no product counter
// changes and the product's row is not locked: orders never queue behind
// the hold batches of a hot product. Concurrent calls are committed
// together (orderBatch).
//
// A hold past its expires_at is refused with ErrHoldExpired even before the
// sweeper saw it; the refusal changes nothing (the sweeper releases it). A
// caller that leaves before its answer may still get its order committed;
// a retry then gets ErrHoldNotActive, and the hold shows the order.
func (s *Service) CreateOrder(ctx context.Context, holdID uuid.UUID) (*ent.Order, error) {
	return s.orders.do(ctx, orderShard(holdID), holdID)
}

// orderBatch is one transaction for concurrent createOrder calls: lock
// their holds (by ID, reading the database clock once the locks are held,
// and the price without a lock), decide each call in arrival order, insert
// all orders in one statement and mark their holds REDEEMED in another.
func (s *Service) orderBatch(ctx context.Context, _ int, holdIDs []uuid.UUID) []result[*ent.Order] {
	var results []result[*ent.Order]
	err := s.tx(ctx, "create order", func(tx *ent.Tx) error {
		results = make([]result[*ent.Order], len(holdIDs))
		hs, now, err := s.lockHolds(ctx, tx, holdIDs, withPrice)
		if err != nil {
			return err
		}
		byID := make(map[uuid.UUID]*ent.Hold, len(hs))
		for _, h := range hs {
			byID[h.ID] = h
		}
		builders := make([]*ent.OrderCreate, 0, len(holdIDs))
		admitted := make([]int, 0, len(holdIDs))
		redeemed := make([]uuid.UUID, 0, len(holdIDs))
		for i, id := range holdIDs {
			h := byID[id]
			switch {
			case h == nil:
				results[i].err = fmt.Errorf("%w: no hold with ID %s", ErrNotFound, id)
				continue
			case h.Status == hold.StatusEXPIRED:
				results[i].err = fmt.Errorf("%w: hold expired at %s", ErrHoldExpired, h.ExpiresAt.UTC().Format(time.RFC3339))
				continue
			case h.Status != hold.StatusACTIVE:
				// REDEEMED or RELEASED, or redeemed earlier in this batch.
				results[i].err = fmt.Errorf("%w: hold is %s", ErrHoldNotActive, h.Status)
				continue
			case !now.Before(h.ExpiresAt):
				results[i].err = fmt.Errorf("%w: hold expired at %s", ErrHoldExpired, h.ExpiresAt.UTC().Format(time.RFC3339))
				continue
			}
			h.Status = hold.StatusREDEEMED // a second call for it in this batch is refused
			h.UpdatedAt = now
			admitted = append(admitted, i)
			redeemed = append(redeemed, h.ID)
			price, err := priceOf(h)
			if err != nil {
				return err
			}
			builders = append(builders, tx.Order.Create().
				SetHoldID(h.ID).SetProductID(h.ProductID).SetQty(h.Qty).
				SetAmountCents(price*int64(h.Qty)).
				SetStatus(order.StatusPENDING_PAYMENT).
				SetPaymentDueAt(now.Add(s.cfg.PaymentTimeout)).
				SetCreatedAt(now).SetUpdatedAt(now))
		}
		if len(builders) == 0 {
			return nil
		}
		os, err := tx.Order.CreateBulk(builders...).Save(ctx)
		if err != nil {
			return err
		}
		if err := tx.Hold.Update().Where(hold.IDIn(redeemed...)).
			SetStatus(hold.StatusREDEEMED).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
		for j, i := range admitted {
			os[j].Edges.Hold = byID[os[j].HoldID]
			results[i].out = os[j]
		}
		return nil
	})
	if err != nil {
		return fail[*ent.Order](len(holdIDs), err)
	}
	return results
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
