package stock

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"flashsale/audit"
	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/product"
	"flashsale/ent/stockadjustment"
)

// maxReasonLen bounds an adjustment's reason (the column is VARCHAR(2000)).
const maxReasonLen = 2000

// Change is one field of an update: left out (Set false) keeps the stored
// value; Set with a nil Value clears it.
type Change[T any] struct {
	Set   bool
	Value *T
}

// To returns a Change that sets v.
func To[T any](v T) Change[T] { return Change[T]{Set: true, Value: &v} }

// Cleared returns a Change that clears the field.
func Cleared[T any]() Change[T] { return Change[T]{Set: true} }

// ProductUpdate is the input of UpdateProduct. Name and PriceCents cannot be
// cleared.
type ProductUpdate struct {
	Name           Change[string]
	PriceCents     Change[int64]
	MaxPerCustomer Change[int]
	SaleStartsAt   Change[time.Time]
	SaleEndsAt     Change[time.Time]
	// QueueAdmitPerMinute turns the waiting room on, changes its rate, or
	// (cleared) turns it off: holds then need no ticket.
	QueueAdmitPerMinute Change[int]
}

// UpdateProduct changes a product's name, price, limit or sale window under
// the product's lock, so no hold is decided with half of a change.
//
//   - A new price applies to orders created after it; orders already made
//     keep the amount they were created with.
//   - A new or lower maxPerCustomer is refused when a buyer already has
//     more units held, pending or paid than it allows (a customer's add up;
//     an anonymous hold or order is its own buyer): the per-customer
//     invariant holds at every commit. Overdue holds and orders are
//     released first, so only live ones count.
//   - A new sale window is judged by the database clock from the next hold
//     on; holds already made stay valid.
//
// act goes in the operator action log with the product before and after,
// in the change's transaction (nil: not an operator's change).
func (s *Service) UpdateProduct(ctx context.Context, act *audit.Action, id int, in ProductUpdate) (*ent.Product, error) {
	in, err := in.checked()
	if err != nil {
		return nil, err
	}
	var p *ent.Product
	err = s.tx(ctx, "update product", func(tx *ent.Tx) error {
		var now time.Time
		if p, now, err = s.lockProduct(ctx, tx, id); err != nil {
			return err
		}
		starts, ends := p.SaleStartsAt, p.SaleEndsAt
		if in.SaleStartsAt.Set {
			starts = in.SaleStartsAt.Value
		}
		if in.SaleEndsAt.Set {
			ends = in.SaleEndsAt.Value
		}
		if err := checkWindow(starts, ends); err != nil {
			return err
		}
		if v := in.MaxPerCustomer.Value; v != nil && (p.MaxPerCustomer == nil || *v < *p.MaxPerCustomer) {
			if err := s.checkLowerLimit(ctx, tx, p, now, *v); err != nil {
				return err
			}
		}
		// After any release in checkLowerLimit: the row this change applies to.
		before := audit.Snapshot(p)
		// The new state is the locked row with the changes applied; it is
		// written whole, and not read back (on Galera a read after the
		// write may be served before it).
		if in.Name.Set {
			p.Name = *in.Name.Value
		}
		if in.PriceCents.Set {
			p.PriceCents = *in.PriceCents.Value
		}
		if in.MaxPerCustomer.Set {
			p.MaxPerCustomer = in.MaxPerCustomer.Value
		}
		if in.QueueAdmitPerMinute.Set {
			p.QueueAdmitPerMinute = in.QueueAdmitPerMinute.Value
		}
		p.SaleStartsAt, p.SaleEndsAt, p.UpdatedAt = starts, ends, now
		if err := writeProduct(ctx, tx, p); err != nil {
			return err
		}
		return audit.Record(ctx, tx, act, now, before, audit.Snapshot(p))
	})
	if err != nil {
		return nil, err
	}
	s.productChanged(p)
	return p, nil
}

// checked refuses what no product may have (a null name or price, a bad
// value) and returns the update with its values in stored form.
func (in ProductUpdate) checked() (ProductUpdate, error) {
	if in.Name.Set {
		if in.Name.Value == nil {
			return in, InvalidInput("name cannot be null")
		}
		n, err := productName(*in.Name.Value)
		if err != nil {
			return in, err
		}
		in.Name.Value = &n
	}
	if in.PriceCents.Set {
		if in.PriceCents.Value == nil {
			return in, InvalidInput("priceCents cannot be null")
		}
		if err := checkPrice(*in.PriceCents.Value); err != nil {
			return in, err
		}
	}
	if in.MaxPerCustomer.Set {
		if err := checkMaxPerCustomer(in.MaxPerCustomer.Value); err != nil {
			return in, err
		}
	}
	if in.QueueAdmitPerMinute.Set {
		if err := checkQueueRate(in.QueueAdmitPerMinute.Value); err != nil {
			return in, err
		}
	}
	in.SaleStartsAt.Value = stored(in.SaleStartsAt.Value)
	in.SaleEndsAt.Value = stored(in.SaleEndsAt.Value)
	return in, nil
}

// checkLowerLimit refuses a maxPerCustomer below what one buyer of p
// already holds, has pending or bought, once lapsed holds and orders are
// released (only live ones count).
func (s *Service) checkLowerLimit(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time, limit int) error {
	if err := s.releaseOverdueNow(ctx, tx, p, now); err != nil {
		return err
	}
	most, err := mostUnitsOfABuyer(ctx, tx, p.ID)
	if err != nil {
		return err
	}
	if most > limit {
		return InvalidInput("maxPerCustomer %d is below the %d units one buyer already holds, has pending or bought; it must be at least %d", limit, most, most)
	}
	return nil
}

// writeProduct writes p's name, price, limit, sale window and waiting
// room rate as they are.
func writeProduct(ctx context.Context, tx *ent.Tx, p *ent.Product) error {
	u := tx.Product.Update().Where(product.ID(p.ID)).
		SetName(p.Name).SetPriceCents(p.PriceCents).SetUpdatedAt(p.UpdatedAt).
		SetNillableMaxPerCustomer(p.MaxPerCustomer).SetNillableSaleStartsAt(p.SaleStartsAt).SetNillableSaleEndsAt(p.SaleEndsAt).
		SetNillableQueueAdmitPerMinute(p.QueueAdmitPerMinute)
	if p.MaxPerCustomer == nil {
		u.ClearMaxPerCustomer()
	}
	if p.QueueAdmitPerMinute == nil {
		u.ClearQueueAdmitPerMinute()
	}
	if p.SaleStartsAt == nil {
		u.ClearSaleStartsAt()
	}
	if p.SaleEndsAt == nil {
		u.ClearSaleEndsAt()
	}
	return u.Exec(ctx)
}

// mostUnitsOfABuyer returns the most units any one buyer of the product
// holds, has pending or bought (0 when none): a customer's units add up
// (customerUnits); an anonymous hold or order is its own buyer. The caller
// holds the product's lock.
func mostUnitsOfABuyer(ctx context.Context, tx *ent.Tx, productID int) (int, error) {
	units, err := customerUnits(ctx, tx, productID, nil)
	if err != nil {
		return 0, err
	}
	anonHold, err := tx.Hold.Query().
		Where(hold.ProductID(productID), hold.StatusEQ(hold.StatusACTIVE), hold.CustomerID("")).
		Order(ent.Desc(hold.FieldQty)).Limit(1).Select(hold.FieldQty).Ints(ctx)
	if err != nil {
		return 0, err
	}
	anonOrder, err := tx.Order.Query().
		Where(order.ProductID(productID), order.StatusIn(order.StatusPENDING_PAYMENT, order.StatusPAID), order.CustomerID("")).
		Order(ent.Desc(order.FieldQty)).Limit(1).Select(order.FieldQty).Ints(ctx)
	if err != nil {
		return 0, err
	}
	most := 0
	for _, n := range units {
		most = max(most, n)
	}
	for _, n := range append(anonHold, anonOrder...) {
		most = max(most, n)
	}
	return most, nil
}

// AdjustStock restocks (delta > 0) or withdraws unsold units (delta < 0)
// of a product, under its lock, and records the adjustment with its reason
// and the database's time. A withdrawal may take only sellable units: held
// and pending ones belong to buyers (overdue ones are released first), so
// it is refused with ErrInsufficientStock when sellable would go below 0.
// act goes in the operator action log with the product before and after,
// in the change's transaction (nil: not an operator's change).
func (s *Service) AdjustStock(ctx context.Context, act *audit.Action, productID, delta int, reason string) (*ent.Product, error) {
	reason = strings.TrimSpace(reason)
	switch {
	case delta == 0:
		return nil, InvalidInput("delta must not be 0")
	case delta < -maxStock || delta > maxStock:
		return nil, InvalidInput("delta must be between %d and %d", -maxStock, maxStock)
	case reason == "":
		return nil, InvalidInput("reason must not be empty")
	case !utf8.ValidString(reason) || utf8.RuneCountInString(reason) > maxReasonLen:
		return nil, InvalidInput("reason must be at most %d characters of valid UTF-8", maxReasonLen)
	case strings.ContainsFunc(reason, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }):
		return nil, InvalidInput("reason must not contain control characters other than newlines and tabs")
	}
	var p *ent.Product
	err := s.tx(ctx, "adjust stock", func(tx *ent.Tx) error {
		var (
			now time.Time
			err error
		)
		p, now, err = s.lockProduct(ctx, tx, productID)
		if err != nil {
			return err
		}
		if Sellable(p)+delta < 0 {
			if err := s.releaseOverdueNow(ctx, tx, p, now); err != nil {
				return err
			}
			if sellable := Sellable(p); sellable+delta < 0 {
				return fmt.Errorf("%w: cannot withdraw %d units from product %d, only %d are sellable (the rest are held or awaiting payment)", ErrInsufficientStock, -delta, p.ID, sellable)
			}
		}
		if p.StockAvailable+delta > maxStock {
			return InvalidInput("stockAvailable would be %d, over the %d limit", p.StockAvailable+delta, maxStock)
		}
		// After any release above: the log's before is the row this change
		// applied to, so one product's entries chain.
		before := audit.Snapshot(p)
		if err := tx.StockAdjustment.Create().
			SetProductID(p.ID).SetDelta(delta).SetReason(reason).SetCreatedAt(now).
			Exec(ctx); err != nil {
			return err
		}
		p.StockAvailable += delta
		p.StockReceived += delta
		p.UpdatedAt = now
		if err := tx.Product.Update().Where(product.ID(p.ID)).
			AddStockAvailable(delta).AddStockReceived(delta).SetUpdatedAt(now).
			Exec(ctx); err != nil {
			return err
		}
		return audit.Record(ctx, tx, act, now, before, audit.Snapshot(p))
	})
	if err != nil {
		return nil, err
	}
	s.productChanged(p)
	return p, nil
}

// Adjustments returns a product's stock adjustments, oldest first (its
// initial stock is the first).
func (s *Service) Adjustments(ctx context.Context, productID int) ([]*ent.StockAdjustment, error) {
	as, err := s.client.StockAdjustment.Query().
		Where(stockadjustment.ProductID(productID)).
		Order(stockadjustment.ByID()).All(ctx)
	return as, classify("list stock adjustments", err)
}

// OrderFilter narrows Orders; a nil field does not filter.
type OrderFilter struct {
	ProductID *int
	Status    *order.Status
}

// Orders returns up to first orders matching f with an ID above after
// (uuid.Nil: from the start), oldest first, and whether more follow: the
// operator's list of orders to fulfil. Order IDs are UUIDv7, so their order
// is their creation order.
func (s *Service) Orders(ctx context.Context, f OrderFilter, first int, after uuid.UUID) ([]*ent.Order, bool, error) {
	if err := CheckFirst(first); err != nil {
		return nil, false, err
	}
	q := s.client.Order.Query()
	if f.ProductID != nil {
		q = q.Where(order.ProductID(*f.ProductID))
	}
	if f.Status != nil {
		q = q.Where(order.StatusEQ(*f.Status))
	}
	if after != uuid.Nil {
		q = q.Where(order.IDGT(after))
	}
	os, err := q.Order(order.ByID()).Limit(first + 1).All(ctx)
	if err != nil {
		return nil, false, classify("list orders", err)
	}
	return page(os, first)
}
