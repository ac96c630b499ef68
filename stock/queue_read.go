package stock

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"flashsale/ent"
	"flashsale/ent/queueticket"
)

// Reading a ticket. Buyers in a waiting room poll their place, so a
// position read must cost what a product read does: no query. A ticket
// row changes far less often than its position, which follows from the
// product (number − serving), and the product is read from memory at most
// a second stale (cache.go). So this process keeps the ticket rows it
// read or made:
//
//   - a numbered WAITING ticket stays WAITING while its product's serving
//     counter is below its number (admission and sell-out both move serving
//     past it, under the product's lock with the ticket's own change), so
//     with the product as read it needs no query until serving reaches it;
//   - an unnumbered one (the pre-queue) is numbered when its product's
//     queue starts, and is read again then;
//   - any other ticket (in the pre-queue, or let in and waiting for its
//     hold or its pass to lapse) is kept productTTL, like a product.

// maxCachedTickets bounds the tickets one process keeps (a few hundred
// bytes each); past it the least recently read go.
const maxCachedTickets = 200_000

type ticketCache struct {
	rows *lru.Cache[uuid.UUID, cachedTicket]
}

type cachedTicket struct {
	t      ent.QueueTicket // a copy: callers may not change the cache
	loaded time.Time
}

func newTicketCache() *ticketCache {
	rows, err := lru.New[uuid.UUID, cachedTicket](maxCachedTickets)
	if err != nil {
		panic(err) // only for a size < 1
	}
	return &ticketCache{rows: rows}
}

// store keeps t as read (or committed) at loaded.
func (c *ticketCache) store(t *ent.QueueTicket, loaded time.Time) {
	c.rows.Add(t.ID, cachedTicket{t: *t, loaded: loaded})
}

// forget drops tickets this process just changed.
func (c *ticketCache) forget(ids ...uuid.UUID) {
	for _, id := range ids {
		c.rows.Remove(id)
	}
}

// get returns the ticket as this process last read or made it.
func (c *ticketCache) get(id uuid.UUID) (cachedTicket, bool) { return c.rows.Get(id) }

// stillTrue reports whether a cached ticket still says what the ticket is,
// given its product p as read now.
func (e cachedTicket) stillTrue(p *ent.Product) bool {
	switch {
	case e.t.Status == queueticket.StatusWAITING && e.t.Number != nil:
		return p.QueueServing < *e.t.Number
	case e.t.Status == queueticket.StatusWAITING && p.QueueTickedAt != nil:
		return false // the pre-queue has been numbered since
	}
	return time.Since(e.loaded) < productTTL
}

// QueueTicket returns a ticket as its owner, or an operator, sees it:
// another customer's, or a customer's to an anonymous caller, is
// ErrNotFound. Its position is at most about a second stale, like a
// product's stock.
func (s *Service) QueueTicket(ctx context.Context, id uuid.UUID, by Caller) (QueueTicketView, error) {
	t, p, err := s.readTicket(ctx, id)
	if err != nil {
		return QueueTicketView{}, err
	}
	if !by.mayRead(ticketOwner(t)) {
		return QueueTicketView{}, noTicket(id)
	}
	return ViewOf(t, p), nil
}

// noTicket is ErrNotFound for a ticket that does not exist, or is not the
// caller's to see: the two read the same.
func noTicket(id uuid.UUID) error { return fmt.Errorf("%w: no queue ticket %s", ErrNotFound, id) }

// readTicket is a ticket and its product, from memory while that is still
// true, else from the database.
func (s *Service) readTicket(ctx context.Context, id uuid.UUID) (*ent.QueueTicket, *ent.Product, error) {
	if e, ok := s.tickets.get(id); ok {
		p, err := s.Product(ctx, e.t.ProductID)
		if err != nil {
			return nil, nil, err
		}
		if e.stillTrue(p) {
			return &e.t, p, nil
		}
	}
	t, err := s.ticketReads.do(ctx, 0, id)
	if err != nil {
		return nil, nil, err
	}
	p, err := s.Product(ctx, t.ProductID)
	if err != nil {
		return nil, nil, err
	}
	return t, p, nil
}

// QueueTicketNow is QueueTicket read from the database, for a caller that
// knows the ticket may just have changed (a subscription that saw its
// product move past it). p is the ticket's product as the caller saw it,
// newer than this process's cache may be; nil reads it.
func (s *Service) QueueTicketNow(ctx context.Context, id uuid.UUID, by Caller, p *ent.Product) (QueueTicketView, error) {
	t, err := s.ticketReads.do(ctx, 0, id)
	if err != nil {
		return QueueTicketView{}, err
	}
	if !by.mayRead(ticketOwner(t)) {
		return QueueTicketView{}, noTicket(id)
	}
	if p == nil || p.ID != t.ProductID {
		if p, err = s.Product(ctx, t.ProductID); err != nil {
			return QueueTicketView{}, err
		}
	}
	return ViewOf(t, p), nil
}

// ticketReadBatch reads a batch of tickets in one query and keeps them.
// Every ticket read from the database goes through it (one queue, key 0):
// reads come in floods (every subscriber of a product at once when
// admission or the sale's start reaches them, every new poller of a hot
// drop), and a batch is what queued while the last one ran, up to 256
// tickets a query.
func (s *Service) ticketReadBatch(ctx context.Context, _ int, ids []uuid.UUID, _ func()) []result[*ent.QueueTicket] {
	loaded := time.Now()
	ts, err := s.client.QueueTicket.Query().Where(queueticket.IDIn(ids...)).All(ctx)
	if err != nil {
		return fail[*ent.QueueTicket](len(ids), classify("read queue tickets", err))
	}
	byID := make(map[uuid.UUID]*ent.QueueTicket, len(ts))
	for _, t := range ts {
		byID[t.ID] = t
		s.tickets.store(t, loaded)
	}
	results := make([]result[*ent.QueueTicket], len(ids))
	for i, id := range ids {
		if t := byID[id]; t != nil {
			cp := *t // each caller its own copy
			results[i].out = &cp
		} else {
			results[i].err = noTicket(id)
		}
	}
	return results
}
