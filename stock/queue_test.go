package stock_test

// Tests of the waiting room (queue.go, passes.go): the pre-queue's shuffle,
// first come first served after the start, admission's rate and pause,
// sell-out. The passes (holds with a ticket), privacy, one ticket per
// customer and a concurrent run are in queue_pass_test.go.
//
// This file holds the helpers both share (qu*).

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/queueticket"
	"flashsale/stock"
)

// quLongPass is the pass TTL of tests where passes must not run out.
const quLongPass = time.Hour

// quProduct creates a product from in, with a name and price filled in.
func (e *env) quProduct(in stock.NewProduct) *ent.Product {
	e.t.Helper()
	in.Name, in.PriceCents = "drop", 500
	p, err := e.svc.CreateProduct(e.ctx, nil, in)
	if err != nil {
		e.t.Fatalf("CreateProduct(%+v): %v", in, err)
	}
	return p
}

// quJoin joins a product's waiting room; it must succeed.
func (e *env) quJoin(svc *stock.Service, productID int, by stock.Caller) stock.QueueTicketView {
	e.t.Helper()
	v, err := svc.JoinQueue(e.ctx, productID, by)
	if err != nil {
		e.t.Fatalf("JoinQueue(product %d, %+v): %v", productID, by, err)
	}
	if v.QueueTicket == nil || v.ProductID != productID || (by.Customer != "" && (v.CustomerID == nil || *v.CustomerID != by.Customer)) {
		e.t.Fatalf("JoinQueue(product %d, %+v) = %+v", productID, by, v.QueueTicket)
	}
	return v
}

// quCustomer is the customer of join i in the tests that join many.
func quCustomer(i int) stock.Caller { return stock.Caller{Customer: fmt.Sprintf("c%03d", i)} }

// quJoinMany joins customers quCustomer(from)..quCustomer(from+n-1), in
// that order, through svc.
func (e *env) quJoinMany(svc *stock.Service, productID, from, n int) []stock.QueueTicketView {
	e.t.Helper()
	vs := make([]stock.QueueTicketView, n)
	for i := range n {
		vs[i] = e.quJoin(svc, productID, quCustomer(from+i))
	}
	return vs
}

// quTwoServers is an env and two Services over one database, as two
// server processes; e.svc is the first.
func quTwoServers(t *testing.T, d string) (*env, []*stock.Service) {
	e, db2 := newTwoServerEnv(t, d)
	e.svc = newService(e.db, stock.Config{})
	return e, []*stock.Service{e.svc, newService(db2, stock.Config{})}
}

// quTick runs one round of the waiting rooms through svc.
func (e *env) quTick(svc *stock.Service, passTTL time.Duration) stock.QueueResult {
	e.t.Helper()
	r, err := svc.TickQueues(e.ctx, passTTL)
	if err != nil {
		e.t.Fatalf("TickQueues: %v", err)
	}
	return r
}

// quTickUntil ticks through svc, a round every 20 ms, until cond holds; a
// generous deadline fails the test.
func (e *env) quTickUntil(svc *stock.Service, passTTL time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("the waiting room never got there: %s", what)
		}
		e.quTick(svc, passTTL)
		time.Sleep(20 * time.Millisecond)
	}
}

// quTicket reads a ticket's row.
func (e *env) quTicket(id uuid.UUID) *ent.QueueTicket {
	e.t.Helper()
	t, err := e.db.Ent.QueueTicket.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("get ticket %s: %v", id, err)
	}
	return t
}

// quReadFresh reads a ticket through svc until ok accepts it, or 3 s
// passed: a process serves tickets and products from memory about a
// second stale at most (queue_read.go), so another server's change shows
// within that. The caller checks what it returns.
func (e *env) quReadFresh(svc *stock.Service, id uuid.UUID, by stock.Caller, ok func(stock.QueueTicketView) bool) stock.QueueTicketView {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		v, err := svc.QueueTicket(e.ctx, id, by)
		if err != nil {
			e.t.Fatalf("QueueTicket(%s): %v", id, err)
		}
		if ok(v) || time.Now().After(deadline) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quStatus reads a ticket's status.
func (e *env) quStatus(id uuid.UUID) queueticket.Status {
	e.t.Helper()
	return e.quTicket(id).Status
}

// quTickets reads a product's tickets.
func (e *env) quTickets(productID int) []*ent.QueueTicket {
	e.t.Helper()
	ts, err := e.db.Ent.QueueTicket.Query().Where(queueticket.ProductID(productID)).All(e.ctx)
	if err != nil {
		e.t.Fatalf("tickets of product %d: %v", productID, err)
	}
	return ts
}

// quCount counts a product's tickets by status.
func (e *env) quCount(productID int) map[queueticket.Status]int {
	e.t.Helper()
	n := map[queueticket.Status]int{}
	for _, t := range e.quTickets(productID) {
		n[t.Status]++
	}
	return n
}

// quAdmitted is how many of a product's tickets were let in so far.
func (e *env) quAdmitted(productID int) int {
	e.t.Helper()
	n := e.quCount(productID)
	return n[queueticket.StatusADMITTED] + n[queueticket.StatusUSED] + n[queueticket.StatusEXPIRED]
}

// quCheck checks a product's waiting room against its tickets:
//   - queue_waiting and queue_admitted are the real counts (WAITING; and
//     ADMITTED, USED or EXPIRED);
//   - the numbers given are 1..queue_next-1, each once;
//   - a numbered ticket is WAITING exactly when its number is past
//     queue_serving, so admission went in number order;
//   - an unnumbered ticket waits only in a pre-queue not yet numbered
//     (else it is SOLD_OUT);
//   - a ticket let in has its number, admittedAt and passExpiresAt.
func (e *env) quCheck(productID int) {
	e.t.Helper()
	p := e.getProduct(productID)
	ts := e.quTickets(productID)
	count := map[queueticket.Status]int64{}
	var numbers []int64
	for _, t := range ts {
		count[t.Status]++
		waiting := t.Status == queueticket.StatusWAITING
		if t.Number == nil {
			if waiting && p.QueueTickedAt != nil {
				e.t.Errorf("product %d: ticket %s waits unnumbered after the queue started", productID, t.ID)
			}
			if !waiting && t.Status != queueticket.StatusSOLD_OUT {
				e.t.Errorf("product %d: ticket %s is %s without a number", productID, t.ID, t.Status)
			}
			continue
		}
		numbers = append(numbers, *t.Number)
		if past := *t.Number > p.QueueServing; past != waiting {
			e.t.Errorf("product %d: ticket %s number %d is %s with serving at %d", productID, t.ID, *t.Number, t.Status, p.QueueServing)
		}
		switch t.Status {
		case queueticket.StatusADMITTED, queueticket.StatusUSED, queueticket.StatusEXPIRED:
			if t.AdmittedAt == nil || t.PassExpiresAt == nil || !t.PassExpiresAt.After(*t.AdmittedAt) {
				e.t.Errorf("product %d: ticket %s is %s, admitted at %v, pass until %v", productID, t.ID, t.Status, t.AdmittedAt, t.PassExpiresAt)
			}
		}
	}
	if admitted := count[queueticket.StatusADMITTED] + count[queueticket.StatusUSED] + count[queueticket.StatusEXPIRED]; p.QueueWaiting != count[queueticket.StatusWAITING] || p.QueueAdmitted != admitted {
		e.t.Errorf("product %d: queue_waiting %d, queue_admitted %d; the tickets say %d, %d (%v)",
			productID, p.QueueWaiting, p.QueueAdmitted, count[queueticket.StatusWAITING], admitted, count)
	}
	slices.Sort(numbers)
	for i, n := range numbers {
		if n != int64(i+1) {
			e.t.Errorf("product %d: numbers given are not 1..%d each once: %v", productID, len(numbers), numbers)
			break
		}
	}
	if int64(len(numbers)) != p.QueueNext-1 {
		e.t.Errorf("product %d: %d numbered tickets, queue_next %d", productID, len(numbers), p.QueueNext)
	}
}

// quHold is CreateHold with a ticket.
func (e *env) quHold(svc *stock.Service, productID, qty int, customer string, ticket uuid.UUID) (*ent.Hold, error) {
	return svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: productID, Qty: qty, Customer: customer, QueueTicket: ticket})
}

// quMustHold is quHold that must succeed.
func (e *env) quMustHold(svc *stock.Service, productID, qty int, customer string, ticket uuid.UUID) *ent.Hold {
	e.t.Helper()
	h, err := e.quHold(svc, productID, qty, customer, ticket)
	if err != nil {
		e.t.Fatalf("CreateHold(product %d, qty %d, customer %q, ticket %s): %v", productID, qty, customer, ticket, err)
	}
	return h
}

// wantQueueError checks that err is a *QueueError of kind with the ticket
// status given ("" for none) and returns it.
func wantQueueError(t *testing.T, err error, kind error, status queueticket.Status) *stock.QueueError {
	t.Helper()
	var qe *stock.QueueError
	if !errors.As(err, &qe) || !errors.Is(err, kind) {
		t.Errorf("got %v; want a *QueueError %v", err, kind)
		return nil
	}
	if qe.TicketStatus != status {
		t.Errorf("QueueError.TicketStatus = %q, want %q (%v)", qe.TicketStatus, status, err)
	}
	if kind == stock.ErrQueueRequired && (qe.Position != 0 || qe.EstimatedAt != nil) {
		t.Errorf("QUEUE_REQUIRED with position %d, estimate %v", qe.Position, qe.EstimatedAt)
	}
	return qe
}

// quStartNow moves a product's sale start into the past.
func (e *env) quStartNow(productID int) {
	e.t.Helper()
	past := e.dbNow().Add(-time.Second)
	if _, err := e.svc.UpdateProduct(e.ctx, nil, productID, stock.ProductUpdate{SaleStartsAt: stock.To(past)}); err != nil {
		e.t.Fatalf("UpdateProduct(saleStartsAt %s): %v", past, err)
	}
}

// spearman is the rank correlation of two permutations of 0..n-1.
func spearman(a, b []int) float64 {
	n := float64(len(a))
	var d2 float64
	for i := range a {
		d := float64(a[i] - b[i])
		d2 += d * d
	}
	return 1 - 6*d2/(n*(n*n-1))
}

// TestQueueBasicFlow is the waiting room end to end on each store (SQLite
// is the default): buyers join before the start and wait unnumbered; at
// the start a tick numbers them and the room admits them; an admitted
// ticket takes one hold and is USED.
func TestQueueBasicFlow(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		starts := e.dbNow().Add(time.Hour)
		p := e.quProduct(stock.NewProduct{Stock: 10, QueueAdmitPerMinute: cuInt(6000), SaleStartsAt: &starts})
		if p.QueueAdmitPerMinute == nil || *p.QueueAdmitPerMinute != 6000 {
			t.Fatalf("queue_admit_per_minute = %v, want 6000", p.QueueAdmitPerMinute)
		}
		vs := e.quJoinMany(e.svc, p.ID, 0, 3)
		for _, v := range vs {
			if v.Status != queueticket.StatusWAITING || v.Number != nil || v.Position != nil || v.EstimatedAt != nil {
				t.Errorf("pre-queue ticket: %s number %v position %v estimate %v; want WAITING with none", v.Status, v.Number, v.Position, v.EstimatedAt)
			}
		}
		if r := e.quTick(e.svc, quLongPass); r != (stock.QueueResult{}) {
			t.Errorf("tick before the start did %+v", r)
		}
		if _, err := e.quHold(e.svc, p.ID, 1, "c000", vs[0].ID); !errors.Is(err, stock.ErrSaleNotStarted) {
			t.Errorf("hold before the start: %v, want ErrSaleNotStarted", err)
		}
		e.quCheck(p.ID)

		e.quStartNow(p.ID)
		e.quTick(e.svc, quLongPass)
		for _, v := range vs {
			got, err := e.svc.QueueTicket(e.ctx, v.ID, stock.Caller{Customer: *v.CustomerID})
			if err != nil {
				t.Fatalf("QueueTicket: %v", err)
			}
			if got.Number == nil || *got.Number < 1 || *got.Number > 3 {
				t.Errorf("after the start, ticket number %v; want 1..3", got.Number)
			}
		}
		e.quCheck(p.ID)
		e.quTickUntil(e.svc, quLongPass, "3 admitted", func() bool { return e.quAdmitted(p.ID) == 3 })
		v, err := e.svc.QueueTicket(e.ctx, vs[0].ID, stock.Caller{Customer: "c000"})
		if err != nil {
			t.Fatalf("QueueTicket: %v", err)
		}
		if v.Status != queueticket.StatusADMITTED || v.AdmittedAt == nil || v.PassExpiresAt == nil || v.Position != nil {
			t.Errorf("admitted ticket: %s admitted %v pass %v position %v", v.Status, v.AdmittedAt, v.PassExpiresAt, v.Position)
		} else if got := v.PassExpiresAt.Sub(*v.AdmittedAt); got != quLongPass {
			t.Errorf("pass lasts %s, want %s", got, quLongPass)
		}
		h := e.quMustHold(e.svc, p.ID, 2, "c000", vs[0].ID)
		if st := e.quStatus(vs[0].ID); st != queueticket.StatusUSED {
			t.Errorf("ticket after its hold: %s, want USED", st)
		}
		e.wantStock(p.ID, 10, 2)
		e.cuOrder(e.svc, h.ID, stock.Caller{Customer: "c000"})
		e.quCheck(p.ID)
		e.audit()
	})
}

// TestQueuePreQueueIsShuffled: 500 tickets join before the start through
// two services over one database (two server processes); at the start they
// are numbered 1..500, each once, in an order unrelated to the order they
// joined in and to the server they joined through.
//
// Bounds, for a uniformly random permutation of n = 500: Spearman's rho
// between join order and number has mean 0 and sd 1/sqrt(n-1) = 0.045; the
// bound 0.2 is 4.5 sd (a false alarm about once in 150,000 runs). Servers
// take turns in blocks of 25 joins, so numbering by join order gives rho 1
// and 20 runs; the runs of one server's tickets in number order (Wald-
// Wolfowitz, n1 = n2 = 250) have mean 251 and sd 11.2: the bound 50 is 4.5
// sd, and numbering one server's pre-queue before the other's gives 2.
func TestQueuePreQueueIsShuffled(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const n, block = 500, 25
		e, svcs := quTwoServers(t, d)
		starts := e.dbNow().Add(time.Hour)
		p := e.quProduct(stock.NewProduct{Stock: 100, QueueAdmitPerMinute: cuInt(60), SaleStartsAt: &starts})

		joinOrder := map[uuid.UUID]int{}
		server := make([]int, n) // by join order
		for i := range n {
			server[i] = i / block % 2
			v := e.quJoin(svcs[server[i]], p.ID, quCustomer(i))
			if v.Number != nil || v.Position != nil {
				t.Fatalf("ticket %d numbered %v before the start", i, v.Number)
			}
			joinOrder[v.ID] = i
		}
		if pr := e.getProduct(p.ID); pr.QueueWaiting != n || pr.QueueTickedAt != nil {
			t.Errorf("before the start: queue_waiting %d, ticked at %v; want %d, nil", pr.QueueWaiting, pr.QueueTickedAt, n)
		}

		e.quStartNow(p.ID)
		e.quTick(svcs[1], quLongPass)
		ts := e.quTickets(p.ID)
		if len(ts) != n {
			t.Fatalf("%d tickets, want %d", len(ts), n)
		}
		joined, numbered := make([]int, n), make([]int, n)
		byNumber := make([]int, n) // the server of number k+1
		seen := make([]bool, n)
		for i, tk := range ts {
			if tk.Number == nil || *tk.Number < 1 || *tk.Number > n || seen[*tk.Number-1] {
				t.Fatalf("ticket %s numbered %v: want each of 1..%d once", tk.ID, tk.Number, n)
			}
			seen[*tk.Number-1] = true
			joined[i], numbered[i] = joinOrder[tk.ID], int(*tk.Number-1)
			byNumber[*tk.Number-1] = server[joinOrder[tk.ID]]
		}
		rho := spearman(joined, numbered)
		runs := 1
		for k := 1; k < n; k++ {
			if byNumber[k] != byNumber[k-1] {
				runs++
			}
		}
		t.Logf("join order vs number: Spearman rho %.3f (sd %.3f); %d runs of one server's tickets (mean 251, sd 11.2)", rho, 1/math.Sqrt(n-1), runs)
		if math.Abs(rho) >= 0.2 {
			t.Errorf("Spearman rho between join order and number = %.3f; a random order has |rho| < 0.2 but once in 150,000 runs", rho)
		}
		if runs < 251-50 || runs > 251+50 {
			t.Errorf("%d runs of one server's tickets in number order; a random order has 201..301", runs)
		}
		// Positions follow numbers, read through either server.
		for _, tk := range ts[:20] {
			v := e.quReadFresh(svcs[joinOrder[tk.ID]%2], tk.ID, stock.Caller{Operator: "admin"}, func(v stock.QueueTicketView) bool {
				return v.Position != nil && *v.Position == *tk.Number
			})
			if v.Position == nil || *v.Position != *tk.Number {
				t.Errorf("ticket number %d: position %v, want %d", *tk.Number, v.Position, *tk.Number)
			}
		}
		pr := e.getProduct(p.ID)
		if pr.QueueNext != n+1 || pr.QueueTickedAt == nil {
			t.Errorf("after the start: queue_next %d, ticked at %v; want %d, set", pr.QueueNext, pr.QueueTickedAt, n+1)
		}
		// Numbering is done once: another tick through the other server
		// renumbers nothing.
		e.quTick(svcs[0], quLongPass)
		for _, tk := range ts {
			if again := e.quTicket(tk.ID); *again.Number != *tk.Number {
				t.Fatalf("ticket %s renumbered %d -> %d", tk.ID, *tk.Number, *again.Number)
			}
		}
		e.quCheck(p.ID)
	})
}

// TestQueueFIFOAfterStart: tickets that join after the start queue behind
// the pre-queue in join order, whichever server they join through (the
// first join after the start numbers the pre-queue itself); positions are
// number - serving, and admission goes in number order.
func TestQueueFIFOAfterStart(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const pre, after = 5, 20
		e, svcs := quTwoServers(t, d)
		starts := e.dbNow().Add(time.Hour)
		p := e.quProduct(stock.NewProduct{Stock: 100, QueueAdmitPerMinute: cuInt(6000), SaleStartsAt: &starts})
		e.quJoinMany(svcs[0], p.ID, 0, pre)
		e.quStartNow(p.ID)

		var late []stock.QueueTicketView
		for i := range after {
			v := e.quJoin(svcs[i%2], p.ID, quCustomer(pre+i))
			if want := int64(pre + i + 1); v.Number == nil || *v.Number != want || v.Position == nil || *v.Position != want {
				t.Errorf("join %d after the start: number %v position %v, want %d", i, v.Number, v.Position, want)
			}
			if v.EstimatedAt == nil {
				t.Errorf("join %d after the start: no estimated admission", i)
			}
			late = append(late, v)
		}
		for i := 1; i < after; i++ {
			if !late[i].EstimatedAt.After(*late[i-1].EstimatedAt) {
				t.Errorf("estimate of position %d (%s) not after position %d's (%s)", *late[i].Position, late[i].EstimatedAt, *late[i-1].Position, late[i-1].EstimatedAt)
			}
		}
		e.quCheck(p.ID)

		e.quTickUntil(svcs[1], quLongPass, "10 admitted", func() bool { return e.quAdmitted(p.ID) >= 10 })
		serving := e.getProduct(p.ID).QueueServing
		if serving >= pre+after {
			t.Fatalf("serving %d: everyone admitted, nothing left to check", serving)
		}
		for _, v := range late {
			// Read through the server that did not tick: it catches up.
			cur := e.getProduct(p.ID).QueueServing
			got := e.quReadFresh(svcs[0], v.ID, stock.Caller{Customer: *v.CustomerID}, func(got stock.QueueTicketView) bool {
				if *v.Number <= cur {
					return got.Status == queueticket.StatusADMITTED
				}
				return got.Position != nil && *got.Position == *v.Number-cur
			})
			switch {
			case *v.Number <= serving && got.Status != queueticket.StatusADMITTED:
				t.Errorf("number %d with serving at %d: %s, want ADMITTED", *v.Number, serving, got.Status)
			case *v.Number > cur && (got.Status != queueticket.StatusWAITING || got.Position == nil || *got.Position != *v.Number-cur):
				t.Errorf("number %d with serving at %d: %s at position %v, want WAITING at %d", *v.Number, cur, got.Status, got.Position, *v.Number-cur)
			}
		}
		e.quCheck(p.ID)
	})
}

// TestQueueAdmissionRate: two servers ticking at once admit at the
// product's rate together, not each (600 a minute: 10 a second), and no
// tick admits more than 2 seconds' worth, however late it comes.
func TestQueueAdmissionRate(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const perSecond, run = 10, 3 * time.Second
		e, svcs := quTwoServers(t, d)
		p := e.quProduct(stock.NewProduct{Stock: 1000, QueueAdmitPerMinute: cuInt(60 * perSecond)})
		e.quJoinMany(svcs[0], p.ID, 0, 200)
		// A first tick catches up on the joins' time; the count starts here.
		e.quTick(svcs[0], quLongPass)
		before := e.getProduct(p.ID)

		var mu sync.Mutex
		var ticks []int
		var wg sync.WaitGroup
		began := time.Now()
		for _, svc := range svcs {
			wg.Go(func() {
				for time.Since(began) < run {
					r, err := svc.TickQueues(e.ctx, quLongPass)
					if err != nil {
						t.Errorf("TickQueues: %v", err)
						return
					}
					mu.Lock()
					ticks = append(ticks, r.Admitted)
					mu.Unlock()
					time.Sleep(25 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		after := e.getProduct(p.ID)
		got := after.QueueAdmitted - before.QueueAdmitted
		// By the database clock: exact but for the carried fraction and for
		// ticks more than 2 s apart (a stalled machine), which admit less.
		want := after.QueueTickedAt.Sub(*before.QueueTickedAt).Seconds() * perSecond
		t.Logf("%d ticks by 2 servers in %s admitted %d, the rate's share %.1f; most in one tick %d",
			len(ticks), after.QueueTickedAt.Sub(*before.QueueTickedAt).Round(time.Millisecond), got, want, slices.Max(ticks))
		if float64(got) > want+1 || float64(got) < want/2 {
			t.Errorf("admitted %d in %.1f s; want the rate's %.1f (each server admitting at the rate would make %.0f)", got, want/perSecond, want, 2*want)
		}
		if got < 20 || got > 40 {
			t.Errorf("admitted %d in about %s at %d/s; want 20..40", got, run, perSecond)
		}
		if m := slices.Max(ticks); m > 2*perSecond {
			t.Errorf("a tick admitted %d, more than 2 s worth (%d)", m, 2*perSecond)
		}
		// Admissions are spread over the run: every whole second of it
		// admitted some.
		perSec := map[int]int{}
		for _, tk := range e.quTickets(p.ID) {
			if tk.AdmittedAt != nil && tk.AdmittedAt.After(*before.QueueTickedAt) {
				perSec[int(tk.AdmittedAt.Sub(*before.QueueTickedAt)/time.Second)]++
			}
		}
		for s := range int(after.QueueTickedAt.Sub(*before.QueueTickedAt) / time.Second) {
			if perSec[s] == 0 {
				t.Errorf("no admission in second %d of the run: %v", s, perSec)
			}
		}

		// A tick after a long pause admits 2 s worth, not the pause's.
		time.Sleep(3500 * time.Millisecond)
		if r := e.quTick(svcs[1], quLongPass); r.Admitted != 2*perSecond {
			t.Errorf("a tick 3.5 s after the last admitted %d, want %d (2 s worth)", r.Admitted, 2*perSecond)
		}
		e.quCheck(p.ID)
	})
}

// TestQueuePausesAndSellsOut: admission pauses while nothing is sellable
// and resumes when a hold is released, without a burst for the pause;
// once nothing is available, a tick makes every WAITING ticket SOLD_OUT
// (the pre-queue's too), and a join then is SOLD_OUT at once.
func TestQueuePausesAndSellsOut(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		// Each case has a database of its own: a tick's result counts every
		// product's waiting room.
		t.Run("pause and resume", func(t *testing.T) {
			e := newEnv(t, d, stock.Config{})
			p := e.quProduct(stock.NewProduct{Stock: 2, QueueAdmitPerMinute: cuInt(600)})
			vs := e.quJoinMany(e.svc, p.ID, 0, 100)
			e.quTickUntil(e.svc, quLongPass, "2 admitted", func() bool { return e.quAdmitted(p.ID) >= 2 })
			h := e.quMustHold(e.svc, p.ID, 1, "c000", vs[0].ID)
			e.quMustHold(e.svc, p.ID, 1, "c001", vs[1].ID)
			e.wantStock(p.ID, 2, 2)
			paused := e.quAdmitted(p.ID)

			// 1.5 s of ticks: at 10 a second, 15 would be let in.
			for began := time.Now(); time.Since(began) < 1500*time.Millisecond; time.Sleep(25 * time.Millisecond) {
				if r := e.quTick(e.svc, quLongPass); r.Admitted != 0 {
					t.Fatalf("a tick admitted %d with nothing sellable", r.Admitted)
				}
			}
			if n := e.quAdmitted(p.ID); n != paused {
				t.Errorf("%d admitted while paused, want %d", n, paused)
			}
			w, err := e.svc.QueueTicket(e.ctx, vs[99].ID, quCustomer(99))
			if err != nil {
				t.Fatalf("QueueTicket: %v", err)
			}
			if w.Status != queueticket.StatusWAITING || w.Position == nil || w.EstimatedAt != nil {
				t.Errorf("while paused: %s position %v estimate %v; want WAITING, a position, no estimate", w.Status, w.Position, w.EstimatedAt)
			}
			e.quCheck(p.ID)

			if _, err := e.svc.ReleaseHold(e.ctx, h.ID, stock.Caller{Customer: "c000"}); err != nil {
				t.Fatalf("ReleaseHold: %v", err)
			}
			first := -1
			e.quTickUntil(e.svc, quLongPass, "admission resumed", func() bool {
				n := e.quAdmitted(p.ID)
				if n > paused && first < 0 {
					first = n - paused
				}
				return n > paused
			})
			if first > 5 {
				t.Errorf("the first tick after the pause admitted %d: credit built up while paused", first)
			}
			if w, _ := e.svc.QueueTicket(e.ctx, vs[99].ID, quCustomer(99)); w.EstimatedAt == nil {
				t.Errorf("resumed, the last ticket has no estimate")
			}
			e.quCheck(p.ID)
			e.audit()
		})

		t.Run("sold out", func(t *testing.T) {
			e := newEnv(t, d, stock.Config{})
			p := e.quProduct(stock.NewProduct{Stock: 2, QueueAdmitPerMinute: cuInt(600)})
			vs := e.quJoinMany(e.svc, p.ID, 0, 20)
			e.quTickUntil(e.svc, quLongPass, "2 admitted", func() bool { return e.quAdmitted(p.ID) >= 2 })
			for i := range 2 {
				by := quCustomer(i)
				h := e.quMustHold(e.svc, p.ID, 1, by.Customer, vs[i].ID)
				o := e.cuOrder(e.svc, h.ID, by)
				e.pay(e.svc, fmt.Sprintf("pay-%d", i), o.ID, stock.PaymentSuccess)
			}
			e.wantStock(p.ID, 0, 0)
			admitted, waiting := e.quAdmitted(p.ID), e.quCount(p.ID)[queueticket.StatusWAITING]
			if waiting == 0 {
				t.Fatalf("nobody left waiting to sell out")
			}
			if r := e.quTick(e.svc, quLongPass); r.SoldOut != waiting || r.Admitted != 0 {
				t.Errorf("the tick after the sell-out: %+v; want %d SOLD_OUT, none admitted", r, waiting)
			}
			n := e.quCount(p.ID)
			if n[queueticket.StatusWAITING] != 0 || n[queueticket.StatusSOLD_OUT] != waiting || e.quAdmitted(p.ID) != admitted {
				t.Errorf("after the sell-out: %v; want %d SOLD_OUT, none WAITING, %d let in as before", n, waiting, admitted)
			}
			if pr := e.getProduct(p.ID); pr.QueueWaiting != 0 {
				t.Errorf("queue_waiting %d after the sell-out", pr.QueueWaiting)
			}
			if r := e.quTick(e.svc, quLongPass); r != (stock.QueueResult{}) {
				t.Errorf("a second tick did %+v", r)
			}
			// Joining now is SOLD_OUT at once; a customer who has a ticket
			// gets theirs.
			for _, by := range []stock.Caller{{Customer: "late"}, stock.Anonymous} {
				v := e.quJoin(e.svc, p.ID, by)
				if v.Status != queueticket.StatusSOLD_OUT || v.Number != nil || v.Position != nil || v.EstimatedAt != nil {
					t.Errorf("join after the sell-out (%+v): %s number %v position %v estimate %v; want SOLD_OUT, nothing else",
						by, v.Status, v.Number, v.Position, v.EstimatedAt)
				}
			}
			if v := e.quJoin(e.svc, p.ID, quCustomer(0)); v.ID != vs[0].ID || v.Status != queueticket.StatusUSED {
				t.Errorf("c000 joining again: ticket %s %s, want %s USED", v.ID, v.Status, vs[0].ID)
			}
			e.quCheck(p.ID)

			// A restock: new joiners are next in line, at position 1.
			if _, err := e.svc.AdjustStock(e.ctx, nil, p.ID, 3, "restock"); err != nil {
				t.Fatalf("AdjustStock: %v", err)
			}
			v := e.quJoin(e.svc, p.ID, stock.Caller{Customer: "after-restock"})
			if v.Status != queueticket.StatusWAITING || v.Position == nil || *v.Position != 1 {
				t.Errorf("join after a restock: %s at position %v, want WAITING at 1", v.Status, v.Position)
			}
			e.quTickUntil(e.svc, quLongPass, "the restock's joiner admitted", func() bool { return e.quStatus(v.ID) == queueticket.StatusADMITTED })
			e.quMustHold(e.svc, p.ID, 1, "after-restock", v.ID)
			e.quCheck(p.ID)
			e.audit()
		})

		t.Run("pre-queue sold out", func(t *testing.T) {
			e := newEnv(t, d, stock.Config{})
			starts := e.dbNow().Add(time.Hour)
			p := e.quProduct(stock.NewProduct{Stock: 3, QueueAdmitPerMinute: cuInt(600), SaleStartsAt: &starts})
			e.quJoinMany(e.svc, p.ID, 0, 5)
			if _, err := e.svc.AdjustStock(e.ctx, nil, p.ID, -3, "recalled"); err != nil {
				t.Fatalf("AdjustStock: %v", err)
			}
			if r := e.quTick(e.svc, quLongPass); r.SoldOut != 5 {
				t.Errorf("tick with nothing available: %+v, want 5 SOLD_OUT", r)
			}
			if n := e.quCount(p.ID); n[queueticket.StatusSOLD_OUT] != 5 {
				t.Errorf("pre-queue after the sell-out: %v, want 5 SOLD_OUT", n)
			}
			if v := e.quJoin(e.svc, p.ID, stock.Caller{Customer: "late"}); v.Status != queueticket.StatusSOLD_OUT {
				t.Errorf("join to a sold-out pre-queue: %s, want SOLD_OUT", v.Status)
			}
			e.quCheck(p.ID)
		})
	})
}

// TestQueueConcurrentJoins: a flood of joins through two servers after the
// start is group-committed (fewer batches than calls) and still gives each
// customer one ticket, with the numbers 1..n each once, and every duplicate
// of a customer the same ticket, whichever server it reached.
func TestQueueConcurrentJoins(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const customers, dups = 120, 3
		e, svcs := quTwoServers(t, d)
		p := e.quProduct(stock.NewProduct{Stock: 100, QueueAdmitPerMinute: cuInt(60)})

		ids := make([][]uuid.UUID, customers)
		for i := range ids {
			ids[i] = make([]uuid.UUID, dups)
		}
		var wg sync.WaitGroup
		for i := range customers {
			for k := range dups {
				wg.Go(func() {
					v, err := svcs[(i+k)%2].JoinQueue(e.ctx, p.ID, quCustomer(i))
					if err != nil {
						t.Errorf("JoinQueue(customer %d): %v", i, err)
						return
					}
					ids[i][k] = v.ID
				})
			}
		}
		wg.Wait()
		for i, got := range ids {
			if got[0] == uuid.Nil || slices.ContainsFunc(got, func(id uuid.UUID) bool { return id != got[0] }) {
				t.Errorf("customer %d got tickets %v; want one", i, got)
			}
		}
		if n := len(e.quTickets(p.ID)); n != customers {
			t.Errorf("%d tickets for %d customers", n, customers)
		}
		e.quCheck(p.ID)
		var batches, calls int64
		for _, s := range svcs {
			b := s.JoinBatches()
			batches += b.Batches
			calls += b.Calls
		}
		t.Logf("%d joins in %d batches", calls, batches)
		if calls != customers*dups || batches >= calls {
			t.Errorf("%d joins ran in %d batches; want %d joins in fewer batches", calls, batches, customers*dups)
		}
	})
}
