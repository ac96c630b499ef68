// Command loadtest is the project's own load tool: it drives a running
// flash-sale server over HTTP with N concurrent clients, one scenario at a
// time, prints throughput, latency percentiles and error counts per scenario,
// the ratios the hot-product work is measured by, and then checks that the
// run broke no stock invariant and oversold nothing.
//
//	go run ./loadtest -url http://127.0.0.1:8080 -token $ADMIN_TOKEN \
//	    -secret $WEBHOOK_SECRET -db mysql://root@127.0.0.1:3306/flashsale \
//	    -clients 256 -duration 10s
//
// It creates its own products (createProduct, with the admin token) and never
// touches existing ones. It only talks to loopback addresses. With
// -customer-secret (the server's CUSTOMER_JWT_SECRET) every client buys as a
// customer of its own, with a token the tool mints, and the customers-only
// scenarios typename-customer and limit run.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"flashsale/deploy/nginx"
	"flashsale/signing"
)

// Scenario names, in the order they run.
const (
	scTypename         = "typename"
	scTypenameCustomer = "typename-customer"
	scHotHold          = "hot-hold"
	scSellout          = "sellout"
	scRead             = "read"
	scQueueJoin        = "queue-join"     // joinQueue, each join a new ticket (see queue.go)
	scQueuePosition    = "queue-position" // queueTicket reads of waiting tickets
	scLifecycle        = "lifecycle"
	scLifecycleEvents  = "lifecycle-events" // lifecycle's work against -events-url (see events.go)
	scLimit            = "limit"
	scDBForUpdate      = "db-forupdate"
	scDBLifecycle      = "db-lifecycle"
	scSubscribers      = "subscribers"
	scQueueSubscribers = "queue-subscribers" // ticket subscriptions told ADMITTED
	scEdge             = "edge"              // reads through nginx with the repo's configuration (see edge.go)
	// scSubscribersBaseline names subscribers' first hot-hold run, without
	// subscribers (a row of the report, not a scenario to choose).
	scSubscribersBaseline = "subscribers-baseline"
)

var allScenarios = []string{scTypename, scTypenameCustomer, scHotHold, scSellout, scRead, scQueueJoin, scQueuePosition, scLifecycle,
	scLifecycleEvents, scLimit, scDBForUpdate, scDBLifecycle, scSubscribers, scQueueSubscribers, scEdge}

// optInScenarios run only when named: "all" leaves them out. subscribers
// and queue-subscribers open thousands of subscriptions and need the
// server's MAX_SUBSCRIPTIONS to allow them; edge starts an nginx.
var optInScenarios = []string{scSubscribers, scQueueSubscribers, scEdge}

// aloneScenarios run on their own after the others, against baselines of
// their own (queue-subscribers: against the contract's second).
var aloneScenarios = []string{scSubscribers, scQueueSubscribers, scEdge}

// dbScenarios run straight against -db, without HTTP: they need MySQL.
var dbScenarios = []string{scDBForUpdate, scDBLifecycle}

func isDBScenario(name string) bool { return slices.Contains(dbScenarios, name) }

// customerScenarios need customer tokens: they run in customers mode only.
var customerScenarios = []string{scTypenameCustomer, scLimit}

func isCustomerScenario(name string) bool { return slices.Contains(customerScenarios, name) }

// eventsScenarios need a second server with a webhook sink (-events-url)
// and the tool's receiver (-events-listen).
var eventsScenarios = []string{scLifecycleEvents}

func isEventsScenario(name string) bool { return slices.Contains(eventsScenarios, name) }

// Bounds on what one run may do.
const (
	maxClients   = 4096
	minDuration  = 100 * time.Millisecond
	maxDuration  = 10 * time.Minute
	bigStock     = 1_000_000_000 // the largest stock createProduct accepts: never sells out
	dbPoolLimit  = 64            // MariaDB's max_connections is 151, shared with the server
	checkTimeout = 2 * time.Minute
	minSlice     = 100 * time.Millisecond
	maxSlices    = 100
)

// sliceCount is how many slices each scenario runs in: -slices, fewer if
// a slice would be shorter than minSlice.
func sliceCount(o options) int {
	return max(1, min(o.Slices, int(o.Duration/minSlice)))
}

// Exit codes.
const (
	exitOK          = 0
	exitViolation   = 1 // an invariant violation, oversold product, or a failure to run
	exitUsage       = 2
	exitMiss        = 3 // -fail-on-miss and a ratio missed its target
	exitInterrupted = 130
)

type options struct {
	URL            string
	Token          string
	Secret         string
	DB             string
	Clients        int
	Duration       time.Duration
	Timeout        time.Duration
	Scenarios      []string
	SelloutStock   int
	HoldTTL        time.Duration
	PaymentTimeout time.Duration
	DBConns        int
	MaxRequests    int64
	JSONFile       string
	FailOnMiss     bool
	Slices         int
	// Customers mode, when CustomerSecret is set.
	CustomerSecret   string
	CustomerIssuer   string
	CustomerAudience string
	// The subscribers scenario.
	Subscribers int
	ServerPID   int
	// lifecycle-events: the second server, where its receiver listens, and
	// the secret its events are signed with ("": not verified).
	EventsURL    string
	EventsListen string
	EventsSecret string
	// edge: holds a second on its product while it is read.
	EdgeHolds int
	// queue-subscribers: ticket subscriptions, how many share a WebSocket
	// (anonymous mode), and the admission rate (0: all over -duration).
	QueueSubscribers    int
	QueuePerConn        int
	QueueAdmitPerMinute int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		// A second Ctrl-C gets Go's default behaviour: exit at once.
		stop()
		fmt.Fprintln(os.Stderr, "loadtest: stopping: finishing the requests in flight, then reporting and checking (Ctrl-C again quits now)")
	}()
	os.Exit(run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr))
}

// run is the whole tool; ctx is cancelled by Ctrl-C, after which it stops
// starting requests, lets those in flight finish, reports what it measured
// and still runs the checks. It returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return exitUsage
	}
	api, err := newAPI(opts.URL, opts.Token, opts.Secret, opts.Clients, opts.Timeout)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return exitUsage
	}
	defer api.close()

	runID := randomHex(4)
	rep := newReport(opts, runID)
	if err := api.ping(context.Background()); err != nil {
		fmt.Fprintf(stderr, "loadtest: %s does not answer GraphQL: %v\n", opts.URL, err)
		return exitViolation
	}
	st := &state{opts: opts, api: api, runID: runID, progress: progressTo(stderr), stop: ctx}
	defer st.close()
	toRun, err := st.setUp(rep, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return exitCodeOf(err)
	}
	st.runScenarios(rep, toRun, stderr)
	return st.finish(rep, stdout, stderr)
}

// progressTo returns the progress printer: one line to stderr at a time,
// as scenarios taking turns set up at once.
func progressTo(stderr io.Writer) func(format string, a ...any) {
	var mu sync.Mutex
	return func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, "loadtest: "+format+"\n", a...)
	}
}

// newReport starts the report of a run.
func newReport(opts options, runID string) *report {
	return &report{
		URL: opts.URL, RunID: runID, Clients: opts.Clients,
		DurationSeconds: opts.Duration.Seconds(), RequestTimeout: opts.Timeout.String(),
		Started: time.Now().UTC(), CPUs: runtime.NumCPU(), LoadAvgStart: loadAvg(),
	}
}

// setupError stops the run before any scenario with its exit code.
type setupError struct {
	code int
	err  error
}

func (e *setupError) Error() string { return e.err.Error() }

// exitCodeOf is the exit code a setup failure ends the run with.
func exitCodeOf(err error) int {
	if e, ok := err.(*setupError); ok {
		return e.code
	}
	return exitViolation
}

// setUp opens what the scenarios to run need (the database baseline, the
// events server, the customers' tokens) and creates their products. It
// returns the scenarios that can run. Should only some products be
// created, it reports that and returns none, so the run goes straight to
// checking what was created.
func (st *state) setUp(rep *report, stderr io.Writer) ([]string, error) {
	opts := st.opts
	if strings.HasPrefix(opts.DB, "mysql://") && slices.ContainsFunc(opts.Scenarios, isDBScenario) {
		base, err := openBaseline(opts.DB, opts.Clients, opts.DBConns, opts.HoldTTL, opts.PaymentTimeout)
		if err != nil {
			return nil, &setupError{exitViolation, fmt.Errorf("-db: %w", err)}
		}
		st.base = base
		rep.DBPoolCap = base.pool
	}
	st.started = time.Now()
	toRun := runnable(opts, rep)
	if slices.ContainsFunc(toRun, isEventsScenario) {
		events, err := startEvents(opts)
		if err != nil {
			return nil, &setupError{exitViolation, fmt.Errorf("-events-url: %w", err)}
		}
		st.events = events
		rep.EventsURL, rep.EventsListen = events.api.base, events.recv.addr()
	}
	if opts.CustomerSecret != "" {
		if err := st.setUpCustomers(rep, len(toRun)); err != nil {
			return nil, err
		}
	}
	if err := st.createProducts(toRun); err != nil {
		if len(st.products) == 0 {
			return nil, &setupError{exitViolation, err}
		}
		fmt.Fprintln(stderr, "loadtest:", err)
		rep.SetupFailed = true
		return nil, nil
	}
	return toRun, nil
}

// scenarioNeed is what some scenarios need beyond a server: when it is
// unmet, "all" skips them with a note (runnable), and naming one is a
// usage error (checkScenarioNeeds).
type scenarioNeed struct {
	applies func(name string) bool
	unmet   func(o options) bool
	skipped string // the note, after "<name> skipped: "
	usage   string // the error, after "-scenarios: <name> needs "
}

var scenarioNeeds = []scenarioNeed{
	{isDBScenario, func(o options) bool { return !strings.HasPrefix(o.DB, "mysql://") },
		"it needs a MySQL/MariaDB -db (mysql://...)",
		"a MySQL/MariaDB -db (mysql://...)"},
	{isCustomerScenario, func(o options) bool { return o.CustomerSecret == "" },
		"it needs customer tokens (-customer-secret, the server's CUSTOMER_JWT_SECRET)",
		"customer tokens: -customer-secret (the server's CUSTOMER_JWT_SECRET)"},
	{isEventsScenario, func(o options) bool { return o.EventsURL == "" },
		"it needs a second server on its own database whose order events go to the tool " +
			"(-events-url, -events-listen; see loadtest/events.sh)",
		"a second server whose order events go to the tool: -events-url and -events-listen"},
	{func(n string) bool { return n == scEdge }, func(options) bool { _, err := nginx.Binary(); return err != nil },
		"it needs nginx (Debian: apt-get install nginx-light, or bash .ci/nginx.sh)",
		"nginx on $PATH or at " + nginx.FallbackBinary + " (Debian: apt-get install nginx-light, or bash .ci/nginx.sh)"},
}

// runnable returns the chosen scenarios whose needs are met, and notes in
// rep each one skipped. (A MySQL -db is also what opens the baseline the
// db-* scenarios run on.)
func runnable(opts options, rep *report) []string {
	var toRun []string
	for _, name := range opts.Scenarios {
		if i := slices.IndexFunc(scenarioNeeds, func(n scenarioNeed) bool { return n.applies(name) && n.unmet(opts) }); i >= 0 {
			rep.Notes = append(rep.Notes, name+" skipped: "+scenarioNeeds[i].skipped)
			continue
		}
		toRun = append(toRun, name)
	}
	return toRun
}

// setUpCustomers mints one token per client, valid for the whole run of
// scenarios, and makes sure the server takes them.
func (st *state) setUpCustomers(rep *report, scenarios int) error {
	opts := st.opts
	var err error
	if st.cust, err = newCustomers(opts, st.runID, tokenTTL(opts, scenarios)); err != nil {
		return &setupError{exitUsage, fmt.Errorf("-customer-secret: %w", err)}
	}
	pctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	id, err := st.api.whoami(pctx, st.cust.tokens[0])
	cancel()
	if err == nil && id != st.cust.ids[0] {
		err = fmt.Errorf("me.id is %q for a token of %q", id, st.cust.ids[0])
	}
	if err != nil {
		return &setupError{exitViolation, fmt.Errorf("customer tokens: %w", err)}
	}
	rep.Customers = &customersInfo{Clients: len(st.cust.ids), Pattern: "lt-" + st.runID + "-<client>",
		LimitCustomers: st.cust.limitIDs, Expires: st.cust.expires,
		Issuer: opts.CustomerIssuer, Audience: opts.CustomerAudience}
	st.progress("customers mode: every client buys as its own customer (%s), tokens valid until %s",
		rep.Customers.Pattern, st.cust.expires.Format(time.RFC3339))
	return nil
}

// close closes what setUp opened, the events side first.
func (st *state) close() {
	if st.events != nil {
		st.events.close()
	}
	if st.base != nil {
		st.base.close()
	}
}

// runScenarios runs toRun into rep: the scenarios taking turns slice by
// slice (see turns), all but subscribers, which measures itself against
// its own baseline; then the others one after another, until Ctrl-C.
func (st *state) runScenarios(rep *report, toRun []string, stderr io.Writer) {
	together := slices.DeleteFunc(slices.Clone(toRun), func(n string) bool { return slices.Contains(aloneScenarios, n) })
	rep.Slices = 1
	if n := sliceCount(st.opts); n > 1 && len(together) > 1 {
		rep.Slices = n
		st.progress("%d scenarios take turns: %d slices of %s each", len(together), n, st.opts.Duration/time.Duration(n))
		st.turns = newTurns(together, n)
	}
	if st.turns != nil {
		st.runTogether(rep, together, stderr)
		toRun = slices.DeleteFunc(toRun, func(n string) bool { return slices.Contains(together, n) })
	}
	for _, name := range toRun {
		if st.stop.Err() != nil {
			rep.Interrupted = true
			break
		}
		if name == scSubscribers {
			var rows []scenarioResult
			var err error
			rows, rep.Subscribers, err = st.runSubscribers()
			rep.record(stderr, name, rows, err)
			continue
		}
		if name == scQueueSubscribers {
			rows, err := st.runQueueSubscribers()
			rep.record(stderr, name, rows, err)
			continue
		}
		if name == scEdge {
			rows, err := st.runEdge()
			rep.record(stderr, name, rows, err)
			continue
		}
		res, err := st.runScenario(name)
		rep.record(stderr, name, []scenarioResult{res}, err)
	}
	if st.stop.Err() != nil {
		rep.Interrupted = true
	}
}

// runTogether runs the scenarios taking turns, each in its goroutine, and
// records them in their order.
func (st *state) runTogether(rep *report, together []string, stderr io.Writer) {
	t := st.turns
	results := make([]scenarioResult, len(together))
	errs := make([]error, len(together))
	var wg sync.WaitGroup
	for i, name := range together {
		wg.Go(func() {
			defer close(t.left[name])
			results[i], errs[i] = st.runScenario(name)
		})
	}
	t.run()
	wg.Wait()
	for i, name := range together {
		rep.record(stderr, name, []scenarioResult{results[i]}, errs[i])
	}
}

// record adds a scenario's rows to the report, or notes that it did not run.
func (r *report) record(stderr io.Writer, name string, rows []scenarioResult, err error) {
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: %s: %v\n", name, err)
		r.Notes = append(r.Notes, fmt.Sprintf("%s did not run: %v", name, err))
		r.SetupFailed = true
		return
	}
	r.Scenarios = append(r.Scenarios, rows...)
}

// finish derives the ratios, runs the checks, writes the report and
// returns the exit code.
func (st *state) finish(rep *report, stdout, stderr io.Writer) int {
	rep.Ratios = computeRatios(rep.Scenarios)
	addTokenNote(rep)
	rep.Products = st.products

	st.progress("checking invariants")
	cctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	rep.Checks = st.check(cctx)
	cancel()

	rep.LoadAvgEnd = loadAvg()
	writeText(stdout, rep, st.opts)
	if st.opts.JSONFile != "" {
		if err := writeJSON(st.opts.JSONFile, rep); err != nil {
			fmt.Fprintln(stderr, "loadtest: -json:", err)
			return exitViolation
		}
	}
	return exitCode(rep, st.opts)
}

// exitCode is a finished run's exit code: violations and failures first.
func exitCode(rep *report, opts options) int {
	switch {
	case len(rep.Checks.Violations) > 0 || rep.Checks.Failed || rep.SetupFailed:
		return exitViolation
	case rep.Interrupted:
		return exitInterrupted
	case opts.FailOnMiss && rep.anyMiss():
		return exitMiss
	}
	return exitOK
}

// parseFlags reads the options from args, the secrets and customer
// settings not given from the environment, and checks them all at once.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := defineFlags(fs, &o)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s -url URL -token TOKEN [-secret whsec_...] [-customer-secret KEY] [-db DATABASE_URL] [flags]\n\n", args[0])
		fmt.Fprintf(stderr, "Load-tests a running flash-sale server with its own products, prints a table of\n"+
			"figures and target ratios, then checks the stock invariants. Exit codes: %d ok, %d violation\n"+
			"or failure, %d usage, %d target missed (-fail-on-miss), %d interrupted.\n\n",
			exitOK, exitViolation, exitUsage, exitMiss, exitInterrupted)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	optionsFromEnv(&o, getenv)
	errs := checkEventsFlags(o)
	errs = append(errs, checkBounds(o)...)
	errs = append(errs, checkAccess(o)...)
	var err error
	if o.Scenarios, err = parseScenarios(*scen); err != nil {
		errs = append(errs, fmt.Errorf("-scenarios: %w", err))
	} else if *scen != "all" {
		errs = append(errs, checkScenarioNeeds(o)...)
	}
	return o, errors.Join(errs...)
}

// defineFlags defines the tool's flags on fs, into o; it returns where
// -scenarios goes, to be parsed after.
func defineFlags(fs *flag.FlagSet, o *options) *string {
	fs.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "server base URL, or several comma-separated, taken in turn request by request as behind a load balancer (loopback only: 127.0.0.0/8, ::1 or localhost)")
	fs.StringVar(&o.Token, "token", "", "admin bearer token, to create the tool's own products (default $ADMIN_TOKEN)")
	fs.StringVar(&o.Secret, "secret", "", "webhook secret (whsec_...) the server uses; empty sends unsigned webhooks (default $WEBHOOK_SECRET)")
	fs.StringVar(&o.DB, "db", "", "the server's DATABASE_URL (mysql://... or sqlite://...): enables db-forupdate, db-lifecycle and the database checks")
	fs.IntVar(&o.Clients, "clients", 256, fmt.Sprintf("concurrent clients per scenario (1..%d)", maxClients))
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, fmt.Sprintf("how long each scenario runs (%s..%s)", minDuration, maxDuration))
	fs.DurationVar(&o.Timeout, "timeout", 15*time.Second, "per-request timeout")
	scen := fs.String("scenarios", "all", "comma-separated scenarios, run in this order: "+strings.Join(allScenarios, ",")+" (all: every one but "+strings.Join(optInScenarios, ",")+")")
	fs.IntVar(&o.SelloutStock, "sellout-stock", 100, "stock of the sellout scenario's product")
	fs.DurationVar(&o.HoldTTL, "hold-ttl", 2*time.Minute, "the server's HOLD_TTL: expiry of the holds db-forupdate and db-lifecycle write, and how long the sellout count is a bound")
	fs.DurationVar(&o.PaymentTimeout, "payment-timeout", 15*time.Minute, "payment due time of the orders db-lifecycle writes (use the server's PAYMENT_TIMEOUT)")
	fs.IntVar(&o.DBConns, "db-conns", 0, fmt.Sprintf("database connections of db-forupdate and db-lifecycle (0: min(clients, %d); MariaDB's max_connections, 151, is shared with the server)", dbPoolLimit))
	fs.Int64Var(&o.MaxRequests, "max-requests", 2_000_000, "most operations one scenario starts (requests; lifecycles in lifecycle and db-lifecycle): bounds memory, as every latency is kept")
	fs.StringVar(&o.JSONFile, "json", "", "also write the figures to this file as JSON")
	fs.IntVar(&o.Slices, "slices", 5, fmt.Sprintf("the scenarios take turns in this many slices of -duration each (at least %s long), so that each samples the whole run (1: one after another)", minSlice))
	fs.BoolVar(&o.FailOnMiss, "fail-on-miss", false, fmt.Sprintf("exit %d when a ratio misses its target (informational ones aside)", exitMiss))
	fs.StringVar(&o.CustomerSecret, "customer-secret", "", "the server's CUSTOMER_JWT_SECRET (at least 32 bytes): customers mode, every client buys as its own customer with an HS256 token the tool mints; empty: anonymous buyers (default $CUSTOMER_JWT_SECRET)")
	fs.StringVar(&o.CustomerIssuer, "customer-issuer", "", "iss of the minted customer tokens, the server's CUSTOMER_JWT_ISSUER (default $CUSTOMER_JWT_ISSUER)")
	fs.IntVar(&o.Subscribers, "subscribers", 10000, fmt.Sprintf("subscriptions the subscribers scenario opens, one WebSocket each, to the first -url (1..%d; the server's MAX_SUBSCRIPTIONS must allow them)", maxSubscribers))
	fs.IntVar(&o.ServerPID, "server-pid", 0, "PID of the first -url's server process: subscribers and queue-subscribers report its memory per subscription (Linux /proc); 0: not measured")
	fs.StringVar(&o.EventsURL, "events-url", "", "lifecycle-events: a second server, on its own database, started with EVENTS_WEBHOOK_URL=http://<-events-listen>/events; "+
		"it runs lifecycle's work while the tool receives its order events (it must take the same -token, -secret and customer settings as -url; loopback only)")
	fs.StringVar(&o.EventsListen, "events-listen", "", "host:port (loopback) where the tool's order-event receiver listens, answering 204 to every POST (with -events-url)")
	fs.StringVar(&o.EventsSecret, "events-secret", "", "the -events-url server's EVENTS_WEBHOOK_SECRET (whsec_...): the receiver verifies every event's signature; "+
		"empty: not verified (default $EVENTS_WEBHOOK_SECRET, with -events-url)")
	fs.IntVar(&o.EdgeHolds, "edge-holds", 50, "edge: holds per second on its product while it is read, so that its stock changes (1..1000)")
	fs.IntVar(&o.QueueSubscribers, "queue-subscribers", 10000, fmt.Sprintf("queue-subscribers: tickets joined and watched over graphql-ws, one subscription each, on the first -url (1..%d; the server's MAX_SUBSCRIPTIONS must allow them)", maxSubscribers))
	fs.IntVar(&o.QueuePerConn, "queue-per-conn", 25, fmt.Sprintf("queue-subscribers: ticket subscriptions per WebSocket with anonymous tickets (1..%d; at most the server's MAX_SUBSCRIPTIONS_PER_CONNECTION, default 25); customers mode: 1, each customer's own connection", maxQueuePerConn))
	fs.IntVar(&o.QueueAdmitPerMinute, "queue-admit-per-minute", 0, fmt.Sprintf("queue-subscribers: the waiting room's admission rate (1..%d); 0: all -queue-subscribers tickets over -duration", maxAdmitPerMinute))
	fs.StringVar(&o.CustomerAudience, "customer-audience", "", "aud of the minted customer tokens, the server's CUSTOMER_JWT_AUDIENCE (default $CUSTOMER_JWT_AUDIENCE)")
	return scen
}

// optionsFromEnv fills in what was not given from the environment, like
// the server reads them (not as flag defaults, so -h never prints a
// secret).
func optionsFromEnv(o *options, getenv func(string) string) {
	o.Token = cmp.Or(o.Token, getenv("ADMIN_TOKEN"))
	o.Secret = cmp.Or(o.Secret, getenv("WEBHOOK_SECRET"))
	o.CustomerSecret = cmp.Or(o.CustomerSecret, getenv("CUSTOMER_JWT_SECRET"))
	o.CustomerIssuer = cmp.Or(o.CustomerIssuer, getenv("CUSTOMER_JWT_ISSUER"))
	o.CustomerAudience = cmp.Or(o.CustomerAudience, getenv("CUSTOMER_JWT_AUDIENCE"))
	if o.EventsURL != "" {
		o.EventsSecret = cmp.Or(o.EventsSecret, getenv("EVENTS_WEBHOOK_SECRET"))
	}
}

// checkBounds checks the numeric flags against their ranges.
func checkBounds(o options) []error {
	var errs []error
	for _, b := range []struct {
		flag  string
		value any // printed with %v: an int's digits, a duration's String
		ok    bool
		want  string
	}{
		{"-clients", o.Clients, between(o.Clients, 1, maxClients), fmt.Sprintf("1..%d", maxClients)},
		{"-duration", o.Duration, between(o.Duration, minDuration, maxDuration), fmt.Sprintf("%s..%s", minDuration, maxDuration)},
		{"-timeout", o.Timeout, between(o.Timeout, 100*time.Millisecond, 5*time.Minute), "100ms..5m"},
		{"-sellout-stock", o.SelloutStock, between(o.SelloutStock, 1, 1_000_000), "1..1000000"},
		{"-hold-ttl", o.HoldTTL, between(o.HoldTTL, time.Second, 24*time.Hour), "1s..24h"},
		{"-payment-timeout", o.PaymentTimeout, between(o.PaymentTimeout, time.Second, 7*24*time.Hour), "1s..168h"},
		{"-slices", o.Slices, between(o.Slices, 1, maxSlices), fmt.Sprintf("1..%d", maxSlices)},
		{"-subscribers", o.Subscribers, between(o.Subscribers, 1, maxSubscribers), fmt.Sprintf("1..%d", maxSubscribers)},
		{"-server-pid", o.ServerPID, o.ServerPID >= 0, "a process ID, or 0"},
		{"-db-conns", o.DBConns, between(o.DBConns, 0, dbPoolLimit), fmt.Sprintf("0..%d", dbPoolLimit)},
		{"-max-requests", o.MaxRequests, between(o.MaxRequests, 1, 50_000_000), "1..50000000"},
		{"-edge-holds", o.EdgeHolds, between(o.EdgeHolds, 1, 1000), "1..1000"},
		{"-queue-subscribers", o.QueueSubscribers, between(o.QueueSubscribers, 1, maxSubscribers), fmt.Sprintf("1..%d", maxSubscribers)},
		{"-queue-per-conn", o.QueuePerConn, between(o.QueuePerConn, 1, maxQueuePerConn), fmt.Sprintf("1..%d", maxQueuePerConn)},
		{"-queue-admit-per-minute", o.QueueAdmitPerMinute, between(o.QueueAdmitPerMinute, 0, maxAdmitPerMinute), fmt.Sprintf("0..%d", maxAdmitPerMinute)},
	} {
		if !b.ok {
			errs = append(errs, fmt.Errorf("%s %v: want %s", b.flag, b.value, b.want))
		}
	}
	return errs
}

// between says whether lo <= v <= hi.
func between[T cmp.Ordered](v, lo, hi T) bool { return v >= lo && v <= hi }

// checkAccess checks what the tool reaches the server and its database
// with: the URLs, the token and the secrets (never quoting a secret).
func checkAccess(o options) []error {
	var errs []error
	if _, err := serverURLs(o.URL); err != nil {
		errs = append(errs, fmt.Errorf("-url: %w", err))
	}
	if o.Token == "" {
		errs = append(errs, errors.New("-token: the admin token is needed to create the tool's own products"))
	}
	if o.Secret != "" {
		if _, err := signing.NewSigner(o.Secret); err != nil {
			errs = append(errs, fmt.Errorf("-secret: %w", err))
		}
	}
	if o.CustomerSecret != "" && len(o.CustomerSecret) < minCustomerSecret {
		// Never quote it.
		errs = append(errs, fmt.Errorf("-customer-secret: %d bytes, want at least %d (the server refuses a shorter CUSTOMER_JWT_SECRET)",
			len(o.CustomerSecret), minCustomerSecret))
	}
	if o.CustomerSecret == "" && (o.CustomerIssuer != "" || o.CustomerAudience != "") {
		errs = append(errs, errors.New("-customer-issuer or -customer-audience without -customer-secret: the tool can only mint HS256 customer tokens"))
	}
	if o.DB != "" {
		if err := checkDBURL(o.DB); err != nil {
			errs = append(errs, fmt.Errorf("-db: %w", err))
		}
	}
	return errs
}

// checkScenarioNeeds refuses scenarios named outright whose needs are
// unmet ("all" skips them instead).
func checkScenarioNeeds(o options) []error {
	var errs []error
	for _, n := range o.Scenarios {
		for _, need := range scenarioNeeds {
			if need.applies(n) && need.unmet(o) {
				errs = append(errs, fmt.Errorf("-scenarios: %s needs %s", n, need.usage))
			}
		}
	}
	return errs
}

// parseScenarios returns the named scenarios in their fixed order.
func parseScenarios(s string) ([]string, error) {
	if strings.TrimSpace(s) == "all" {
		return slices.DeleteFunc(slices.Clone(allScenarios), func(n string) bool { return slices.Contains(optInScenarios, n) }), nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(allScenarios, n) {
			return nil, fmt.Errorf("unknown scenario %q (want all, or some of %s)", n, strings.Join(allScenarios, ","))
		}
		want[n] = true
	}
	if len(want) == 0 {
		return nil, errors.New("no scenario named")
	}
	var out []string
	for _, n := range allScenarios {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
