package stock

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"flashsale/database"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The domain's error kinds. Callers test them with errors.Is; the message of a
// wrapped kind is written for the API's users and may be shown to them.
// graph.ErrorPresenter and the webhook handler map them to the contract's
// codes (docs/api.md).
var (
	ErrInvalidInput      = errors.New("invalid input")
	ErrNotFound          = errors.New("not found")
	ErrInsufficientStock = errors.New("insufficient stock")
	ErrHoldExpired       = errors.New("hold expired")
	ErrHoldNotActive     = errors.New("hold not active")
	// ErrKeyReused: an idempotency key seen before with other content: a
	// payment's with another order or status, a hold's with another
	// product or qty.
	ErrKeyReused = errors.New("idempotency key reused with different content")
	// ErrPurchaseLimit: the hold would take the customer past the product's maxPerCustomer.
	ErrPurchaseLimit = errors.New("purchase limit exceeded")
	// ErrSaleNotStarted: createHold before the product's saleStartsAt (see SaleNotStartedError).
	ErrSaleNotStarted = errors.New("sale not started")
	// ErrSaleEnded: createHold at or after the product's saleEndsAt.
	ErrSaleEnded = errors.New("sale ended")
	// ErrAmountMismatch: a payment's amount is not its order's (see
	// AmountMismatchError). Nothing was changed.
	ErrAmountMismatch = errors.New("payment amount does not match the order")
	// ErrUnavailable: the database could not be reached or is overloaded.
	// Nothing was changed and the caller may retry.
	ErrUnavailable = errors.New("database unavailable")
)

var domainErrors = []error{ErrInvalidInput, ErrNotFound, ErrInsufficientStock, ErrHoldExpired, ErrHoldNotActive,
	ErrKeyReused, ErrPurchaseLimit, ErrSaleNotStarted, ErrSaleEnded, ErrAmountMismatch, ErrUnavailable,
	ErrQueueRequired, ErrNotAdmitted}

// SaleNotStartedError is ErrSaleNotStarted with the time the sale opens.
type SaleNotStartedError struct{ StartsAt time.Time }

func (e *SaleNotStartedError) Error() string {
	return fmt.Sprintf("%v: the sale opens at %s", ErrSaleNotStarted, e.StartsAt.UTC().Format(time.RFC3339Nano))
}

func (e *SaleNotStartedError) Unwrap() error { return ErrSaleNotStarted }

// AmountMismatchError is ErrAmountMismatch: what the provider charged for
// an order, and the order's amount.
type AmountMismatchError struct {
	OrderID         uuid.UUID
	Charged, Amount int64
}

func (e *AmountMismatchError) Error() string {
	return fmt.Sprintf("%v: amount_cents %d, but order %s is for %d", ErrAmountMismatch, e.Charged, e.OrderID, e.Amount)
}

func (e *AmountMismatchError) Unwrap() error { return ErrAmountMismatch }

// ShortError is ErrInsufficientStock for a hold: what it asked for and
// what was sellable. Its message is put together without fmt: once a
// product sells out, refusals are most of what it answers.
type ShortError struct {
	Requested int
	Sellable  int  // 0 when SoldOut
	SoldOut   bool // refused on this process's sold-out mark, without a database round trip
}

func (e *ShortError) Error() string {
	b := make([]byte, 0, 64)
	b = append(b, "insufficient stock: "...)
	b = strconv.AppendInt(b, int64(e.Requested), 10)
	if e.SoldOut {
		return string(append(b, " requested, product is sold out"...))
	}
	b = append(b, " requested, "...)
	b = strconv.AppendInt(b, int64(e.Sellable), 10)
	return string(append(b, " sellable"...))
}

func (e *ShortError) Unwrap() error { return ErrInsufficientStock }

// InvalidInput returns an ErrInvalidInput with a message for the caller.
func InvalidInput(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, args...)...)
}

// retryable reports whether a transaction failed only because it lost a race
// for a lock, so running it again from the start is safe and likely to work.
func retryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		// A Galera node not serving refused the statement, and package
		// database replaces the connection: the retry runs elsewhere.
		return me.Number == database.MySQLDeadlock || me.Number == database.MySQLLockWaitTimeout ||
			me.Number == database.MySQLWSREPNotReady
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	return false
}

// unavailable reports whether err means the database could not be used at all
// (down, unreachable, out of connections, or too slow for the request's
// deadline). A caller that went away (context.Canceled) lands here too: its
// transaction rolled back, so "nothing changed, retry is safe" holds.
func unavailable(err error) bool {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case database.MySQLTooManyConns, database.MySQLServerShutdown, database.MySQLLockWaitTimeout,
			database.MySQLDeadlock, database.MySQLWSREPNotReady:
			return true
		}
	}
	return retryable(err)
}

// classify turns a storage error into a domain error: domain kinds pass
// through, outages become ErrUnavailable, anything else is returned wrapped
// and is an internal error to the caller.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, k := range domainErrors {
		if errors.Is(err, k) {
			return err
		}
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w (%w)", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Retryable reports whether a transaction failed only because it lost a
// race for a lock (a deadlock, a lock wait timeout, a Galera certification
// conflict): running it again is safe and likely to work.
func Retryable(err error) bool { return retryable(err) }

// Classify is classify for the packages beside stock that use the same
// database (package events): domain kinds pass through, outages become
// ErrUnavailable, anything else is wrapped with op.
func Classify(op string, err error) error { return classify(op, err) }
