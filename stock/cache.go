package stock

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"flashsale/ent"
	"flashsale/ent/product"
)

const (
	// productTTL is how long a product read from the database is served
	// from memory. With the time a load takes, a product is never staler
	// than the contract's 1 second; this process's own changes replace the
	// entry at once.
	productTTL = 500 * time.Millisecond
	// soldOutRecheck is how long a product this process saw sold out is
	// refused without asking the database. Stock freed by this process
	// clears it at once; stock freed by another process is seen after this.
	soldOutRecheck = 250 * time.Millisecond
	// loadTimeout bounds one shared product load.
	loadTimeout = 5 * time.Second
)

// productCache serves product reads from memory, collapsing concurrent
// misses for one product into one database load (singleflight).
type productCache struct {
	mu      sync.Mutex
	entries map[int]cachedProduct
	loads   singleflight.Group
	soldOut sync.Map // product ID → time it was seen sold out
}

type cachedProduct struct {
	p      ent.Product // a copy: callers may not change the cache
	loaded time.Time   // when the state was read (or committed)
}

// store keeps p unless a newer state of the product is already cached
// (updated_at comes from the database clock under the row lock, so it
// orders the product's changes), and reports whether it kept it.
func (c *productCache) store(p *ent.Product, loaded time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[int]cachedProduct{}
	}
	if cur, ok := c.entries[p.ID]; ok && cur.p.UpdatedAt.After(p.UpdatedAt) {
		return false
	}
	cp := *p
	c.entries[p.ID] = cachedProduct{p: cp, loaded: loaded}
	return true
}

func (c *productCache) fresh(id int) (*ent.Product, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || time.Since(e.loaded) >= productTTL {
		return nil, false
	}
	p := e.p
	return &p, true
}

// productChanged records a product's state right after this process
// committed a change to it: reads see it at once, and the sold-out mark
// follows its sellable stock.
func (s *Service) productChanged(p *ent.Product) {
	if p == nil {
		return
	}
	newest := s.cache.store(p, time.Now())
	if f := s.onChange.Load(); f != nil {
		cp := *p
		(*f)(&cp)
	}
	// Two batches of a product may finish in either order (the next one
	// starts while the last commits): only the newest state sets the mark.
	if !newest {
		return
	}
	if Sellable(p) <= 0 {
		s.cache.soldOut.Store(p.ID, time.Now())
	} else {
		s.cache.soldOut.Delete(p.ID)
	}
}

// soldOut reports whether the product was seen sold out very recently, so
// a hold can be refused without a database round trip.
func (s *Service) soldOut(id int) bool {
	v, ok := s.cache.soldOut.Load(id)
	return ok && time.Since(v.(time.Time)) < soldOutRecheck
}

// Product returns a product, or ErrNotFound. It is served from memory when
// this process read or changed the product within productTTL.
func (s *Service) Product(ctx context.Context, id int) (*ent.Product, error) {
	if p, ok := s.cache.fresh(id); ok {
		return p, nil
	}
	ch := s.cache.loads.DoChan(strconv.Itoa(id), func() (any, error) {
		// Detached from the first caller, so its leaving does not fail the others.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		loaded := time.Now()
		p, err := s.client.Product.Get(lctx, id)
		if err != nil {
			return nil, err
		}
		s.cache.store(p, loaded)
		return p, nil
	})
	select {
	case <-ctx.Done():
		return nil, classify("get product", ctx.Err())
	case r := <-ch:
		if ent.IsNotFound(r.Err) {
			return nil, ErrNotFound
		}
		if r.Err != nil {
			return nil, classify("get product", r.Err)
		}
		cp := *r.Val.(*ent.Product)
		return &cp, nil
	}
}

// OnChange registers f to hear of every product state this process
// commits (live stock's fan-out), right after the commit. f gets a copy and
// must not block.
func (s *Service) OnChange(f func(*ent.Product)) { s.onChange.Store(&f) }

// maxIDsPerRead bounds the IDs of one read, keeping the statement small.
const maxIDsPerRead = 500

// ProductsNow reads products' current state from the database, bypassing
// the cache, in one statement per 500 IDs (live stock's source: another
// server's changes are only in the database). Missing IDs are left out.
func (s *Service) ProductsNow(ctx context.Context, ids []int) ([]*ent.Product, error) {
	var out []*ent.Product
	for chunk := range slices.Chunk(ids, maxIDsPerRead) {
		ps, err := s.client.Product.Query().Where(product.IDIn(chunk...)).All(ctx)
		if err != nil {
			return nil, classify("read products", err)
		}
		out = append(out, ps...)
	}
	return out, nil
}

// CachedProduct returns a product this process read or changed within
// productTTL, without touching the database; ok is false otherwise.
func (s *Service) CachedProduct(id int) (p *ent.Product, ok bool) { return s.cache.fresh(id) }

// ProductsByID returns the products of ids that exist, by ID: those this
// process read or changed within productTTL from memory, the others in one
// read (then kept like Product's). A page of orders asks for its products
// at once (graph's loaders), instead of a read per row.
func (s *Service) ProductsByID(ctx context.Context, ids []int) (map[int]*ent.Product, error) {
	out := make(map[int]*ent.Product, len(ids))
	var missing []int
	for _, id := range ids {
		if p, ok := s.cache.fresh(id); ok {
			out[id] = p
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	loaded := time.Now()
	ps, err := s.ProductsNow(ctx, missing)
	if err != nil {
		return nil, classify("get products", err)
	}
	for _, p := range ps {
		s.cache.store(p, loaded)
		out[p.ID] = p
	}
	return out, nil
}
