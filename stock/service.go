// Package stock is the one place that changes stock. Every operation that
// moves a product's counters (holds, orders, payments, expiry, new products)
// is a method of Service and runs as one database transaction that first
// locks the product row (SELECT ... FOR UPDATE on MySQL), then the hold or
// order rows it changes. That fixed lock order (product, then hold, then
// order) means two stock transactions never deadlock each other; the bounded
// retry in tx covers the lock waits and deadlocks MySQL may still report.
//
// GraphQL resolvers (package graph), the payment webhook (package webhook)
// and the expiry sweeper all call this package; none of them writes stock.
package stock

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"entgo.io/ent/dialect"
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

	queues sync.Map // product ID → *holdQueue (group commit, batch.go)
	cache  productCache
}

// New returns a Service over client; d is dialect.MySQL or dialect.SQLite.
func New(client *ent.Client, d string, cfg Config, log *slog.Logger) *Service {
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = 500
	}
	return &Service{client: client, dialect: d, cfg: cfg, log: log, writeSem: make(chan struct{}, 1)}
}

const maxAttempts = 5

// tx runs fn in one transaction, retrying it from the start when MySQL
// reports a deadlock or lock wait timeout (nothing of a failed attempt is
// committed, so a retry is safe). Errors come back classified.
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
		// Jittered backoff so the losers of a deadlock do not collide again.
		backoff := time.Duration(attempt*attempt)*5*time.Millisecond + rand.N(10*time.Millisecond)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	return classify(op, err)
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
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// lockProduct reads a product and, on MySQL, locks its row until the
// transaction ends. Every stock transaction calls it first.
//
// It also returns the database clock read once the lock is held: a
// transaction may wait long for a hot product's lock, and expiry must be
// judged when it decides, not when it started waiting.
func (s *Service) lockProduct(ctx context.Context, tx *ent.Tx, id int) (*ent.Product, time.Time, error) {
	q := tx.Product.Query().Where(product.ID(id))
	if s.dialect == dialect.MySQL {
		q = q.ForUpdate()
	}
	p, err := q.Only(ctx)
	if ent.IsNotFound(err) {
		return nil, time.Time{}, fmt.Errorf("%w: no product with ID %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	now, err := s.now(ctx, tx)
	return p, now, err
}

// lockHold and lockOrder add FOR UPDATE on MySQL; SQLite rejects it and
// needs none, since its write transactions are serialized.
func (s *Service) lockHold(q *ent.HoldQuery) *ent.HoldQuery {
	if s.dialect == dialect.MySQL {
		q = q.ForUpdate()
	}
	return q
}

func (s *Service) lockOrder(q *ent.OrderQuery) *ent.OrderQuery {
	if s.dialect == dialect.MySQL {
		q = q.ForUpdate()
	}
	return q
}

// Sellable is what a new hold may take.
func Sellable(p *ent.Product) int { return p.StockAvailable - p.StockReserved }

// releaseOverdue expires the product's ACTIVE holds past expires_at and
// cancels its PENDING_PAYMENT orders past payment_due_at, at most
// limit of each. The caller holds the product's lock; p's counters are
// updated in place. It returns how many holds and orders it released.
func (s *Service) releaseOverdue(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time, limit int) (holds, orders int, err error) {
	hs, err := s.lockHold(tx.Hold.Query().
		Where(hold.ProductID(p.ID), hold.StatusEQ(hold.StatusACTIVE), hold.ExpiresAtLTE(now)).
		Order(hold.ByExpiresAt()).
		Limit(limit)).
		All(ctx)
	if err != nil {
		return 0, 0, err
	}
	freed := 0
	if len(hs) > 0 {
		ids := make([]uuid.UUID, 0, len(hs))
		for _, h := range hs {
			ids = append(ids, h.ID)
			freed += h.Qty
		}
		if _, err := tx.Hold.Update().Where(hold.IDIn(ids...), hold.StatusEQ(hold.StatusACTIVE)).
			SetStatus(hold.StatusEXPIRED).SetUpdatedAt(now).Save(ctx); err != nil {
			return 0, 0, err
		}
	}
	os, err := s.lockOrder(tx.Order.Query().
		Where(order.ProductID(p.ID), order.StatusEQ(order.StatusPENDING_PAYMENT), order.PaymentDueAtLTE(now)).
		Order(order.ByPaymentDueAt()).
		Limit(limit)).
		All(ctx)
	if err != nil {
		return 0, 0, err
	}
	if len(os) > 0 {
		oids := make([]uuid.UUID, 0, len(os))
		hids := make([]uuid.UUID, 0, len(os))
		for _, o := range os {
			oids = append(oids, o.ID)
			hids = append(hids, o.HoldID)
			freed += o.Qty
		}
		if _, err := tx.Order.Update().Where(order.IDIn(oids...), order.StatusEQ(order.StatusPENDING_PAYMENT)).
			SetStatus(order.StatusCANCELLED).SetUpdatedAt(now).Save(ctx); err != nil {
			return 0, 0, err
		}
		if _, err := tx.Hold.Update().Where(hold.IDIn(hids...)).
			SetStatus(hold.StatusRELEASED).SetUpdatedAt(now).Save(ctx); err != nil {
			return 0, 0, err
		}
	}
	if freed > 0 {
		if err := tx.Product.UpdateOneID(p.ID).AddStockReserved(-freed).SetUpdatedAt(now).Exec(ctx); err != nil {
			return 0, 0, err
		}
		p.StockReserved -= freed
		p.UpdatedAt = now
	}
	return len(hs), len(os), nil
}
