// Package metrics owns the service's Prometheus metrics: their names, help
// texts and bounded label values, and the /metrics endpoint served on its own
// listener (METRICS_ADDR, never the public port). The rest of the code calls
// the methods of *Metrics and never touches Prometheus types.
//
// Every label value is mapped onto a fixed set chosen here (anything else
// becomes "other"), so no ID, key or customer can ever reach a label and the
// number of series stays bounded whatever callers pass. All label values are
// pre-created at zero in New so dashboards see them before the first event.
//
// A nil *Metrics is usable: every recording method on a nil receiver is a
// no-op, so callers need not check whether metrics are on. Handler on a nil
// receiver returns a handler answering 404 and Serve returns ErrDisabled.
//
// All methods are safe for concurrent use. The recording methods do not
// allocate: the label lookups are done once, in New, and cached in maps that
// are read-only afterwards.
package metrics

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"flashsale/version"
)

// Other is the label value that every value outside a label's fixed set
// becomes.
const Other = "other"

// maxLabelLen bounds the length of a value looked up in a label's set: longer
// values cannot be in any set, so they go to Other without hashing the whole
// string (a caller could hand a megabyte).
const maxLabelLen = 64

// shutdownTimeout bounds how long Serve waits for in-flight scrapes when its
// context ends.
const shutdownTimeout = 5 * time.Second

// ErrDisabled is returned by Serve on a nil *Metrics.
var ErrDisabled = errors.New("metrics: disabled (nil *Metrics)")

// The fixed label sets. Order matters only for readability of the output.
var (
	// holdResults are the values of flashsale_holds_total{result}: "created",
	// or the error code of the refusal.
	holdResults = []string{
		"created",
		"BAD_USER_INPUT",
		"NOT_FOUND",
		"INSUFFICIENT_STOCK",
		"PURCHASE_LIMIT_EXCEEDED",
		"IDEMPOTENCY_KEY_REUSED",
		"SALE_NOT_STARTED",
		"SALE_ENDED",
		"UNAUTHENTICATED",
		"RATE_LIMITED",
		"UNAVAILABLE",
		"INTERNAL_SERVER_ERROR",
		"QUEUE_REQUIRED",
		"NOT_ADMITTED",
	}
	orderStatuses    = []string{"PENDING_PAYMENT", "PAID", "CANCELLED", "REFUND_REQUIRED"}
	webhookOutcomes  = []string{"APPLIED", "IGNORED", "REFUND_REQUIRED", "DUPLICATE", "AMOUNT_MISMATCH", "REFUSED", "FAILED"}
	eventTypes       = []string{"order.created", "order.paid", "order.cancelled", "order.refund_required"}
	eventSinks       = []string{"webhook", "nats"}
	attemptOutcomes  = []string{"delivered", "failed", "dead"}
	releasedKinds    = []string{"hold", "order"}
	durationBuckets  = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	holdBatchBuckets = prometheus.ExponentialBuckets(1, 2, 9) // 1, 2, 4, ..., 256
)

// Metrics holds the service's metrics and their registry. Create it with New.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	holds       labelSet[prometheus.Counter]
	orders      labelSet[prometheus.Counter]
	webhooks    labelSet[prometheus.Counter]
	released    labelSet[prometheus.Counter]
	durations   labelSet[prometheus.Observer]
	holdBatch   prometheus.Observer
	webhookTook prometheus.Observer
	events      labelSet[prometheus.Counter]
	attempts    labelSet[labelSet[prometheus.Counter]] // by sink, then outcome
	pending     labelSet[prometheus.Gauge]             // by sink
	oldest      labelSet[prometheus.Gauge]             // by sink

	queueJoins    prometheus.Counter
	queueAdmitted prometheus.Counter
	queueWaiting  atomic.Pointer[func(context.Context) (int64, error)]

	subscriptions atomic.Pointer[func() int]
	logger        atomic.Pointer[slog.Logger]

	dbMu sync.Mutex // serialises WatchDB's unregister/register
}

// labelSet maps each allowed label value to its pre-created child metric,
// with other for everything else. Read-only after New.
type labelSet[T any] struct {
	byValue map[string]T
	other   T
}

func newLabelSet[T any](values []string, with func(string) T) labelSet[T] {
	s := labelSet[T]{byValue: make(map[string]T, len(values)), other: with(Other)}
	for _, v := range values {
		if v == Other {
			continue
		}
		s.byValue[v] = with(v)
	}
	return s
}

// get returns the child for v, or the Other child. A map lookup with a string
// key does not allocate.
func (s *labelSet[T]) get(v string) T {
	if len(v) <= maxLabelLen {
		if c, ok := s.byValue[v]; ok {
			return c
		}
	}
	return s.other
}

// New returns the metrics; rootFields are the GraphQL root field names the
// operation label may take (anything else is "other"). Names that are not
// GraphQL names ([_A-Za-z][_0-9A-Za-z]*, at most 64 bytes) are ignored, so
// the operation label stays bounded and valid whatever is passed.
func New(rootFields []string) *Metrics {
	// A registry of our own rather than prometheus.DefaultRegisterer: the
	// global one collects whatever any imported library registers there
	// (names and labels we do not control or bound), it makes a second
	// Metrics in the same process (tests, several servers) panic on duplicate
	// registration, and it would tie tests to process-wide state.
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg}

	holds, orders, webhooks, released, durations, webhookTook, holdBatch := saleMetrics()
	subscriptions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flashsale_subscriptions",
		Help: "Open GraphQL subscriptions.",
	}, func() float64 {
		if f := m.subscriptions.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	events, attempts, pending, oldest := eventMetrics()
	var queueWaiting prometheus.GaugeFunc
	m.queueJoins, m.queueAdmitted, queueWaiting = m.queueMetrics()
	build := buildInfo(version.Get())
	reg.MustRegister(
		holds, orders, webhooks, webhookTook, durations, holdBatch, released, subscriptions,
		events, attempts, pending, oldest, build, m.queueJoins, m.queueAdmitted, queueWaiting,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)

	withCounter := func(v *prometheus.CounterVec) func(string) prometheus.Counter {
		return func(l string) prometheus.Counter { return v.WithLabelValues(l) }
	}
	m.holds = newLabelSet(holdResults, withCounter(holds))
	m.orders = newLabelSet(orderStatuses, withCounter(orders))
	m.webhooks = newLabelSet(webhookOutcomes, withCounter(webhooks))
	m.released = newLabelSet(releasedKinds, withCounter(released))
	m.events = newLabelSet(eventTypes, withCounter(events))
	m.attempts = newLabelSet(eventSinks, func(sink string) labelSet[prometheus.Counter] {
		return newLabelSet(attemptOutcomes, func(o string) prometheus.Counter { return attempts.WithLabelValues(sink, o) })
	})
	m.pending = newLabelSet(eventSinks, func(sink string) prometheus.Gauge { return pending.WithLabelValues(sink) })
	m.oldest = newLabelSet(eventSinks, func(sink string) prometheus.Gauge { return oldest.WithLabelValues(sink) })
	fields := make([]string, 0, len(rootFields))
	for _, f := range rootFields {
		if isGraphQLName(f) {
			fields = append(fields, f)
		}
	}
	m.durations = newLabelSet(fields, func(l string) prometheus.Observer { return durations.WithLabelValues(l) })
	m.holdBatch = holdBatch
	m.webhookTook = webhookTook

	// ContinueOnError: one failing collector (a closed DB, say) must not
	// blank the whole scrape; the failure is logged and counted in
	// promhttp_metric_handler_errors_total. The handler is built once here
	// because InstrumentMetricHandler registers its own metrics.
	m.handler = promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            errorLog{m},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	return m
}

// isGraphQLName reports whether s is a GraphQL Name of at most maxLabelLen
// bytes.
func isGraphQLName(s string) bool {
	if s == "" || len(s) > maxLabelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// errorLog adapts the handler's error log to the logger Serve was given
// (slog.Default until then).
type errorLog struct{ m *Metrics }

func (e errorLog) Println(v ...any) {
	log := e.m.logger.Load()
	if log == nil {
		log = slog.Default()
	}
	log.Error("metrics: gathering", "err", fmt.Sprint(v...))
}

// Handler serves the registry in the Prometheus text format (promhttp, with
// its error handling: a failing collector is logged and counted, the other
// metrics are still served). On a nil *Metrics it returns a handler that
// answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

// Serve serves Handler at GET /metrics on ln (opened by the caller from
// METRICS_ADDR, so a server can refuse to start when it cannot listen)
// until ctx ends, then shuts down gracefully (waiting up to 5s for scrapes
// in flight) and returns nil. It returns ErrDisabled on a nil *Metrics.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	if m == nil {
		return ErrDisabled
	}
	if log == nil {
		log = slog.Default()
	}
	m.logger.Store(log)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			done <- srv.Shutdown(sctx)
		case <-stop:
			done <- nil
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		// Serve failed on its own, before ctx ended.
		close(stop)
		<-done
		_ = srv.Close()
		return fmt.Errorf("metrics: serve: %w", err)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	log.Info("metrics stopped")
	return nil
}

// WatchDB adds the database/sql pool collector (go_sql_* metrics, labelled
// db_name=name) for db. Watching a new handle under a name already watched
// replaces the old one. A nil db is ignored.
func (m *Metrics) WatchDB(db *sql.DB, name string) {
	if m == nil || db == nil {
		return
	}
	m.dbMu.Lock()
	defer m.dbMu.Unlock()
	c := collectors.NewDBStatsCollector(db, name)
	if err := m.reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(fmt.Sprintf("metrics: WatchDB(%q): %v", name, err))
		}
		m.reg.Unregister(are.ExistingCollector)
		m.reg.MustRegister(c)
	}
}

// WatchSubscriptions makes flashsale_subscriptions a gauge read from count
// at scrape time (0 until it is called; a later call replaces count). count
// must be safe for concurrent use and cheap. A nil count resets it to 0.
func (m *Metrics) WatchSubscriptions(count func() int) {
	if m == nil {
		return
	}
	if count == nil {
		m.subscriptions.Store(nil)
		return
	}
	m.subscriptions.Store(&count)
}

// Hold counts a createHold answer: "created" or the refusal's error code
// (BAD_USER_INPUT, NOT_FOUND, INSUFFICIENT_STOCK, PURCHASE_LIMIT_EXCEEDED,
// IDEMPOTENCY_KEY_REUSED, SALE_NOT_STARTED, SALE_ENDED, UNAUTHENTICATED,
// RATE_LIMITED, UNAVAILABLE, INTERNAL_SERVER_ERROR); anything else → "other".
func (m *Metrics) Hold(result string) {
	if m == nil {
		return
	}
	m.holds.get(result).Inc()
}

// OrdersReached counts n orders reaching a status: PENDING_PAYMENT, PAID,
// CANCELLED, REFUND_REQUIRED; else "other". n <= 0 counts nothing.
func (m *Metrics) OrdersReached(status string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.orders.get(status).Add(float64(n))
}

// WebhookDelivery counts a webhook delivery by outcome (APPLIED, IGNORED,
// REFUND_REQUIRED, DUPLICATE, AMOUNT_MISMATCH, REFUSED, FAILED; else
// "other") and observes how long its answer took.
func (m *Metrics) WebhookDelivery(outcome string, took time.Duration) {
	if m == nil {
		return
	}
	m.webhooks.get(outcome).Inc()
	m.webhookTook.Observe(took.Seconds())
}

// GraphQLRequest observes one GraphQL operation's duration under its root
// field (the first root field; one not given to New → "other").
func (m *Metrics) GraphQLRequest(operation string, d time.Duration) {
	if m == nil {
		return
	}
	m.durations.get(operation).Observe(d.Seconds())
}

// HoldBatch observes the size of one hold group-commit batch.
func (m *Metrics) HoldBatch(size int) {
	if m == nil {
		return
	}
	m.holdBatch.Observe(float64(size))
}

// Released counts what the sweeper released: kind "hold" or "order"; else
// "other". n <= 0 counts nothing.
func (m *Metrics) Released(kind string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.released.get(kind).Add(float64(n))
}

// buildInfo is flashsale_build_info: 1, labelled with the running build, so
// a dashboard tells which release each process runs.
func buildInfo(v version.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flashsale_build_info",
		Help: "The running build: version, VCS revision, whether the tree was modified, Go version. Always 1.",
		ConstLabels: prometheus.Labels{
			"version": v.Version, "revision": v.ShortRevision(),
			"modified": fmt.Sprint(v.Modified), "goversion": v.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// saleMetrics are the metrics of the sale itself: holds, orders, payment
// webhooks, the sweeper, GraphQL operations and hold batches.
func saleMetrics() (holds, orders, webhooks, released *prometheus.CounterVec, durations *prometheus.HistogramVec,
	webhookTook, holdBatch prometheus.Histogram) {
	holds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_holds_total",
		Help: `createHold answers, by result: "created" or the refusal's error code.`,
	}, []string{"result"})
	orders = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_orders_total",
		Help: "Orders reaching a status, by status.",
	}, []string{"status"})
	webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_webhook_deliveries_total",
		Help: "Payment webhook deliveries, by outcome.",
	}, []string{"outcome"})
	durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flashsale_graphql_request_duration_seconds",
		Help:    `GraphQL operation duration in seconds, by first root field ("other" outside the schema's root fields).`,
		Buckets: durationBuckets,
	}, []string{"operation"})
	webhookTook = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flashsale_webhook_duration_seconds",
		Help:    "How long the payment webhook took to answer, whatever the answer.",
		Buckets: durationBuckets,
	})
	holdBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flashsale_hold_batch_size",
		Help:    "Number of holds in one group-commit batch.",
		Buckets: holdBatchBuckets,
	})
	released = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_sweeper_released_total",
		Help: `Expired holds and orders released by the sweeper, by kind ("hold" or "order").`,
	}, []string{"kind"})
	return holds, orders, webhooks, released, durations, webhookTook, holdBatch
}
