package stock

import (
	"context"

	"flashsale/ent"
)

// Observer is told what committed stock transactions did, for metrics. Its
// methods are called after the commit, never for work that rolled back, and
// must be cheap and safe for concurrent use. *metrics.Metrics is one.
type Observer interface {
	HoldBatch(size int)                 // one hold group commit of size calls
	OrdersReached(status string, n int) // n orders moved to status
	Released(kind string, n int)        // the sweeper released n of kind "hold" or "order"
	EventsWritten(typ string, n int)    // n order events of type typ written
	QueueJoined(n int)                  // n waiting-room tickets made
	QueueAdmitted(n int)                // n waiting-room tickets let in
}

type noObserver struct{}

func (noObserver) HoldBatch(int)             {}
func (noObserver) OrdersReached(string, int) {}
func (noObserver) Released(string, int)      {}
func (noObserver) EventsWritten(string, int) {}
func (noObserver) QueueJoined(int)           {}
func (noObserver) QueueAdmitted(int)         {}

// Observe sets the Observer (nil: none). Call it before serving.
func (s *Service) Observe(o Observer) {
	if o == nil {
		o = noObserver{}
	}
	s.observer = o
}

// afterCommit runs f once tx has committed (never if it rolls back, or
// for an attempt that is retried).
func afterCommit(tx *ent.Tx, f func()) {
	tx.OnCommit(func(next ent.Committer) ent.Committer {
		return ent.CommitFunc(func(ctx context.Context, tx *ent.Tx) error {
			err := next.Commit(ctx, tx)
			if err == nil {
				f()
			}
			return err
		})
	})
}
