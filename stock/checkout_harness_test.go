package stock_test

// Helpers of the checkout tests (see checkout_test.go): the starting state
// the serial-order checker reads (coSnapshot, coStoredKeys), firing calls
// concurrently (coFire), waiting without hanging (coWait), sweepers running
// in a loop (coSweepers), the database clock's offset (coClockOffset), a
// summary of the answers (coOutcomes), and the payment statuses' short
// names.

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"flashsale/stock"
)

const (
	coS = stock.PaymentSuccess
	coF = stock.PaymentFailure
)

// coSnapshot reads the orders and stored keys the model starts from.
func coSnapshot(e *env, labels map[uuid.UUID]string) (map[uuid.UUID]coOrder, map[string]coKey) {
	e.t.Helper()
	orders := map[uuid.UUID]coOrder{}
	for id, l := range labels {
		o := e.getOrder(id)
		orders[id] = coOrder{label: l, product: o.ProductID, holdID: o.HoldID, qty: o.Qty,
			status: o.Status, holdSt: e.getHold(o.HoldID).Status}
	}
	return orders, coStoredKeys(e)
}

// coStoredKeys reads every payment event stored so far.
func coStoredKeys(e *env) map[string]coKey {
	e.t.Helper()
	evs, err := e.db.Ent.PaymentEvent.Query().All(e.ctx)
	if err != nil {
		e.t.Fatalf("payment events: %v", err)
	}
	keys := map[string]coKey{}
	for _, ev := range evs {
		keys[ev.IdempotencyKey] = coKey{order: ev.OrderID, status: string(ev.Status), outcome: ev.Outcome}
	}
	return keys
}

// coFire runs the calls concurrently: those without a time all at once
// behind a start barrier, the others each at its time.
func coFire(e *env, calls []*coCall) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() {
			<-start
			if !c.at.IsZero() {
				time.Sleep(time.Until(c.at))
			}
			c.res, c.err = c.svc.ApplyPayment(e.ctx, c.pay)
		})
	}
	close(start)
	coWait(e.t, &wg, "payment calls")
}

// coWait waits for wg, failing the test if that takes a minute (a hang).
func coWait(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s still running after a minute: something hangs", what)
	}
}

// coSweepers runs Sweep in a loop on each service until stop is closed and
// returns what they released in total once they have stopped.
func coSweepers(e *env, svcs []*stock.Service, stop <-chan struct{}) func() stock.SweepResult {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total stock.SweepResult
	)
	for i, svc := range svcs {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := svc.Sweep(e.ctx)
				if err != nil {
					e.t.Errorf("sweeper %d: %v", i, err)
					return
				}
				mu.Lock()
				total.HoldsExpired += r.HoldsExpired
				total.OrdersCancelled += r.OrdersCancelled
				mu.Unlock()
				time.Sleep(time.Duration(1+rand.N(3)) * time.Millisecond)
			}
		})
	}
	return func() stock.SweepResult {
		coWait(e.t, &wg, "sweepers")
		return total
	}
}

// coClockOffset is the database clock minus this process's, to schedule
// calls at database times.
func coClockOffset(e *env) time.Duration {
	before := time.Now()
	db := e.dbNow()
	return db.Sub(before.Add(time.Since(before) / 2))
}

// coOutcomes counts the answers, for the log.
func coOutcomes(calls []*coCall) string {
	n := map[string]int{}
	for _, c := range calls {
		switch {
		case c.err != nil:
			n[coErrName(c.err)]++
		case c.res.Duplicate:
			n["duplicate"]++
		default:
			n[string(c.res.Outcome)]++
		}
	}
	var parts []string
	for _, k := range coSortedKeys(n) {
		parts = append(parts, fmt.Sprintf("%s %d", k, n[k]))
	}
	return strings.Join(parts, ", ")
}
