package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"

	"flashsale/database"
	"flashsale/ent"
	"flashsale/graph"
	"flashsale/internal/testdb"
	"flashsale/stock"
)

// TestLoadersBatchAPage: a page of orders with their holds and products
// costs a few statements, not one per row (graph's loaders).
func TestLoadersBatchAPage(t *testing.T) {
	db := testdb.Open(t, dialect.MySQL, database.Options{MaxConns: 4})
	var statements atomic.Int64
	counting := ent.NewClient(ent.Driver(dialect.DebugWithContext(entsql.OpenDB(db.Dialect, db.SQL),
		func(context.Context, ...any) { statements.Add(1) })))
	quiet := slog.New(slog.DiscardHandler)
	cfg := stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 10}
	writer := stock.New(db.Ent, db.Dialect, cfg, quiet) // makes the rows, uncounted
	ctx := context.Background()
	const orders = 40
	for i := range orders {
		p, err := writer.CreateProduct(ctx, nil, stock.NewProduct{Name: fmt.Sprint("p", i%8), PriceCents: 100, Stock: 100})
		if err != nil {
			t.Fatal(err)
		}
		h, err := writer.CreateHold(ctx, stock.HoldRequest{ProductID: p.ID, Qty: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := writer.CreateOrder(ctx, h.ID, stock.Anonymous); err != nil {
			t.Fatal(err)
		}
	}
	const admin = "test-admin-token-0123456789abcdefgh"
	reader := stock.New(counting, db.Dialect, cfg, quiet) // a cold product cache, as another process's
	h := graph.NewHandler(&graph.Resolver{Stock: reader, Operators: mustOperators(t, admin)},
		graph.Options{Limits: graph.Limits{Timeout: 10 * time.Second, MaxComplexity: 10000, MaxDepth: 15, MaxQueryBytes: 4096}, Logger: quiet})
	body, _ := json.Marshal(map[string]any{"query": `{ orders(first: 100) { edges { node { id hold { id order { id } product { id } } product { name } } } } }`})
	r := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+admin)
	w := httptest.NewRecorder()
	statements.Store(0)
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK || strings.Contains(w.Body.String(), `"errors"`) || strings.Count(w.Body.String(), `"hold":{`) != orders {
		t.Fatalf("answer %d %s", w.Code, w.Body)
	}
	// The orders, their holds, the holds' orders, the products: a
	// statement each (a batch may split when its resolvers start later
	// than loaderWait, as under the race detector), where there were
	// 1 + 40 + 40 + 40 before.
	if n := statements.Load(); n > 10 {
		t.Errorf("%d statements for a page of %d orders with holds and products", n, orders)
	}
}
