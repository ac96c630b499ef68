package stock

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/ent"
	"flashsale/ent/product"
	"flashsale/ent/queueticket"
)

// The waiting room (docs/api.md, "Waiting room"). A product with
// queue_admit_per_minute set lets buyers in a few at a time:
//
//   - a ticket's place is a number, and the product's queue_serving says how
//     far admission has got, so a position is number − serving, read
//     without counting anyone;
//   - tickets that join before the sale starts get no number but a random
//     shuffle key; at the start (the first join or tick after it, under the
//     product's lock, once across all processes) they are numbered in
//     shuffle order, a uniformly random permutation. Later joiners take the
//     next numbers, first come first served;
//   - admission moves queue_serving forward under the product's lock by
//     elapsed time × rate (tickQueue, run by every process's sweeper: the
//     rate holds for all of them together, and one that dies stops
//     nothing), never more than a couple of seconds' worth at once;
//   - it pauses while nothing is sellable, and once nothing is available
//     every WAITING ticket becomes SOLD_OUT in one statement;
//   - an ADMITTED ticket's pass takes one hold, checked and spent in the
//     hold batch, under the same lock as the stock.
//
// Every change to a product's tickets is made under that product's lock.

// ErrQueueRequired: a hold on a product with a waiting room without a
// usable ticket (see QueueError).
var ErrQueueRequired = errors.New("queue ticket required")

// ErrNotAdmitted: a hold with a ticket that is still WAITING (see
// QueueError).
var ErrNotAdmitted = errors.New("queue ticket not admitted yet")

// QueueError is ErrQueueRequired or ErrNotAdmitted with what the caller may
// learn: its own ticket's status, and for a WAITING one its position and
// estimated admission.
type QueueError struct {
	Kind         error              // ErrQueueRequired or ErrNotAdmitted
	TicketStatus queueticket.Status // "" when the ticket is not the caller's (or there is none)
	Position     int64              // WAITING tickets only
	EstimatedAt  *time.Time         // WAITING tickets only, nil while unknown
	why          string
}

func (e *QueueError) Error() string { return fmt.Sprintf("%v: %s", e.Kind, e.why) }
func (e *QueueError) Unwrap() error { return e.Kind }

// maxAdmitBurst is the most elapsed time one tick admits for: a tick that
// comes late catches up on jitter, never on a long pause.
const maxAdmitBurst = 2 * time.Second

// QueueTicketView is a ticket with what is derived from its product: its
// position and estimated admission, nil where the contract says null.
type QueueTicketView struct {
	*ent.QueueTicket
	Position    *int64
	EstimatedAt *time.Time
}

// ViewOf derives a ticket's position and estimate from its product as read
// (for a subscription, live stock's latest state of it).
func ViewOf(t *ent.QueueTicket, p *ent.Product) QueueTicketView {
	v := QueueTicketView{QueueTicket: t}
	if t.Status != queueticket.StatusWAITING || t.Number == nil || p.QueueTickedAt == nil {
		return v
	}
	pos := max(*t.Number-p.QueueServing, 1)
	v.Position = &pos
	if p.QueueAdmitPerMinute != nil && Sellable(p) > 0 {
		secs := (float64(pos) - p.QueueCarry) * 60 / float64(*p.QueueAdmitPerMinute)
		// To the millisecond: finer is float noise from each round's carry,
		// and would make a subscription send a ticket that did not change.
		at := p.QueueTickedAt.Add(time.Duration(max(secs, 0) * float64(time.Second))).Round(time.Millisecond)
		v.EstimatedAt = &at
	}
	return v
}

// randomInt63 is a shuffle key from crypto/rand: whoever joins cannot
// predict or choose their place in the pre-queue.
func randomInt63() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return int64(binary.BigEndian.Uint64(b[:]) >> 1)
}

// startQueue numbers the pre-queue once the sale has started, in shuffle
// order, and starts admission's clock. It does nothing before the start or
// when it has been done. Called with p locked.
func (s *Service) startQueue(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time) error {
	if p.QueueTickedAt != nil || p.QueueAdmitPerMinute == nil || (p.SaleStartsAt != nil && now.Before(*p.SaleStartsAt)) {
		return nil
	}
	n, err := s.numberPreQueue(ctx, tx, p.ID, p.QueueNext-1, now)
	if err != nil {
		return err
	}
	err = tx.Product.Update().Where(product.ID(p.ID)).
		AddQueueNext(int64(n)).SetQueueTickedAt(now).SetQueueCarry(0).SetUpdatedAt(now).Exec(ctx)
	if err != nil {
		return err
	}
	p.QueueNext += int64(n)
	p.QueueTickedAt, p.QueueCarry, p.UpdatedAt = &now, 0, now
	return nil
}

// numberPreQueue gives the product's unnumbered WAITING tickets the numbers
// after base, in shuffle order, in one statement, and returns how many.
func (s *Service) numberPreQueue(ctx context.Context, tx *ent.Tx, productID int, base int64, now time.Time) (int, error) {
	const ranked = `SELECT id, ROW_NUMBER() OVER (ORDER BY shuffle, id) AS rn FROM queue_tickets
		WHERE product_id = ? AND status = 'WAITING' AND number IS NULL`
	query := `UPDATE queue_tickets AS t JOIN (` + ranked + `) AS r ON t.id = r.id SET t.number = r.rn + ?, t.updated_at = ?`
	args := []any{productID, base, now}
	if s.dialect == dialect.SQLite {
		query = `UPDATE queue_tickets SET number = r.rn + ?, updated_at = ? FROM (` + ranked + `) AS r WHERE queue_tickets.id = r.id`
		args = []any{base, now, productID}
	}
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("number the pre-queue: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// QueueResult counts what one round of the waiting rooms did.
type QueueResult struct {
	Admitted, SoldOut, Expired int
}

// TickQueues moves every waiting room on: numbers the pre-queue at the
// start, admits by elapsed time × rate, ends the line once sold out, and
// expires unused passes. Each product in its own transaction under its
// lock; every process runs it (sweeper), and together they admit at the
// rate.
func (s *Service) TickQueues(ctx context.Context, passTTL time.Duration) (QueueResult, error) {
	ids, err := s.client.Product.Query().Where(product.QueueAdmitPerMinuteNotNil()).IDs(ctx)
	if err != nil {
		return QueueResult{}, classify("tick queues", err)
	}
	var total QueueResult
	for _, id := range ids {
		var r QueueResult
		var changed *ent.Product
		err := s.tx(ctx, "tick queue", func(tx *ent.Tx) error {
			p, now, err := s.lockProduct(ctx, tx, id)
			if err != nil {
				return err
			}
			r, err = s.tickQueue(ctx, tx, p, now, passTTL)
			changed = p
			return err
		})
		if err != nil {
			return total, err
		}
		// Live stock drops a state it has already seen.
		s.productChanged(changed)
		s.observer.QueueAdmitted(r.Admitted)
		total.Admitted += r.Admitted
		total.SoldOut += r.SoldOut
		total.Expired += r.Expired
	}
	return total, nil
}

// tickQueue is one product's round, with p locked.
func (s *Service) tickQueue(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time, passTTL time.Duration) (QueueResult, error) {
	var r QueueResult
	if p.QueueAdmitPerMinute == nil {
		return r, nil
	}
	if err := s.startQueue(ctx, tx, p, now); err != nil {
		return r, err
	}
	var err error
	if r.Expired, err = expirePasses(ctx, tx, p.ID, now); err != nil {
		return r, err
	}
	if p.StockAvailable == 0 {
		// The pre-queue too: nobody waits for nothing.
		r.SoldOut, err = soldOut(ctx, tx, p, now)
		return r, err
	}
	if p.QueueTickedAt == nil {
		return r, nil
	}
	r.Admitted, err = admitTickets(ctx, tx, p, now, passTTL)
	return r, err
}

// expirePasses ends the passes of a product that ran out unused.
func expirePasses(ctx context.Context, tx *ent.Tx, productID int, now time.Time) (int, error) {
	return tx.QueueTicket.Update().
		Where(queueticket.ProductID(productID), queueticket.StatusEQ(queueticket.StatusADMITTED), queueticket.PassExpiresAtLTE(now)).
		SetStatus(queueticket.StatusEXPIRED).SetUpdatedAt(now).Save(ctx)
}

// soldOut ends the line of a product with nothing available: every WAITING
// ticket becomes SOLD_OUT, in one statement.
func soldOut(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time) (int, error) {
	n, err := tx.QueueTicket.Update().
		Where(queueticket.ProductID(p.ID), queueticket.StatusEQ(queueticket.StatusWAITING)).
		SetStatus(queueticket.StatusSOLD_OUT).SetUpdatedAt(now).Save(ctx)
	if err != nil || n == 0 && p.QueueWaiting == 0 {
		return n, err
	}
	// Nobody waits any more: serving moves past every number given, so a
	// restock's new joiners are next in line.
	err = tx.Product.Update().Where(product.ID(p.ID)).
		SetQueueWaiting(0).SetQueueServing(p.QueueNext - 1).SetQueueCarry(0).SetUpdatedAt(now).Exec(ctx)
	p.QueueWaiting, p.QueueServing, p.QueueCarry, p.UpdatedAt = 0, p.QueueNext-1, 0, now
	return n, err
}

// admitTickets lets in the tickets the time since the last round earned at
// the product's rate (a fraction carried over), unless nothing is sellable:
// then the round only moves the clock, and admission pauses.
func admitTickets(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time, passTTL time.Duration) (int, error) {
	elapsed := min(max(now.Sub(*p.QueueTickedAt), 0), maxAdmitBurst)
	quota := p.QueueCarry + elapsed.Seconds()*float64(*p.QueueAdmitPerMinute)/60
	k := int64(math.Floor(quota))
	carry := quota - float64(k)
	// The clock and the carry are invisible: updated_at (which live stock
	// watches) moves only with admissions.
	upd := tx.Product.Update().Where(product.ID(p.ID)).SetQueueTickedAt(now)
	last := p.QueueNext - 1 // the last number given
	if Sellable(p) <= 0 || p.QueueServing >= last {
		// Paused, or nobody in line: no credit builds up for later.
		k, carry = 0, 0
	}
	serving := min(p.QueueServing+k, last)
	admitted := 0
	if serving > p.QueueServing {
		n, err := tx.QueueTicket.Update().
			Where(queueticket.ProductID(p.ID), queueticket.StatusEQ(queueticket.StatusWAITING),
				queueticket.NumberGT(p.QueueServing), queueticket.NumberLTE(serving)).
			SetStatus(queueticket.StatusADMITTED).SetAdmittedAt(now).SetPassExpiresAt(now.Add(passTTL)).SetUpdatedAt(now).
			Save(ctx)
		if err != nil {
			return 0, err
		}
		admitted = n
		upd.SetQueueServing(serving).AddQueueWaiting(-int64(n)).AddQueueAdmitted(int64(n)).SetUpdatedAt(now)
		p.QueueWaiting -= int64(n)
		p.QueueAdmitted += int64(n)
		p.UpdatedAt = now
	}
	if err := upd.SetQueueCarry(carry).Exec(ctx); err != nil {
		return 0, err
	}
	p.QueueServing, p.QueueCarry, p.QueueTickedAt = serving, carry, &now
	return admitted, nil
}

// QueueWaiting is how many tickets wait in every waiting room together
// (flashsale_queue_waiting).
func (s *Service) QueueWaiting(ctx context.Context) (int64, error) {
	var rows []struct {
		Sum sql.NullInt64 `json:"sum"` // NULL without any waiting room
	}
	err := s.client.Product.Query().Where(product.QueueAdmitPerMinuteNotNil()).
		Aggregate(ent.As(ent.Sum(product.FieldQueueWaiting), "sum")).Scan(ctx, &rows)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	return rows[0].Sum.Int64, nil
}

func ticketOwner(t *ent.QueueTicket) string {
	if t.CustomerID == nil {
		return ""
	}
	return *t.CustomerID
}
