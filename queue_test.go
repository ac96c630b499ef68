package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/internal/testkit"
)

type ticketJSON struct {
	ID                   string
	Status               string
	Position             *int
	EstimatedAdmissionAt *time.Time
	AdmittedAt           *time.Time
	PassExpiresAt        *time.Time
	Product              struct{ ID string }
}

const ticketFields = `id status position estimatedAdmissionAt admittedAt passExpiresAt product { id }`

// queueProduct makes a product of stock units whose waiting room admits
// perMinute tickets a minute, its sale open now.
func (ts *testServer) queueProduct(t *testing.T, stock, perMinute int) string {
	t.Helper()
	var out struct{ CreateProduct struct{ ID string } }
	ts.gql(t, testAdminToken, `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`,
		map[string]any{"in": map[string]any{"name": "Queued drop", "priceCents": 900, "stock": stock, "queueAdmitPerMinute": perMinute}}).must(t, &out)
	return out.CreateProduct.ID
}

func (ts *testServer) joinQueue(t *testing.T, token, productID string) ticketJSON {
	t.Helper()
	var out struct{ JoinQueue ticketJSON }
	ts.gql(t, token, `mutation($p: ID!) { joinQueue(productId: $p) { `+ticketFields+` } }`, map[string]any{"p": productID}).must(t, &out)
	return out.JoinQueue
}

func (ts *testServer) ticket(t *testing.T, token, id string) *ticketJSON {
	t.Helper()
	var out struct{ QueueTicket *ticketJSON }
	ts.gql(t, token, `query($id: ID!) { queueTicket(id: $id) { `+ticketFields+` } }`, map[string]any{"id": id}).must(t, &out)
	return out.QueueTicket
}

// waitTicket polls the ticket until it is in status, or fails the test.
func (ts *testServer) waitTicket(t *testing.T, token, id, status string) ticketJSON {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tk := ts.ticket(t, token, id)
		if tk != nil && tk.Status == status {
			return *tk
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket %s is %+v, not %s, after 15 s", id, tk, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWaitingRoomOverHTTP walks the waiting room through the real server
// with customer tokens: joining (once per customer), holds refused without
// a pass and while waiting, admission at the rate, the pass taking one
// hold, the ticket's privacy, and Product.queue.
func TestWaitingRoomOverHTTP(t *testing.T) {
	ts := customerServer(t)
	p := ts.queueProduct(t, 10, 60) // one ticket a second
	alice, bob := customerToken(t, "alice", time.Hour), customerToken(t, "bob", time.Hour)
	hold := `mutation($p: ID!, $q: Int!, $tk: ID) { createHold(productId: $p, qty: $q, queueTicketId: $tk) { id } }`

	if r := ts.gql(t, alice, hold, map[string]any{"p": p, "q": 1}); r.code() != "QUEUE_REQUIRED" {
		t.Fatalf("hold without a ticket: %s %+v", r.Data, r.Errors)
	}
	// Three buyers in line, bob last; alice joining again gets her ticket.
	ta := ts.joinQueue(t, alice, p)
	tc := ts.joinQueue(t, customerToken(t, "carol", time.Hour), p)
	tb := ts.joinQueue(t, bob, p)
	if again := ts.joinQueue(t, alice, p); again.ID != ta.ID {
		t.Fatalf("alice joined twice: %s then %s", ta.ID, again.ID)
	}
	if tb.Status != "WAITING" {
		t.Fatalf("bob's ticket %+v", tb)
	}
	// Another customer's ticket is nobody else's business; the operator reads it.
	if got := ts.ticket(t, alice, tb.ID); got != nil {
		t.Fatalf("alice reads bob's ticket: %+v", got)
	}
	if got := ts.ticket(t, testAdminToken, tb.ID); got == nil || got.ID != tb.ID {
		t.Fatalf("the operator reads bob's ticket as %+v", got)
	}
	// Bob, still waiting, is NOT_ADMITTED with his place; alice's ticket is not his.
	if r := ts.gql(t, bob, hold, map[string]any{"p": p, "q": 1, "tk": tb.ID}); r.code() != "NOT_ADMITTED" || r.Errors[0].Extensions["position"] == nil {
		t.Fatalf("bob while waiting: %s %+v", r.Data, r.Errors)
	}
	if r := ts.gql(t, bob, hold, map[string]any{"p": p, "q": 1, "tk": ta.ID}); r.code() != "QUEUE_REQUIRED" || r.Errors[0].Extensions["ticketStatus"] != nil {
		t.Fatalf("bob with alice's ticket: %s %+v", r.Data, r.Errors)
	}
	// Bad input is a clear error and changes nothing.
	join := `mutation($p: ID!) { joinQueue(productId: $p) { id } }`
	for _, c := range []struct {
		name, token, query string
		vars               map[string]any
		code               string
	}{
		{"join without a customer token", "", join, map[string]any{"p": p}, "UNAUTHENTICATED"},
		{"join an unknown product", alice, join, map[string]any{"p": "999999"}, "NOT_FOUND"},
		{"join a malformed product ID", alice, join, map[string]any{"p": "x"}, "BAD_USER_INPUT"},
		{"hold with a malformed ticket ID", alice, hold, map[string]any{"p": p, "q": 1, "tk": "not-a-ticket"}, "BAD_USER_INPUT"},
		{"hold with an unknown ticket", alice, hold, map[string]any{"p": p, "q": 1, "tk": "01a250ca-01fc-742a-9b5b-a6853d84591a"}, "QUEUE_REQUIRED"},
	} {
		if r := ts.gql(t, c.token, c.query, c.vars); r.code() != c.code {
			t.Errorf("%s: %s %+v, want %s", c.name, r.Data, r.Errors, c.code)
		}
	}
	admitted := ts.waitTicket(t, alice, ta.ID, "ADMITTED")
	if admitted.PassExpiresAt == nil || admitted.AdmittedAt == nil || admitted.Position != nil {
		t.Fatalf("alice admitted as %+v", admitted)
	}
	ts.waitTicket(t, testAdminToken, tc.ID, "ADMITTED")
	// The pass takes one hold, and is then USED.
	var h struct{ CreateHold struct{ ID string } }
	ts.gql(t, alice, hold, map[string]any{"p": p, "q": 2, "tk": ta.ID}).must(t, &h)
	if got := ts.ticket(t, alice, ta.ID); got.Status != "USED" {
		t.Fatalf("after the hold alice's ticket is %+v", got)
	}
	if r := ts.gql(t, alice, hold, map[string]any{"p": p, "q": 1, "tk": ta.ID}); r.code() != "QUEUE_REQUIRED" || r.Errors[0].Extensions["ticketStatus"] != "USED" {
		t.Fatalf("a second hold on a used pass: %s %+v", r.Data, r.Errors)
	}
	ts.waitTicket(t, bob, tb.ID, "ADMITTED")
	var q struct {
		Product struct {
			QueueAdmitPerMinute int
			Queue               struct{ Waiting, Admitted, AdmitPerMinute int }
			StockReserved       int
		}
	}
	ts.gql(t, "", `query($p: ID!) { product(id: $p) { queueAdmitPerMinute queue { waiting admitted admitPerMinute } stockReserved } }`,
		map[string]any{"p": p}).must(t, &q)
	if q.Product.Queue.Waiting != 0 || q.Product.Queue.Admitted != 3 || q.Product.Queue.AdmitPerMinute != 60 || q.Product.StockReserved != 2 {
		t.Fatalf("product after three admissions and one hold: %+v", q.Product)
	}
}

// TestWaitingRoomAnonymous: on SQLite, without customer tokens, every join makes its own ticket, and an
// anonymous ticket's holder may use it.
func TestWaitingRoomAnonymous(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	p := ts.queueProduct(t, 5, 600)
	a, b := ts.joinQueue(t, "", p), ts.joinQueue(t, "", p)
	if a.ID == b.ID {
		t.Fatal("two anonymous joins made one ticket")
	}
	ts.waitTicket(t, "", a.ID, "ADMITTED")
	var h struct{ CreateHold struct{ ID string } }
	ts.gql(t, "", `mutation($p: ID!, $tk: ID) { createHold(productId: $p, qty: 1, queueTicketId: $tk) { id } }`,
		map[string]any{"p": p, "tk": a.ID}).must(t, &h)
	if got := ts.ticket(t, "", a.ID); got.Status != "USED" {
		t.Fatalf("ticket after its hold: %+v", got)
	}
	if r := ts.gql(t, "", `mutation($p: ID!) { joinQueue(productId: $p) { id } }`, map[string]any{"p": ts.createProduct(t, 1).ID}); r.code() != "BAD_USER_INPUT" {
		t.Fatalf("joining a product without a waiting room: %s %+v", r.Data, r.Errors)
	}
}

// TestWaitingRoomOperator: an operator turns a product's waiting room on,
// changes its rate and turns it off, each recorded in the operator action
// log; rates outside 1..1,000,000 change nothing.
func TestWaitingRoomOperator(t *testing.T) {
	ts := startServer(t, dialect.SQLite, nil)
	p := ts.createProduct(t, 5).ID
	update := `mutation($id: ID!, $in: UpdateProductInput!) { updateProduct(id: $id, input: $in) { queueAdmitPerMinute queue { admitPerMinute } } }`
	for _, c := range []struct {
		rate any // nil: turn it off
		want *int
		code string
	}{
		{120, ptr(120), ""},
		{0, ptr(120), "BAD_USER_INPUT"},
		{1_000_001, ptr(120), "BAD_USER_INPUT"},
		{1_000_000, ptr(1_000_000), ""},
		{nil, nil, ""},
	} {
		r := ts.gql(t, testAdminToken, update, map[string]any{"id": p, "in": map[string]any{"queueAdmitPerMinute": c.rate}})
		if r.code() != c.code {
			t.Fatalf("queueAdmitPerMinute %v: code %q, want %q (%+v)", c.rate, r.code(), c.code, r.Errors)
		}
		var got struct {
			Product struct {
				QueueAdmitPerMinute *int
				Queue               *struct{ AdmitPerMinute int }
			}
		}
		ts.gql(t, "", `query($p: ID!) { product(id: $p) { queueAdmitPerMinute queue { admitPerMinute } } }`, map[string]any{"p": p}).must(t, &got)
		rate, q := got.Product.QueueAdmitPerMinute, got.Product.Queue
		if (rate == nil) != (c.want == nil) || rate != nil && *rate != *c.want || (q == nil) != (c.want == nil) || q != nil && q.AdmitPerMinute != *c.want {
			t.Fatalf("after queueAdmitPerMinute %v: rate %v queue %+v, want %v", c.rate, rate, q, c.want)
		}
	}
	var log struct {
		OperatorActions struct {
			Edges []struct {
				Node struct{ Mutation, Input string }
			}
		}
	}
	ts.gql(t, testAdminToken, `{ operatorActions(first: 10) { edges { node { mutation input } } } }`, nil).must(t, &log)
	var rates []string
	for _, e := range log.OperatorActions.Edges {
		if e.Node.Mutation == "updateProduct" {
			rates = append(rates, e.Node.Input)
		}
	}
	if len(rates) != 3 || !strings.Contains(rates[2], `"queueAdmitPerMinute":120`) || !strings.Contains(rates[0], `"queueAdmitPerMinute":null`) {
		t.Fatalf("operator actions of updateProduct, newest first: %v", rates)
	}
}

func ptr[T any](v T) *T { return &v }

// TestWaitingRoomMetrics: joins, admissions, the waiting gauge and the
// holds refused for want of a pass show in /metrics.
func TestWaitingRoomMetrics(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	ts := startServer(t, dialect.MySQL, map[string]string{"METRICS_ADDR": addr})
	p := ts.queueProduct(t, 5, 6000)
	var tickets []ticketJSON
	for range 3 {
		tickets = append(tickets, ts.joinQueue(t, "", p))
	}
	if r := ts.gql(t, "", `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, map[string]any{"p": p}); r.code() != "QUEUE_REQUIRED" {
		t.Fatalf("hold without a ticket: %+v", r.Errors)
	}
	for _, tk := range tickets {
		ts.waitTicket(t, "", tk.ID, "ADMITTED")
	}
	want := map[[3]string]float64{
		{"flashsale_queue_joins_total", "", ""}:               3,
		{"flashsale_queue_admitted_total", "", ""}:            3,
		{"flashsale_queue_waiting", "", ""}:                   0,
		{"flashsale_holds_total", "result", "QUEUE_REQUIRED"}: 1,
	}
	// The admission is counted right after its commit: scrape until it shows.
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams := testkit.Scrape(t, addr)
		var wrong []string
		for k, v := range want {
			if got, ok := fams.Value(k[0], k[1], k[2]); !ok || got != v {
				wrong = append(wrong, fmt.Sprintf("%s{%s=%q} = %v (present %v), want %v", k[0], k[1], k[2], got, ok, v))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWaitingRoomSoldOutLive: once the last unit is paid for, a buyer still
// in line hears SOLD_OUT on its subscription (here over SSE), instead of
// waiting for nothing; while the unit was only held, admission paused.
func TestWaitingRoomSoldOutLive(t *testing.T) {
	ts := customerServer(t)
	p := ts.queueProduct(t, 1, 600)
	alice, bob := customerToken(t, "alice", time.Hour), customerToken(t, "bob", time.Hour)
	ta := ts.joinQueue(t, alice, p)
	ts.waitTicket(t, alice, ta.ID, "ADMITTED")
	var h struct{ CreateHold struct{ ID string } }
	ts.gql(t, alice, `mutation($p: ID!, $tk: ID) { createHold(productId: $p, qty: 1, queueTicketId: $tk) { id } }`,
		map[string]any{"p": p, "tk": ta.ID}).must(t, &h)

	// Bob joins while the unit is held: he waits (admission is paused).
	tb := ts.joinQueue(t, bob, p)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := sseAs(t, ctx, ts.URL, bob, `subscription($id: ID!) { queueTicket(id: $id) { status position } }`, map[string]any{"id": tb.ID})
	var o struct{ CreateOrder struct{ ID string } }
	ts.gql(t, alice, `mutation($h: ID!) { createOrder(holdId: $h) { id } }`, map[string]any{"h": h.CreateHold.ID}).must(t, &o)
	if status, _ := ts.webhook(t, "evt_sold_out", o.CreateOrder.ID, "success"); status != 200 {
		t.Fatalf("webhook: %d", status)
	}
	var seen []string
	for {
		r, ok := nextSSEResult(t, ch)
		if !ok {
			t.Fatalf("the stream ended after %v", seen)
		}
		var out struct{ QueueTicket ticketJSON }
		r.must(t, &out)
		seen = append(seen, out.QueueTicket.Status)
		if out.QueueTicket.Status == "SOLD_OUT" {
			break
		}
		if out.QueueTicket.Status != "WAITING" {
			t.Fatalf("bob's ticket went %v while the only unit was held, then sold", seen)
		}
	}
	if got := ts.ticket(t, bob, tb.ID); got.Status != "SOLD_OUT" {
		t.Fatalf("bob's ticket reads as %+v", got)
	}
	if late := ts.joinQueue(t, customerToken(t, "carol", time.Hour), p); late.Status != "SOLD_OUT" {
		t.Fatalf("a join after the sell-out: %+v, want SOLD_OUT at once", late)
	}
}
