package main

import (
	"fmt"
	"net/http"
	"testing"

	"entgo.io/ent/dialect"

	"flashsale/internal/testkit"
)

// TestMetrics runs the server with METRICS_ADDR, makes a small sale, and
// scrapes /metrics on its own listener with the Prometheus text parser.
func TestMetrics(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	ts := startServer(t, dialect.MySQL, map[string]string{"METRICS_ADDR": addr})
	p := ts.createProduct(t, 2)
	o := ts.createOrder(t, ts.createHold(t, p.ID, 2))
	if r := ts.gql(t, "", `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, map[string]any{"p": p.ID}); r.code() != "INSUFFICIENT_STOCK" {
		t.Fatalf("hold of a sold-out product: %+v", r)
	}
	for range 2 { // the second is a duplicate
		if status, _ := ts.webhook(t, "evt_metrics", o, "success"); status != 200 {
			t.Fatalf("webhook: %d", status)
		}
	}
	ts.product(t, p.ID)

	fams := testkit.Scrape(t, addr)
	for _, tc := range []struct {
		family, label, value string
		want                 float64
	}{
		{"flashsale_holds_total", "result", "created", 1},
		{"flashsale_holds_total", "result", "INSUFFICIENT_STOCK", 1},
		{"flashsale_orders_total", "status", "PENDING_PAYMENT", 1},
		{"flashsale_orders_total", "status", "PAID", 1},
		{"flashsale_webhook_deliveries_total", "outcome", "APPLIED", 1},
		{"flashsale_webhook_deliveries_total", "outcome", "DUPLICATE", 1},
		{"flashsale_graphql_request_duration_seconds", "operation", "createHold", 2},
		{"flashsale_graphql_request_duration_seconds", "operation", "product", 1},
		{"flashsale_subscriptions", "", "", 0},
	} {
		if got, ok := fams.Value(tc.family, tc.label, tc.value); !ok || got != tc.want {
			t.Errorf("%s{%s=%q} = %v (present %v), want %v", tc.family, tc.label, tc.value, got, ok, tc.want)
		}
	}
	if n, _ := fams.Value("flashsale_hold_batch_size", "", ""); n < 1 {
		t.Errorf("hold batches observed: %v", n)
	}
	for _, name := range []string{"go_goroutines", "go_build_info", "flashsale_build_info", "go_sql_open_connections", "flashsale_sweeper_released_total"} {
		if fams[name] == nil {
			t.Errorf("no %s in /metrics", name)
		}
	}
	// Never on the public port.
	if resp, err := http.Get(ts.URL + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the API port: %v %v", resp.StatusCode, err)
	}
}
