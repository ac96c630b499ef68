package metrics

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"flashsale/internal/testkit"
)

// scrape serves m's handler once and parses the answer with the
// Prometheus text parser, as a Prometheus server would.
func scrape(t *testing.T, m *Metrics) testkit.Metrics {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return testkit.ParseMetrics(t, rec.Body)
}

func TestRecordAndScrape(t *testing.T) {
	m := New([]string{"createHold", "product", "not a name", strings.Repeat("x", 65)})
	m.Hold("created")
	m.Hold("created")
	m.Hold("INSUFFICIENT_STOCK")
	m.Hold("order-123e4567") // not a result: other
	m.OrdersReached("PAID", 3)
	m.OrdersReached("PAID", 0)
	m.WebhookDelivery("DUPLICATE", time.Millisecond)
	m.GraphQLRequest("createHold", 3*time.Millisecond)
	m.GraphQLRequest("customer-42", time.Millisecond) // not a root field: other
	m.HoldBatch(17)
	m.Released("hold", 4)
	m.WatchSubscriptions(func() int { return 7 })

	fams := scrape(t, m)
	for _, tc := range []struct {
		family, label, value string
		want                 float64
	}{
		{"flashsale_holds_total", "result", "created", 2},
		{"flashsale_holds_total", "result", "INSUFFICIENT_STOCK", 1},
		{"flashsale_holds_total", "result", "other", 1},
		{"flashsale_holds_total", "result", "SALE_ENDED", 0}, // pre-created at zero
		{"flashsale_orders_total", "status", "PAID", 3},
		{"flashsale_webhook_deliveries_total", "outcome", "DUPLICATE", 1},
		{"flashsale_graphql_request_duration_seconds", "operation", "createHold", 1},
		{"flashsale_graphql_request_duration_seconds", "operation", "other", 1},
		{"flashsale_hold_batch_size", "", "", 1},
		{"flashsale_sweeper_released_total", "kind", "hold", 4},
		{"flashsale_subscriptions", "", "", 7},
	} {
		got, ok := fams.Value(tc.family, tc.label, tc.value)
		if !ok || got != tc.want {
			t.Errorf("%s{%s=%q} = %v (present %v), want %v", tc.family, tc.label, tc.value, got, ok, tc.want)
		}
	}
	// Bounded labels: only the allowed values and other, never what a
	// caller passed in.
	for _, m := range fams["flashsale_graphql_request_duration_seconds"].GetMetric() {
		if v := m.GetLabel()[0].GetValue(); v != "createHold" && v != "product" && v != Other {
			t.Errorf("operation label %q", v)
		}
	}
	for _, name := range []string{"go_goroutines", "go_build_info", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

// A nil *Metrics records nothing and costs nothing: callers need no check.
func TestNilIsOff(t *testing.T) {
	var m *Metrics
	m.Hold("created")
	m.OrdersReached("PAID", 1)
	m.WebhookDelivery("APPLIED", time.Millisecond)
	m.GraphQLRequest("product", time.Second)
	m.HoldBatch(1)
	m.Released("order", 1)
	m.WatchSubscriptions(func() int { return 1 })
	m.WatchDB(nil, "x")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("nil metrics handler: %d", rec.Code)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := m.Serve(t.Context(), ln, nil); err != ErrDisabled {
		t.Fatalf("Serve on nil: %v", err)
	}
}

// Recording is on every request's path: it must not allocate.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m := New([]string{"createHold"})
	if n := testing.AllocsPerRun(100, func() {
		m.Hold("INSUFFICIENT_STOCK")
		m.GraphQLRequest("createHold", time.Millisecond)
		m.HoldBatch(3)
	}); n != 0 {
		t.Fatalf("%v allocations per recording", n)
	}
}
