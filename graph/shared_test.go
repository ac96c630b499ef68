package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"flashsale/ent"
)

// sharedSub is one subscription driven through shareResponses with a
// stand-in for gqlgen's handler that counts its executions.
type sharedSub struct {
	states chan *ent.Product // what live would hand out
	next   graphql.ResponseHandler
}

func subscribeShared(t *testing.T, mw graphql.OperationMiddleware, execs *atomic.Int64, query string, vars map[string]any) *sharedSub {
	t.Helper()
	s := &sharedSub{states: make(chan *ent.Product)}
	ctx := graphql.WithOperationContext(context.Background(), &graphql.OperationContext{
		RawQuery:  query,
		Variables: vars,
		Operation: &ast.OperationDefinition{Operation: ast.Subscription},
	})
	s.next = mw(ctx, func(ctx context.Context) graphql.ResponseHandler {
		ch := feedStates(ctx, s.states) // what the productStock resolver does
		return func(ctx context.Context) *graphql.Response {
			p, ok := <-ch
			if !ok {
				return nil
			}
			execs.Add(1)
			data, _ := json.Marshal(map[string]any{"q": query, "vars": vars, "reserved": p.StockReserved})
			return &graphql.Response{Data: data}
		}
	})
	return s
}

// event hands p to the subscription and returns what it would send.
func (s *sharedSub) event(p *ent.Product) *graphql.Response {
	go func() { s.states <- p }()
	return s.next(context.Background())
}

// op is a subscription operation: its document and variables.
type op struct {
	query string
	vars  map[string]any
}

func TestSharedResponses(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s1 := &ent.Product{ID: 1, StockReserved: 1, UpdatedAt: at}
	s2 := &ent.Product{ID: 1, StockReserved: 2, UpdatedAt: at.Add(time.Millisecond)}
	const q = "subscription($id: ID!) { productStock(id: $id) { stockReserved } }"
	one := map[string]any{"id": "1"}

	type step struct {
		sub   int // index into subs
		state *ent.Product
		execs int64 // gqlgen executions so far, in all
	}
	tests := []struct {
		name  string
		subs  []op
		steps []step
	}{
		{
			name:  "same operation and state: executed once, shared",
			subs:  []op{{q, one}, {q, one}, {q, one}},
			steps: []step{{0, s1, 1}, {1, s1, 1}, {2, s1, 1}, {1, s2, 2}, {0, s2, 2}},
		},
		{
			name:  "other variables or another document: their own response",
			subs:  []op{{q, one}, {q, map[string]any{"id": "2"}}, {"subscription { a: productStock(id: 1) { stockReserved } }", nil}},
			steps: []step{{0, s1, 1}, {1, s1, 2}, {2, s1, 3}},
		},
		{
			name:  "a subscriber a state behind does not displace the newer response",
			subs:  []op{{q, one}, {q, one}, {q, one}},
			steps: []step{{0, s2, 1}, {1, s1, 2}, {2, s2, 2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mw := shareResponses()
			var execs atomic.Int64
			subs := make([]*sharedSub, len(tt.subs))
			for i, s := range tt.subs {
				subs[i] = subscribeShared(t, mw, &execs, s.query, s.vars)
			}
			for i, st := range tt.steps {
				resp := subs[st.sub].event(st.state)
				var got struct {
					Q        string         `json:"q"`
					Vars     map[string]any `json:"vars"`
					Reserved int            `json:"reserved"`
				}
				if err := json.Unmarshal(resp.Data, &got); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				want := tt.subs[st.sub]
				if got.Q != want.query || fmt.Sprint(got.Vars) != fmt.Sprint(want.vars) || got.Reserved != st.state.StockReserved {
					t.Errorf("step %d: subscription %d got %s, want its own query %q, vars %v, reserved %d",
						i, st.sub, resp.Data, want.query, want.vars, st.state.StockReserved)
				}
				if n := execs.Load(); n != st.execs {
					t.Errorf("step %d: %d executions so far, want %d", i, n, st.execs)
				}
			}
		})
	}
}

func TestSharedResponsesEnd(t *testing.T) {
	mw := shareResponses()
	var execs atomic.Int64
	s := subscribeShared(t, mw, &execs, "subscription { productStock(id: 1) { id } }", nil)
	close(s.states)
	if resp := s.next(context.Background()); resp != nil {
		t.Fatalf("after the live channel closed: %+v, want nil (the subscription completes)", resp)
	}

	// A subscriber that leaves while waiting gets nil, not a stuck call.
	s = subscribeShared(t, mw, &execs, "subscription { productStock(id: 1) { id } }", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if resp := s.next(ctx); resp != nil {
		t.Fatalf("after its context ended: %+v, want nil", resp)
	}

	// An operation without a key (variables JSON cannot encode) is served
	// on its own, not left waiting on a proxy nobody feeds.
	s = subscribeShared(t, mw, &execs, "subscription { productStock(id: 1) { id } }", map[string]any{"x": math.Inf(1)})
	if _, ok := operationKey(&graphql.OperationContext{Variables: map[string]any{"x": math.Inf(1)}}); ok {
		t.Fatal("operationKey encoded an infinite number")
	}
	if resp := s.event(&ent.Product{StockReserved: 3}); resp == nil {
		t.Fatal("an operation without a key got no event")
	}

	// gqlgen's handler may return without taking the state it was fed (its
	// context ended first); the next event must still go through, not
	// block on the proxy while holding the entry's lock.
	states := make(chan *ent.Product, 2)
	skip := true
	octx := graphql.WithOperationContext(context.Background(), &graphql.OperationContext{
		RawQuery:  "subscription { productStock(id: 1) { stockSellable } }",
		Operation: &ast.OperationDefinition{Operation: ast.Subscription},
	})
	next := mw(octx, func(ctx context.Context) graphql.ResponseHandler {
		ch := feedStates(ctx, states)
		return func(context.Context) *graphql.Response {
			if skip {
				skip = false
				return &graphql.Response{Data: json.RawMessage(`{"skipped":true}`)}
			}
			p := <-ch
			return &graphql.Response{Data: json.RawMessage(fmt.Sprintf(`{"reserved":%d}`, p.StockReserved))}
		}
	})
	states <- &ent.Product{StockReserved: 1, UpdatedAt: time.Unix(1, 0)}
	states <- &ent.Product{StockReserved: 2, UpdatedAt: time.Unix(2, 0)}
	next(context.Background())
	done := make(chan *graphql.Response, 1)
	go func() { done <- next(context.Background()) }()
	select {
	case resp := <-done:
		if string(resp.Data) != `{"reserved":2}` {
			t.Fatalf("after a skipped state: %s, want the newer state", resp.Data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event after a skipped state blocked")
	}

	// Queries and mutations are passed through untouched.
	passed := false
	ctx = graphql.WithOperationContext(context.Background(), &graphql.OperationContext{
		Operation: &ast.OperationDefinition{Operation: ast.Query},
	})
	mw(ctx, func(ctx context.Context) graphql.ResponseHandler {
		passed = ctx.Value(feedKey{}) == nil
		return nil
	})
	if !passed {
		t.Fatal("a query got a feed")
	}
}
