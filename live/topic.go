package live

import (
	"sync"
	"sync/atomic"
	"time"

	"flashsale/ent"
)

// topic is one subscribed product: its latest known state, which every
// subscriber of the product watches.
type topic struct {
	id   int
	refs int // subscriptions; guarded by Hub.mu

	cur atomic.Pointer[state] // read without locks by subscribers

	mu sync.Mutex // serialises offers; guards contradicted
	// contradicted is when the first read began that, though it began after
	// the current state was learned, returned an older state (see offer).
	contradicted time.Time
}

// state is one state of a product. It never changes once stored; a newer
// state replaces it and closes its changed channel, waking every subscriber
// waiting on it (the broadcast).
type state struct {
	p       *ent.Product // nil until the first read; shared, read-only
	learned time.Time    // when it was published, or when the read that returned it began
	changed chan struct{}
}

func newTopic(id int) *topic {
	t := &topic{id: id}
	t.cur.Store(&state{changed: make(chan struct{})})
	return t
}

type origin int

const (
	fromPublish origin = iota // this process just committed it
	fromRead                  // a read of the database that began at the time given
)

// offer makes p the topic's state if it is newer than the one known. at is
// when p was published, or when the read that returned it began. If p
// replaced the known state, offer returns that state's changed channel: the
// caller closes it, which wakes the subscribers.
//
// updated_at orders a product's states (it is the database clock under the
// row lock), so a state with an older updated_at is ignored: a poll that
// began before a Publish and returns after it must not undo it. Two
// refinements:
//
//   - A read that began after the known state was learned and returns the
//     same updated_at with other numbers shows the database's current state
//     (a coarse or equal clock); it wins. A Publish with the same updated_at
//     wins too (this process just committed it).
//   - If reads that began after the known state was learned keep returning
//     an older state for grace, the database is right and the ordering
//     premise was broken (e.g. clocks of different database nodes): the
//     read wins, so subscribers are never stuck on a wrong state.
func (t *topic) offer(p *ent.Product, at time.Time, o origin, grace time.Duration) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.cur.Load()
	if k := cur.p; k != nil {
		if same(p, k) {
			if o == fromRead && !at.Before(cur.learned) {
				t.contradicted = time.Time{}
			}
			return nil
		}
		switch c := stamp(p.UpdatedAt).Compare(stamp(k.UpdatedAt)); {
		case c > 0: // newer
		case o == fromPublish:
			if c < 0 {
				return nil // published out of order; a newer state is known
			}
		case at.Before(cur.learned):
			return nil // the read may have begun before the known state was committed
		case c == 0:
		default: // an older state, read after the known one was learned
			if t.contradicted.IsZero() {
				t.contradicted = at
			}
			if at.Sub(t.contradicted) < grace {
				return nil
			}
		}
	}
	t.contradicted = time.Time{}
	t.cur.Store(&state{p: p, learned: at, changed: make(chan struct{})})
	return cur.changed
}

// stamp is t as the database keeps it (datetime(6)): a state published
// with a finer updated_at is the same state when read back.
func stamp(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

func eqTime(a, b time.Time) bool { return stamp(a).Equal(stamp(b)) }

// same reports whether a and b are one state of a product, as far as a
// subscriber can tell.
func same(a, b *ent.Product) bool {
	return eqTime(a.UpdatedAt, b.UpdatedAt) &&
		a.StockAvailable == b.StockAvailable &&
		a.StockReserved == b.StockReserved &&
		a.StockReceived == b.StockReceived &&
		a.Name == b.Name &&
		a.PriceCents == b.PriceCents &&
		eqPtr(a.MaxPerCustomer, b.MaxPerCustomer, func(x, y int) bool { return x == y }) &&
		eqPtr(a.SaleStartsAt, b.SaleStartsAt, eqTime) &&
		eqPtr(a.SaleEndsAt, b.SaleEndsAt, eqTime) &&
		eqPtr(a.QueueAdmitPerMinute, b.QueueAdmitPerMinute, func(x, y int) bool { return x == y }) &&
		a.QueueServing == b.QueueServing && a.QueueWaiting == b.QueueWaiting && a.QueueAdmitted == b.QueueAdmitted
}

func eqPtr[T any](a, b *T, eq func(T, T) bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return eq(*a, *b)
}
