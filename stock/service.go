// Package stock is the one place that changes stock. Every operation that
// moves a product's counters or a hold's or order's status (holds, orders,
// payments, expiry, new products) is a method of Service and runs in a
// database transaction; concurrent holds, orders and payments are grouped
// into one transaction per batch (batch.go).
//
// # Lock order
//
// Rows are locked in one order, so stock transactions never wait for each
// other in a cycle:
//
//	product rows (ascending ID) → hold rows (ascending ID) → order rows (ascending ID) → payment events (ascending key)
//
// Each transaction takes some of them, always in that order:
//
//   - createHold: its product, then inserts holds.
//   - createOrder: no product lock at all (it changes no counter, and holds
//     and orders have no foreign key to products, whose check would take a
//     shared lock on the hot row). It locks its holds, then inserts orders.
//   - payments: their products, then the holds a failure may release, then
//     the orders, then inserts events.
//   - sweeps, and createHold, a late payment or an operator's change
//     (updateProduct, adjustStock) releasing lapsed stock: the product, then
//     the overdue holds and the holds of overdue orders, then those orders.
//
// One exception: a payment batch that releases lapsed stock for a late
// success locks those holds after its orders. It holds the product's lock,
// which every other transaction touching that product's holds and orders
// takes first, except createOrder; and createOrder never waits for an order
// lock (it only inserts new orders), so no cycle can form.
//
// Every locking read goes through a primary key (a candidate list is read
// first without locks where a range is needed), and sessions run READ
// COMMITTED (package database), so there are no gap locks. The retry in tx
// still covers the deadlocks and lock-wait timeouts MySQL may report, e.g.
// under an operator's manual transaction.
//
// A transaction that changes orders also inserts their order events and
// deliveries (outbox.go): new rows, which no other transaction waits
// for, so they add no lock to the order above.
//
// Expiry is judged by the database clock, read in the same statement that
// takes the lock (SYSDATE, evaluated as each row is locked), so a request
// that waited for a lock never decides with the time it started waiting.
//
// GraphQL resolvers (package graph), the payment webhook (package webhook)
// and the expiry sweeper all call this package; none of them writes stock.
package stock

import (
	"bytes"
	"context"
	stdsql "database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql"
	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/order"
	"flashsale/ent/product"
)

// Config holds the business rules that come from the environment.
type Config struct {
	HoldTTL        time.Duration // how long a hold reserves stock
	PaymentTimeout time.Duration // how long an order may wait for payment
	MaxHoldQty     int           // largest qty one hold may take
	SweepBatch     int           // most rows one sweep transaction releases (default 500)
	// EventSinks names the order-event sinks configured ("webhook",
	// "nats"): every event gets one delivery for each (none: events are
	// written, never sent).
	EventSinks []string
}

// Service runs the stock transactions.
type Service struct {
	client  *ent.Client
	dialect string
	cfg     Config
	log     *slog.Logger

	// writeSem (one slot) serializes write transactions on SQLite, which has
	// no row locks; the DSN's BEGIN IMMEDIATE covers other processes on the
	// file. A channel rather than a mutex, so waiting respects the context.
	writeSem chan struct{}

	// Group commit (batch.go): holds per product, orders per shard of
	// their hold ID, payments on one queue.
	holds    *batcher[HoldRequest, *ent.Hold]
	orders   *batcher[orderCall, *ent.Order]
	payments *batcher[Payment, PaymentResult]
	joins    *batcher[Caller, QueueTicketView] // queue joins per product (queue_join.go)
	// ticketReads batches the ticket reads from the database (queue_read.go).
	ticketReads *batcher[uuid.UUID, *ent.QueueTicket]
	cache       productCache
	tickets     *ticketCache                       // queue tickets read or made here (queue_read.go)
	onChange    atomic.Pointer[func(*ent.Product)] // see OnChange
	onEvents    atomic.Pointer[func()]             // see OnEvents
	observer    Observer                           // see Observe
}

// New returns a Service over client; d is dialect.MySQL or dialect.SQLite.
func New(client *ent.Client, d string, cfg Config, log *slog.Logger) *Service {
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = 500
	}
	s := &Service{client: client, dialect: d, cfg: cfg, log: log, writeSem: make(chan struct{}, 1), observer: noObserver{}}
	s.holds = &batcher[HoldRequest, *ent.Hold]{op: "create hold", run: s.holdBatch, log: log.Error}
	s.orders = &batcher[orderCall, *ent.Order]{op: "create order", run: s.orderBatch, log: log.Error}
	s.payments = &batcher[Payment, PaymentResult]{op: "apply payment", run: s.paymentBatch, log: log.Error}
	s.joins = &batcher[Caller, QueueTicketView]{op: "join queue", run: s.joinBatch, log: log.Error}
	s.ticketReads = &batcher[uuid.UUID, *ent.QueueTicket]{op: "read queue tickets", run: s.ticketReadBatch, log: log.Error}
	s.tickets = newTicketCache()
	return s
}

// orderShard picks the order queue of a hold (the last byte of a UUIDv7 is
// random).
func orderShard(holdID uuid.UUID) int { return int(holdID[15]) % orderShards }

// maxAttempts bounds the runs of one transaction. On a Galera cluster
// with writes on several nodes, a hot product's batches lose certification
// to each other's at COMMIT, each time with nothing applied: they need more
// than the odd retry a single server's deadlocks do.
const maxAttempts = 12

// backoff is how long to wait before attempt n+1: full jitter over an
// exponential ceiling (2 ms, 4 ms, ... 64 ms), so that the losers of a
// conflict do not collide again in step.
func backoff(n int) time.Duration {
	return rand.N(min(2*time.Millisecond<<n, 64*time.Millisecond)) + time.Millisecond
}

// tx runs fn in one transaction, retrying it from the start when MySQL
// reports a deadlock or lock wait timeout, Galera a certification conflict
// (a deadlock, often at COMMIT), or a Galera node stopped serving (the pool
// then drops that connection and dials another host). Nothing of a failed
// attempt was committed, so a retry is safe; an error that leaves that in
// doubt (a connection lost during COMMIT) is never retried. Errors come
// back classified.
func (s *Service) tx(ctx context.Context, op string, fn func(tx *ent.Tx) error) error {
	if s.dialect == dialect.SQLite {
		select {
		case s.writeSem <- struct{}{}:
			defer func() { <-s.writeSem }()
		case <-ctx.Done():
			return classify(op, ctx.Err())
		}
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = s.attempt(ctx, fn)
		if err == nil || !retryable(err) || attempt == maxAttempts || ctx.Err() != nil {
			break
		}
		s.log.DebugContext(ctx, "retrying transaction", "op", op, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt)):
		}
	}
	return classify(op, err)
}

// maxKeyRaces bounds the reruns of a batch that lost a race for a unique
// idempotency key to a batch of another product or server: the rerun reads
// the winner's row and answers from it.
const maxKeyRaces = 3

// txUnique is tx for batches that insert rows with client-chosen unique
// keys (hold and payment idempotency keys): a unique-key violation means
// another transaction stored the key since this one looked, so the batch
// runs again from the start and finds it.
func (s *Service) txUnique(ctx context.Context, op string, fn func(tx *ent.Tx) error) error {
	var err error
	for range maxKeyRaces {
		if err = s.tx(ctx, op, fn); err == nil || !ent.IsConstraintError(err) {
			break
		}
	}
	return err
}

func (s *Service) attempt(ctx context.Context, fn func(tx *ent.Tx) error) (err error) {
	tx, err := s.client.Tx(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			_ = tx.Rollback()
			panic(v)
		}
	}()
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil {
			s.log.WarnContext(ctx, "rollback failed", "err", rerr)
		}
		return err
	}
	return tx.Commit()
}

// now returns the database's clock, which decides expiry: every server
// process then agrees on it, whatever their own clocks say. The embedded
// SQLite database runs in this process, so its clock is the process's.
func (s *Service) now(ctx context.Context, q querier) (time.Time, error) {
	if s.dialect != dialect.MySQL {
		return time.Now().UTC(), nil
	}
	rows, err := q.QueryContext(ctx, "SELECT UTC_TIMESTAMP(6)")
	if err != nil {
		return time.Time{}, err
	}
	defer rows.Close()
	var t time.Time
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return time.Time{}, err
		}
		return time.Time{}, fmt.Errorf("UTC_TIMESTAMP returned no row")
	}
	if err := rows.Scan(&t); err != nil {
		return time.Time{}, err
	}
	return t.UTC(), rows.Close()
}

// querier is an *ent.Client or an *ent.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*stdsql.Rows, error)
}

// clockColumn carries the database clock in a locking read (lockedClock).
const clockColumn = "locked_at"

// withClock makes a locking query also return the database clock as each
// row is locked (MySQL only; see lockedClock).
func (s *Service) withClock(sel *sql.Selector) {
	if s.dialect == dialect.MySQL {
		sel.AppendSelectExprAs(sql.Raw("SYSDATE(6)"), clockColumn)
	}
}

// lockedClock returns the latest database clock among rows read with
// withClock: by then every one of their locks was held (zero when there
// were no rows). On SQLite, whose writes this process serializes, it is the
// process's clock.
func lockedClock[T interface {
	Value(string) (ent.Value, error)
}](s *Service, rows []T) (time.Time, error) {
	if s.dialect != dialect.MySQL {
		return time.Now().UTC(), nil
	}
	var latest time.Time
	for _, r := range rows {
		v, err := r.Value(clockColumn)
		if err != nil {
			return time.Time{}, err
		}
		t, ok := v.(time.Time)
		if !ok {
			return time.Time{}, fmt.Errorf("database clock: got %T", v)
		}
		if t = t.UTC(); t.After(latest) {
			latest = t
		}
	}
	return latest, nil // zero when nothing was locked
}

// lockProducts reads products and, on MySQL, locks their rows until the
// transaction ends, in ascending ID order. It also returns the database
// clock once every lock is held: a transaction may wait long for a hot
// product's lock, and expiry must be judged when it decides, not when it
// started waiting. A missing product is not an error; it is left out.
func (s *Service) lockProducts(ctx context.Context, tx *ent.Tx, ids ...int) ([]*ent.Product, time.Time, error) {
	q := tx.Product.Query().Where(product.IDIn(ids...)).Order(product.ByID())
	if s.dialect == dialect.MySQL {
		q.ForUpdate()
		q.Modify(s.withClock)
	}
	ps, err := q.All(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	now, err := lockedClock(s, ps)
	return ps, now, err
}

// lockProduct is lockProducts for one product, which must exist.
func (s *Service) lockProduct(ctx context.Context, tx *ent.Tx, id int) (*ent.Product, time.Time, error) {
	ps, now, err := s.lockProducts(ctx, tx, id)
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(ps) == 0 {
		return nil, time.Time{}, fmt.Errorf("%w: no product with ID %d", ErrNotFound, id)
	}
	return ps[0], now, nil
}

// lockHolds reads holds by ID and, on MySQL, locks them in ascending ID
// order, returning the database clock once every lock is held. Missing
// holds are left out. extra adds columns to the read (see orderBatch).
func (s *Service) lockHolds(ctx context.Context, tx *ent.Tx, ids []uuid.UUID, extra ...func(*sql.Selector)) ([]*ent.Hold, time.Time, error) {
	q := tx.Hold.Query().Where(hold.IDIn(sortedIDs(ids)...)).Order(hold.ByID())
	if s.dialect == dialect.MySQL {
		q.ForUpdate()
		q.Modify(s.withClock)
	}
	q.Modify(extra...)
	hs, err := q.All(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	now, err := lockedClock(s, hs)
	return hs, now, err
}

// lockOrders reads orders by ID and, on MySQL, locks them in ascending ID
// order. Missing orders are left out.
func (s *Service) lockOrders(ctx context.Context, tx *ent.Tx, ids []uuid.UUID) ([]*ent.Order, error) {
	q := tx.Order.Query().Where(order.IDIn(sortedIDs(ids)...)).Order(order.ByID())
	if s.dialect == dialect.MySQL {
		q.ForUpdate()
	}
	return q.All(ctx)
}

// sortedIDs returns the distinct IDs in ascending order (the lock order).
func sortedIDs(ids []uuid.UUID) []uuid.UUID {
	out := slices.Clone(ids)
	slices.SortFunc(out, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(out)
}

// Sellable is what a new hold may take.
func Sellable(p *ent.Product) int { return p.StockAvailable - p.StockReserved }

// releaseOverdue expires the product's ACTIVE holds past expires_at and
// cancels its PENDING_PAYMENT orders past payment_due_at (releasing their
// holds), at most limit of each. The caller holds the product's lock; p's
// counters are updated in place. It returns how many holds it expired and
// which orders it cancelled.
//
// Candidates are found with a plain read, then locked by primary key in the
// package's lock order (holds, then orders) and re-checked, so a row a
// concurrent createOrder or payment just moved on is left alone.
//
// keep lists orders the caller has already decided in this transaction
// but not written yet (a payment batch): they are left alone, as their
// stored status is no longer theirs.
//
// Each cancelled order's order.cancelled event (payment_timeout) goes to
// ob, which the caller flushes.
func (s *Service) releaseOverdue(ctx context.Context, tx *ent.Tx, ob *outbox, p *ent.Product, now time.Time, limit int, keep ...uuid.UUID) (holds int, cancelled []uuid.UUID, err error) {
	expiring, err := tx.Hold.Query().
		Where(hold.ProductID(p.ID), hold.StatusEQ(hold.StatusACTIVE), hold.ExpiresAtLTE(now)).
		Order(hold.ByExpiresAt()).Limit(limit).IDs(ctx)
	if err != nil {
		return 0, nil, err
	}
	var due []*ent.Order
	if err := tx.Order.Query().
		Where(order.ProductID(p.ID), order.StatusEQ(order.StatusPENDING_PAYMENT), order.PaymentDueAtLTE(now), order.IDNotIn(keep...)).
		Order(order.ByPaymentDueAt()).Limit(limit).
		Select(order.FieldID, order.FieldHoldID).Scan(ctx, &due); err != nil {
		return 0, nil, err
	}
	if len(expiring)+len(due) == 0 {
		return 0, nil, nil
	}
	holdIDs := slices.Clone(expiring)
	orderIDs := make([]uuid.UUID, 0, len(due))
	for _, o := range due {
		holdIDs = append(holdIDs, o.HoldID)
		orderIDs = append(orderIDs, o.ID)
	}
	hs, _, err := s.lockHolds(ctx, tx, holdIDs)
	if err != nil {
		return 0, nil, err
	}
	os, err := s.lockOrders(ctx, tx, orderIDs)
	if err != nil {
		return 0, nil, err
	}
	freed := 0
	var expired, released []uuid.UUID
	for _, h := range hs {
		if h.ProductID == p.ID && h.Status == hold.StatusACTIVE && !h.ExpiresAt.After(now) {
			expired = append(expired, h.ID)
			freed += h.Qty
		}
	}
	for _, o := range os {
		if o.ProductID == p.ID && o.Status == order.StatusPENDING_PAYMENT && !o.PaymentDueAt.After(now) {
			cancelled = append(cancelled, o.ID)
			released = append(released, o.HoldID)
			freed += o.Qty
			o.Status, o.UpdatedAt = order.StatusCANCELLED, now
			ob.moved(o, ReasonPaymentTimeout, now)
		}
	}
	if len(expired) > 0 {
		if err := tx.Hold.Update().Where(hold.IDIn(expired...)).
			SetStatus(hold.StatusEXPIRED).SetUpdatedAt(now).Exec(ctx); err != nil {
			return 0, nil, err
		}
	}
	if len(cancelled) > 0 {
		if err := tx.Hold.Update().Where(hold.IDIn(released...)).
			SetStatus(hold.StatusRELEASED).SetUpdatedAt(now).Exec(ctx); err != nil {
			return 0, nil, err
		}
		if err := tx.Order.Update().Where(order.IDIn(cancelled...)).
			SetStatus(order.StatusCANCELLED).AddEventSeq(1).SetUpdatedAt(now).Exec(ctx); err != nil {
			return 0, nil, err
		}
		n := len(cancelled)
		afterCommit(tx, func() { s.observer.OrdersReached(string(order.StatusCANCELLED), n) })
	}
	if freed > 0 {
		if err := tx.Product.Update().Where(product.ID(p.ID)).AddStockReserved(-freed).SetUpdatedAt(now).Exec(ctx); err != nil {
			return 0, nil, err
		}
		p.StockReserved -= freed
		p.UpdatedAt = now
	}
	return len(expired), cancelled, nil
}

// releaseOverdueNow is releaseOverdue for a transaction that writes no
// other order events: it flushes the cancelled orders' events itself.
func (s *Service) releaseOverdueNow(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time) error {
	ob := s.newOutbox(tx)
	if _, _, err := s.releaseOverdue(ctx, tx, ob, p, now, s.cfg.SweepBatch); err != nil {
		return err
	}
	return ob.flush(ctx)
}
