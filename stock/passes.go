package stock

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/queueticket"
)

// passes are the queue tickets a hold batch's calls name, read under the
// product's lock (every change to a product's tickets takes that lock), and
// which of them calls of this batch have spent. nil for a product without
// a waiting room: then no call needs one.
type passes struct {
	tickets map[uuid.UUID]*ent.QueueTicket
	spent   map[uuid.UUID]bool
}

// passesOf reads the tickets the calls name, for a product with a waiting
// room.
func passesOf(ctx context.Context, tx *ent.Tx, p *ent.Product, reqs []HoldRequest) (passes, error) {
	if p.QueueAdmitPerMinute == nil {
		return passes{}, nil
	}
	var ids []uuid.UUID
	for _, r := range reqs {
		if r.QueueTicket != uuid.Nil {
			ids = append(ids, r.QueueTicket)
		}
	}
	ps := passes{tickets: map[uuid.UUID]*ent.QueueTicket{}, spent: map[uuid.UUID]bool{}}
	if len(ids) == 0 {
		return ps, nil
	}
	ts, err := tx.QueueTicket.Query().Where(queueticket.IDIn(ids...)).All(ctx)
	if err != nil {
		return ps, err
	}
	for _, t := range ts {
		ps.tickets[t.ID] = t
	}
	return ps, nil
}

// check refuses a call on a product with a waiting room unless it names
// the caller's ADMITTED ticket for this product, with its pass unexpired
// and not spent by an earlier call of the batch.
func (ps passes) check(p *ent.Product, now time.Time, r HoldRequest) error {
	if ps.tickets == nil {
		return nil
	}
	t := ps.tickets[r.QueueTicket]
	if r.QueueTicket == uuid.Nil || t == nil || t.ProductID != p.ID || ticketOwner(t) != r.Customer {
		// Another's ticket tells the caller nothing about it.
		return &QueueError{Kind: ErrQueueRequired, why: fmt.Sprintf("product %d has a waiting room: joinQueue, then hold with the admitted ticket's queueTicketId", p.ID)}
	}
	status := t.Status
	if status == queueticket.StatusADMITTED && (ps.spent[t.ID] || t.PassExpiresAt == nil || !now.Before(*t.PassExpiresAt)) {
		status = queueticket.StatusEXPIRED
		if ps.spent[t.ID] {
			status = queueticket.StatusUSED
		}
	}
	switch status {
	case queueticket.StatusADMITTED:
		return nil
	case queueticket.StatusWAITING:
		v := ViewOf(t, p)
		e := &QueueError{Kind: ErrNotAdmitted, TicketStatus: status, EstimatedAt: v.EstimatedAt, why: "the ticket is still waiting"}
		if v.Position != nil {
			e.Position = *v.Position
			e.why = fmt.Sprintf("the ticket is still waiting, at position %d", e.Position)
		}
		return e
	}
	return &QueueError{Kind: ErrQueueRequired, TicketStatus: status,
		why: fmt.Sprintf("the ticket is %s: its pass is gone", status)}
}

// spend marks a ticket as used by a call of the batch that makes a hold.
func (ps passes) spend(id uuid.UUID) {
	if ps.spent != nil && id != uuid.Nil {
		ps.spent[id] = true
	}
}

// spendAll marks USED, in the batch's transaction, the tickets of the
// calls that made a hold (none on a product without a waiting room, which
// ignores queueTicketId).
func (ps passes) spendAll(ctx context.Context, tx *ent.Tx, now time.Time, reqs []HoldRequest, plan holdPlan) error {
	if ps.tickets == nil {
		return nil
	}
	var ids []uuid.UUID
	for _, i := range plan.made {
		if id := reqs[i].QueueTicket; id != uuid.Nil {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return tx.QueueTicket.Update().
		Where(queueticket.IDIn(ids...), queueticket.StatusEQ(queueticket.StatusADMITTED)).
		SetStatus(queueticket.StatusUSED).SetUpdatedAt(now).Exec(ctx)
}
