package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/customer"
	"flashsale/database"
	"flashsale/events"
	"flashsale/graph"
	"flashsale/operator"
	"flashsale/ratelimit"
	"flashsale/signing"
	"flashsale/sink"
)

// config is the server's configuration, read from the environment.
type config struct {
	Port           int
	DatabaseURL    string          // as given (DefaultURL when unset)
	Database       database.Source // DatabaseURL, parsed
	HoldTTL        time.Duration
	PaymentTimeout time.Duration
	SweepInterval  time.Duration
	MaxHoldQty     int
	WebhookKeys    [][]byte         // decoded WEBHOOK_SECRET (several while a key is rotated); none: unsigned webhooks (embedded database only)
	Operators      *operator.Tokens // ADMIN_TOKEN and OPERATOR_TOKENS; none: operator fields are off
	Customers      customer.Config  // customer tokens; Enabled() false: buyers are anonymous
	DBMaxConns     int
	// Beyond the contract:
	RequestTimeout  time.Duration // bound on one request's database work
	GraphQLLimits   graph.Limits
	CORSOrigins     []string // origins allowed to call /graphql from a browser
	RateLimit       ratelimit.Rate
	TrustedProxies  ratelimit.Proxies
	StockPush       time.Duration // least time between two events of one subscription
	MaxSubs         int           // most live subscriptions per process
	MaxSubsPerConn  int           // most subscriptions on one WebSocket
	MaxStreamsPerIP int           // most WebSockets plus SSE streams open from one client IP; 0: off
	ReadTimeout     time.Duration // longest a client may take to send a request (a stream's until it starts)
	ReadCacheMaxAge int           // seconds a CDN may keep a public GET answer; 0: every answer no-store
	MetricsAddr     string        // host:port of the Prometheus listener; "": off
	ShutdownTimeout time.Duration // how long in-flight requests get on SIGTERM
	Retention       time.Duration // how long lapsed holds and payment audit rows are kept
	QueuePassTTL    time.Duration // how long an admitted queue ticket may take its hold
	LogLevel        slog.Level
	LogFormat       string // text or json
	Events          eventsConfig
}

// eventsConfig is where order events go (EVENTS_*).
type eventsConfig struct {
	WebhookURL, WebhookSecret string // "": no webhook sink
	NATSURL                   string // "": no NATS sink
	NATSSubject, NATSStream   string
	Relay                     events.Config // timeouts, retries, concurrency
	Retention                 time.Duration
}

// envVar documents one setting; the list is the -h help text.
type envVar struct{ name, def, help string }

var envVars = []envVar{
	{"PORT", "8080", "HTTP port (0 picks a free one)"},
	{"DATABASE_URL", "sqlite://flashsale.db", "mysql://user:pass@host:3306/db or sqlite://path/to/file.db; the default embedded file gets demo products on first start"},
	{"HOLD_TTL", "2m", "hold lifetime (Go duration)"},
	{"PAYMENT_TIMEOUT", "15m", "how long an order may wait for payment"},
	{"SWEEP_INTERVAL", "1s", "how often expired holds and unpaid orders are released"},
	{"MAX_HOLD_QTY", "10", "largest qty one hold may take"},
	{"WEBHOOK_SECRET", "", "payment webhook signing secret (whsec_ + base64 of at least 24 random bytes), several space-separated while rotating; required with MySQL, unset on the embedded database accepts unsigned webhooks from loopback"},
	{"ADMIN_TOKEN", "", "bearer token of the operator named admin (at least 32 characters)"},
	{"OPERATOR_TOKENS", "", "named operators, name:token,... (tokens at least 32 characters); with neither this nor ADMIN_TOKEN, operator fields are disabled"},
	{"DB_MAX_CONNS", "20", "most database connections of each of the two pools (single statements; transactions)"},
	{"CUSTOMER_JWT_SECRET", "", "HS256 key (at least 32 bytes) of the customer tokens the shop's login issues; with it or CUSTOMER_JWKS_URL, holds and orders need a customer token"},
	{"CUSTOMER_JWKS_URL", "", "https URL of the JWKS with the customer tokens' RS256/ES256/EdDSA public keys"},
	{"CUSTOMER_JWT_ISSUER", "", "when set, a customer token's iss must equal it"},
	{"CUSTOMER_JWT_AUDIENCE", "", "when set, a customer token's aud must contain it"},
	{"REQUEST_TIMEOUT", "10s", "longest a request may wait for the database before UNAVAILABLE/503"},
	{"SHUTDOWN_TIMEOUT", "30s", "how long in-flight requests may finish after SIGTERM"},
	{"GRAPHQL_MAX_QUERY_BYTES", "16384", "longest GraphQL query text accepted"},
	{"GRAPHQL_MAX_DEPTH", "15", "deepest field nesting a GraphQL query may have"},
	{"GRAPHQL_MAX_COMPLEXITY", "1000", "most gqlgen complexity one query may have (a page of products costs first x its fields; introspection counts)"},
	{"GRAPHQL_MAX_MUTATIONS", "10", "most mutation fields, aliases included, one operation may have"},
	{"CORS_ALLOWED_ORIGINS", "", "comma-separated origins (https://shop.example) allowed to call /graphql and subscribe from browsers, or *; unset: none"},
	{"RATE_LIMIT", "", "mutations one caller may send per process, e.g. 20/s or 600/m (a customer by ID, others by client IP); unset: off"},
	{"TRUSTED_PROXIES", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed"},
	{"STOCK_PUSH_INTERVAL", "250ms", "least time between two events of one productStock subscription, also how often other servers' changes are read (10ms to 450ms: a change then reaches subscribers within 1s)"},
	{"MAX_SUBSCRIPTIONS", "10000", "most live subscriptions this process serves"},
	{"MAX_SUBSCRIPTIONS_PER_CONNECTION", "25", "most subscriptions on one WebSocket connection (beyond: that subscription ends with RATE_LIMITED)"},
	{"MAX_STREAMS_PER_IP", "", "most WebSocket connections plus SSE streams open at once from one client IP (IPv6: per /64; behind TRUSTED_PROXIES the forwarded IP); unset: off"},
	{"READ_CACHE_MAX_AGE", "1", "seconds a CDN or caching proxy may keep a public GET /graphql answer (product and products, without Authorization or errors), 0 to 600; stock it shows is then at most 2x+1 seconds old; 0: every answer is no-store"},
	{"READ_TIMEOUT", "15s", "longest a client may take to send a request, body included; a subscription's stream is bound by it only until it starts"},
	{"METRICS_ADDR", "", "host:port of a separate listener for Prometheus metrics at /metrics (e.g. 127.0.0.1:9090; keep it off the public network); unset: off"},
	{"EVENTS_WEBHOOK_URL", "", "http(s) URL the order events are POSTed to, signed with EVENTS_WEBHOOK_SECRET; unset: no webhook sink"},
	{"EVENTS_WEBHOOK_SECRET", "", "whsec_ + base64 of at least 24 random bytes, to sign order events (not WEBHOOK_SECRET)"},
	{"EVENTS_NATS_URL", "", "NATS server(s) for order events on JetStream, e.g. nats://127.0.0.1:4222; unset: no NATS sink"},
	{"EVENTS_NATS_SUBJECT", "flashsale.events", "subject prefix: events go to <prefix>.<type>"},
	{"EVENTS_NATS_STREAM", "FLASHSALE_EVENTS", "JetStream stream, created if missing (file storage, 10m duplicate window)"},
	{"EVENTS_TIMEOUT", "10s", "longest wait for one delivery attempt (at most 15s, so a dead server's claims lapse within 25s)"},
	{"EVENTS_RETRY_MIN", "5s", "least wait before retrying a failed delivery; doubles per attempt"},
	{"EVENTS_RETRY_MAX", "1h", "longest wait between two attempts"},
	{"EVENTS_MAX_ATTEMPTS", "15", "failed attempts before an event is FAILED on a sink (an operator may redeliver it)"},
	{"EVENTS_CONCURRENCY", "16", "delivery attempts in flight per process per sink"},
	{"EVENTS_RETENTION", "168h", "how long events delivered to every sink are kept"},
	{"QUEUE_PASS_TTL", "10m", "how long an admitted waiting-room ticket may take its one hold"},
	{"RETENTION", "2160h", "how long expired and released holds that never became orders, and payment-event audit rows, are kept (90 days)"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "text", "text or json"},
}

// loadConfig reads and checks every setting, reporting all bad values at once.
func loadConfig(getenv func(string) string) (config, error) {
	e := &env{getenv: getenv}
	get, intVar, durVar := e.get, e.int, e.dur
	c := config{
		Port:            intVar("PORT", 0, 65535),
		DatabaseURL:     get("DATABASE_URL"),
		HoldTTL:         durVar("HOLD_TTL", time.Second, 24*time.Hour),
		PaymentTimeout:  durVar("PAYMENT_TIMEOUT", time.Second, 7*24*time.Hour),
		SweepInterval:   durVar("SWEEP_INTERVAL", 10*time.Millisecond, time.Hour),
		MaxHoldQty:      intVar("MAX_HOLD_QTY", 1, 1_000_000),
		DBMaxConns:      intVar("DB_MAX_CONNS", 1, 10_000),
		RequestTimeout:  durVar("REQUEST_TIMEOUT", 100*time.Millisecond, 10*time.Minute),
		ShutdownTimeout: durVar("SHUTDOWN_TIMEOUT", 0, 10*time.Minute),
		StockPush:       durVar("STOCK_PUSH_INTERVAL", 10*time.Millisecond, 450*time.Millisecond),
		MaxSubs:         intVar("MAX_SUBSCRIPTIONS", 1, 1_000_000),
		MaxSubsPerConn:  intVar("MAX_SUBSCRIPTIONS_PER_CONNECTION", 1, 10_000),
		MaxStreamsPerIP: e.optionalInt("MAX_STREAMS_PER_IP", 1, 1_000_000),
		ReadTimeout:     durVar("READ_TIMEOUT", 100*time.Millisecond, 10*time.Minute),
		ReadCacheMaxAge: intVar("READ_CACHE_MAX_AGE", 0, 600),
		Retention:       durVar("RETENTION", time.Hour, 100*365*24*time.Hour),
		QueuePassTTL:    durVar("QUEUE_PASS_TTL", time.Second, 24*time.Hour),
		LogFormat:       get("LOG_FORMAT"),
		GraphQLLimits: graph.Limits{
			MaxQueryBytes: intVar("GRAPHQL_MAX_QUERY_BYTES", 256, graph.MaxBody),
			MaxDepth:      intVar("GRAPHQL_MAX_DEPTH", 2, 1000),
			MaxComplexity: intVar("GRAPHQL_MAX_COMPLEXITY", 10, 1_000_000),
			MaxMutations:  intVar("GRAPHQL_MAX_MUTATIONS", 1, 1000),
		},
	}
	var errs []error
	var err error
	if c.Database, err = database.ParseURL(c.DatabaseURL); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.loadEvents(e)...) // before loadSecrets, which compares with its secret
	errs = append(errs, c.loadSecrets(getenv)...)
	if c.RateLimit, err = ratelimit.Parse(getenv("RATE_LIMIT")); err != nil {
		errs = append(errs, fmt.Errorf("RATE_LIMIT=%q: %w", getenv("RATE_LIMIT"), err))
	}
	if c.TrustedProxies, err = ratelimit.ParseProxies(getenv("TRUSTED_PROXIES")); err != nil {
		errs = append(errs, fmt.Errorf("TRUSTED_PROXIES: %w", err))
	}
	c.Customers = customer.Config{
		Secret:   getenv("CUSTOMER_JWT_SECRET"),
		JWKSURL:  strings.TrimSpace(getenv("CUSTOMER_JWKS_URL")),
		Issuer:   getenv("CUSTOMER_JWT_ISSUER"),
		Audience: getenv("CUSTOMER_JWT_AUDIENCE"),
	}
	if err := c.Customers.Check(); err != nil {
		errs = append(errs, err)
	}
	for _, o := range strings.Split(getenv("CORS_ALLOWED_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if u, err := url.Parse(o); o != "*" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "") {
			errs = append(errs, fmt.Errorf("CORS_ALLOWED_ORIGINS: %q is not an origin like https://shop.example or *", o))
		}
		c.CORSOrigins = append(c.CORSOrigins, o)
	}
	if c.MetricsAddr = strings.TrimSpace(getenv("METRICS_ADDR")); c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("METRICS_ADDR=%q: want host:port, e.g. 127.0.0.1:9090", c.MetricsAddr))
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("LOG_LEVEL"))); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", getenv("LOG_LEVEL")))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("LOG_FORMAT=%q: want text or json", c.LogFormat))
	}
	// The ranges e checked come first: the order of the settings.
	if errs = append(e.errs, errs...); len(errs) > 0 {
		return config{}, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	return c, nil
}

// env reads settings, collecting what is wrong with them.
type env struct {
	getenv func(string) string
	errs   []error
}

// get is the setting's value, trimmed, or its default from envVars.
func (e *env) get(name string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	for _, v := range envVars {
		if v.name == name {
			return v.def
		}
	}
	return ""
}

func (e *env) int(name string, lo, hi int) int {
	n, err := strconv.Atoi(e.get(name))
	if err != nil || n < lo || n > hi {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: want a whole number from %d to %d", name, e.getenv(name), lo, hi))
	}
	return n
}

// optionalInt is int for a setting that is off (0) when unset.
func (e *env) optionalInt(name string, lo, hi int) int {
	if e.get(name) == "" {
		return 0
	}
	return e.int(name, lo, hi)
}

func (e *env) dur(name string, lo, hi time.Duration) time.Duration {
	d, err := time.ParseDuration(e.get(name))
	if err != nil || d < lo || d > hi {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: want a Go duration (e.g. 90s, 2m) from %s to %s", name, e.getenv(name), lo, hi))
	}
	return d
}

// loadSecrets reads WEBHOOK_SECRET, ADMIN_TOKEN and OPERATOR_TOKENS. All
// fail closed: a missing webhook secret on a real database, or a short or
// malformed token, stops the server rather than opening the API. No error
// quotes a secret.
func (c *config) loadSecrets(getenv func(string) string) []error {
	var errs []error
	secret := getenv("WEBHOOK_SECRET")
	switch {
	case strings.TrimSpace(secret) != "":
		keys, err := signing.ParseSecrets(secret)
		if err != nil {
			errs = append(errs, fmt.Errorf("WEBHOOK_SECRET: %w", err))
		}
		c.WebhookKeys = keys
	case c.Database.Dialect == dialect.MySQL:
		// Unsigned, anyone who learns an order ID could mark it paid.
		errs = append(errs, fmt.Errorf("WEBHOOK_SECRET is required with a MySQL DATABASE_URL (it signs the payment webhook); %s and give the same secret to the payment provider", signing.HowToMakeSecret))
	}
	// The payment provider, the shop's event receiver and its login system
	// know these; none of them is an operator.
	secrets := map[string][]string{
		"WEBHOOK_SECRET":        strings.Fields(secret),
		"EVENTS_WEBHOOK_SECRET": {c.Events.WebhookSecret},
		"CUSTOMER_JWT_SECRET":   {getenv("CUSTOMER_JWT_SECRET")},
	}
	var err error
	if c.Operators, err = operator.Parse(getenv("OPERATOR_TOKENS"), getenv("ADMIN_TOKEN"), secrets); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// loadEvents reads the EVENTS_* settings. A sink that is half configured,
// or whose signing secret is one a payment provider knows, refuses to
// start rather than send unsigned or forgeable events.
func (c *config) loadEvents(e *env) []error {
	ev := eventsConfig{
		WebhookURL:    strings.TrimSpace(e.getenv("EVENTS_WEBHOOK_URL")),
		WebhookSecret: strings.TrimSpace(e.getenv("EVENTS_WEBHOOK_SECRET")),
		NATSURL:       strings.TrimSpace(e.getenv("EVENTS_NATS_URL")),
		NATSSubject:   e.get("EVENTS_NATS_SUBJECT"),
		NATSStream:    e.get("EVENTS_NATS_STREAM"),
		Relay: events.Config{
			Timeout:     e.dur("EVENTS_TIMEOUT", 100*time.Millisecond, events.MaxTimeout),
			RetryMin:    e.dur("EVENTS_RETRY_MIN", 10*time.Millisecond, 24*time.Hour),
			RetryMax:    e.dur("EVENTS_RETRY_MAX", 10*time.Millisecond, 7*24*time.Hour),
			MaxAttempts: e.int("EVENTS_MAX_ATTEMPTS", 1, 1000),
			Concurrency: e.int("EVENTS_CONCURRENCY", 1, 1024),
		},
		Retention: e.dur("EVENTS_RETENTION", time.Minute, 10*365*24*time.Hour),
	}
	var errs []error
	if ev.Relay.RetryMin > ev.Relay.RetryMax {
		errs = append(errs, fmt.Errorf("EVENTS_RETRY_MIN (%s) must not be longer than EVENTS_RETRY_MAX (%s)", ev.Relay.RetryMin, ev.Relay.RetryMax))
	}
	switch {
	case ev.WebhookURL == "" && ev.WebhookSecret != "":
		errs = append(errs, errors.New("EVENTS_WEBHOOK_SECRET is set but EVENTS_WEBHOOK_URL is not: set the URL the events go to, or unset the secret"))
	case ev.WebhookURL == "":
	case ev.WebhookSecret == "":
		errs = append(errs, fmt.Errorf("EVENTS_WEBHOOK_SECRET is required with EVENTS_WEBHOOK_URL (it signs the events; give the same secret to the receiver); %s", signing.HowToMakeSecret))
	default:
		if err := sink.CheckWebhookURL(ev.WebhookURL); err != nil {
			errs = append(errs, fmt.Errorf("EVENTS_WEBHOOK_URL: %w", err))
		}
		if _, err := signing.ParseSecret(ev.WebhookSecret); err != nil {
			errs = append(errs, fmt.Errorf("EVENTS_WEBHOOK_SECRET: %w", err))
		}
		// The payment provider knows WEBHOOK_SECRET: with it, they could
		// forge events to the shop.
		if slices.Contains(strings.Fields(e.getenv("WEBHOOK_SECRET")), ev.WebhookSecret) {
			errs = append(errs, fmt.Errorf("EVENTS_WEBHOOK_SECRET must not be the same as WEBHOOK_SECRET (the payment provider knows that one); %s", signing.HowToMakeSecret))
		}
	}
	if ev.NATSURL != "" {
		for _, check := range []struct {
			name, value string
			f           func(string) error
		}{
			{"EVENTS_NATS_URL", ev.NATSURL, sink.CheckNATSURL},
			{"EVENTS_NATS_SUBJECT", ev.NATSSubject, sink.CheckNATSSubject},
			{"EVENTS_NATS_STREAM", ev.NATSStream, sink.CheckNATSStream},
		} {
			if err := check.f(check.value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", check.name, err))
			}
		}
	}
	c.Events = ev
	return errs
}
