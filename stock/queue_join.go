package stock

import (
	"context"
	"fmt"
	"time"

	"flashsale/ent"
	"flashsale/ent/product"
	"flashsale/ent/queueticket"
)

// Joining a waiting room. In a hot drop's opening second joinQueue is as
// hot as createHold, so joins are group-committed like holds (batch.go):
// one queue per product, one transaction per batch that locks the product
// once, reads the batch's customers' tickets in one query, inserts the new
// tickets in one statement and moves the product's counters once. A
// customer's concurrent joins in one batch share the ticket its first one
// makes; across batches the product's lock (and the unique index on
// product and customer) makes the later batch find it.

// JoinQueue gives the caller a ticket for a product's waiting room. A
// customer has one ticket per product, ever: joining again returns it,
// whatever its status. Before the sale starts the ticket waits unnumbered
// (the pre-queue); once nothing is available it is SOLD_OUT at once.
func (s *Service) JoinQueue(ctx context.Context, productID int, by Caller) (QueueTicketView, error) {
	if by.Customer != "" && !validKey(by.Customer) {
		return QueueTicketView{}, InvalidInput("customer ID must be 1 to %d printable characters", maxKeyRunes)
	}
	v, err := s.joins.do(ctx, productID, by)
	if err != nil {
		return QueueTicketView{}, err
	}
	s.tickets.store(v.QueueTicket, time.Now())
	return v, nil
}

// joinPlan is what a join batch decided: for each call, the ticket it
// gets, as an index into made (a new ticket) or a ticket it already had.
type joinPlan struct {
	made   []int                       // the calls that make a ticket, in arrival order
	newOf  []int                       // per call: index into made, or -1
	had    map[string]*ent.QueueTicket // the customers' tickets from before
	shares []*ent.QueueTicket          // per call: the ticket it had, or nil
}

// decideJoins gives each call its ticket: a customer's existing one, the
// one its customer's first call in this batch makes, or (anonymous, or a
// customer's first) a new one.
func decideJoins(calls []Caller, had map[string]*ent.QueueTicket) joinPlan {
	plan := joinPlan{newOf: make([]int, len(calls)), had: had, shares: make([]*ent.QueueTicket, len(calls))}
	first := map[string]int{} // customer → index into made
	for i, c := range calls {
		plan.newOf[i] = -1
		if c.Customer != "" {
			if t := had[c.Customer]; t != nil {
				plan.shares[i] = t
				continue
			}
			if j, ok := first[c.Customer]; ok {
				plan.newOf[i] = j
				continue
			}
			first[c.Customer] = len(plan.made)
		}
		plan.newOf[i] = len(plan.made)
		plan.made = append(plan.made, i)
	}
	return plan
}

// joinBatch is one transaction for concurrent joins of a product: lock it,
// check it has an open waiting room, read the callers' tickets, number the
// pre-queue if the sale has just started, then insert the new tickets and
// move the counters once.
func (s *Service) joinBatch(ctx context.Context, productID int, calls []Caller, next func()) []result[QueueTicketView] {
	var (
		results []result[QueueTicketView]
		changed *ent.Product
		made    int
	)
	err := s.txUnique(ctx, "join queue", func(tx *ent.Tx) error {
		p, now, err := s.lockProduct(ctx, tx, productID)
		if err != nil {
			return err
		}
		if err := joinable(p, now); err != nil {
			return err
		}
		had, err := ticketsOfCustomers(ctx, tx, p.ID, calls)
		if err != nil {
			return err
		}
		plan := decideJoins(calls, had)
		pre := p.QueueTickedAt == nil // the pre-queue may be numbered now
		if len(plan.made) > 0 {
			if err := s.startQueue(ctx, tx, p, now); err != nil {
				return err
			}
		}
		if results, err = insertTickets(ctx, tx, p, now, calls, plan); err != nil {
			return err
		}
		made = len(plan.made)
		if made > 0 || pre && p.QueueTickedAt != nil {
			changed = p
		}
		next()
		return nil
	})
	if err != nil {
		return fail[QueueTicketView](len(calls), err)
	}
	if made > 0 {
		s.observer.QueueJoined(made)
	}
	s.productChanged(changed)
	return results
}

// joinable refuses a join to a product without a waiting room, or after
// its sale ended.
func joinable(p *ent.Product, now time.Time) error {
	if p.QueueAdmitPerMinute == nil {
		return InvalidInput("product %d has no waiting room: hold it directly", p.ID)
	}
	if p.SaleEndsAt != nil && !now.Before(*p.SaleEndsAt) {
		return fmt.Errorf("%w: the sale ended at %s", ErrSaleEnded, p.SaleEndsAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// ticketsOfCustomers reads the tickets the batch's customers already have
// for the product, in one query.
func ticketsOfCustomers(ctx context.Context, tx *ent.Tx, productID int, calls []Caller) (map[string]*ent.QueueTicket, error) {
	seen := map[string]bool{}
	var customers []string
	for _, c := range calls {
		if c.Customer != "" && !seen[c.Customer] {
			seen[c.Customer] = true
			customers = append(customers, c.Customer)
		}
	}
	had := map[string]*ent.QueueTicket{}
	if len(customers) == 0 {
		return had, nil
	}
	ts, err := tx.QueueTicket.Query().
		Where(queueticket.ProductID(productID), queueticket.CustomerIDIn(customers...)).All(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		had[*t.CustomerID] = t
	}
	return had, nil
}

// insertTickets makes the plan's new tickets in arrival order, in one
// statement: SOLD_OUT when nothing is available, else WAITING, numbered
// when the queue has started. The product's counters move once with them.
func insertTickets(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time, calls []Caller, plan joinPlan) ([]result[QueueTicketView], error) {
	var made []*ent.QueueTicket
	if len(plan.made) > 0 {
		builders := make([]*ent.QueueTicketCreate, len(plan.made))
		for j, i := range plan.made {
			c := tx.QueueTicket.Create().SetProductID(p.ID).SetShuffle(randomInt63()).SetCreatedAt(now).SetUpdatedAt(now)
			if calls[i].Customer != "" {
				c.SetCustomerID(calls[i].Customer)
			}
			switch {
			case p.StockAvailable == 0:
				c.SetStatus(queueticket.StatusSOLD_OUT)
			case p.QueueTickedAt != nil:
				c.SetNumber(p.QueueNext + int64(j))
			}
			builders[j] = c
		}
		var err error
		if made, err = tx.QueueTicket.CreateBulk(builders...).Save(ctx); err != nil {
			return nil, err
		}
		if err := countJoins(ctx, tx, p, now, len(made)); err != nil {
			return nil, err
		}
	}
	results := make([]result[QueueTicketView], len(calls))
	for i := range calls {
		t := plan.shares[i]
		if j := plan.newOf[i]; j >= 0 {
			t = made[j]
		}
		results[i].out = ViewOf(t, p)
	}
	return results, nil
}

// countJoins moves the product's counters for n new tickets (none when
// they were SOLD_OUT at once).
func countJoins(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time, n int) error {
	if p.StockAvailable == 0 {
		return nil
	}
	upd := tx.Product.Update().Where(product.ID(p.ID)).AddQueueWaiting(int64(n)).SetUpdatedAt(now)
	if p.QueueTickedAt != nil {
		upd.AddQueueNext(int64(n))
		p.QueueNext += int64(n)
	}
	p.QueueWaiting += int64(n)
	p.UpdatedAt = now
	return upd.Exec(ctx)
}
