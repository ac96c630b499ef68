package stock_test

// Tests of the waiting room's passes (holds with a ticket, passes.go and
// the hold batch), who may read a ticket, one ticket per customer, joins
// refused, and a concurrent run over two servers audited at the end.
// Helpers (qu*) are in queue_test.go.

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/queueticket"
	"flashsale/stock"
)

// quFast is an admission rate at which a tick lets everyone in at once.
const quFast = 60000

// quPass joins as by through svc and ticks until the ticket is let in
// (with a long pass): an ADMITTED ticket.
func (e *env) quPass(svc *stock.Service, productID int, by stock.Caller) stock.QueueTicketView {
	e.t.Helper()
	v := e.quJoin(svc, productID, by)
	e.quTickUntil(svc, quLongPass, "ticket admitted", func() bool { return e.quStatus(v.ID) != queueticket.StatusWAITING })
	if st := e.quStatus(v.ID); st != queueticket.StatusADMITTED {
		e.t.Fatalf("ticket of %+v is %s, want ADMITTED", by, st)
	}
	return v
}

// quKeyHold is CreateHold with a ticket and an idempotency key.
func (e *env) quKeyHold(svc *stock.Service, productID, qty int, customer, key string, ticket uuid.UUID) (*ent.Hold, error) {
	return svc.CreateHold(e.ctx, stock.HoldRequest{ProductID: productID, Qty: qty, Customer: customer, IdempotencyKey: key, QueueTicket: ticket})
}

// quState is what a refused call must leave as it was: the product's stock
// and queue counters, its holds, and the ticket named.
type quState struct {
	available, reserved, received  int
	waiting, admitted, serving, nx int64
	holds                          int
	status                         queueticket.Status // "" for no such ticket
	updated                        int64              // UnixNano
}

func (e *env) quSnap(productID int, ticket uuid.UUID) quState {
	e.t.Helper()
	p := e.getProduct(productID)
	s := quState{available: p.StockAvailable, reserved: p.StockReserved, received: p.StockReceived,
		waiting: p.QueueWaiting, admitted: p.QueueAdmitted, serving: p.QueueServing, nx: p.QueueNext,
		holds: e.cuCountHoldsOf(productID)}
	if t, err := e.db.Ent.QueueTicket.Get(e.ctx, ticket); err == nil {
		s.status, s.updated = t.Status, t.UpdatedAt.UnixNano()
	} else if !ent.IsNotFound(err) {
		e.t.Fatalf("get ticket %s: %v", ticket, err)
	}
	return s
}

// quObserver counts what services tell their Observer of waiting rooms.
type quObserver struct{ joined, admitted atomic.Int64 }

func (o *quObserver) QueueJoined(n int)       { o.joined.Add(int64(n)) }
func (o *quObserver) QueueAdmitted(n int)     { o.admitted.Add(int64(n)) }
func (*quObserver) HoldBatch(int)             {}
func (*quObserver) OrdersReached(string, int) {}
func (*quObserver) Released(string, int)      {}
func (*quObserver) EventsWritten(string, int) {}

// TestQueuePassTakesOneHold: an ADMITTED ticket's pass takes one hold, and
// the hold and the ticket's USED are written together; holds refused by
// the stock or maxPerCustomer leave the pass to try again; a retry with
// the hold's idempotency key gets the hold, any other hold with the spent
// pass is QUEUE_REQUIRED (USED). An anonymous ticket works for its holder.
func TestQueuePassTakesOneHold(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.quProduct(stock.NewProduct{Stock: 6, MaxPerCustomer: cuInt(4), QueueAdmitPerMinute: cuInt(quFast)})
		alice := e.quPass(e.svc, p.ID, stock.Caller{Customer: "alice"})
		bob := e.quPass(e.svc, p.ID, stock.Caller{Customer: "bob"})
		e.quMustHold(e.svc, p.ID, 4, "bob", bob.ID) // sellable 2
		e.wantStock(p.ID, 6, 4)

		for _, c := range []struct {
			name string
			qty  int
			want error
		}{
			{"more than sellable", 3, stock.ErrInsufficientStock},
			{"over maxPerCustomer", 5, stock.ErrPurchaseLimit},
		} {
			before := e.quSnap(p.ID, alice.ID)
			if h, err := e.quKeyHold(e.svc, p.ID, c.qty, "alice", "k-"+c.name, alice.ID); !errors.Is(err, c.want) {
				t.Errorf("%s: CreateHold = %v, %v; want %v", c.name, h, err, c.want)
			}
			if after := e.quSnap(p.ID, alice.ID); after != before || after.status != queueticket.StatusADMITTED {
				t.Errorf("%s: refused hold changed %+v to %+v; want nothing, the ticket ADMITTED", c.name, before, after)
			}
		}

		h, err := e.quKeyHold(e.svc, p.ID, 1, "alice", "a-1", alice.ID)
		if err != nil {
			t.Fatalf("hold with the admitted pass: %v", err)
		}
		tk, got := e.quTicket(alice.ID), e.getHold(h.ID)
		if got.Status != hold.StatusACTIVE || got.CustomerID != "alice" || got.Qty != 1 || got.ProductID != p.ID {
			t.Errorf("the pass's hold: %s customer %q qty %d product %d", got.Status, got.CustomerID, got.Qty, got.ProductID)
		}
		// The ticket turned USED by the hold's own transaction: at its clock.
		if tk.Status != queueticket.StatusUSED || !tk.UpdatedAt.Equal(got.CreatedAt) {
			t.Errorf("ticket after its hold: %s updated %s, hold made %s; want USED at the hold's time", tk.Status, tk.UpdatedAt, got.CreatedAt)
		}
		e.wantStock(p.ID, 6, 5)

		// The same key again is the same call: its hold, nothing new.
		if again, err := e.quKeyHold(e.svc, p.ID, 1, "alice", "a-1", alice.ID); err != nil || again.ID != h.ID {
			t.Errorf("retry with the hold's key: %v, %v; want hold %s", again, err, h.ID)
		}
		// Anything else with the spent pass: QUEUE_REQUIRED (USED), though
		// stock and limit would allow it.
		for _, key := range []string{"", "a-2"} {
			before := e.quSnap(p.ID, alice.ID)
			_, err := e.quKeyHold(e.svc, p.ID, 1, "alice", key, alice.ID)
			wantQueueError(t, err, stock.ErrQueueRequired, queueticket.StatusUSED)
			if after := e.quSnap(p.ID, alice.ID); after != before {
				t.Errorf("second hold with a USED pass (key %q) changed %+v to %+v", key, before, after)
			}
		}

		t.Run("anonymous", func(t *testing.T) {
			e := e.with(t)
			q := e.quProduct(stock.NewProduct{Stock: 5, QueueAdmitPerMinute: cuInt(quFast)})
			v := e.quPass(e.svc, q.ID, stock.Anonymous)
			if v.CustomerID != nil {
				t.Errorf("anonymous ticket with customer %q", *v.CustomerID)
			}
			e.quMustHold(e.svc, q.ID, 2, "", v.ID)
			if st := e.quStatus(v.ID); st != queueticket.StatusUSED {
				t.Errorf("anonymous ticket after its hold: %s, want USED", st)
			}
			_, err := e.quHold(e.svc, q.ID, 1, "", v.ID)
			wantQueueError(t, err, stock.ErrQueueRequired, queueticket.StatusUSED)
			e.wantStock(q.ID, 5, 2)
			e.quCheck(q.ID)
		})
		e.quCheck(p.ID)
		e.cuCheck()
	})
}

// TestQueuePassOnceUnderConcurrency: 20 concurrent holds with one admitted
// ticket, through two services over one database (two servers), with
// distinct idempotency keys or none, for each of three customers at once:
// exactly one hold per ticket, every other call QUEUE_REQUIRED (USED), and
// the stock moved by those holds only.
func TestQueuePassOnceUnderConcurrency(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const perTicket, qty = 20, 2
		e, svcs := quTwoServers(t, d)
		p := e.quProduct(stock.NewProduct{Stock: 50, QueueAdmitPerMinute: cuInt(quFast)})
		names := []string{"alice", "bob", "carol"}
		passes := map[string]uuid.UUID{}
		for i, n := range names {
			passes[n] = e.quPass(svcs[i%2], p.ID, stock.Caller{Customer: n}).ID
		}

		calls := perTicket * len(names)
		errs := make([]error, calls)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for j := range calls {
			n, key := names[j%len(names)], ""
			if j/len(names)%3 != 0 {
				key = fmt.Sprintf("k%d", j)
			}
			wg.Go(func() {
				<-start
				_, errs[j] = e.quKeyHold(svcs[j%2], p.ID, qty, n, key, passes[n])
			})
		}
		close(start)
		wg.Wait()

		made := map[string]int{}
		for j, err := range errs {
			if err == nil {
				made[names[j%len(names)]]++
				continue
			}
			wantQueueError(t, err, stock.ErrQueueRequired, queueticket.StatusUSED)
		}
		for _, n := range names {
			if made[n] != 1 {
				t.Errorf("%s's pass made %d holds, want 1", n, made[n])
			}
			if st := e.quStatus(passes[n]); st != queueticket.StatusUSED {
				t.Errorf("%s's ticket: %s, want USED", n, st)
			}
		}
		if n := e.cuCountHoldsOf(p.ID); n != len(names) {
			t.Errorf("%d holds on the product, want %d", n, len(names))
		}
		e.wantStock(p.ID, 50, qty*len(names))
		e.quCheck(p.ID)
		e.audit()
	})
}

// TestQueueRefusals: a hold on a product with a waiting room without a
// usable pass. Another's ticket (customer, product) is QUEUE_REQUIRED
// without its status, as if it did not exist; the caller's own spent one
// says why; a WAITING one is NOT_ADMITTED with its place. The sale window
// is checked first. Every refusal changes nothing; products without a
// waiting room (or with it turned off) ignore the ticket.
func TestQueueRefusals(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		fast := func(n int) *ent.Product {
			return e.quProduct(stock.NewProduct{Stock: n, QueueAdmitPerMinute: cuInt(quFast)})
		}
		p, other := fast(10), fast(10)

		// An EXPIRED pass: let in with a 100 ms pass, alone, until a tick
		// ends it.
		expired := e.quJoin(e.svc, p.ID, stock.Caller{Customer: "expired"})
		e.quTickUntil(e.svc, 100*time.Millisecond, "the short pass expired", func() bool { return e.quStatus(expired.ID) == queueticket.StatusEXPIRED })

		alice := e.quPass(e.svc, p.ID, stock.Caller{Customer: "alice"})
		bob := e.quPass(e.svc, p.ID, stock.Caller{Customer: "bob"})
		used := e.quPass(e.svc, p.ID, stock.Caller{Customer: "used"})
		e.quMustHold(e.svc, p.ID, 1, "used", used.ID)
		aliceOther := e.quPass(e.svc, other.ID, stock.Caller{Customer: "alice"})
		// other's sale then ends: alice's pass there meets SALE_ENDED first.
		if _, err := e.svc.UpdateProduct(e.ctx, nil, other.ID, stock.ProductUpdate{SaleEndsAt: stock.To(e.dbNow().Add(-time.Second))}); err != nil {
			t.Fatalf("UpdateProduct: %v", err)
		}

		// Paused: its one unit held, z2 waits numbered with no estimate.
		z := fast(1)
		z1 := e.quPass(e.svc, z.ID, stock.Caller{Customer: "z1"})
		e.quMustHold(e.svc, z.ID, 1, "z1", z1.ID)
		z2 := e.quJoin(e.svc, z.ID, stock.Caller{Customer: "z2"})
		e.quTick(e.svc, quLongPass)

		// SOLD_OUT: joined with nothing available; a restock revives nothing.
		s := fast(1)
		if _, err := e.svc.AdjustStock(e.ctx, nil, s.ID, -1, "recalled"); err != nil {
			t.Fatalf("AdjustStock: %v", err)
		}
		soldOut := e.quJoin(e.svc, s.ID, stock.Caller{Customer: "s1"})
		if _, err := e.svc.AdjustStock(e.ctx, nil, s.ID, 1, "found"); err != nil {
			t.Fatalf("AdjustStock: %v", err)
		}

		// WAITING at 1 a minute: no tick of this test lets anyone in.
		w := e.quProduct(stock.NewProduct{Stock: 10, QueueAdmitPerMinute: cuInt(1)})
		w1 := e.quJoin(e.svc, w.ID, stock.Caller{Customer: "w1"})
		w2 := e.quJoin(e.svc, w.ID, stock.Caller{Customer: "w2"})

		starts := e.dbNow().Add(time.Hour)
		early := e.quProduct(stock.NewProduct{Stock: 10, QueueAdmitPerMinute: cuInt(quFast), SaleStartsAt: &starts})
		early1 := e.quJoin(e.svc, early.ID, stock.Caller{Customer: "early1"})
		ended := e.quProduct(stock.NewProduct{Stock: 10, QueueAdmitPerMinute: cuInt(quFast),
			SaleStartsAt: new(e.dbNow().Add(-2 * time.Hour)), SaleEndsAt: new(e.dbNow().Add(-time.Hour))})

		for _, c := range []struct {
			name     string
			product  int
			customer string
			key      string // to pass by this process's sold-out mark
			ticket   uuid.UUID
			want     error
			status   queueticket.Status
			estimate bool // NOT_ADMITTED with an estimated admission
		}{
			{"no ticket", p.ID, "alice", "", uuid.Nil, stock.ErrQueueRequired, "", false},
			{"unknown ticket", p.ID, "alice", "", uuid.New(), stock.ErrQueueRequired, "", false},
			{"own ticket of another product", p.ID, "alice", "", aliceOther.ID, stock.ErrQueueRequired, "", false},
			{"another customer's admitted ticket", p.ID, "bob", "", alice.ID, stock.ErrQueueRequired, "", false},
			{"another customer's used ticket", p.ID, "bob", "", used.ID, stock.ErrQueueRequired, "", false},
			{"another customer's expired ticket", p.ID, "bob", "", expired.ID, stock.ErrQueueRequired, "", false},
			{"another customer's waiting ticket", w.ID, "w2", "", w1.ID, stock.ErrQueueRequired, "", false},
			{"anonymous with a customer's ticket", p.ID, "", "", alice.ID, stock.ErrQueueRequired, "", false},
			{"own USED", p.ID, "used", "", used.ID, stock.ErrQueueRequired, queueticket.StatusUSED, false},
			{"own EXPIRED", p.ID, "expired", "", expired.ID, stock.ErrQueueRequired, queueticket.StatusEXPIRED, false},
			{"own SOLD_OUT after a restock", s.ID, "s1", "", soldOut.ID, stock.ErrQueueRequired, queueticket.StatusSOLD_OUT, false},
			{"own WAITING", w.ID, "w2", "", w2.ID, stock.ErrNotAdmitted, queueticket.StatusWAITING, true},
			{"own WAITING, admission paused", z.ID, "z2", "k-z2", z2.ID, stock.ErrNotAdmitted, queueticket.StatusWAITING, false},
			{"before the start, no ticket", early.ID, "early1", "", uuid.Nil, stock.ErrSaleNotStarted, "", false},
			{"before the start, own pre-queue ticket", early.ID, "early1", "", early1.ID, stock.ErrSaleNotStarted, "", false},
			{"after the end, no ticket", ended.ID, "alice", "", uuid.Nil, stock.ErrSaleEnded, "", false},
			{"after the end, own admitted ticket", other.ID, "alice", "", aliceOther.ID, stock.ErrSaleEnded, "", false},
		} {
			t.Run(c.name, func(t *testing.T) {
				e := e.with(t)
				before := e.quSnap(c.product, c.ticket)
				h, err := e.quKeyHold(e.svc, c.product, 1, c.customer, c.key, c.ticket)
				switch c.want {
				case stock.ErrQueueRequired:
					wantQueueError(t, err, c.want, c.status)
				case stock.ErrNotAdmitted:
					if qe := wantQueueError(t, err, c.want, c.status); qe != nil && (qe.Position < 1 || (qe.EstimatedAt != nil) != c.estimate) {
						t.Errorf("NOT_ADMITTED at position %d, estimate %v; want a position, estimate %v", qe.Position, qe.EstimatedAt, c.estimate)
					}
				default:
					if !errors.Is(err, c.want) {
						t.Errorf("CreateHold = %v, %v; want %v", h, err, c.want)
					}
				}
				if after := e.quSnap(c.product, c.ticket); after != before {
					t.Errorf("the refusal changed %+v to %+v", before, after)
				}
			})
		}

		// Without a waiting room a ticket is ignored, whatever it is, and a
		// pass named there is not spent.
		plain := e.newProduct(10)
		for _, tk := range []uuid.UUID{uuid.Nil, uuid.New(), alice.ID, used.ID} {
			e.quMustHold(e.svc, plain.ID, 1, "alice", tk)
		}
		e.wantStock(plain.ID, 10, 4)
		// Alice's pass went through all of the above: still hers to use.
		if st := e.quStatus(alice.ID); st != queueticket.StatusADMITTED {
			t.Errorf("alice's ticket after the others' tries: %s, want ADMITTED", st)
		}
		e.quMustHold(e.svc, p.ID, 1, "alice", alice.ID)
		e.quMustHold(e.svc, p.ID, 1, "bob", bob.ID)

		// Turned off, the room asks for nothing; the tickets stay as they were.
		if _, err := e.svc.UpdateProduct(e.ctx, nil, w.ID, stock.ProductUpdate{QueueAdmitPerMinute: stock.Cleared[int]()}); err != nil {
			t.Fatalf("UpdateProduct: %v", err)
		}
		e.quMustHold(e.svc, w.ID, 1, "w1", uuid.Nil)
		e.quMustHold(e.svc, w.ID, 1, "w2", w2.ID)
		if st := e.quStatus(w2.ID); st != queueticket.StatusWAITING {
			t.Errorf("a ticket named on a product without a waiting room: %s, want WAITING", st)
		}
		for _, id := range []int{p.ID, other.ID, z.ID, s.ID, early.ID} {
			e.quCheck(id)
		}
		e.audit()
	})
}

// TestQueuePassExpires: a pass unused at passExpiresAt is refused at once
// as EXPIRED, and the next tick makes the ticket EXPIRED; passes used, or
// still valid, are left alone; an expired ticket still counts as let in,
// and its customer joining again gets it back.
func TestQueuePassExpires(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const short = 300 * time.Millisecond
		e := newEnv(t, d, stock.Config{})
		p := e.quProduct(stock.NewProduct{Stock: 10, QueueAdmitPerMinute: cuInt(quFast)})
		keep := e.quPass(e.svc, p.ID, stock.Caller{Customer: "keep"})
		use := e.quPass(e.svc, p.ID, stock.Caller{Customer: "use"})
		e.quMustHold(e.svc, p.ID, 1, "use", use.ID)

		lapse := e.quJoin(e.svc, p.ID, stock.Caller{Customer: "lapse"})
		// Ticks stop at the one that lets it in: nothing expires it but the
		// tick below.
		e.quTickUntil(e.svc, short, "lapse admitted", func() bool { return e.quTicket(lapse.ID).AdmittedAt != nil })
		tk := e.quTicket(lapse.ID)
		if tk.Status != queueticket.StatusADMITTED || tk.PassExpiresAt == nil || tk.PassExpiresAt.Sub(*tk.AdmittedAt) != short {
			t.Fatalf("admitted with a %s pass: %s, admitted %v, pass until %v", short, tk.Status, tk.AdmittedAt, tk.PassExpiresAt)
		}

		e.waitPast(*tk.PassExpiresAt)
		before := e.quSnap(p.ID, lapse.ID)
		_, err := e.quHold(e.svc, p.ID, 1, "lapse", lapse.ID)
		wantQueueError(t, err, stock.ErrQueueRequired, queueticket.StatusEXPIRED)
		if after := e.quSnap(p.ID, lapse.ID); after != before || after.status != queueticket.StatusADMITTED {
			t.Errorf("a hold with a lapsed pass changed %+v to %+v", before, after)
		}

		if r := e.quTick(e.svc, quLongPass); r.Expired != 1 {
			t.Errorf("the tick after passExpiresAt: %+v, want 1 expired", r)
		}
		for id, want := range map[uuid.UUID]queueticket.Status{
			lapse.ID: queueticket.StatusEXPIRED, keep.ID: queueticket.StatusADMITTED, use.ID: queueticket.StatusUSED,
		} {
			if st := e.quStatus(id); st != want {
				t.Errorf("ticket %s after the expiring tick: %s, want %s", id, st, want)
			}
		}
		v, err := e.svc.QueueTicket(e.ctx, lapse.ID, stock.Caller{Customer: "lapse"})
		if err != nil || v.Status != queueticket.StatusEXPIRED || v.Position != nil || v.EstimatedAt != nil {
			t.Errorf("QueueTicket of the expired ticket: %+v %v, %v", v.QueueTicket, v.Position, err)
		}
		_, err = e.quHold(e.svc, p.ID, 1, "lapse", lapse.ID)
		wantQueueError(t, err, stock.ErrQueueRequired, queueticket.StatusEXPIRED)
		if again := e.quJoin(e.svc, p.ID, stock.Caller{Customer: "lapse"}); again.ID != lapse.ID || again.Status != queueticket.StatusEXPIRED {
			t.Errorf("lapse joining again: %s %s, want %s EXPIRED", again.ID, again.Status, lapse.ID)
		}
		if pr := e.getProduct(p.ID); pr.QueueAdmitted != 3 {
			t.Errorf("queue_admitted %d, want 3 (ADMITTED, USED, EXPIRED)", pr.QueueAdmitted)
		}
		e.wantStock(p.ID, 10, 1)
		e.quCheck(p.ID)
		e.audit()
	})
}

// TestQueueTicketPrivacy: a customer's ticket is read by its owner and
// operators and is ErrNotFound to other customers and anonymous callers;
// an anonymous ticket is read by anyone with its ID.
func TestQueueTicketPrivacy(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		p := e.quProduct(stock.NewProduct{Stock: 10, QueueAdmitPerMinute: cuInt(quFast)})
		mine := e.quJoin(e.svc, p.ID, stock.Caller{Customer: "alice"})
		anon := e.quJoin(e.svc, p.ID, stock.Anonymous)
		for _, c := range []struct {
			name  string
			by    stock.Caller
			reads bool // alice's ticket
		}{
			{"owner", stock.Caller{Customer: "alice"}, true},
			{"another customer", stock.Caller{Customer: "bob"}, false},
			{"anonymous", stock.Anonymous, false},
			{"operator", stock.Caller{Operator: "alice-ops"}, true},
		} {
			v, err := e.svc.QueueTicket(e.ctx, mine.ID, c.by)
			if c.reads && (err != nil || v.ID != mine.ID || v.Status != queueticket.StatusWAITING || v.Position == nil) {
				t.Errorf("%s reading alice's ticket: %+v, %v", c.name, v.QueueTicket, err)
			}
			if !c.reads && (!errors.Is(err, stock.ErrNotFound) || v.QueueTicket != nil || v.Position != nil) {
				t.Errorf("%s reading alice's ticket: %+v at %v, %v; want ErrNotFound", c.name, v.QueueTicket, v.Position, err)
			}
			if v, err := e.svc.QueueTicket(e.ctx, anon.ID, c.by); err != nil || v.ID != anon.ID {
				t.Errorf("%s reading the anonymous ticket: %+v, %v", c.name, v.QueueTicket, err)
			}
			if _, err := e.svc.QueueTicket(e.ctx, uuid.New(), c.by); !errors.Is(err, stock.ErrNotFound) {
				t.Errorf("%s reading no ticket: %v, want ErrNotFound", c.name, err)
			}
		}
	})
}

// TestQueueOneTicketPerCustomer: 50 concurrent joins of one customer
// through two servers make one ticket, returned to all, counted once;
// joining again, whatever the ticket became (USED, SOLD_OUT), returns it
// unchanged. Anonymous joins each make a ticket.
func TestQueueOneTicketPerCustomer(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const joins, anons = 50, 10
		e, svcs := quTwoServers(t, d)

		// Concurrent joins, of alice and of anonymous callers at once.
		joinAll := func(t *testing.T, productID int) []uuid.UUID {
			ids := make([]uuid.UUID, joins+anons) // alice's, then anonymous
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range ids {
				wg.Go(func() {
					by := stock.Caller{Customer: "alice"}
					if i >= joins {
						by = stock.Anonymous
					}
					<-start
					v, err := svcs[i%2].JoinQueue(e.ctx, productID, by)
					if err != nil {
						t.Errorf("JoinQueue(%+v): %v", by, err)
					}
					ids[i] = v.ID
				})
			}
			close(start)
			wg.Wait()
			return ids
		}

		for _, pre := range []bool{true, false} {
			t.Run(fmt.Sprintf("pre-queue %v", pre), func(t *testing.T) {
				e := e.with(t)
				in := stock.NewProduct{Stock: 5, QueueAdmitPerMinute: cuInt(quFast)}
				if pre {
					in.SaleStartsAt = new(e.dbNow().Add(time.Hour))
				}
				p := e.quProduct(in)
				ids := joinAll(t, p.ID)
				id, distinct := ids[0], map[uuid.UUID]bool{}
				for _, got := range ids {
					distinct[got] = true
				}
				if slices.ContainsFunc(ids[:joins], func(got uuid.UUID) bool { return got != id }) || len(distinct) != 1+anons || distinct[uuid.Nil] {
					t.Errorf("%d joins of alice, then %d anonymous ones, returned %v; want one ticket, then %d new ones", joins, anons, ids, anons)
				}
				if n := len(e.quTickets(p.ID)); n != 1+anons {
					t.Errorf("%d tickets stored, want %d", n, 1+anons)
				}
				if pr := e.getProduct(p.ID); pr.QueueWaiting != 1+anons {
					t.Errorf("queue_waiting %d, want %d", pr.QueueWaiting, 1+anons)
				}
				e.quCheck(p.ID)
				if pre {
					e.quStartNow(p.ID)
				}
				e.quTickUntil(svcs[1], quLongPass, "alice admitted", func() bool { return e.quStatus(id) == queueticket.StatusADMITTED })
				e.quMustHold(svcs[0], p.ID, 1, "alice", id)
				before := e.quSnap(p.ID, id)
				for _, svc := range svcs {
					if v := e.quJoin(svc, p.ID, stock.Caller{Customer: "alice"}); v.ID != id || v.Status != queueticket.StatusUSED {
						t.Errorf("alice joining after her hold: %s %s, want %s USED", v.ID, v.Status, id)
					}
				}
				if after := e.quSnap(p.ID, id); after != before {
					t.Errorf("joining again changed %+v to %+v", before, after)
				}
				e.quCheck(p.ID)
			})
		}

		t.Run("sold out", func(t *testing.T) {
			e := e.with(t)
			s := e.quProduct(stock.NewProduct{Stock: 1, QueueAdmitPerMinute: cuInt(quFast)})
			if _, err := e.svc.AdjustStock(e.ctx, nil, s.ID, -1, "recalled"); err != nil {
				t.Fatalf("AdjustStock: %v", err)
			}
			v := e.quJoin(svcs[0], s.ID, stock.Caller{Customer: "sam"})
			if v.Status != queueticket.StatusSOLD_OUT {
				t.Fatalf("join with nothing available: %s, want SOLD_OUT", v.Status)
			}
			if _, err := e.svc.AdjustStock(e.ctx, nil, s.ID, 3, "restock"); err != nil {
				t.Fatalf("AdjustStock: %v", err)
			}
			// One chance per drop: the restock gives sam no new ticket.
			if again := e.quJoin(svcs[1], s.ID, stock.Caller{Customer: "sam"}); again.ID != v.ID || again.Status != queueticket.StatusSOLD_OUT {
				t.Errorf("sam joining after a restock: %s %s, want %s SOLD_OUT", again.ID, again.Status, v.ID)
			}
			if n := len(e.quTickets(s.ID)); n != 1 {
				t.Errorf("%d tickets, want 1", n)
			}
			e.quCheck(s.ID)
		})
	})
}

// TestQueueJoinRefusals: joinQueue on a product without a waiting room,
// after the sale, of no product, or with a bad customer ID is refused and
// makes no ticket; before the start it is the pre-queue; with nothing
// available it is a SOLD_OUT ticket, with nothing sellable (but units
// held) a WAITING one.
func TestQueueJoinRefusals(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		e := newEnv(t, d, stock.Config{})
		plain := e.newProduct(5)
		ended := e.quProduct(stock.NewProduct{Stock: 5, QueueAdmitPerMinute: cuInt(quFast),
			SaleStartsAt: new(e.dbNow().Add(-2 * time.Hour)), SaleEndsAt: new(e.dbNow().Add(-time.Hour))})
		open := e.quProduct(stock.NewProduct{Stock: 5, QueueAdmitPerMinute: cuInt(quFast)})
		for _, c := range []struct {
			name    string
			product int
			by      stock.Caller
			want    error
		}{
			{"no waiting room", plain.ID, stock.Caller{Customer: "alice"}, stock.ErrInvalidInput},
			{"no waiting room, anonymous", plain.ID, stock.Anonymous, stock.ErrInvalidInput},
			{"after the end", ended.ID, stock.Caller{Customer: "alice"}, stock.ErrSaleEnded},
			{"after the end, anonymous", ended.ID, stock.Anonymous, stock.ErrSaleEnded},
			{"unknown product", ended.ID + 1000, stock.Caller{Customer: "alice"}, stock.ErrNotFound},
			{"bad customer ID", open.ID, stock.Caller{Customer: "bad\x00id"}, stock.ErrInvalidInput},
		} {
			before := len(e.quTickets(c.product))
			if v, err := e.svc.JoinQueue(e.ctx, c.product, c.by); !errors.Is(err, c.want) || v.QueueTicket != nil {
				t.Errorf("%s: JoinQueue = %+v, %v; want %v", c.name, v.QueueTicket, err, c.want)
			}
			if after := len(e.quTickets(c.product)); after != before {
				t.Errorf("%s: a refused join made %d tickets", c.name, after-before)
			}
		}

		starts := e.dbNow().Add(time.Hour)
		early := e.quProduct(stock.NewProduct{Stock: 5, QueueAdmitPerMinute: cuInt(quFast), SaleStartsAt: &starts})
		if v := e.quJoin(e.svc, early.ID, stock.Caller{Customer: "alice"}); v.Status != queueticket.StatusWAITING || v.Position != nil || v.EstimatedAt != nil || v.Number != nil {
			t.Errorf("pre-queue join: %s position %v estimate %v number %v; want WAITING, none", v.Status, v.Position, v.EstimatedAt, v.Number)
		}

		// All held: nothing sellable, but it may come back, so a join waits.
		a := e.quPass(e.svc, open.ID, stock.Caller{Customer: "a"})
		h := e.quMustHold(e.svc, open.ID, 5, "a", a.ID)
		if v := e.quJoin(e.svc, open.ID, stock.Caller{Customer: "b"}); v.Status != queueticket.StatusWAITING || v.Position == nil {
			t.Errorf("join with everything held: %s at %v, want WAITING with a position", v.Status, v.Position)
		}
		// All sold: a join is SOLD_OUT at once, not an error.
		o := e.cuOrder(e.svc, h.ID, stock.Caller{Customer: "a"})
		e.pay(e.svc, "pay-a", o.ID, stock.PaymentSuccess)
		e.wantStock(open.ID, 0, 0)
		for _, by := range []stock.Caller{{Customer: "c"}, stock.Anonymous} {
			if v := e.quJoin(e.svc, open.ID, by); v.Status != queueticket.StatusSOLD_OUT || v.Position != nil || v.EstimatedAt != nil {
				t.Errorf("join (%+v) with everything sold: %s at %v estimate %v; want SOLD_OUT", by, v.Status, v.Position, v.EstimatedAt)
			}
		}
		e.quCheck(open.ID)
		e.quCheck(early.ID)
	})
}

// TestQueueNoHoldWithoutPass: 60 customers race for 30 units through two
// servers while both tick: each joins (through both), tries holds without
// a ticket, with others' tickets and anonymously with its own, and retries
// its own until it is let in, then holds once and releases it, or orders
// and pays (or fails to). Afterwards every hold belongs to a customer
// whose own ticket is USED, one hold per USED ticket, none twice, and the
// stock and the room add up.
func TestQueueNoHoldWithoutPass(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d string) {
		const customers, units = 60, 30
		e, svcs := quTwoServers(t, d)
		starts := e.dbNow().Add(300 * time.Millisecond)
		p := e.quProduct(stock.NewProduct{Stock: units, MaxPerCustomer: cuInt(2), QueueAdmitPerMinute: cuInt(6000), SaleStartsAt: &starts})
		obs := &quObserver{}
		for _, svc := range svcs {
			svc.Observe(obs)
		}

		stop := make(chan struct{})
		var tickers sync.WaitGroup
		for _, svc := range svcs {
			tickers.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					if _, err := svc.TickQueues(e.ctx, quLongPass); err != nil {
						t.Errorf("TickQueues: %v", err)
						return
					}
				}
			})
		}

		tickets := make([]uuid.UUID, customers) // each written once, by its customer, before ready
		var ready sync.WaitGroup
		ready.Add(customers)
		var mu sync.Mutex
		outcomes := map[string]int{}
		note := func(what string) { mu.Lock(); outcomes[what]++; mu.Unlock() }
		// theft must be refused, and tell nothing about the ticket named.
		theft := func(what string, err error) {
			var qe *stock.QueueError
			switch {
			case err == nil:
				t.Errorf("%s made a hold", what)
			case errors.As(err, &qe):
				if !errors.Is(err, stock.ErrQueueRequired) || qe.TicketStatus != "" {
					t.Errorf("%s: %v (status %q); want QUEUE_REQUIRED without a status", what, err, qe.TicketStatus)
				}
			case !errors.Is(err, stock.ErrSaleNotStarted) && !errors.Is(err, stock.ErrInsufficientStock):
				t.Errorf("%s: %v", what, err)
			}
		}

		var buyers sync.WaitGroup
		for i := range customers {
			buyers.Go(func() {
				by := quCustomer(i)
				svc, other := svcs[i%2], svcs[(i+1)%2]
				v, err := svc.JoinQueue(e.ctx, p.ID, by)
				v2, err2 := other.JoinQueue(e.ctx, p.ID, by)
				if err != nil || err2 != nil || v.ID != v2.ID {
					t.Errorf("%s joining through both servers: %v, %v; tickets %v, %v", by.Customer, err, err2, v.QueueTicket, v2.QueueTicket)
					ready.Done()
					return
				}
				tickets[i] = v.ID
				ready.Done()
				ready.Wait()
				neighbour := tickets[(i+1)%customers]

				qty := 1 + i%2
				deadline := time.Now().Add(30 * time.Second)
				for try := 0; ; try++ {
					if time.Now().After(deadline) {
						t.Errorf("%s never finished", by.Customer)
						return
					}
					if i%3 == 0 || try == 0 {
						_, err := e.quHold(other, p.ID, 1, by.Customer, uuid.Nil)
						theft(by.Customer+" without a ticket", err)
						_, err = e.quHold(svc, p.ID, 1, by.Customer, neighbour)
						theft(by.Customer+" with a neighbour's ticket", err)
						_, err = e.quHold(other, p.ID, 1, "", v.ID)
						theft("anonymous with "+by.Customer+"'s ticket", err)
					}
					// A fresh key each try: decided in the database, never by a
					// server's sold-out mark, so a WAITING ticket hears so.
					h, err := e.quKeyHold(svcs[try%2], p.ID, qty, by.Customer, fmt.Sprintf("%s-%d", by.Customer, try), v.ID)
					var qe *stock.QueueError
					switch {
					case err == nil:
						note("held")
						// Every hold ends released, cancelled or paid: only
						// a sale run to the end leaves nobody waiting.
						if i%4 == 0 {
							if _, err := svc.ReleaseHold(e.ctx, h.ID, by); err != nil {
								t.Errorf("ReleaseHold: %v", err)
							}
							return
						}
						o, err := other.CreateOrder(e.ctx, h.ID, by)
						if err == nil {
							pay := stock.Payment{Key: "pay-" + by.Customer, OrderID: o.ID, Status: stock.PaymentSuccess}
							if i%4 == 1 {
								pay.Status = stock.PaymentFailure
							}
							_, err = svc.ApplyPayment(e.ctx, pay)
						}
						if err != nil {
							t.Errorf("%s ordering or paying: %v", by.Customer, err)
						}
						return
					case errors.Is(err, stock.ErrSaleNotStarted):
					case errors.Is(err, stock.ErrInsufficientStock):
						// Final once nothing is held or pending: no unit comes back.
						if pr, err := e.db.Ent.Product.Get(e.ctx, p.ID); err == nil && stock.Sellable(pr) < qty && pr.StockReserved == 0 {
							note("short")
							return
						}
					case errors.Is(err, stock.ErrNotAdmitted):
					case errors.As(err, &qe) && qe.TicketStatus == queueticket.StatusSOLD_OUT:
						note("sold out")
						return
					default:
						t.Errorf("%s holding with its own ticket: %v", by.Customer, err)
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		buyers.Wait()
		close(stop)
		tickers.Wait()
		t.Logf("outcomes %v; tickets %v", outcomes, e.quCount(p.ID))

		ts := e.quTickets(p.ID)
		holds, err := e.db.Ent.Hold.Query().Where(hold.ProductID(p.ID)).All(e.ctx)
		if err != nil {
			t.Fatalf("holds: %v", err)
		}
		status := map[string]queueticket.Status{}
		for _, tk := range ts {
			if tk.CustomerID != nil {
				status[*tk.CustomerID] = tk.Status
			}
		}
		if len(ts) != customers || len(status) != customers {
			t.Errorf("%d tickets of %d customers, want one per customer (%d)", len(ts), len(status), customers)
		}
		holdsOf := map[string]int{}
		for _, h := range holds {
			holdsOf[h.CustomerID]++
			if status[h.CustomerID] != queueticket.StatusUSED {
				t.Errorf("hold %s of %q, whose ticket is %q", h.ID, h.CustomerID, status[h.CustomerID])
			}
		}
		used := 0
		for c, st := range status {
			if st == queueticket.StatusUSED {
				used++
				if holdsOf[c] != 1 {
					t.Errorf("%s's ticket is USED with %d holds", c, holdsOf[c])
				}
			}
		}
		if len(holds) != used || used != outcomes["held"] {
			t.Errorf("%d holds, %d USED tickets, %d holds answered", len(holds), used, outcomes["held"])
		}
		// Metrics: tickets made (not joins), admissions, the waiting gauge.
		pr := e.getProduct(p.ID)
		if j, a := obs.joined.Load(), obs.admitted.Load(); j != customers || a != pr.QueueAdmitted {
			t.Errorf("the observer heard of %d tickets made, %d let in; want %d, %d", j, a, customers, pr.QueueAdmitted)
		}
		if n, err := svcs[1].QueueWaiting(e.ctx); err != nil || n != pr.QueueWaiting {
			t.Errorf("QueueWaiting = %d, %v; want %d", n, err, pr.QueueWaiting)
		}
		e.quCheck(p.ID)
		e.cuCheck()
	})
}
