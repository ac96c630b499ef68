package graph_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/99designs/gqlgen/client"
	coderws "github.com/coder/websocket"

	"flashsale/database"
	"flashsale/graph"
	"flashsale/internal/testdb"
	"flashsale/live"
	"flashsale/stock"
)

// subEnv is the GraphQL handler over a fresh database, with live stock.
type subEnv struct {
	svc *stock.Service
	hub *live.Hub
	h   *graph.Handler
	srv *httptest.Server
}

func newSubEnv(t *testing.T, max int) *subEnv {
	t.Helper()
	db := testdb.Open(t, dialect.SQLite, database.Options{MaxConns: 4})
	quiet := slog.New(slog.DiscardHandler)
	svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Hour, PaymentTimeout: time.Hour, MaxHoldQty: 10}, quiet)
	hub := live.New(live.SourceFunc(svc.ProductsNow), live.Config{Interval: 20 * time.Millisecond, Max: max, Logger: quiet})
	t.Cleanup(hub.Close)
	svc.OnChange(hub.Publish)
	h := graph.NewHandler(&graph.Resolver{Stock: svc, Live: hub}, graph.Options{Logger: quiet})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &subEnv{svc: svc, hub: hub, h: h, srv: srv}
}

type stockEvent struct {
	ProductStock struct {
		ID            string
		StockReserved int
	}
}

// TestSubscriptionWithGqlgenClient: gqlgen's own websocket client gets the
// product now, then the change a hold made.
func TestSubscriptionWithGqlgenClient(t *testing.T) {
	e := newSubEnv(t, 10)
	p, err := e.svc.CreateProduct(t.Context(), nil, stock.NewProduct{Name: "drop", PriceCents: 100, Stock: 10})
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(e.h)
	sub := c.Websocket(fmt.Sprintf(`subscription { productStock(id: "%d") { id stockReserved } }`, p.ID))
	defer sub.Close()
	var ev stockEvent
	if err := sub.Next(&ev); err != nil || ev.ProductStock.StockReserved != 0 {
		t.Fatalf("first event %+v, %v", ev, err)
	}
	if _, err := e.svc.CreateHold(t.Context(), stock.HoldRequest{ProductID: p.ID, Qty: 3}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Next(&ev); err != nil || ev.ProductStock.StockReserved != 3 {
		t.Fatalf("after a hold of 3: %+v, %v", ev, err)
	}

	// An unknown product ends the subscription with NOT_FOUND.
	bad := c.Websocket(`subscription { productStock(id: "424242") { id } }`)
	defer bad.Close()
	var resp struct{}
	if err := bad.Next(&resp); err == nil || !strings.Contains(err.Error(), "no such product") {
		t.Fatalf("unknown product: %v", err)
	}
}

// TestSubscriptionLimitAndLeaks: MAX_SUBSCRIPTIONS is enforced, and
// subscribers that vanish without closing leave nothing behind.
func TestSubscriptionLimitAndLeaks(t *testing.T) {
	const max = 20
	e := newSubEnv(t, max)
	p, err := e.svc.CreateProduct(t.Context(), nil, stock.NewProduct{Name: "drop", PriceCents: 100, Stock: 10})
	if err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http")
	query := fmt.Sprintf(`{"id":"1","type":"subscribe","payload":{"query":"subscription { productStock(id: \"%d\") { stockReserved } }"}}`, p.ID)
	open := func() (*coderws.Conn, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		conn, _, err := coderws.Dial(ctx, url, &coderws.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{`{"type":"connection_init"}`, query} {
			if err := conn.Write(ctx, coderws.MessageText, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		// connection_ack, then the first answer to the subscription.
		var last string
		for !strings.Contains(last, `"id":"1"`) {
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			last = string(b)
		}
		return conn, last
	}
	conns := make([]*coderws.Conn, 0, max)
	for range max {
		c, first := open()
		if !strings.Contains(first, `"stockReserved":0`) {
			t.Fatalf("first event %s", first)
		}
		conns = append(conns, c)
	}
	if n := e.hub.Count(); n != max {
		t.Fatalf("%d live subscriptions, want %d", n, max)
	}
	c, refused := open()
	if !strings.Contains(refused, "RATE_LIMITED") {
		t.Fatalf("subscription %d: %s, want RATE_LIMITED", max+1, refused)
	}
	c.CloseNow()

	// Every client vanishes without a close frame.
	for _, c := range conns {
		c.CloseNow()
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.hub.Count() > 0 || runtime.NumGoroutine() > baseline+5 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after the clients vanished: %d subscriptions, %d goroutines (baseline %d)\n%s",
				e.hub.Count(), runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
