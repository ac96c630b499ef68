// Command flashsale is the flash-sale API server: GraphQL at /graphql (with
// the playground at /), the payment provider's webhook at
// /api/payments/webhook, and a gocron job that releases expired stock.
//
// Where things live: package stock changes stock (and nothing else does),
// package graph is where GraphQL meets it, package webhook is where the
// payment provider lands, package sweeper schedules expiry, and package
// database with migrate/ opens and migrates the store.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/cors"

	"flashsale/audit"
	"flashsale/customer"
	"flashsale/database"
	"flashsale/events"
	"flashsale/graph"
	"flashsale/internal/gcfloor"
	"flashsale/internal/respond"
	"flashsale/live"
	"flashsale/metrics"
	"flashsale/playground"
	"flashsale/sink"
	"flashsale/stock"
	"flashsale/sweeper"
	"flashsale/version"
	"flashsale/webhook"
)

// gcHeapFloor is the heap the garbage collector may grow to before it runs
// (see package gcfloor): a request's garbage is a few KiB and little stays
// alive, so without it a busy server collects dozens of times a second.
const gcHeapFloor = 128 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// In main, not run: GOGC is the process's, and tests start run many times.
	defer gcfloor.Start(gcHeapFloor)()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "flashsale:", err)
		os.Exit(1)
	}
}

// run wires the server and serves until ctx is cancelled (SIGTERM/SIGINT in
// main), then shuts down gracefully: it stops taking requests, lets those in
// flight finish, stops the scheduler and the relay, and closes the database.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, done, err := parseArgs(args, getenv, stdout)
	if done || err != nil {
		return err
	}
	log := newLogger(cfg, stdout)
	log.Info("starting", "version", version.Get().String())
	a := &app{cfg: cfg, log: log}
	defer a.close() // after a failed start
	if err := a.open(ctx); err != nil {
		return err
	}
	err = a.serve(ctx)
	a.close()
	log.Info("stopped")
	return err
}

// parseArgs reads the command line (-h, -version) and the configuration;
// done is true when there is nothing to serve.
func parseArgs(args []string, getenv func(string) string, stdout io.Writer) (cfg config, done bool, err error) {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: %s\n\nThe flash-sale API server. Configuration comes from the environment:\n\n", args[0])
		for _, e := range envVars {
			fmt.Fprintf(stdout, "  %-23s %-24s %s\n", e.name, "(default "+strconv.Quote(e.def)+")", e.help)
		}
	}
	showVersion := fs.Bool("version", false, "print the build's version and exit")
	if err := fs.Parse(args[1:]); err != nil {
		return config{}, errors.Is(err, flag.ErrHelp), ignoreHelp(err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Get())
		return config{}, true, nil
	}
	if fs.NArg() > 0 {
		return config{}, true, fmt.Errorf("unexpected arguments %q: configure the server with environment variables (-h lists them)", fs.Args())
	}
	cfg, err = loadConfig(getenv)
	return cfg, err != nil, err
}

func ignoreHelp(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// app is the server's parts, made by open, served by serve, closed by
// close in the reverse order of their making.
type app struct {
	cfg     config
	log     *slog.Logger
	db      *database.DB
	svc     *stock.Service
	met     *metrics.Metrics
	relay   *events.Relay
	hub     *live.Hub
	api     *graph.Handler
	hook    *webhook.Handler
	closers []func()
}

func (a *app) onClose(f func()) { a.closers = append(a.closers, f) }

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// open connects and migrates the database, then makes the domain (stock,
// order events, metrics) and the API over it.
func (a *app) open(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	db, err := cfg.Database.Open(database.Options{MaxConns: cfg.DBMaxConns, IOTimeout: cfg.RequestTimeout, Logger: log})
	if err != nil {
		return err
	}
	a.db = db
	a.onClose(func() { db.Close() })
	log.Info("graphql limits", "limits", cfg.GraphQLLimits.String(), "cors_origins", cfg.CORSOrigins)
	log.Info("database", "url", db.Redacted, "dialect", db.Dialect, "max_conns", cfg.DBMaxConns)
	if err := waitForDatabase(ctx, db, log); err != nil {
		return err
	}
	if err := db.Migrate(ctx, log); err != nil {
		return err
	}
	if err := a.openDomain(ctx); err != nil {
		return err
	}
	return a.openAPI(ctx)
}

// openDomain makes the stock service, the metrics and the order events'
// relay (with its sinks), and seeds the demo database.
func (a *app) openDomain(ctx context.Context) error {
	cfg, log, db := a.cfg, a.log, a.db
	sinks, err := openSinks(ctx, cfg.Events, log)
	if err != nil {
		return err
	}
	a.svc = stock.New(db.Ent, db.Dialect, stock.Config{
		HoldTTL:        cfg.HoldTTL,
		PaymentTimeout: cfg.PaymentTimeout,
		MaxHoldQty:     cfg.MaxHoldQty,
		EventSinks:     sinkNames(sinks),
	}, log)
	// Metrics are recorded whether or not METRICS_ADDR serves them: a nil
	// *metrics.Metrics would do too, but one code path is simpler to trust.
	a.met = metrics.New(graph.RootFields())
	a.met.WatchDB(db.SQL, "flashsale")
	a.met.WatchDB(db.TxSQL, "flashsale_tx") // nil on SQLite: not watched
	a.svc.Observe(a.met)
	relayCfg := cfg.Events.Relay
	relayCfg.Logger, relayCfg.Metrics = log, a.met
	a.relay = events.New(db.Ent, db.Dialect, a.svc, sinks, relayCfg)
	a.onClose(func() { a.relay.Close() })
	a.svc.OnEvents(a.relay.Wake)
	a.relay.WarnOrphans(ctx)
	if cfg.DatabaseURL == database.DefaultURL {
		return seedDemo(ctx, a.svc, log)
	}
	return nil
}

// openAPI makes the payment webhook, the customer token verifier, live
// stock and the GraphQL handler.
func (a *app) openAPI(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	if len(cfg.WebhookKeys) == 0 {
		// loadConfig allows this only on the embedded database.
		log.Warn("WEBHOOK_SECRET is not set: the payment webhook accepts unsigned calls from this machine (loopback) only; this is for local trials, and a MySQL DATABASE_URL refuses to start without it")
	}
	if !cfg.Operators.Enabled() {
		log.Info("neither ADMIN_TOKEN nor OPERATOR_TOKENS is set: operator fields (createProduct, updateProduct, adjustStock, orders, orderEvents, operatorActions, redeliverEvents, redeliverFailedEvents) are disabled")
	} else {
		log.Info("operators", "names", cfg.Operators.Names())
	}
	var err error
	if a.hook, err = webhook.New(a.svc, webhook.Options{Keys: cfg.WebhookKeys, Timeout: cfg.RequestTimeout, Logger: log, Metrics: a.met}); err != nil {
		return err
	}
	resolver := &graph.Resolver{Stock: a.svc, Operators: cfg.Operators, Metrics: a.met, Events: a.relay,
		Actions: audit.NewLog(a.db.Ent)}
	if cfg.Customers.Enabled() {
		cc := cfg.Customers
		cc.Logger = log
		verifier, err := customer.New(ctx, cc)
		if err != nil {
			return err
		}
		a.onClose(verifier.Close)
		resolver.Customers = verifier
		log.Info("customer tokens required for holds and orders", "hs256", cc.Secret != "", "jwks", cc.JWKSURL != "",
			"issuer", cc.Issuer, "audience", cc.Audience)
	} else {
		log.Info("no customer key configured (CUSTOMER_JWT_SECRET, CUSTOMER_JWKS_URL): buyers are anonymous, and maxPerCustomer caps each hold")
	}
	a.hub = live.New(live.SourceFunc(a.svc.ProductsNow), live.Config{Interval: cfg.StockPush, Max: cfg.MaxSubs, Logger: log})
	a.onClose(a.hub.Close)
	a.svc.OnChange(a.hub.Publish)
	resolver.Live = a.hub
	a.met.WatchSubscriptions(a.hub.Count)
	a.met.WatchQueue(a.svc.QueueWaiting)
	limits := cfg.GraphQLLimits
	limits.Timeout = cfg.RequestTimeout
	a.api = graph.NewHandler(resolver, graph.Options{
		Limits: limits, Origins: cfg.CORSOrigins, RateLimit: cfg.RateLimit, Proxies: cfg.TrustedProxies, Logger: log,
		Metrics: a.met, MaxSubscriptionsPerConnection: cfg.MaxSubsPerConn, MaxStreamsPerIP: cfg.MaxStreamsPerIP,
		ReadCacheMaxAge: cfg.ReadCacheMaxAge,
	})
	log.Info("edge caching of public GET reads", "max_age_seconds", cfg.ReadCacheMaxAge)
	if cfg.MaxStreamsPerIP > 0 {
		log.Info("live streams per client IP", "max", cfg.MaxStreamsPerIP)
	}
	if !cfg.RateLimit.Off() {
		log.Info("mutation rate limit", "per_caller", cfg.RateLimit.String())
	}
	return nil
}

// routes is the public HTTP API.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	pg := playground.Handler("/graphql")
	mux.Handle("GET /{$}", pg)
	mux.Handle("GET "+playground.Prefix, pg)
	mux.Handle("/graphql", withCORS(a.cfg.CORSOrigins, a.api))
	mux.Handle("/api/payments/webhook", a.hook)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		respond.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.db.Ping(ctx); err != nil {
			a.log.Warn("readiness check failed", "err", err)
			respond.JSON(w, http.StatusServiceUnavailable, map[string]string{"status": "database unavailable"})
			return
		}
		respond.JSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return logRequests(a.log, mux)
}

// serve listens (refusing to start if it cannot), starts the scheduler,
// the metrics listener and the relay, serves until ctx ends or the server
// fails, then shuts down.
func (a *app) serve(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		return err
	}
	defer ln.Close()
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		defer metricsLn.Close()
	}
	sw, err := sweeper.Start(a.svc, sweeper.Config{
		Interval: cfg.SweepInterval, Logger: log, Events: a.relay, EventsRetention: cfg.Events.Retention,
		Retention: cfg.Retention, PassTTL: cfg.QueuePassTTL,
	})
	if err != nil {
		return err
	}
	if metricsLn != nil {
		// Stopped last: scrapes may watch the whole shutdown.
		defer background(ctx, func(ctx context.Context) {
			if err := a.met.Serve(ctx, metricsLn, log); err != nil {
				log.Warn("metrics server", "err", err)
			}
		})()
	}
	// The relay stops after the requests and sweeps: until then it
	// delivers what they write.
	defer background(ctx, a.relay.Run)()

	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: min(5*time.Second, cfg.ReadTimeout),
		ReadTimeout:       cfg.ReadTimeout, // a stream's body too: graph's streams clear it once the stream starts
		WriteTimeout:      cfg.RequestTimeout + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	port := ln.Addr().(*net.TCPAddr).Port
	log.Info("listening", "addr", ln.Addr().String(),
		"playground", fmt.Sprintf("http://localhost:%d/", port),
		"graphql", fmt.Sprintf("http://localhost:%d/graphql", port),
		"webhook", fmt.Sprintf("http://localhost:%d/api/payments/webhook", port))
	select {
	case err = <-serveErr:
		err = fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
		log.Info("shutting down: finishing in-flight requests", "timeout", cfg.ShutdownTimeout)
	}
	a.shutdown(srv, sw)
	return err
}

// background runs f until the returned stop is called, which cancels f's
// context and waits for f to return. f's context outlives ctx's
// cancellation: shutdown decides when f stops.
func background(ctx context.Context, f func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); f(ctx) }()
	return func() { cancel(); <-done }
}

// shutdown stops taking requests and lets those in flight finish, then
// stops the scheduler.
func (a *app) shutdown(srv *http.Server, sw *sweeper.Sweeper) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	// Subscriptions first: the HTTP server's Shutdown does not see upgraded
	// WebSocket connections, and would wait out the SSE streams.
	if err := a.api.Shutdown(ctx); err != nil {
		a.log.Warn("subscriptions shutdown", "err", err)
	}
	a.hub.Close()
	if err := srv.Shutdown(ctx); err != nil {
		a.log.Warn("http shutdown", "err", err)
		_ = srv.Close()
	}
	if err := sw.Stop(ctx); err != nil {
		a.log.Warn("scheduler shutdown", "err", err)
	}
}

// openSinks makes the configured order-event sinks. NATS connects in the
// background: a NATS server that is down delays events, never the start.
func openSinks(ctx context.Context, ev eventsConfig, log *slog.Logger) ([]sink.Sink, error) {
	var sinks []sink.Sink
	if ev.WebhookURL != "" {
		wh, err := sink.NewWebhook(sink.WebhookConfig{URL: ev.WebhookURL, Secret: ev.WebhookSecret,
			Timeout: ev.Relay.Timeout, Concurrency: ev.Relay.Concurrency})
		if err != nil {
			return nil, fmt.Errorf("EVENTS_WEBHOOK_URL: %w", err)
		}
		sinks = append(sinks, wh)
		log.Info("order events go to a webhook", "url", redactURL(ev.WebhookURL))
	}
	if ev.NATSURL != "" {
		n, err := sink.NewNATS(ctx, sink.NATSConfig{URL: ev.NATSURL, Subject: ev.NATSSubject, Stream: ev.NATSStream,
			Timeout: ev.Relay.Timeout, Logger: log})
		if err != nil {
			for _, s := range sinks {
				_ = s.Close()
			}
			return nil, fmt.Errorf("EVENTS_NATS_URL: %w", err)
		}
		sinks = append(sinks, n)
		log.Info("order events go to NATS JetStream", "url", redactURL(ev.NATSURL), "subject", ev.NATSSubject+".<type>", "stream", ev.NATSStream)
	}
	if len(sinks) == 0 {
		log.Info("no order event sink configured (EVENTS_WEBHOOK_URL, EVENTS_NATS_URL): events are kept for operators (orderEvents), never sent")
	}
	return sinks, nil
}

func sinkNames(sinks []sink.Sink) []string {
	names := make([]string, len(sinks))
	for i, s := range sinks {
		names[i] = s.Name()
	}
	return names
}

// redactURL drops a URL's credentials and query for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || strings.Contains(raw, ",") {
		return "(" + strconv.Itoa(len(strings.Split(raw, ","))) + " URLs)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// waitForDatabase lets the server start before its database is up (common
// when both start together), retrying for up to a minute; an error no wait
// will fix (no such database, access denied) stops it at once, saying what
// to do.
func waitForDatabase(ctx context.Context, db *database.DB, log *slog.Logger) error {
	deadline := time.Now().Add(time.Minute)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := db.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if advice, ok := database.Permanent(err); ok {
			return fmt.Errorf("database %s: %w; %s", db.Redacted, err, advice)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("database %s unreachable: %w", db.Redacted, err)
		}
		log.Warn("waiting for the database", "url", db.Redacted, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// seedDemo fills an empty default embedded database with a few products so the
// playground has something to hold at once.
func seedDemo(ctx context.Context, svc *stock.Service, log *slog.Logger) error {
	n, err := svc.CountProducts(ctx)
	if err != nil || n > 0 {
		return err
	}
	for _, p := range []stock.NewProduct{
		{Name: "Limited sneaker drop", PriceCents: 19900, Stock: 50},
		{Name: "Signed vinyl", PriceCents: 4500, Stock: 10},
		{Name: "Concert ticket", PriceCents: 8900, Stock: 200},
	} {
		made, err := svc.CreateProduct(ctx, nil, p) // no operator's action: not in the log
		if err != nil {
			return fmt.Errorf("seed demo products: %w", err)
		}
		log.Info("demo product added", "id", made.ID, "name", made.Name, "stock", made.StockAvailable)
	}
	return nil
}

// withCORS lets browser frontends on the configured origins call the API
// (rs/cors gets the preflight and Vary details right). With no origins it
// adds nothing, so browsers refuse cross-origin calls.
func withCORS(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodGet, http.MethodPost},
		AllowedHeaders: []string{"Content-Type", "Authorization"},
		MaxAge:         600,
	}).Handler(next)
}

// logRequests logs each request at debug level (webhook deliveries are
// logged by their handler at info).
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return next // no wrapper, no allocations on the hot path
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "took", time.Since(start))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush lets a subscription's Server-Sent Events through the recorder
// (gqlgen's SSE transport needs an http.Flusher).
func (s *statusRecorder) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }
