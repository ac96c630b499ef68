package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"flashsale/database"
	"flashsale/stock"
)

// checkResult is the verdict of the checks after the run.
type checkResult struct {
	// What was checked, one line each, with its outcome.
	Lines []string `json:"lines"`
	// Invariant violations and oversold products: any makes the run fail.
	Violations []string `json:"violations"`
	// Failed: a check could not be run (database unreachable, ...).
	Failed bool `json:"failed"`
}

func (c *checkResult) line(format string, a ...any) {
	c.Lines = append(c.Lines, fmt.Sprintf(format, a...))
}
func (c *checkResult) violation(format string, a ...any) {
	c.Violations = append(c.Violations, fmt.Sprintf(format, a...))
}

// check verifies, once the load has stopped, what can be verified:
//   - over GraphQL, for each product the tool created: 0 <= stockReserved <=
//     stockAvailable <= its stock, stockSellable = available - reserved,
//     and the sellout product sold no more than its stock;
//   - with -db: stock.Service.Audit (the contract's invariants, every product
//     in the database), and that no product of the tool's is oversold: qty of
//     its ACTIVE holds + PENDING_PAYMENT orders + PAID orders <= its stock,
//     stock_available >= 0;
//   - when limit ran: that no customer ever had more than maxPerCustomer
//     units of its product, from the tool's answers, over GraphQL (me) and
//     with -db in SQL (checkLimit, checkLimitSQL).
func (st *state) check(ctx context.Context) checkResult {
	var c checkResult
	st.checkStock(ctx, &c)
	st.checkSellout(&c)
	st.checkLimit(ctx, &c)
	st.checkEvents(ctx, &c, st.eventsFig)
	st.checkSubscribers(&c)
	st.checkQueueSubscribers(&c)
	if st.opts.DB == "" {
		c.line("database checks (stock.Service.Audit, oversold, limit): not run, they need -db")
		return c
	}
	st.checkDatabase(ctx, &c)
	return c
}

// checkStock reads each of the tool's products over GraphQL: 0 <=
// stockReserved <= stockAvailable <= its stock, stockSellable = available
// - reserved.
func (st *state) checkStock(ctx context.Context, c *checkResult) {
	before := len(c.Violations)
	for _, p := range st.products {
		ps, found, err := st.apiOf(p).product(ctx, p.ID)
		switch {
		case err != nil:
			c.Failed = true
			c.line("GraphQL: product %s (%s): cannot read it: %v", p.ID, p.Scenario, err)
			continue
		case !found:
			c.violation("product %s (%s): product(id) returns null", p.ID, p.Scenario)
			continue
		}
		if ps.StockReserved < 0 || ps.StockReserved > ps.StockAvailable {
			c.violation("product %s (%s): stockReserved %d outside 0..stockAvailable %d", p.ID, p.Scenario, ps.StockReserved, ps.StockAvailable)
		}
		if ps.StockAvailable > p.Stock || ps.StockAvailable < 0 {
			c.violation("product %s (%s): stockAvailable %d outside 0..its stock %d", p.ID, p.Scenario, ps.StockAvailable, p.Stock)
		}
		if ps.StockSellable != ps.StockAvailable-ps.StockReserved {
			c.violation("product %s (%s): stockSellable %d != stockAvailable %d - stockReserved %d", p.ID, p.Scenario, ps.StockSellable, ps.StockAvailable, ps.StockReserved)
		}
	}
	if len(st.products) > 0 {
		c.line("GraphQL: stock of the %d product(s) the tool created: %s", len(st.products), verdict(len(c.Violations)-before))
	}
}

// checkSellout checks that the sellout product sold no more than its
// stock, from the tool's count of successful holds, while that count is a
// bound.
func (st *state) checkSellout(c *checkResult) {
	for _, p := range st.products {
		if p.Scenario != scSellout {
			continue
		}
		switch ran := time.Since(st.started); {
		case ran >= st.opts.HoldTTL:
			// Holds made early may have expired and their units been sold
			// again: the count bounds nothing (the database check with -db
			// counts what the contract counts, the live holds and orders).
			c.line("sellout product %s: %d successful holds of qty 1 on a stock of %d, over %s, longer than -hold-ttl %s: not a bound (expired holds free their units)",
				p.ID, st.selloutOK, p.Stock, ran.Round(time.Second), st.opts.HoldTTL)
		case st.selloutOK > int64(p.Stock):
			c.violation("sellout product %s: %d successful holds of qty 1 on a stock of %d within -hold-ttl: OVERSOLD", p.ID, st.selloutOK, p.Stock)
		default:
			c.line("sellout product %s: %d successful holds of qty 1 on a stock of %d: ok", p.ID, st.selloutOK, p.Stock)
		}
	}
}

// checkSubscribers checks, when the subscribers scenario ran, that every
// open subscription was told the product's final stock.
func (st *state) checkSubscribers(c *checkResult) {
	s := st.subs
	if s == nil {
		return
	}
	if s.Converged < s.Connected {
		c.violation("subscribers: %d of %d open subscriptions were not told the product's final stock within %s of the last change",
			s.Connected-s.Converged, s.Connected, settleAfterLoad)
	} else {
		c.line("subscribers: all %d open subscriptions were told the product's final stock: ok", s.Connected)
	}
}

// checkDatabase runs the checks in -db: the contract's invariants on every
// product, oversold, and the limit in SQL.
func (st *state) checkDatabase(ctx context.Context, c *checkResult) {
	db, err := database.Open(st.opts.DB, database.Options{MaxConns: 4})
	if err != nil {
		c.Failed = true
		c.line("database: %v", err)
		return
	}
	defer db.Close()
	st.checkAudit(ctx, c, db)
	st.checkOversold(ctx, c, db)
	st.checkLimitSQL(ctx, c, db.SQL)
}

// checkAudit runs stock.Service.Audit, the contract's invariants, on every
// product. Audit reads without locks: a sweep committing between its
// queries (the server keeps expiring holds) can show a passing mismatch,
// so a violation counts only if it is still there on a second and third
// look.
func (st *state) checkAudit(ctx context.Context, c *checkResult, db *database.DB) {
	svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 1},
		slog.New(slog.DiscardHandler))
	var bad []string
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		bad, err = svc.Audit(ctx)
		if err != nil || len(bad) == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	switch {
	case err != nil:
		c.Failed = true
		c.line("stock.Service.Audit (contract invariants, every product in %s): could not run: %v", db.Redacted, err)
	default:
		for _, b := range bad {
			c.violation("Audit: %s", b)
		}
		c.line("stock.Service.Audit (contract invariants, every product in %s): %s", db.Redacted, verdict(len(bad)))
	}
}

// checkOversold checks that no product of the tool's is oversold. One
// statement reads one consistent snapshot.
func (st *state) checkOversold(ctx context.Context, c *checkResult, db *database.DB) {
	// Only -db's products: the events server's is in its own database
	// (checked over GraphQL above).
	products := slices.DeleteFunc(slices.Clone(st.products), func(p createdProduct) bool { return p.Server != "" })
	if len(products) == 0 {
		return
	}
	ids := make([]string, 0, len(products))
	byID := map[int64]createdProduct{}
	for _, p := range products {
		n, err := strconv.ParseInt(p.ID, 10, 64)
		if err != nil {
			c.Failed = true
			c.line("oversold check: product id %q is not an integer", p.ID)
			return
		}
		ids = append(ids, strconv.FormatInt(n, 10))
		byID[n] = p
	}
	rows, err := db.SQL.QueryContext(ctx, `SELECT p.id, p.stock_available, p.stock_reserved,
  COALESCE((SELECT SUM(h.qty) FROM holds h WHERE h.product_id = p.id AND h.status = 'ACTIVE'), 0),
  COALESCE((SELECT SUM(o.qty) FROM orders o WHERE o.product_id = p.id AND o.status = 'PENDING_PAYMENT'), 0),
  COALESCE((SELECT SUM(o.qty) FROM orders o WHERE o.product_id = p.id AND o.status = 'PAID'), 0)
FROM products p WHERE p.id IN (`+strings.Join(ids, ",")+`)`)
	if err != nil {
		c.Failed = true
		c.line("oversold check: %v", err)
		return
	}
	defer rows.Close()
	before := len(c.Violations)
	seen := map[int64]bool{}
	var details []string
	for rows.Next() {
		var id, available, reserved, active, pending, paid int64
		if err := rows.Scan(&id, &available, &reserved, &active, &pending, &paid); err != nil {
			c.Failed = true
			c.line("oversold check: %v", err)
			return
		}
		seen[id] = true
		p := byID[id]
		if committed := active + pending + paid; committed > int64(p.Stock) {
			c.violation("product %d (%s): OVERSOLD: %d in ACTIVE holds + %d in PENDING_PAYMENT orders + %d PAID = %d > stock %d",
				id, p.Scenario, active, pending, paid, committed, p.Stock)
		}
		if available < 0 {
			c.violation("product %d (%s): stock_available %d < 0", id, p.Scenario, available)
		}
		details = append(details, fmt.Sprintf("%s %d: %d held + %d pending + %d paid of %d", p.Scenario, id, active, pending, paid, p.Stock))
	}
	if err := rows.Err(); err != nil {
		c.Failed = true
		c.line("oversold check: %v", err)
		return
	}
	for id, p := range byID {
		if !seen[id] {
			c.violation("product %d (%s): missing from the database", id, p.Scenario)
		}
	}
	c.line("oversold (ACTIVE holds + PENDING_PAYMENT + PAID <= stock, stock_available >= 0), the tool's %d product(s): %s",
		len(products), verdict(len(c.Violations)-before))
	for _, d := range details {
		c.line("  %s", d)
	}
}

func verdict(violations int) string {
	if violations == 0 {
		return "ok"
	}
	return fmt.Sprintf("%d VIOLATION(S)", violations)
}
