package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"flashsale/signing"
)

// loopbackURL parses an http(s) URL and refuses any host that is not
// localhost or a loopback address (127.0.0.0/8, ::1): this tool only loads
// this machine.
func loopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: want an http:// or https:// URL", raw)
	}
	if err := loopbackHost(u.Hostname()); err != nil {
		return nil, err
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("%q: want the server's base URL, like http://127.0.0.1:8080", raw)
	}
	return u, nil
}

// loopbackHost accepts localhost and loopback IP literals only.
func loopbackHost(host string) error {
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("host %q is not loopback: this tool only loads 127.0.0.0/8, ::1 or localhost", host)
}

// dialLoopbackOnly is a net.Dialer Control function: it refuses to connect
// anywhere but a loopback address, whatever a name resolved to.
func dialLoopbackOnly(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to connect to %s: not a loopback address", address)
	}
	return nil
}

// checkDBURL accepts sqlite:// files and mysql:// URLs on loopback hosts.
func checkDBURL(raw string) error {
	scheme, _, ok := strings.Cut(raw, "://")
	switch {
	case !ok:
		return errors.New("want mysql://user:pass@127.0.0.1:3306/db or sqlite://path/to/file.db")
	case scheme == "sqlite":
		return nil
	case scheme != "mysql":
		return fmt.Errorf("unsupported scheme %q (want mysql or sqlite)", scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL") // url's message would echo a password
	}
	if strings.Trim(u.Path, "/") == "" {
		return errors.New("mysql:// needs a database name, e.g. mysql://root@127.0.0.1:3306/flashsale")
	}
	return loopbackHost(u.Hostname())
}

// serverURLs parses -url: one base URL or several, comma-separated, each
// on a loopback host.
func serverURLs(raw string) ([]string, error) {
	var out []string
	for _, r := range strings.Split(raw, ",") {
		u, err := loopbackURL(strings.TrimSpace(r))
		if err != nil {
			return nil, err
		}
		out = append(out, strings.TrimRight(u.String(), "/"))
	}
	return out, nil
}

// api is the shared HTTP client, sized for the number of clients.
type api struct {
	bases   []string      // the servers, taken in turn request by request
	next    atomic.Uint64 // the turn
	base    string        // the first server, for the setup and the checks
	token   string
	signer  *signing.Signer // nil: webhooks go unsigned
	client  *http.Client
	tr      *http.Transport
	timeout time.Duration
}

// newAPI returns a client of the servers in rawURLs (comma-separated, as
// behind a load balancer: each request goes to the next one in turn).
func newAPI(rawURLs, token, secret string, clients int, timeout time.Duration) (*api, error) {
	bases, err := serverURLs(rawURLs)
	if err != nil {
		return nil, err
	}
	a := &api{bases: bases, base: bases[0], token: token, timeout: timeout}
	if secret != "" {
		if a.signer, err = signing.NewSigner(secret); err != nil {
			return nil, err
		}
	}
	a.tr = &http.Transport{
		DialContext:           loopbackDialer().DialContext,
		MaxIdleConns:          clients,
		MaxIdleConnsPerHost:   clients, // every client keeps its connection alive
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
		DisableCompression:    true,
	}
	a.client = &http.Client{
		Transport:     a.tr,
		Timeout:       timeout, // the per-request timeout
		CheckRedirect: noRedirect,
	}
	return a, nil
}

// loopbackDialer dials loopback addresses only (dialLoopbackOnly).
func loopbackDialer() *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: dialLoopbackOnly}
}

// noRedirect never follows a redirect off this machine.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (a *api) close() { a.tr.CloseIdleConnections() }

// server returns the server for the next request.
func (a *api) server() string {
	if len(a.bases) == 1 {
		return a.base
	}
	return a.bases[a.next.Add(1)%uint64(len(a.bases))]
}

// gqlRequest is a GraphQL request body, marshalled once where it repeats.
func gqlBody(query string, vars map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		panic(err) // only static queries and plain values get here
	}
	return b
}

// gqlResponse is an answer; Data is set to where its data goes (a
// pointer), so that one pass decodes it all.
type gqlResponse struct {
	Data   any `json:"data"`
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	} `json:"errors"`
}

// maxResponse bounds what the tool reads of one answer.
const maxResponse = 1 << 20

// post sends body to /graphql and decodes the answer. errClass is empty on
// success, else the error's class for the report: the first error's
// extensions.code, "HTTP <status>", or a transport error.
func (a *api) post(ctx context.Context, token string, body []byte, data any) (errClass string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.server()+"/graphql", bytes.NewReader(body))
	if err != nil {
		return "request error"
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return transportClass(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return transportClass(err)
	}
	// A refusal, most answers in sellout and limit, is read without a full
	// decode: the tool shares the machine with the server it measures.
	if code, ok := refusalCode(raw); ok {
		return code
	}
	out := gqlResponse{Data: data}
	if data == nil {
		out.Data = &struct{}{} // skipped, not decoded into a map
	}
	// A data of the wrong shape still leaves the errors decoded.
	err = json.Unmarshal(raw, &out)
	var shape *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &shape) {
		if resp.StatusCode != http.StatusOK {
			return "HTTP " + strconv.Itoa(resp.StatusCode)
		}
		return "bad JSON answer"
	}
	if len(out.Errors) > 0 {
		if c := out.Errors[0].Extensions.Code; c != "" {
			return c
		}
		return "error without code"
	}
	if resp.StatusCode != http.StatusOK {
		return "HTTP " + strconv.Itoa(resp.StatusCode)
	}
	if err != nil {
		return "bad JSON answer"
	}
	return ""
}

// refusalCode reads the first error's extensions.code from an answer in
// the shape gqlgen writes a resolver's refusal in:
//
//	{"errors":[{"message":"…","path":[…],"locations":[…],"extensions":{"code":"…"…
//
// ok is false for any other shape (the caller then decodes it in full).
func refusalCode(b []byte) (code string, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"errors":[{"message":"`))
	if !ok {
		return "", false
	}
	i := 0
	for ; i < len(rest) && rest[i] != '"'; i++ {
		if rest[i] == '\\' {
			i++ // an escaped byte, maybe a quote
		}
	}
	if i >= len(rest) {
		return "", false
	}
	rest = rest[i+1:]
	// The path (field names, aliases, list indexes) and the locations
	// ({"line":…,"column":…} objects) hold no ']' of their own.
	for _, list := range []string{`,"path":[`, `,"locations":[`} {
		if p, ok := bytes.CutPrefix(rest, []byte(list)); ok {
			j := bytes.IndexByte(p, ']')
			if j < 0 {
				return "", false
			}
			rest = p[j+1:]
		}
	}
	rest, ok = bytes.CutPrefix(rest, []byte(`,"extensions":{"code":"`))
	if !ok {
		return "", false
	}
	j := 0
	for j < len(rest) && (rest[j] >= 'A' && rest[j] <= 'Z' || rest[j] == '_') {
		j++
	}
	if j == 0 || j >= len(rest) || rest[j] != '"' {
		return "", false
	}
	return string(rest[:j]), true
}

// webhookAnswer is the webhook's 200 answer.
type webhookAnswer struct {
	OrderID     string `json:"order_id"`
	OrderStatus string `json:"order_status"`
	Duplicate   bool   `json:"duplicate"`
}

// webhook delivers one payment event, signed when the tool has the secret.
func (a *api) webhook(ctx context.Context, key, orderID, status string) (webhookAnswer, string) {
	var ans webhookAnswer
	body, _ := json.Marshal(map[string]string{"idempotency_key": key, "order_id": orderID, "status": status})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.server()+"/api/payments/webhook", bytes.NewReader(body))
	if err != nil {
		return ans, "request error"
	}
	req.Header.Set("Content-Type", "application/json")
	if a.signer != nil {
		if err := a.signer.Sign(req.Header, "msg_"+key, time.Now(), body); err != nil {
			return ans, "sign error"
		}
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return ans, transportClass(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return ans, transportClass(err)
	}
	if resp.StatusCode != http.StatusOK {
		return ans, "webhook HTTP " + strconv.Itoa(resp.StatusCode)
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return ans, "webhook bad JSON answer"
	}
	return ans, ""
}

// transportClass names a transport error without its addresses, so errors
// group into a few classes.
func transportClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "out of local ports"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case strings.Contains(err.Error(), "not a loopback address"):
		return "refused: not loopback"
	}
	return "transport error"
}

// Queries the scenarios send.
const (
	qTypename      = `{ __typename }`
	qCreateProduct = `mutation($in: CreateProductInput!) { createProduct(input: $in) { id stockAvailable } }`
	qCreateHold    = `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`
	qCreateOrder   = `mutation($h: ID!) { createOrder(holdId: $h) { id } }`
	qProduct       = `query($p: ID!) { product(id: $p) { stockAvailable stockReserved stockSellable } }`
)

type productStock struct {
	StockAvailable int `json:"stockAvailable"`
	StockReserved  int `json:"stockReserved"`
	StockSellable  int `json:"stockSellable"`
}

// ping checks the server answers GraphQL at all.
func (a *api) ping(ctx context.Context) error {
	var out struct {
		Typename string `json:"__typename"`
	}
	if c := a.post(ctx, "", gqlBody(qTypename, nil), &out); c != "" {
		return errors.New(c)
	}
	return nil
}

// createProduct makes one of the tool's own products and returns its ID;
// maxPerCustomer 0 sets no limit.
func (a *api) createProduct(ctx context.Context, name string, stock, maxPerCustomer int) (string, error) {
	var out struct {
		CreateProduct struct {
			ID string `json:"id"`
		} `json:"createProduct"`
	}
	in := map[string]any{"name": name, "priceCents": 100, "stock": stock}
	if maxPerCustomer > 0 {
		in["maxPerCustomer"] = maxPerCustomer
	}
	body := gqlBody(qCreateProduct, map[string]any{"in": in})
	if c := a.post(ctx, a.token, body, &out); c != "" {
		if c == "UNAUTHENTICATED" {
			return "", errors.New("createProduct: UNAUTHENTICATED: -token does not match the server's ADMIN_TOKEN")
		}
		return "", fmt.Errorf("createProduct: %s", c)
	}
	if out.CreateProduct.ID == "" {
		return "", errors.New("createProduct returned no id")
	}
	return out.CreateProduct.ID, nil
}

// product reads a product's stock; ok is false when it does not exist.
func (a *api) product(ctx context.Context, id string) (productStock, bool, error) {
	var out struct {
		Product *productStock `json:"product"`
	}
	if c := a.post(ctx, "", gqlBody(qProduct, map[string]any{"p": id}), &out); c != "" {
		return productStock{}, false, errors.New(c)
	}
	if out.Product == nil {
		return productStock{}, false, nil
	}
	return *out.Product, true, nil
}
