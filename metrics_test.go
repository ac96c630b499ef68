package main

import (
	"fmt"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p2 := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p2.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses /metrics: %v", err)
	}
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
		if got, ok := sample(fams, tc.family, tc.label, tc.value); !ok || got != tc.want {
			t.Errorf("%s{%s=%q} = %v (present %v), want %v", tc.family, tc.label, tc.value, got, ok, tc.want)
		}
	}
	if n, _ := sample(fams, "flashsale_hold_batch_size", "", ""); n < 1 {
		t.Errorf("hold batches observed: %v", n)
	}
	for _, name := range []string{"go_goroutines", "go_build_info", "go_sql_open_connections", "flashsale_sweeper_released_total"} {
		if fams[name] == nil {
			t.Errorf("no %s in /metrics", name)
		}
	}
	// Never on the public port.
	if resp, err := http.Get(ts.URL + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the API port: %v %v", resp.StatusCode, err)
	}
}

// sample returns the value (a histogram's count) of a family's series with
// label name=value, or its only series when name is "".
func sample(fams map[string]*dto.MetricFamily, family, name, value string) (float64, bool) {
	for _, m := range fams[family].GetMetric() {
		match := name == ""
		for _, l := range m.GetLabel() {
			match = match || (l.GetName() == name && l.GetValue() == value)
		}
		switch {
		case !match:
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}
