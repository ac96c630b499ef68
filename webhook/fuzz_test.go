package webhook_test

// Native fuzz targets for the payment webhook. Their seed corpora (the f.Add
// calls below and testdata/fuzz/<FuzzName>/) run as ordinary tests under
// `go test ./...`; fuzz with, for example,
//
//	go test -run '^$' -fuzz '^FuzzWebhookBody$' -fuzztime 60s -parallel 2 ./webhook/
//
// Inputs refer to the database through markers, since real order IDs are
// random. In a body, $PENDING, $CANCELLED and $PAID stand for the ID of an
// order in that state, $KEY for an idempotency key never used before, and
// (the first) $PAD for the spaces that make the body up to the marker
// exactly MaxBody bytes long. In the signature target, $NOW (or $NOW+N,
// $NOW-N seconds) stands for the current Unix time and $SIG for the correct
// signature of the message.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/database"
	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/internal/testdb"
	"flashsale/internal/testkit"
	"flashsale/stock"
	"flashsale/webhook"
)

// fuzzKey is the signing key of the fuzz targets' handler (24 bytes).
var fuzzKey = []byte("fuzzing-key-0123456789ab")

// fuzzEnv is one fuzz target's database, service and handlers. Fuzz inputs
// run one after another in a process, so it needs no locking.
type fuzzEnv struct {
	db     *database.DB
	svc    *stock.Service
	open   *webhook.Handler // no secret: unsigned calls accepted
	signed *webhook.Handler // requires fuzzKey's signature

	productID int
	// Orders the markers stand for; pending and cancelled are replaced
	// once an event moves them on.
	pending, cancelled, paid uuid.UUID
	keys                     atomic.Int64
}

func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	db := testdb.Open(tb, dialect.SQLite, database.Options{MaxConns: 4})
	e := &fuzzEnv{db: db}
	e.svc = stock.New(db.Ent, db.Dialect,
		stock.Config{HoldTTL: time.Hour, PaymentTimeout: time.Hour, MaxHoldQty: 10},
		slog.New(slog.DiscardHandler))
	var err error
	quiet := slog.New(slog.DiscardHandler)
	if e.open, err = webhook.New(e.svc, webhook.Options{Logger: quiet}); err != nil {
		tb.Fatal(err)
	}
	if e.signed, err = webhook.New(e.svc, webhook.Options{Keys: [][]byte{fuzzKey}, Logger: quiet}); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	p, err := e.svc.CreateProduct(ctx, nil, stock.NewProduct{Name: "fuzz widget", PriceCents: 250, Stock: 1_000_000_000})
	if err != nil {
		tb.Fatal(err)
	}
	e.productID = p.ID
	e.pending = e.newOrder(tb)
	e.cancelled = e.newCancelledOrder(tb)
	e.paid = e.newOrder(tb)
	// A fixed key, so that seeds can replay this event (a duplicate) or
	// reuse its key for something else (409).
	if _, err := e.svc.ApplyPayment(ctx, stock.Payment{Key: "evt_fuzz_paid", OrderID: e.paid, Status: stock.PaymentSuccess}); err != nil {
		tb.Fatal(err)
	}
	return e
}

// newOrder returns a new PENDING_PAYMENT order of 2 units.
func (e *fuzzEnv) newOrder(tb testing.TB) uuid.UUID {
	tb.Helper()
	ctx := context.Background()
	h, err := e.svc.CreateHold(ctx, stock.HoldRequest{ProductID: e.productID, Qty: 2})
	if err != nil {
		tb.Fatal(err)
	}
	o, err := e.svc.CreateOrder(ctx, h.ID, stock.Anonymous)
	if err != nil {
		tb.Fatal(err)
	}
	return o.ID
}

// newCancelledOrder returns a new order cancelled by a failed payment.
func (e *fuzzEnv) newCancelledOrder(tb testing.TB) uuid.UUID {
	tb.Helper()
	id := e.newOrder(tb)
	if _, err := e.svc.ApplyPayment(context.Background(), stock.Payment{Key: e.freshKey(), OrderID: id, Status: stock.PaymentFailure}); err != nil {
		tb.Fatal(err)
	}
	return id
}

func (e *fuzzEnv) freshKey() string {
	return fmt.Sprintf("evt_fresh_%d_%s", e.keys.Add(1), uuid.NewString()[:8])
}

// expand replaces the markers of a fuzzed body.
func (e *fuzzEnv) expand(body []byte) []byte {
	if !bytes.Contains(body, []byte("$")) {
		return body
	}
	body = bytes.ReplaceAll(body, []byte("$PENDING"), []byte(e.pending.String()))
	body = bytes.ReplaceAll(body, []byte("$CANCELLED"), []byte(e.cancelled.String()))
	body = bytes.ReplaceAll(body, []byte("$PAID"), []byte(e.paid.String()))
	for bytes.Contains(body, []byte("$KEY")) {
		body = bytes.Replace(body, []byte("$KEY"), []byte(e.freshKey()), 1)
	}
	if before, after, ok := bytes.Cut(body, []byte("$PAD")); ok {
		// Spaces that make the body up to the marker MaxBody bytes long.
		n := max(webhook.MaxBody-len(before), 0)
		body = append(append(append([]byte(nil), before...), bytes.Repeat([]byte(" "), n)...), after...)
	}
	return body
}

// replenish replaces the pending and cancelled orders once an event moved them on.
func (e *fuzzEnv) replenish(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if o, err := e.db.Ent.Order.Get(ctx, e.pending); err != nil {
		t.Fatal(err)
	} else if o.Status != order.StatusPENDING_PAYMENT {
		e.pending = e.newOrder(t)
	}
	if o, err := e.db.Ent.Order.Get(ctx, e.cancelled); err != nil {
		t.Fatal(err)
	} else if o.Status != order.StatusCANCELLED {
		e.cancelled = e.newCancelledOrder(t)
	}
}

// fuzzState is everything a delivery may change: the counters of every
// product, how many orders and holds are in each status, and the stored events.
type fuzzState struct {
	products map[int][2]int
	orders   map[order.Status]int
	holds    map[hold.Status]int
	events   int
}

func (e *fuzzEnv) state(t *testing.T) fuzzState {
	t.Helper()
	ctx := context.Background()
	s := fuzzState{products: map[int][2]int{}, orders: map[order.Status]int{}, holds: map[hold.Status]int{}}
	ps, err := e.db.Ent.Product.Query().All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		s.products[p.ID] = [2]int{p.StockAvailable, p.StockReserved}
	}
	var os []struct {
		Status order.Status `json:"status"`
		Count  int          `json:"count"`
	}
	if err := e.db.Ent.Order.Query().GroupBy(order.FieldStatus).Aggregate(ent.Count()).Scan(ctx, &os); err != nil {
		t.Fatal(err)
	}
	for _, o := range os {
		s.orders[o.Status] = o.Count
	}
	var hs []struct {
		Status hold.Status `json:"status"`
		Count  int         `json:"count"`
	}
	if err := e.db.Ent.Hold.Query().GroupBy(hold.FieldStatus).Aggregate(ent.Count()).Scan(ctx, &hs); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		s.holds[h.Status] = h.Count
	}
	if s.events, err = e.db.Ent.PaymentEvent.Query().Count(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *fuzzEnv) audit(t *testing.T) {
	t.Helper()
	testkit.MustAudit(t, context.Background(), e.svc)
}

// sign returns a correct webhook-signature value for the message.
func fuzzSign(id, ts string, body []byte) string {
	m := hmac.New(sha256.New, fuzzKey)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// fuzzAnswer is a checked webhook answer.
type fuzzAnswer struct {
	status int
	ok     struct {
		OrderID     string `json:"order_id"`
		OrderStatus string `json:"order_status"`
		Duplicate   bool   `json:"duplicate"`
		Outcome     string `json:"outcome"`
	}
	err string
}

var fuzzAllowedStatus = map[int]bool{200: true, 400: true, 401: true, 404: true, 409: true, 413: true, 422: true, 503: true}

// deliver sends one delivery and checks the answer's status and shape.
func fuzzDeliver(t *testing.T, h http.Handler, contentType string, body []byte, header map[string]string) fuzzAnswer {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/api/payments/webhook", bytes.NewReader(body))
	r.RemoteAddr = "127.0.0.1:40000" // this machine: an unsigned call is taken only from loopback
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		r.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)

	a := fuzzAnswer{status: rec.Code}
	if !fuzzAllowedStatus[a.status] {
		t.Fatalf("status %d, not one of the contract's answers; body %q", a.status, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	// Exactly one JSON object with exactly the keys of its shape.
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	if err := dec.Decode(&fields); err != nil || fields == nil {
		t.Fatalf("%d body %q is not a JSON object: %v", a.status, rec.Body.String(), err)
	}
	if dec.More() {
		t.Fatalf("%d body %q has more after the object", a.status, rec.Body.String())
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	if a.status == http.StatusOK {
		if len(fields) != 4 || fields["order_id"] == nil || fields["order_status"] == nil || fields["duplicate"] == nil || fields["outcome"] == nil {
			t.Fatalf("200 body %q: want exactly order_id, order_status, duplicate, outcome (got keys %v)", rec.Body.String(), keys)
		}
		strict := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
		strict.DisallowUnknownFields()
		if err := strict.Decode(&a.ok); err != nil {
			t.Fatalf("200 body %q: %v", rec.Body.String(), err)
		}
		if _, err := uuid.Parse(a.ok.OrderID); err != nil {
			t.Fatalf("200 body %q: order_id is not a UUID", rec.Body.String())
		}
		if order.StatusValidator(order.Status(a.ok.OrderStatus)) != nil {
			t.Fatalf("200 body %q: order_status is not an order status", rec.Body.String())
		}
		if want := map[bool][]string{true: {"DUPLICATE"}, false: {"APPLIED", "IGNORED"}}[a.ok.Duplicate]; !slices.Contains(want, a.ok.Outcome) {
			t.Fatalf("200 body %q: outcome must be one of %v", rec.Body.String(), want)
		}
		return a
	}
	if len(fields) != 1 || fields["error"] == nil {
		t.Fatalf("%d body %q: want exactly {\"error\": message} (got keys %v)", a.status, rec.Body.String(), keys)
	}
	if err := json.Unmarshal(fields["error"], &a.err); err != nil || a.err == "" {
		t.Fatalf("%d body %q: error must be a non-empty string", a.status, rec.Body.String())
	}
	return a
}

// checkEffect checks what a delivery did to the database: nothing unless
// it was applied (200, not a duplicate), and the stock invariants always.
func (e *fuzzEnv) checkEffect(t *testing.T, a fuzzAnswer, before fuzzState) {
	t.Helper()
	after := e.state(t)
	if a.status != http.StatusOK || a.ok.Duplicate {
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("answer %d (duplicate %v) but the database changed:\nbefore %+v\nafter  %+v", a.status, a.ok.Duplicate, before, after)
		}
		return
	}
	if after.events != before.events+1 {
		t.Fatalf("applied event stored %d times", after.events-before.events)
	}
	o, err := e.db.Ent.Order.Get(context.Background(), uuid.MustParse(a.ok.OrderID))
	if err != nil {
		t.Fatalf("answered for order %s: %v", a.ok.OrderID, err)
	}
	if string(o.Status) != a.ok.OrderStatus {
		t.Fatalf("answered order_status %s, but the order is %s", a.ok.OrderStatus, o.Status)
	}
	e.audit(t)
	e.replenish(t)
}

func FuzzWebhookBody(f *testing.F) {
	ev := func(key, orderID, status string) []byte {
		return fmt.Appendf(nil, `{"idempotency_key":%q,"order_id":%q,"status":%q}`, key, orderID, status)
	}
	const ct = "application/json"
	for _, s := range []struct {
		body   []byte
		ct     string
		signed bool
	}{
		{ev("$KEY", "$PENDING", "success"), ct, true},
		{ev("$KEY", "$PENDING", "failure"), ct, false},
		{ev("$KEY", "$CANCELLED", "success"), ct, true},
		{ev("evt_fuzz_paid", "$PAID", "success"), ct, false},   // duplicate
		{ev("evt_fuzz_paid", "$PENDING", "success"), ct, true}, // 409
		{ev("$KEY", "00000000-0000-0000-0000-000000000000", "success"), ct, false},
		{ev("$KEY", "$PENDING", "success")[:30], ct, true},
		{ev("$KEY", "$PENDING", "success"), "text/plain", true},
		{append(ev("$KEY", "$PENDING", "success"), "$PAD"...), ct, false}, // exactly MaxBody: accepted
		{append(ev("$KEY", "$PENDING", "success"), "$PAD "...), ct, true}, // one byte over: 413
	} {
		f.Add(s.body, s.ct, s.signed)
	}
	e := newFuzzEnv(f)

	f.Fuzz(func(t *testing.T, raw []byte, contentType string, signed bool) {
		body := e.expand(raw)
		tooBig := len(body) > webhook.MaxBody

		// A secret is configured but the call is unsigned: 401, whatever
		// the body (or 413 when the body is too large even to check).
		before := e.state(t)
		a := fuzzDeliver(t, e.signed, contentType, body, nil)
		if want := map[bool]int{false: 401, true: 413}[tooBig]; a.status != want {
			t.Fatalf("unsigned call to a signed endpoint answered %d, want %d: %q", a.status, want, a.err)
		}
		e.checkEffect(t, a, before)

		h, header := e.open, map[string]string(nil)
		if signed {
			id, ts := "msg_"+uuid.NewString(), strconv.FormatInt(time.Now().Unix(), 10)
			h, header = e.signed, map[string]string{
				"webhook-id":        id,
				"webhook-timestamp": ts,
				"webhook-signature": "v1," + fuzzSign(id, ts, body),
			}
		}
		before = e.state(t)
		a = fuzzDeliver(t, h, contentType, body, header)
		switch {
		case tooBig:
			if a.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("body of %d bytes answered %d, want 413", len(body), a.status)
			}
		case a.status == http.StatusUnauthorized:
			t.Fatalf("correctly signed (or unsigned, no secret) call answered 401: %q", a.err)
		case !json.Valid(body) && a.status != http.StatusBadRequest:
			t.Fatalf("body that is not JSON answered %d, want 400", a.status)
		case a.status != http.StatusBadRequest && unknownField(body) != "":
			// The contract's fields are case-sensitive names; "Status" is
			// not "status" but an unknown field.
			t.Fatalf("body with unknown field %q answered %d, want 400", unknownField(body), a.status)
		}
		t.Logf("signed %v: %d %q duplicate=%v %s", signed, a.status, a.err, a.ok.Duplicate, a.ok.OrderStatus)
		e.checkEffect(t, a, before)
	})
}

// unknownField returns the first member name of a JSON object body that is
// not exactly one of the event's fields, or "".
func unknownField(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		switch k, _ := tok.(string); k {
		case "idempotency_key", "order_id", "status":
		default:
			return k
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return ""
		}
	}
	return ""
}

// fuzzNow expands $NOW in a timestamp header: "$NOW+N" and "$NOW-N" (the
// whole header) are the current time moved by N seconds, and any other
// $NOW is replaced by the current time.
func fuzzNow(ts string, now int64) string {
	if rest, ok := strings.CutPrefix(ts, "$NOW"); ok && len(rest) > 1 && (rest[0] == '+' || rest[0] == '-') {
		if n, err := strconv.ParseInt(rest, 10, 32); err == nil {
			return strconv.FormatInt(now+n, 10)
		}
	}
	return strings.ReplaceAll(ts, "$NOW", strconv.FormatInt(now, 10))
}

// genuine reports whether headers authenticate body under fuzzKey, decided
// without the library: the timestamp is a decimal Unix time within
// tolerance of now, and some space-separated "v1,<sig>" entry carries the
// HMAC of "<id>.<timestamp>.<body>". The HMAC may be over the timestamp as
// sent or as its canonical decimal ("+17..." and "017..." name the same
// second, and the library signs the canonical form): either way it binds
// the same id, time and body, so accepting it is not a forgery. For the
// same reason text after the signature ("v1,<sig>,x") is tolerated.
//
// canonical is true when the headers are what an honest sender sends: the
// timestamp in canonical form, signed as sent.
func fuzzGenuine(id, ts, sigs string, body []byte, now time.Time) (ok, canonical, nearEdge bool) {
	if id == "" || ts == "" || sigs == "" {
		return false, false, false
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false, false, false
	}
	// The library compares at nanosecond precision; don't judge within a
	// few seconds of the 5-minute edge.
	off := now.Unix() - n
	if off > 305 || off < -305 {
		return false, false, false
	}
	nearEdge = off > 295 || off < -295
	canonTS := strconv.FormatInt(n, 10)
	asSent, asCanon := fuzzSign(id, ts, body), fuzzSign(id, canonTS, body)
	for entry := range strings.SplitSeq(sigs, " ") {
		version, rest, found := strings.Cut(entry, ",")
		if !found || version != "v1" {
			continue
		}
		sig, _, _ := strings.Cut(rest, ",")
		if hmac.Equal([]byte(sig), []byte(asSent)) || hmac.Equal([]byte(sig), []byte(asCanon)) {
			ok = true
			if sig == asSent && ts == canonTS && rest == sig {
				canonical = true
			}
		}
	}
	return ok, canonical, nearEdge
}

func FuzzWebhookSignature(f *testing.F) {
	for _, s := range [][3]string{
		{"msg_1", "$NOW", "v1,$SIG"},
		{"msg_1", "$NOW", "v1,AAAA v1,$SIG"},
		{"msg_1", "$NOW-200", "v1,$SIG"},
		{"msg_1", "$NOW-400", "v1,$SIG"},
		{"msg_1", "$NOW+400", "v1,$SIG"},
		{"msg_1", "$NOW", "v2,$SIG"},
		{"msg_1", "$NOW", "$SIG"},
		{"", "$NOW", "v1,$SIG"},
		{"msg_1", "", "v1,$SIG"},
		{"msg_1", "$NOW", ""},
		{"msg_1", "0$NOW", "v1,$SIG"},
		{"msg_1", "$NOW", "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32))},
	} {
		f.Add(s[0], s[1], s[2])
	}
	e := newFuzzEnv(f)
	body := fmt.Appendf(nil, `{"idempotency_key":"evt_fuzz_sig","order_id":%q,"status":"success"}`, e.pending)

	f.Fuzz(func(t *testing.T, id, tsIn, sigIn string) {
		now := time.Now()
		ts := fuzzNow(tsIn, now.Unix())
		sigs := strings.ReplaceAll(sigIn, "$SIG", fuzzSign(id, ts, body))
		header := map[string]string{}
		for k, v := range map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sigs} {
			if v != "" {
				header[k] = v
			}
		}

		before := e.state(t)
		a := fuzzDeliver(t, e.signed, "application/json", body, header)
		ok, canonical, nearEdge := fuzzGenuine(id, ts, sigs, body, now)
		switch {
		case nearEdge:
		case !ok && a.status != http.StatusUnauthorized:
			t.Fatalf("headers id=%q timestamp=%q signature=%q do not authenticate the body, but the answer is %d",
				id, ts, sigs, a.status)
		case canonical && a.status != http.StatusOK:
			t.Fatalf("correctly signed delivery (id=%q timestamp=%q signature=%q) answered %d: %q",
				id, ts, sigs, a.status, a.err)
		}
		t.Logf("genuine %v (canonical %v): %d %q", ok, canonical, a.status, a.err)
		e.checkEffect(t, a, before)
	})
}
