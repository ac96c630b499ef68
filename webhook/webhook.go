// Package webhook serves the payment provider's webhook
// (POST /api/payments/webhook): it checks the Standard Webhooks signature,
// parses the event and hands it to stock.Service.ApplyPayment, which owns
// every rule about orders and stock. This package only translates HTTP to
// the domain and the domain's errors back to the contract's status codes
// (docs/api.md, "The payment webhook").
package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"flashsale/ent/paymentevent"
	"flashsale/internal/respond"
	"flashsale/signing"
	"flashsale/stock"
)

// MaxBody is the largest request body accepted; larger ones get 413.
const MaxBody = 64 << 10

// DefaultTimeout bounds the database work of one delivery when
// Options.Timeout is unset.
const DefaultTimeout = 10 * time.Second

// Options configure the handler.
type Options struct {
	// Keys are the signing keys, from signing.ParseSecrets(WEBHOOK_SECRET):
	// a signature by any of them is accepted, so the provider's key can be
	// rotated. None accepts unsigned calls, from loopback addresses only
	// (for the embedded database's local trials).
	Keys    [][]byte
	Timeout time.Duration // bound on the database work of one delivery (default 10s)
	Logger  *slog.Logger
	// Metrics, if set, counts every delivery by outcome and times it.
	Metrics Metrics
}

// Metrics counts deliveries by outcome and times them (*metrics.Metrics
// is one).
type Metrics interface {
	WebhookDelivery(outcome string, took time.Duration)
}

// Handler is the payment webhook endpoint.
type Handler struct {
	svc     *stock.Service
	verify  []*standardwebhooks.Webhook // none: unsigned calls are accepted from loopback
	timeout time.Duration
	log     *slog.Logger
	metrics Metrics
}

// New returns the webhook handler. It fails when Key is set but shorter
// than MinKeyLen.
func New(svc *stock.Service, opts Options) (*Handler, error) {
	if svc == nil {
		return nil, errors.New("webhook: nil stock service")
	}
	h := &Handler{svc: svc, timeout: opts.Timeout, log: opts.Logger, metrics: opts.Metrics}
	if h.timeout <= 0 {
		h.timeout = DefaultTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	for _, key := range opts.Keys {
		if len(key) < signing.MinKeyLen {
			return nil, fmt.Errorf("webhook: signing key is %d bytes, want at least %d", len(key), signing.MinKeyLen)
		}
		wh, err := standardwebhooks.NewWebhookRaw(key)
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
		h.verify = append(h.verify, wh)
	}
	return h, nil
}

// event is the webhook's JSON body.
type event struct {
	IdempotencyKey string `json:"idempotency_key"`
	OrderID        string `json:"order_id"`
	Status         string `json:"status"`
	// Optional (null is the same as left out).
	PaymentReference *string `json:"payment_reference"`
	AmountCents      *int64  `json:"amount_cents"`
}

// fields are the body's member names, each allowed once.
var fields = []string{"idempotency_key", "order_id", "status", "payment_reference", "amount_cents"}

// response is the body of a 200 answer.
type response struct {
	OrderID     string `json:"order_id"`
	OrderStatus string `json:"order_status"`
	Duplicate   bool   `json:"duplicate"`
	Outcome     string `json:"outcome"` // APPLIED, IGNORED or DUPLICATE
}

// outcomeOf is a 200 answer's outcome: what this delivery did.
func outcomeOf(res stock.PaymentResult) string {
	switch {
	case res.Duplicate:
		return "DUPLICATE"
	case res.Outcome == paymentevent.OutcomeIGNORED:
		return "IGNORED"
	}
	return "APPLIED" // the order moved, to PAID, CANCELLED or REFUND_REQUIRED
}

// The handler's own refusals; stock's error kinds cover the rest.
var (
	errMethod    = errors.New("method not allowed: use POST")
	errSignature = errors.New("webhook signature missing or invalid")
	errTimestamp = errors.New("webhook timestamp is more than 5 minutes off")
	// errUnsignedRemote is an unsigned call, from another machine, to a
	// server without WEBHOOK_SECRET.
	errUnsignedRemote = errors.New("this server takes unsigned payment webhooks only from its own machine (loopback); set WEBHOOK_SECRET and sign them")
)

// ServeHTTP handles one delivery and logs it, whatever its answer.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var ev event
	res, err := h.serve(w, r, &ev)

	status, outcome := http.StatusOK, string(res.Outcome)
	if err != nil {
		var msg string
		status, msg = answer(err)
		switch {
		case status >= 500:
			outcome = "FAILED"
		case errors.Is(err, stock.ErrAmountMismatch):
			outcome = "AMOUNT_MISMATCH"
		default:
			outcome = "REFUSED"
		}
		switch status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", http.MethodPost)
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", "1")
		}
		respond.JSON(w, status, map[string]string{"error": msg})
	} else {
		respond.JSON(w, status, response{OrderID: res.OrderID.String(), OrderStatus: string(res.OrderStatus),
			Duplicate: res.Duplicate, Outcome: outcomeOf(res)})
	}
	if h.metrics != nil {
		m := outcome
		if err == nil && res.Duplicate {
			m = "DUPLICATE"
		}
		h.metrics.WebhookDelivery(m, time.Since(start))
	}

	level := slog.LevelInfo
	switch {
	case status == http.StatusServiceUnavailable:
		level = slog.LevelWarn // an outage, reported where it happens; the provider retries
	case status >= 500:
		level = slog.LevelError
	case status >= 400 && status != http.StatusNotFound && status != http.StatusConflict:
		// 422 (a wrong amount) among them: the provider charged what the
		// order does not cost, which someone must look into.
		// 404 and 409 are the provider's business; the others mean a
		// misconfigured or hostile caller.
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("webhook_id", clip(r.Header.Get(standardwebhooks.HeaderWebhookID))),
		slog.String("idempotency_key", clip(ev.IdempotencyKey)),
		slog.String("order_id", clip(ev.OrderID)),
		slog.String("payment_status", clip(ev.Status)),
		slog.String("payment_reference", clip(deref(ev.PaymentReference))),
		slog.Int("http_status", status),
		slog.String("outcome", outcome),
		slog.Bool("duplicate", res.Duplicate),
		slog.Duration("duration", time.Since(start)),
	}
	if ev.AmountCents != nil {
		attrs = append(attrs, slog.Int64("amount_cents", *ev.AmountCents))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	h.log.LogAttrs(r.Context(), level, "payment webhook", attrs...)
}

// serve does the work of one delivery, filling ev as far as it got for the log.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, ev *event) (stock.PaymentResult, error) {
	if r.Method != http.MethodPost {
		return stock.PaymentResult{}, errMethod
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return stock.PaymentResult{}, fmt.Errorf("read body: %w", err)
	case err != nil:
		// The caller broke off or sent a malformed chunked body.
		return stock.PaymentResult{}, fmt.Errorf("%w: could not read the body: %w", stock.ErrInvalidInput, err)
	}
	// Authenticate the raw bytes before anything looks at their content.
	if err := h.authenticate(r, body); err != nil {
		return stock.PaymentResult{}, err
	}
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return stock.PaymentResult{}, err
	}
	if err := parse(body, ev); err != nil {
		return stock.PaymentResult{}, err
	}
	orderID, err := stock.ParseID("order", ev.OrderID)
	if err != nil {
		// No order can have a malformed ID, so it is the contract's "no such order".
		return stock.PaymentResult{}, fmt.Errorf("%w: no order with ID %q", stock.ErrNotFound, clip(ev.OrderID))
	}
	// The provider may hang up, but a delivery that reached the database is
	// finished (bounded by the timeout) so that its retry is a cheap duplicate.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.timeout)
	defer cancel()
	return h.svc.ApplyPayment(ctx, stock.Payment{Key: ev.IdempotencyKey, OrderID: orderID, Status: ev.Status,
		Reference: deref(ev.PaymentReference), AmountCents: ev.AmountCents})
}

// authenticate accepts a body signed by any of the keys or, with none
// configured, an unsigned call from this machine: on the embedded
// database's default (every interface), anyone on the network could
// otherwise mark orders paid. The direct peer counts, never a forwarded
// address, which any client can write.
func (h *Handler) authenticate(r *http.Request, body []byte) error {
	if len(h.verify) == 0 {
		if !fromLoopback(r) {
			return errUnsignedRemote
		}
		return nil
	}
	var first error
	for _, wh := range h.verify {
		err := wh.Verify(body, r.Header)
		if err == nil {
			return nil
		}
		first = cmp.Or(first, err)
	}
	if errors.Is(first, standardwebhooks.ErrMessageTooOld) || errors.Is(first, standardwebhooks.ErrMessageTooNew) {
		return fmt.Errorf("%w: %w", errTimestamp, first)
	}
	return fmt.Errorf("%w: %w", errSignature, first)
}

func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func checkContentType(ct string) error {
	if ct == "" {
		return stock.InvalidInput("Content-Type must be application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return stock.InvalidInput("Content-Type must be application/json")
	}
	// JSON is UTF-8 (RFC 8259); a body declared otherwise would be misread.
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return stock.InvalidInput("charset must be utf-8")
	}
	return nil
}

// parse decodes body as exactly one JSON object with the event's fields:
// the three required ones non-empty strings with a known status, the
// optional payment_reference a non-empty string and amount_cents an
// integer (either may be null or left out).
func parse(body []byte, ev *event) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(ev); err != nil {
		return stock.InvalidInput("%s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return stock.InvalidInput("body must be a single JSON object with nothing after it")
	}
	if err := exactFields(body); err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{
		{"idempotency_key", ev.IdempotencyKey},
		{"order_id", ev.OrderID},
		{"status", ev.Status},
	} {
		if f.value == "" {
			return stock.InvalidInput("field %q is required and must be a non-empty string", f.name)
		}
	}
	if ev.Status != stock.PaymentSuccess && ev.Status != stock.PaymentFailure {
		return stock.InvalidInput("status must be %q or %q", stock.PaymentSuccess, stock.PaymentFailure)
	}
	if ev.PaymentReference != nil && *ev.PaymentReference == "" {
		return stock.InvalidInput("field \"payment_reference\" must be 1 to 255 printable characters, or left out")
	}
	return nil
}

// exactFields checks the object's member names, which encoding/json matches
// case-insensitively, letting a repeated name override an earlier one: the
// body {"status":"failure","Status":"success"} would be read as a success.
// Names must be exactly the contract's, each at most once.
func exactFields(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the '{' that Decode already accepted
		return stock.InvalidInput("body is not valid JSON")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return stock.InvalidInput("body is not valid JSON")
		}
		name, _ := tok.(string)
		if !slices.Contains(fields, name) {
			return stock.InvalidInput("unknown field %q", clip(name))
		}
		if seen[name] {
			return stock.InvalidInput("field %q appears more than once", name)
		}
		seen[name] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return stock.InvalidInput("body is not valid JSON")
		}
	}
	return nil
}

// jsonProblem describes a decoding error in the API's terms rather than
// encoding/json's, which name Go types.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return "body is empty; want a JSON object"
	case errors.As(err, &typeErr) && typeErr.Field == "amount_cents":
		return `field "amount_cents" must be a whole number of cents`
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return fmt.Sprintf("field %q must be a string", typeErr.Field)
	case errors.As(err, &typeErr):
		return "body must be a JSON object"
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return "body is not valid JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no error type for this one.
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	default:
		return "body is not a valid event"
	}
}

// answer maps an error to the contract's status code and the message the
// caller sees. Only the messages of stock's input and not-found kinds are
// written for callers; the others get a fixed text and are only logged.
func answer(err error) (status int, msg string) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, errMethod.Error()
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", MaxBody)
	case errors.Is(err, errTimestamp):
		return http.StatusUnauthorized, errTimestamp.Error()
	case errors.Is(err, errSignature):
		return http.StatusUnauthorized, errSignature.Error()
	case errors.Is(err, errUnsignedRemote):
		return http.StatusUnauthorized, errUnsignedRemote.Error()
	case errors.Is(err, stock.ErrInvalidInput):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, stock.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, stock.ErrAmountMismatch):
		return http.StatusUnprocessableEntity, err.Error()
	case errors.Is(err, stock.ErrKeyReused):
		// stock's message names the first event's order: not the caller's to see.
		return http.StatusConflict, "idempotency key already used with a different order or status"
	case errors.Is(err, stock.ErrUnavailable):
		return http.StatusServiceUnavailable, "database unavailable; nothing was changed, retry later"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// clip keeps caller-supplied values in logs and messages short.
func clip(s string) string {
	const max = 256
	if len(s) > max {
		return strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}
