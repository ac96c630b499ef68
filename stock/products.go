package stock

import (
	"context"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
}

// CreateProduct adds a product with its initial stock.
func (s *Service) CreateProduct(ctx context.Context, in NewProduct) (*ent.Product, error) {
	name := strings.TrimSpace(in.Name)
	switch {
	case name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxNameLen || len(name) > 4*maxNameLen:
		return nil, InvalidInput("name must be 1 to %d characters of valid UTF-8", maxNameLen)
	case strings.ContainsFunc(name, unicode.IsControl):
		// NULs, newlines and escapes in a name break receipts, logs and feeds downstream.
		return nil, InvalidInput("name must not contain control characters")
	case in.PriceCents < 0 || in.PriceCents > maxPriceCents:
		return nil, InvalidInput("priceCents must be between 0 and %d", int64(maxPriceCents))
	case in.Stock < 0 || in.Stock > maxStock:
		return nil, InvalidInput("stock must be between 0 and %d", maxStock)
	case in.MaxPerCustomer != nil && (*in.MaxPerCustomer < 1 || *in.MaxPerCustomer > maxStock):
		return nil, InvalidInput("maxPerCustomer must be between 1 and %d, or null for no limit", maxStock)
	case in.SaleStartsAt != nil && in.SaleEndsAt != nil && !in.SaleEndsAt.After(*in.SaleStartsAt):
		return nil, InvalidInput("saleEndsAt must be after saleStartsAt")
	}
	var p *ent.Product
	err := s.tx(ctx, "create product", func(tx *ent.Tx) error {
		now, err := s.now(ctx, tx)
		if err != nil {
			return err
		}
		p, err = tx.Product.Create().
			SetName(name).SetPriceCents(in.PriceCents).SetStockReceived(in.Stock).SetStockAvailable(in.Stock).
			SetNillableMaxPerCustomer(in.MaxPerCustomer).
			SetNillableSaleStartsAt(stored(in.SaleStartsAt)).SetNillableSaleEndsAt(stored(in.SaleEndsAt)).
			SetCreatedAt(now).SetUpdatedAt(now).
			Save(ctx)
		return err
	})
	if err == nil {
		s.productChanged(p)
	}
	return p, err
}

// Products returns up to first products with an ID above after, oldest
// first, and whether more follow.
func (s *Service) Products(ctx context.Context, first, after int) ([]*ent.Product, bool, error) {
	if first < 1 || first > 100 {
		return nil, false, InvalidInput("first must be between 1 and 100")
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
