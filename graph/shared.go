package graph

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"flashsale/ent"
)

// Shared subscription responses.
//
// During a drop thousands of storefronts subscribe to one product with the
// same few queries, and live hands every one of them the same *ent.Product
// for a state. Executing each subscription's selection for each event was
// the largest cost of fanning out (gqlgen runs the whole field machinery
// per subscriber). A product's fields do not depend on who asks (a field
// that ever does must not be served through this), so the response to one
// operation (query, operation name, variables) for one state is computed
// once and sent to every subscriber of that operation.
//
// How it hooks into gqlgen without replacing its transports: an operation
// middleware puts a feed in the context of subscriptions; the productStock
// resolver hands its live channel to the feed and gives gqlgen the feed's
// proxy channel instead. For each event the middleware's response handler
// takes the next state from the live channel and answers from the cache;
// only on a miss does it pass the state to gqlgen through the proxy and
// run gqlgen's handler, whose response then goes in the cache.

// Which Product fields depend on neither who asks nor when is declared
// once, in schema.graphqls: @cacheControl(scope: PUBLIC), which also lets a
// CDN cache them (cache.go). Only such fields' responses may be shared: a
// field added to Product without the declaration fails
// TestSharedProductFieldsAreCallerFree until it is judged (or sharing is
// rethought).

// maxSharedOperations bounds the cache: distinct subscription operations
// whose latest response is kept (one product state each).
const maxSharedOperations = 1024

// feed connects a productStock resolver to shareResponses.
type feed struct {
	src   <-chan *ent.Product // the live channel, set by the resolver
	proxy chan *ent.Product   // what gqlgen reads, fed one state per miss
}

type feedKey struct{}

// feedStates is called by the productStock resolver with its live channel:
// under shareResponses it returns the channel gqlgen should read instead,
// otherwise ch itself.
func feedStates(ctx context.Context, ch <-chan *ent.Product) <-chan *ent.Product {
	f, ok := ctx.Value(feedKey{}).(*feed)
	if !ok || f.src != nil {
		return ch
	}
	f.src, f.proxy = ch, make(chan *ent.Product, 1)
	return f.proxy
}

// sharedResponse is where the subscribers of one operation share its
// response to the latest state. Each subscription finds it once, when it
// starts; an event costs an atomic load when the response is there.
type sharedResponse struct {
	mu     sync.Mutex // held while a response is computed: one computes, the others wait and share it
	latest atomic.Pointer[stateResponse]
}

type stateResponse struct {
	state *ent.Product
	resp  *graphql.Response
}

// shareResponses returns the operation middleware described above.
func shareResponses() graphql.OperationMiddleware {
	cache, err := lru.New[[sha256.Size]byte, *sharedResponse](maxSharedOperations)
	if err != nil {
		panic(err) // only for a size < 1
	}
	return func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		oc := graphql.GetOperationContext(ctx)
		if oc.Operation == nil || oc.Operation.Operation != ast.Subscription {
			return next(ctx)
		}
		f := &feed{}
		h := next(context.WithValue(ctx, feedKey{}, f))
		if f.src == nil { // refused, or a field that does not feed states
			return h
		}
		// gqlgen now reads the proxy, so every subscription goes through the
		// handler below; one whose operation has no key keeps its own entry.
		// An entry the cache evicts later stays shared by the subscriptions
		// that hold it; new ones start a new entry.
		e := &sharedResponse{}
		if key, ok := operationKey(oc); ok {
			if cached, found := cache.Get(key); found {
				e = cached
			} else if prev, found, _ := cache.PeekOrAdd(key, e); found {
				e = prev
			}
		}
		return func(ctx context.Context) *graphql.Response {
			var p *ent.Product
			select {
			case s, open := <-f.src:
				if !open {
					return nil // the subscription ended: gqlgen completes it
				}
				p = s
			case <-ctx.Done():
				return nil
			}
			if l := e.latest.Load(); l != nil && l.state == p {
				return l.resp
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			l := e.latest.Load()
			if l != nil && l.state == p {
				return l.resp
			}
			// gqlgen's handler may have returned without taking the last
			// state (its context ended first); this handler is the proxy's only
			// writer, so after the drain the send cannot block under the lock.
			select {
			case <-f.proxy:
			default:
			}
			f.proxy <- p
			resp := h(ctx)
			// A subscriber a state behind must not push out the newer one the
			// others are about to share.
			if resp != nil && (l == nil || !p.UpdatedAt.Before(l.state.UpdatedAt)) {
				e.latest.Store(&stateResponse{p, resp})
			}
			return resp
		}
	}
}

// operationKey identifies what a subscription's response depends on
// besides the state: its document, operation name and variables.
func operationKey(oc *graphql.OperationContext) ([sha256.Size]byte, bool) {
	vars, err := json.Marshal(oc.Variables) // map keys come out sorted
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	d := sha256.New()
	for _, s := range []string{oc.RawQuery, oc.OperationName, string(vars)} {
		d.Write([]byte(s))
		d.Write([]byte{0})
	}
	var k [sha256.Size]byte
	d.Sum(k[:0])
	return k, true
}
