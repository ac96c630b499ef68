package stock

import (
	"context"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"flashsale/audit"
	"flashsale/ent"
	"flashsale/ent/product"
)

// Limits on operator input, well inside the columns' ranges.
const (
	maxNameLen    = 200
	maxPriceCents = 1_000_000_000_00 // one billion in major units
	maxStock      = 1_000_000_000
)

// NewProduct is the input of CreateProduct.
type NewProduct struct {
	Name           string
	PriceCents     int64
	Stock          int
	MaxPerCustomer *int       // nil: no limit
	SaleStartsAt   *time.Time // nil: open now
	SaleEndsAt     *time.Time // nil: no end
	// QueueAdmitPerMinute turns the waiting room on (nil: none).
	QueueAdmitPerMinute *int
}

// initialStock is the reason of a product's first adjustment.
const initialStock = "initial stock"

// CreateProduct adds a product with its initial stock, recorded as its
// first stock adjustment, and act in the operator action log (nil: not an
// operator's, e.g. the demo products).
func (s *Service) CreateProduct(ctx context.Context, act *audit.Action, in NewProduct) (*ent.Product, error) {
	name, err := productName(in.Name)
	if err != nil {
		return nil, err
	}
	if err := checkPrice(in.PriceCents); err != nil {
		return nil, err
	}
	if in.Stock < 0 || in.Stock > maxStock {
		return nil, InvalidInput("stock must be between 0 and %d", maxStock)
	}
	if err := checkMaxPerCustomer(in.MaxPerCustomer); err != nil {
		return nil, err
	}
	if err := checkQueueRate(in.QueueAdmitPerMinute); err != nil {
		return nil, err
	}
	if err := checkWindow(in.SaleStartsAt, in.SaleEndsAt); err != nil {
		return nil, err
	}
	var p *ent.Product
	err = s.tx(ctx, "create product", func(tx *ent.Tx) error {
		now, err := s.now(ctx, tx)
		if err != nil {
			return err
		}
		p, err = tx.Product.Create().
			SetName(name).SetPriceCents(in.PriceCents).SetStockReceived(in.Stock).SetStockAvailable(in.Stock).
			SetNillableMaxPerCustomer(in.MaxPerCustomer).SetNillableQueueAdmitPerMinute(in.QueueAdmitPerMinute).
			SetNillableSaleStartsAt(stored(in.SaleStartsAt)).SetNillableSaleEndsAt(stored(in.SaleEndsAt)).
			SetCreatedAt(now).SetUpdatedAt(now).
			Save(ctx)
		if err != nil {
			return err
		}
		if err := tx.StockAdjustment.Create().
			SetProductID(p.ID).SetDelta(in.Stock).SetReason(initialStock).SetCreatedAt(now).
			Exec(ctx); err != nil {
			return err
		}
		return audit.Record(ctx, tx, act, now, nil, audit.Snapshot(p))
	})
	if err != nil {
		return nil, err
	}
	s.productChanged(p)
	return p, nil
}

// productName returns name trimmed, or the error that says what is wrong
// with it.
func productName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxNameLen || len(name) > 4*maxNameLen:
		return "", InvalidInput("name must be 1 to %d characters of valid UTF-8", maxNameLen)
	case strings.ContainsFunc(name, unicode.IsControl):
		// NULs, newlines and escapes in a name break receipts, logs and feeds downstream.
		return "", InvalidInput("name must not contain control characters")
	}
	return name, nil
}

func checkPrice(cents int64) error {
	if cents < 0 || cents > maxPriceCents {
		return InvalidInput("priceCents must be between 0 and %d", int64(maxPriceCents))
	}
	return nil
}

// maxQueueRate is the largest queueAdmitPerMinute.
const maxQueueRate = 1_000_000

func checkQueueRate(n *int) error {
	if n != nil && (*n < 1 || *n > maxQueueRate) {
		return InvalidInput("queueAdmitPerMinute must be between 1 and %d, or null for no waiting room", maxQueueRate)
	}
	return nil
}

func checkMaxPerCustomer(n *int) error {
	if n != nil && (*n < 1 || *n > maxStock) {
		return InvalidInput("maxPerCustomer must be between 1 and %d, or null for no limit", maxStock)
	}
	return nil
}

// checkWindow refuses a sale that would end before it starts.
func checkWindow(starts, ends *time.Time) error {
	if starts != nil && ends != nil && !ends.After(*starts) {
		return InvalidInput("saleEndsAt must be after saleStartsAt")
	}
	return nil
}

// Products returns up to first products with an ID above after, oldest
// first, and whether more follow.
func (s *Service) Products(ctx context.Context, first, after int) ([]*ent.Product, bool, error) {
	if err := CheckFirst(first); err != nil {
		return nil, false, err
	}
	ps, err := s.client.Product.Query().
		Where(product.IDGT(after)).
		Order(product.ByID()).
		Limit(first + 1).
		All(ctx)
	if err != nil {
		return nil, false, classify("list products", err)
	}
	more := len(ps) > first
	if more {
		ps = ps[:first]
	}
	return ps, more, nil
}

// CountProducts returns how many products exist.
func (s *Service) CountProducts(ctx context.Context) (int, error) {
	n, err := s.client.Product.Query().Count(ctx)
	return n, classify("count products", err)
}

// stored returns t as the database keeps it: UTC (times are stored without
// a zone), to the microsecond (DATETIME(6)), so what CreateProduct returns
// and caches equals what later reads see.
func stored(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}
