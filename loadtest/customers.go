package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Customers mode: with -customer-secret (the server's CUSTOMER_JWT_SECRET)
// every buyer request of every HTTP scenario (createHold, createOrder)
// carries the bearer token of its client's own customer, minted once at
// start, as a shop's login system would issue it. Without it the buyers are
// anonymous, as before.

// Bounds of customers mode.
const (
	minCustomerSecret = 32 // bytes, as the server requires of CUSTOMER_JWT_SECRET
	// limitCustomers is how many customers the limit scenario's clients
	// share: with 256 clients, 64 connections hold as one customer at once.
	limitCustomers = 4
	// limitMax is the limit scenario's product's maxPerCustomer.
	limitMax = 2
	// tokenMargin is added to a run's longest length for the tokens' exp.
	tokenMargin = 10 * time.Minute
)

// customers are the tokens of a customers-mode run.
type customers struct {
	ids    []string // per client: its own customer, lt-<runID>-<client>
	tokens []string // per client: its customer's token
	// The limit scenario: limitIDs are the few customers all clients share
	// (client w is limitIDs[w % len(limitIDs)]), each client with a token of
	// its own for that customer (several devices of one shopper).
	limitIDs    []string
	limitTokens []string
	expires     time.Time
}

// limitOf is the index in limitIDs of client w's customer in limit.
func (c *customers) limitOf(w int) int { return w % len(c.limitIDs) }

// newCustomers mints the tokens of one run: one customer per client and
// min(limitCustomers, clients) shared ones for limit, valid for ttl.
func newCustomers(o options, runID string, ttl time.Duration) (*customers, error) {
	now := time.Now()
	c := &customers{expires: now.Add(ttl).Truncate(time.Second)}
	mint := func(sub string) (string, error) {
		return mintToken(o.CustomerSecret, o.CustomerIssuer, o.CustomerAudience, sub, now, ttl)
	}
	for w := range o.Clients {
		id := fmt.Sprintf("lt-%s-%d", runID, w)
		tok, err := mint(id)
		if err != nil {
			return nil, err
		}
		c.ids = append(c.ids, id)
		c.tokens = append(c.tokens, tok)
	}
	for k := range min(limitCustomers, o.Clients) {
		c.limitIDs = append(c.limitIDs, fmt.Sprintf("lt-%s-limit-%d", runID, k))
	}
	for w := range o.Clients {
		tok, err := mint(c.limitIDs[c.limitOf(w)])
		if err != nil {
			return nil, err
		}
		c.limitTokens = append(c.limitTokens, tok)
	}
	return c, nil
}

// mintToken issues an HS256 customer token for sub, valid from now for ttl,
// with iss and aud when given; jti makes every token distinct, also two of
// one customer.
func mintToken(secret, issuer, audience, sub string, now time.Time, ttl time.Duration) (string, error) {
	if len(secret) < minCustomerSecret {
		return "", fmt.Errorf("customer secret: %d bytes, want at least %d", len(secret), minCustomerSecret)
	}
	claims := jwt.RegisteredClaims{
		Subject:   sub,
		Issuer:    issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		ID:        randomHex(8),
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	// The variable's own bytes are the key, as the server takes them.
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// tokenTTL is how long a run's tokens must live: every scenario to its
// end, each request to its timeout, the checks, and a margin.
func tokenTTL(o options, scenarios int) time.Duration {
	return time.Duration(scenarios)*(o.Duration+o.Timeout) + checkTimeout + tokenMargin
}

// buyerToken is the bearer token of client w's buyer requests: its
// customer's in customers mode, none (anonymous) otherwise.
func (st *state) buyerToken(w int) string {
	if st.cust == nil {
		return ""
	}
	return st.cust.tokens[w]
}

// limitHold is a hold the limit scenario was answered with: its customer
// (index in limitIDs) and its life by the server's clock.
type limitHold struct {
	customer  int
	createdAt time.Time
	expiresAt time.Time
}

// limitLog collects limit's holds from all clients; they are few (at most
// limitMax per customer while none expires), so one mutex does.
type limitLog struct {
	mu    sync.Mutex
	holds []limitHold
}

func (l *limitLog) add(h limitHold) {
	l.mu.Lock()
	l.holds = append(l.holds, h)
	l.mu.Unlock()
}

// maxConcurrent returns, per customer, the most holds of its that the
// server's answers show alive at one instant: at a hold's createdAt (the
// database clock under the product's lock), every hold of that customer
// created at or before it and expiring after it was ACTIVE, since the tool
// never orders nor releases them, so each counted against maxPerCustomer.
func maxConcurrent(holds []limitHold, customers int) []int {
	out := make([]int, customers)
	for _, h := range holds {
		n := 0
		for _, o := range holds {
			if o.customer == h.customer && !o.createdAt.After(h.createdAt) && o.expiresAt.After(h.createdAt) {
				n++
			}
		}
		out[h.customer] = max(out[h.customer], n)
	}
	return out
}

// Queries of the limit scenario and its checks.
const (
	qLimitHold = `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id createdAt expiresAt } }`
	qMe        = `query($h: String, $o: String) { me { id
  holds(first: 50, after: $h) { edges { node { qty status product { id } } } pageInfo { hasNextPage endCursor } }
  orders(first: 50, after: $o) { edges { node { qty status product { id } } } pageInfo { hasNextPage endCursor } } } }`
	maxMePages = 100 // 5,000 holds and orders per customer at most
)

// runLimit is the limit scenario: every client holds qty 1 of one product
// with maxPerCustomer limitMax and ample stock, in a loop, as one of a few
// customers that many clients share; the answers a client gets are kept
// for the checks.
func (st *state) runLimit() (scenarioResult, error) {
	id, stock, err := st.productOf(scLimit)
	if err != nil {
		return scenarioResult{}, err
	}
	c := st.cust
	st.progress("%s: product %s (stock %d, maxPerCustomer %d), %d clients as %d customers for %s",
		scLimit, id, stock, limitMax, st.opts.Clients, len(c.limitIDs), st.opts.Duration)
	body := gqlBody(qLimitHold, map[string]any{"p": id})
	res := st.drive(scLimit, id, func(ctx context.Context, w, _ int, r *recorder) {
		var out struct {
			CreateHold struct {
				ID        string    `json:"id"`
				CreatedAt time.Time `json:"createdAt"`
				ExpiresAt time.Time `json:"expiresAt"`
			} `json:"createHold"`
		}
		t0 := time.Now()
		code := st.api.post(ctx, c.limitTokens[w], body, &out)
		r.request(t0)
		h := out.CreateHold
		if code == "" && (h.ID == "" || h.CreatedAt.IsZero() || !h.ExpiresAt.After(h.CreatedAt)) {
			code = "hold without id, createdAt or expiresAt"
		}
		switch code {
		case "":
			r.ok++
			st.limitHolds.add(limitHold{customer: c.limitOf(w), createdAt: h.CreatedAt, expiresAt: h.ExpiresAt})
		case codePurchaseLimit:
			r.refused++
		default:
			r.fail(code) // INSUFFICIENT_STOCK too: the stock is ample
		}
	})
	per := (st.opts.Clients + len(c.limitIDs) - 1) / len(c.limitIDs)
	res.Notes = append(res.Notes, fmt.Sprintf("%d clients as %d customers (up to %d connections each), maxPerCustomer %d: "+
		"%d holds made, %d refused %s (counted as refused/s)", st.opts.Clients, len(c.limitIDs), per, limitMax,
		res.OK, res.Refused, codePurchaseLimit))
	st.limitRefused = res.Refused
	return res, nil
}

const codePurchaseLimit = "PURCHASE_LIMIT_EXCEEDED"

// meUnits reads, over GraphQL as the customer of token, the units of
// product it holds (ACTIVE), has pending or has bought: the server's own
// view of what counts against maxPerCustomer.
func (a *api) meUnits(ctx context.Context, token, productID string) (id string, units int, err error) {
	type page struct {
		Edges []struct {
			Node struct {
				Qty     int    `json:"qty"`
				Status  string `json:"status"`
				Product struct {
					ID string `json:"id"`
				} `json:"product"`
			} `json:"node"`
		} `json:"edges"`
		PageInfo struct {
			HasNextPage bool    `json:"hasNextPage"`
			EndCursor   *string `json:"endCursor"`
		} `json:"pageInfo"`
	}
	var afterH, afterO *string
	moreH, moreO := true, true
	for n := 0; moreH || moreO; n++ {
		if n == maxMePages {
			return id, units, fmt.Errorf("more than %d pages of holds or orders", maxMePages)
		}
		var out struct {
			Me *struct {
				ID     string `json:"id"`
				Holds  page   `json:"holds"`
				Orders page   `json:"orders"`
			} `json:"me"`
		}
		if code := a.post(ctx, token, gqlBody(qMe, map[string]any{"h": afterH, "o": afterO}), &out); code != "" {
			return id, units, errors.New(code)
		}
		if out.Me == nil {
			return id, units, errors.New("me is null: the server took the token as no customer")
		}
		id = out.Me.ID
		if moreH {
			for _, e := range out.Me.Holds.Edges {
				if e.Node.Product.ID == productID && e.Node.Status == "ACTIVE" {
					units += e.Node.Qty
				}
			}
			moreH, afterH = out.Me.Holds.PageInfo.HasNextPage, out.Me.Holds.PageInfo.EndCursor
		}
		if moreO {
			for _, e := range out.Me.Orders.Edges {
				if e.Node.Product.ID == productID && (e.Node.Status == "PENDING_PAYMENT" || e.Node.Status == "PAID") {
					units += e.Node.Qty
				}
			}
			moreO, afterO = out.Me.Orders.PageInfo.HasNextPage, out.Me.Orders.PageInfo.EndCursor
		}
		// A page that says there is more must say where it goes on.
		if (moreH && afterH == nil) || (moreO && afterO == nil) {
			return id, units, errors.New("hasNextPage without an endCursor")
		}
	}
	return id, units, nil
}

// whoami checks, before any scenario, that the server takes the tool's
// customer tokens: me.id must be the token's sub.
func (a *api) whoami(ctx context.Context, token string) (string, error) {
	var out struct {
		Me *struct {
			ID string `json:"id"`
		} `json:"me"`
	}
	code := a.post(ctx, token, gqlBody(`{ me { id } }`, nil), &out)
	switch {
	case code == "UNAUTHENTICATED" || code == "HTTP 401":
		return "", errors.New("the server refuses the tool's customer token (UNAUTHENTICATED): -customer-secret, " +
			"-customer-issuer and -customer-audience must be the server's CUSTOMER_JWT_SECRET, _ISSUER and _AUDIENCE, " +
			"and the server must have CUSTOMER_JWT_SECRET set")
	case code != "":
		return "", errors.New(code)
	case out.Me == nil:
		return "", errors.New("me is null with a customer token: the server takes no customer tokens")
	}
	return out.Me.ID, nil
}

// checkLimit checks the limit scenario's product, when it ran: no customer
// ever had more than limitMax units of it. Three views, each from outside
// the server's code: the holds the tool was answered with and each
// customer's holds and orders over GraphQL (me), here; with -db one SQL
// statement over the holds and orders (checkLimitSQL).
func (st *state) checkLimit(ctx context.Context, c *checkResult) {
	p, ok := st.limitProduct()
	if !ok || st.cust == nil {
		return
	}
	ids := st.cust.limitIDs
	st.limitHolds.mu.Lock()
	holds := slices.Clone(st.limitHolds.holds)
	st.limitHolds.mu.Unlock()
	before := len(c.Violations)
	most := maxConcurrent(holds, len(ids))
	parts := make([]string, len(ids))
	for k, n := range most {
		parts[k] = fmt.Sprintf("%s %d", ids[k], n)
		if n > limitMax {
			c.violation("limit product %s: customer %s was answered with %d holds alive at once (createdAt..expiresAt), maxPerCustomer %d: LIMIT EXCEEDED",
				p.ID, ids[k], n, limitMax)
		}
	}
	c.line("limit product %s (maxPerCustomer %d), %d customers shared by %d clients: %d holds made, %d refused %s",
		p.ID, limitMax, len(ids), st.opts.Clients, len(holds), st.limitRefused, codePurchaseLimit)
	c.line("  the tool's answers: most holds of one customer alive at one instant ≤ %d: %s (%s)",
		limitMax, verdict(len(c.Violations)-before), strings.Join(parts, ", "))

	// The server's view, customer by customer, over GraphQL.
	before = len(c.Violations)
	for k, id := range ids {
		// Client k is customer k's (k < len(ids) <= clients).
		got, units, err := st.api.meUnits(ctx, st.cust.limitTokens[k], p.ID)
		switch {
		case err != nil:
			c.Failed = true
			c.line("  GraphQL me of %s: cannot read it: %v", id, err)
			continue
		case got != id:
			c.violation("limit: me.id %q for a token of %q", got, id)
		}
		parts[k] = fmt.Sprintf("%s %d", id, units)
		if units > limitMax {
			c.violation("limit product %s: customer %s has %d units (ACTIVE holds + PENDING_PAYMENT + PAID orders, GraphQL me), maxPerCustomer %d: LIMIT EXCEEDED",
				p.ID, id, units, limitMax)
		}
	}
	c.line("  GraphQL me: each customer's ACTIVE holds + PENDING_PAYMENT + PAID orders of it ≤ %d: %s (%s)",
		limitMax, verdict(len(c.Violations)-before), strings.Join(parts, ", "))
}

// checkLimitSQL is checkLimit's database view: per customer, in one
// statement (one snapshot), the qty of its ACTIVE holds, PENDING_PAYMENT and
// PAID orders of the product.
func (st *state) checkLimitSQL(ctx context.Context, c *checkResult, db *sql.DB) {
	p, ok := st.limitProduct()
	if !ok || st.cust == nil {
		return
	}
	ids := st.cust.limitIDs
	pid, err := strconv.ParseInt(p.ID, 10, 64)
	if err != nil {
		c.Failed = true
		c.line("limit check: product id %q is not an integer", p.ID)
		return
	}
	rows, err := db.QueryContext(ctx, `SELECT u.customer_id, SUM(u.qty) FROM (
  SELECT customer_id, qty FROM holds WHERE product_id = ? AND status = 'ACTIVE'
  UNION ALL
  SELECT customer_id, qty FROM orders WHERE product_id = ? AND status IN ('PENDING_PAYMENT', 'PAID')
) u GROUP BY u.customer_id ORDER BY u.customer_id`, pid, pid)
	if err != nil {
		c.Failed = true
		c.line("limit product %s, database: cannot check: %v", p.ID, err)
		return
	}
	defer rows.Close()
	before := len(c.Violations)
	units := map[string]int64{}
	for rows.Next() {
		var cust []byte
		var n int64
		if err := rows.Scan(&cust, &n); err != nil {
			c.Failed = true
			c.line("limit product %s, database: cannot check: %v", p.ID, err)
			return
		}
		units[string(cust)] = n
		if n > limitMax {
			c.violation("limit product %s: customer %q has %d units (ACTIVE holds + PENDING_PAYMENT + PAID orders, database), maxPerCustomer %d: LIMIT EXCEEDED",
				p.ID, cust, n, limitMax)
		}
	}
	if err := rows.Err(); err != nil {
		c.Failed = true
		c.line("limit product %s, database: cannot check: %v", p.ID, err)
		return
	}
	// The tool's customers, then any other that holds the product.
	parts := make([]string, 0, len(units))
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s %d", id, units[id]))
	}
	for _, id := range slices.Sorted(maps.Keys(units)) {
		if !slices.Contains(ids, id) {
			parts = append(parts, fmt.Sprintf("%q (not the tool's) %d", id, units[id]))
		}
	}
	c.line("limit product %s, database: per customer, ACTIVE holds + PENDING_PAYMENT + PAID orders of it ≤ %d: %s (%s)",
		p.ID, limitMax, verdict(len(c.Violations)-before), strings.Join(parts, ", "))
}

// limitProduct is the limit scenario's product, when it was created.
func (st *state) limitProduct() (createdProduct, bool) {
	i := slices.IndexFunc(st.products, func(p createdProduct) bool { return p.Scenario == scLimit })
	if i < 0 {
		return createdProduct{}, false
	}
	return st.products[i], true
}

// tokenNote says what verifying a customer token costs, from typename and
// typename-customer of one run: the difference of their p50, and of their
// throughput as machine time per request (the p50 of a closed loop also
// counts the wait behind the other clients, so it magnifies the cost).
func tokenNote(tn, tc *scenarioResult, cpus int) string {
	if tn == nil || tc == nil || tn.RequestsPerSec <= 0 || tc.RequestsPerSec <= 0 {
		return ""
	}
	dp50 := float64(tc.Latency.P50-tn.Latency.P50) / float64(time.Microsecond)
	cpu := float64(cpus) * (1/tc.RequestsPerSec - 1/tn.RequestsPerSec) * 1e6
	return fmt.Sprintf("token verification: %+.0f µs per request at p50, throughput ratio %.2f "+
		"(%s vs %s req/s: %+.1f µs of the machine's %d CPUs per request; the p50 also holds the wait behind %d clients)",
		dp50, tc.RequestsPerSec/tn.RequestsPerSec, fmtRate(tc.RequestsPerSec), fmtRate(tn.RequestsPerSec), cpu, cpus,
		cmp.Or(tc.Clients, tn.Clients))
}
