package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/database"
	"flashsale/graph"
	"flashsale/internal/gcfloor"
	"flashsale/internal/testdb"
	"flashsale/stock"
)

// BenchmarkHandler measures what the GraphQL handler itself costs per
// request, in process (no network, no load tool): the answers the load
// test's ratios compare, each served from memory as under load (the cached
// product, a sold-out product's refusal). It is steadier than the load test
// on a machine whose speed drifts, and its allocations are exact.
//
//	go test -run '^$' -bench Handler -benchmem ./graph
func BenchmarkHandler(b *testing.B) {
	// The server's heap floor (server.go), so that the collector runs as
	// often as in the server and not at every few requests.
	defer gcfloor.Start(128 << 20)()
	db := testdb.Open(b, dialect.SQLite, database.Options{MaxConns: 4})
	quiet := slog.New(slog.DiscardHandler)
	svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 10}, quiet)
	h := graph.NewHandler(&graph.Resolver{Stock: svc}, graph.Options{Limits: graph.Limits{Timeout: 10 * time.Second}, Logger: quiet})
	ctx := context.Background()
	plenty, err := svc.CreateProduct(ctx, nil, stock.NewProduct{Name: "plenty", PriceCents: 100, Stock: 1_000_000})
	if err != nil {
		b.Fatal(err)
	}
	none, err := svc.CreateProduct(ctx, nil, stock.NewProduct{Name: "none", PriceCents: 100, Stock: 1})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := svc.CreateHold(ctx, stock.HoldRequest{ProductID: none.ID, Qty: 1}); err != nil {
		b.Fatal(err) // now sold out, and this process knows it
	}
	body := func(query string, vars map[string]any) []byte {
		out, err := json.Marshal(map[string]any{"query": query, "variables": vars})
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	for _, bc := range []struct {
		name string
		body []byte
		want string // in every answer
	}{
		// The load test's queries (loadtest/client.go).
		{"typename", []byte(`{"query":"{__typename}"}`), `"Query"`},
		{"read", body(`query($p: ID!) { product(id: $p) { stockAvailable stockReserved stockSellable } }`,
			map[string]any{"p": strconv.Itoa(plenty.ID)}), `"stockSellable"`},
		{"sold-out", body(`mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`,
			map[string]any{"p": strconv.Itoa(none.ID)}), `"INSUFFICIENT_STOCK"`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(bc.body))
				r.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if !bytes.Contains(w.Body.Bytes(), []byte(bc.want)) {
					b.Fatalf("answer %s, want %s in it", w.Body, bc.want)
				}
			}
		})
	}
}
