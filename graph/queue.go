package graph

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/queueticket"
	"flashsale/graph/model"
	"flashsale/live"
	"flashsale/stock"
)

// The waiting room's GraphQL side: joinQueue, the queueTicket query and
// subscription, Product.queue, and createHold's queueTicketId (stock owns
// every rule; docs/api.md, "Waiting room").

// joinQueue is joinQueue's work: buyers join as they hold (a customer
// where customer tokens are configured).
func (r *Resolver) joinQueue(ctx context.Context, productID string) (*stock.QueueTicketView, error) {
	id, err := stock.ParseProductID(productID)
	if err != nil {
		return nil, err
	}
	by, err := r.buyer(ctx)
	if err != nil {
		return nil, err
	}
	v, err := r.Stock.JoinQueue(ctx, id, by)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// queueTicket reads a ticket as the caller may see it: null for none, or
// another's.
func (r *Resolver) queueTicket(ctx context.Context, id string) (*stock.QueueTicketView, error) {
	tid, err := stock.ParseID("queue ticket", id)
	if err != nil {
		return nil, err
	}
	v, err := r.Stock.QueueTicket(ctx, tid, callerOf(ctx))
	return nullIfNotFound(&v, err)
}

// queueStats is Product.queue: null without a waiting room. The counters
// are the product row's, so a product read costs no count.
func queueStats(p *ent.Product) *model.QueueStats {
	if p.QueueAdmitPerMinute == nil {
		return nil
	}
	return &model.QueueStats{Waiting: int(p.QueueWaiting), Admitted: int(p.QueueAdmitted), AdmitPerMinute: *p.QueueAdmitPerMinute}
}

// parseTicketID reads createHold's queueTicketId (nil: none).
func parseTicketID(id *string) (uuid.UUID, error) {
	if id == nil {
		return uuid.Nil, nil
	}
	return stock.ParseID("queue ticket", *id)
}

// watchTicket is the queueTicket subscription: the ticket now, then again
// when it changes. It rides on live stock's one change source per product:
// a product event moves a WAITING ticket's position without a database
// read, and the ticket is read again only when the event may have changed
// its status (admitted, sold out, its pass spent) and when its pass runs
// out, which changes no product.
func (r *Resolver) watchTicket(ctx context.Context, id string) (<-chan *stock.QueueTicketView, error) {
	tid, err := stock.ParseID("queue ticket", id)
	if err != nil {
		return nil, err
	}
	by := callerOf(ctx)
	v, err := r.Stock.QueueTicket(ctx, tid, by)
	if err != nil {
		return nil, err
	}
	if r.Live == nil {
		return nil, live.ErrClosed
	}
	products, err := r.Live.Subscribe(ctx, v.ProductID)
	if err != nil {
		return nil, err
	}
	out := make(chan *stock.QueueTicketView, 1)
	out <- &v
	go r.followTicket(ctx, tid, by, v, products, out)
	return out, nil
}

// followTicket sends the ticket's changes until ctx ends.
func (r *Resolver) followTicket(ctx context.Context, id uuid.UUID, by stock.Caller, cur stock.QueueTicketView,
	products <-chan *ent.Product, out chan *stock.QueueTicketView) {
	defer close(out)
	w := ticketWatch{cur: cur}
	f := ticketFeed{out: out, sent: cur, at: time.Now()}
	var expiry <-chan time.Time
	for {
		if w.cur.Status == queueticket.StatusADMITTED && w.cur.PassExpiresAt != nil && expiry == nil {
			expiry = time.After(time.Until(*w.cur.PassExpiresAt) + time.Second)
		}
		var p *ent.Product
		select {
		case <-ctx.Done():
			return
		case <-f.due:
			f.flush()
			continue
		case <-expiry:
			expiry = nil
		case q, open := <-products:
			if !open {
				return
			}
			p = q
		}
		next, ok := r.nextTicket(ctx, id, by, &w, p)
		if !ok {
			return
		}
		if !sameTicket(next, w.cur) {
			w.cur = next
			f.offer(next)
		}
	}
}

// ticketFeed sends a subscription's tickets. A ticket far back in line
// hears of its place moving less often than live stock could tell it
// (positionGap); anything else (its first position, admission, the end of
// the line) goes at once. A reader that is behind gets the latest.
type ticketFeed struct {
	out     chan *stock.QueueTicketView
	sent    stock.QueueTicketView // the last ticket sent
	at      time.Time             // when
	pending *stock.QueueTicketView
	due     <-chan time.Time // when pending goes
}

// positionGap is the least time between two position updates of a ticket
// at pos: a second per 100 places ahead, at most 5 s.
func positionGap(pos int64) time.Duration {
	return min(time.Duration(pos)*10*time.Millisecond, 5*time.Second)
}

func (f *ticketFeed) offer(v stock.QueueTicketView) {
	moved := v.Status == queueticket.StatusWAITING && f.sent.Status == queueticket.StatusWAITING &&
		v.Position != nil && f.sent.Position != nil
	if moved {
		if wait := positionGap(*v.Position) - time.Since(f.at); wait > 0 {
			f.pending = &v
			if f.due == nil {
				f.due = time.After(wait)
			}
			return
		}
	}
	f.send(v)
}

func (f *ticketFeed) flush() {
	f.due = nil
	if f.pending != nil {
		f.send(*f.pending)
	}
}

func (f *ticketFeed) send(v stock.QueueTicketView) {
	f.sent, f.at, f.pending, f.due = v, time.Now(), nil, nil
	select {
	case <-f.out:
	default:
	}
	f.out <- &v
}

// ticketWatch is what a ticket subscription knows: the ticket as last
// sent, and its product's stock when the ticket was last read.
type ticketWatch struct {
	cur  stock.QueueTicketView
	held *[2]int // the product's reserved and available units then; nil: unknown
}

// nextTicket is the ticket after product event p (nil: its pass timer),
// read again only when its status may have moved: a WAITING ticket once
// the product's serving counter reached it (or the line was numbered or
// sold out), an ADMITTED one when its pass timer fires or the stock moved
// (only a hold spends a pass; a hold and a release of as many units between
// two events hide it until the next change). ok is false when it can no
// longer be read (the subscription then ends).
func (r *Resolver) nextTicket(ctx context.Context, id uuid.UUID, by stock.Caller, w *ticketWatch, p *ent.Product) (stock.QueueTicketView, bool) {
	cur := w.cur
	switch cur.Status {
	case queueticket.StatusUSED, queueticket.StatusEXPIRED, queueticket.StatusSOLD_OUT:
		return cur, true // final
	case queueticket.StatusWAITING:
		if p != nil && p.StockAvailable > 0 {
			switch {
			case cur.Number == nil && p.QueueTickedAt == nil:
				return cur, true // the pre-queue, before the start
			case cur.Number != nil && *cur.Number > p.QueueServing:
				return stock.ViewOf(cur.QueueTicket, p), true // still in line
			}
		}
	case queueticket.StatusADMITTED:
		if p != nil && w.held != nil && *w.held == [2]int{p.StockReserved, p.StockAvailable} {
			return cur, true
		}
	}
	v, err := r.Stock.QueueTicketNow(ctx, id, by, p)
	if err != nil {
		// A passing outage keeps the subscription; the next event retries.
		return cur, ctx.Err() == nil && !errors.Is(err, stock.ErrNotFound)
	}
	w.held = nil
	if p != nil {
		w.held = &[2]int{p.StockReserved, p.StockAvailable}
	}
	return v, true
}

func sameTicket(a, b stock.QueueTicketView) bool {
	return a.Status == b.Status && eqInt64(a.Position, b.Position) && eqTimePtr(a.EstimatedAt, b.EstimatedAt) &&
		eqTimePtr(a.PassExpiresAt, b.PassExpiresAt)
}

func eqInt64(a, b *int64) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func eqTimePtr(a, b *time.Time) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}
