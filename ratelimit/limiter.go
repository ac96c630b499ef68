package ratelimit

import (
	"math"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// DefaultMaxKeys is how many keys [New] holds at most.
const DefaultMaxKeys = 100_000

// pruneBatch is how many least recently used keys one Allow looks at for
// dropping: more than the one key a call may add, so idle keys drain away.
const pruneBatch = 2

// Limiter holds one token bucket per key: burst Events, refilled at
// Events/Per, so a bucket left alone for Per is full again.
//
// Why these libraries: golang.org/x/time/rate is the Go team's token bucket
// (exact refill arithmetic, and an explicit "now" so tests need no sleeping);
// github.com/hashicorp/golang-lru/v2 is a maintained, generic LRU; both were
// already in the module graph. Its simplelru package bounds memory under a
// flood of distinct keys (client IPs are chosen by whoever connects): at most
// maxKeys buckets, about 250 bytes each. Its expirable package was tried and
// not used: it keeps 100 expiry maps that never shrink (10,000 keys held cost
// 1.4 to 4 KB each after a flood of 1,000,000), runs a goroutine per cache
// that cannot be stopped, and its Get does not renew an entry's lifetime.
//
// Idle keys expire here instead: each Allow drops the least recently used
// keys whose buckets are full again (unused for at least a period, by l's
// clock), as a dropped key only ever gives its caller a fresh, full bucket,
// which is then exactly what it had. Eviction for capacity (the least recently
// used key goes when maxKeys are held) can reset a bucket that was not yet
// full; that takes more than maxKeys distinct callers within about one period,
// and it errs on the side of letting a caller through, never refusing one
// wrongly.
//
// A Limiter is safe for concurrent use. A nil *Limiter, or one built from an
// off Rate, allows everything and holds no keys.
type Limiter struct {
	rate  Rate
	limit rate.Limit
	now   func() time.Time // the buckets' clock; tests replace it

	// mu covers keys and the use of each bucket, so that concurrent first
	// requests of a key share one bucket and a bucket is never dropped
	// between being found and being drawn from.
	mu   sync.Mutex
	keys *simplelru.LRU[string, *rate.Limiter]
}

// New returns a Limiter for r holding at most [DefaultMaxKeys] keys.
func New(r Rate) *Limiter { return NewSized(r, DefaultMaxKeys) }

// NewSized returns a Limiter for r holding at most maxKeys keys
// (maxKeys <= 0: [DefaultMaxKeys]).
func NewSized(r Rate, maxKeys int) *Limiter {
	l := &Limiter{rate: r, now: time.Now}
	if r.Off() {
		return l
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	l.limit = rate.Limit(float64(r.Events) / r.Per.Seconds())
	l.keys, _ = simplelru.NewLRU[string, *rate.Limiter](maxKeys, nil) // errors only for size <= 0
	return l
}

// Rate is the rate l enforces.
func (l *Limiter) Rate() Rate {
	if l == nil {
		return Rate{}
	}
	return l.rate
}

// String is l's rate, e.g. "20/s" (or "off").
func (l *Limiter) String() string { return l.Rate().String() }

// Allow takes one token from key's bucket. When there is none it returns
// false and how long until one is back: the exact duration, always > 0 and at
// most Per/Events. It is not rounded; a Retry-After header wants it rounded
// up to whole seconds (at least 1).
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) { return l.AllowN(key, 1) }

// AllowN takes n tokens from key's bucket, all or none: an operation of n
// mutations is let through whole or refused whole. When the bucket holds
// fewer, it returns false and how long until it holds n (for n above the
// burst, which no wait can give, until the bucket is full).
func (l *Limiter) AllowN(key string, n int) (ok bool, retryAfter time.Duration) {
	if l == nil || l.keys == nil || n <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()

	l.prune(now)
	b, found := l.keys.Get(key) // marks key most recently used
	if !found {
		b = rate.NewLimiter(l.limit, l.rate.Events)
		l.keys.Add(key, b) // may evict the least recently used key
	}
	if b.AllowN(now, n) {
		return true, 0
	}
	// A refused AllowN takes nothing; the wait is the shortfall over the
	// refill rate. (Not ReserveN then Cancel: x/time/rate's cancels can
	// lose tokens.)
	missing := float64(min(n, l.rate.Events)) - b.TokensAt(now)
	wait := time.Duration(math.Ceil(missing * float64(l.rate.Per) / float64(l.rate.Events)))
	return false, max(wait, 1)
}

// Burst is the most tokens one bucket holds: the largest operation a
// caller can ever send at once.
func (l *Limiter) Burst() int {
	if l == nil {
		return 0
	}
	return l.rate.Events
}

// prune drops least recently used keys whose buckets are full at now: they
// are as good as absent. Called with l.mu held.
func (l *Limiter) prune(now time.Time) {
	full := float64(l.rate.Events)
	for range pruneBatch {
		_, b, ok := l.keys.GetOldest()
		if !ok || b.TokensAt(now) < full {
			return
		}
		l.keys.RemoveOldest()
	}
}

// Len is how many keys l holds. Keys whose buckets are full again are
// dropped only as later calls come, so with no traffic Len stays put.
func (l *Limiter) Len() int {
	if l == nil || l.keys == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys.Len()
}
