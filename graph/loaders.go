package graph

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/vikstrous/dataloadgen"

	"flashsale/ent"
	"flashsale/stock"
)

// loaders batch the reads that a page of holds or orders would otherwise
// make one row at a time (Order.hold, Hold.order, and their product): each
// request gets its own, so nothing read for one caller is served to
// another, and the batches are what one request's resolvers ask for within
// loaderWait.
type loaders struct {
	hold        *dataloadgen.Loader[uuid.UUID, *ent.Hold]
	orderOfHold *dataloadgen.Loader[uuid.UUID, *ent.Order]
	product     *dataloadgen.Loader[int, *ent.Product]
}

// loaderWait is how long a loader gathers keys before it reads: the
// resolvers of one page run concurrently, but on a busy server their
// goroutines start over a millisecond or two. Only lists pay it; a
// product this process has in memory waits for nothing.
const loaderWait = 2 * time.Millisecond

type loadersKey struct{}

func newLoaders(svc *stock.Service) *loaders {
	opts := []dataloadgen.Option{dataloadgen.WithWait(loaderWait)}
	return &loaders{
		hold:        dataloadgen.NewMappedLoader(svc.HoldsByID, opts...),
		orderOfHold: dataloadgen.NewMappedLoader(svc.OrdersOfHolds, opts...),
		product:     dataloadgen.NewMappedLoader(svc.ProductsByID, opts...),
	}
}

// withLoaders gives each request its loaders.
func (r *Resolver) withLoaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx := context.WithValue(req.Context(), loadersKey{}, newLoaders(r.Stock))
		next.ServeHTTP(w, req.WithContext(ctx))
	})
}

// loadersOf returns the request's loaders; a context without (a resolver
// called outside a request) gets fresh ones.
func (r *Resolver) loadersOf(ctx context.Context) *loaders {
	if l, ok := ctx.Value(loadersKey{}).(*loaders); ok {
		return l
	}
	return newLoaders(r.Stock)
}

// load is a loader's Load with a missing key as stock.ErrNotFound.
func load[K comparable, V any](ctx context.Context, l *dataloadgen.Loader[K, V], key K) (V, error) {
	v, err := l.Load(ctx, key)
	if errors.Is(err, dataloadgen.ErrNotFound) {
		err = stock.ErrNotFound
	}
	return v, err
}

// product is a hold's or order's product: from this process's memory when
// it is there (the hot path: a hold's answer with its product waits for
// no batch), else through the request's loader.
func (r *Resolver) product(ctx context.Context, id int) (*ent.Product, error) {
	if p, ok := r.Stock.CachedProduct(id); ok {
		return p, nil
	}
	return load(ctx, r.loadersOf(ctx).product, id)
}
