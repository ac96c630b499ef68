package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"entgo.io/ent/dialect/sql"

	"flashsale/ent"
	"flashsale/ent/operatoraction"
	"flashsale/ent/predicate"
)

// Log reads the operator action log.
type Log struct{ client *ent.Client }

// NewLog returns the log kept in client's database.
func NewLog(client *ent.Client) *Log { return &Log{client: client} }

// Position is where a page of the log ends: an action's time and ID. The
// zero Position is the newest end.
type Position struct {
	At time.Time
	ID int
}

// PositionOf is the position of a.
func PositionOf(a *ent.OperatorAction) Position { return Position{At: a.At, ID: a.ID} }

// String is p as a cursor's text: "<unix microseconds>.<id>".
func (p Position) String() string {
	return strconv.FormatInt(p.At.UnixMicro(), 10) + "." + strconv.Itoa(p.ID)
}

// ErrBadPosition is text that is not a Position's String.
var ErrBadPosition = errors.New("malformed position in the operator action log")

// ParsePosition reads a Position's String, and nothing else.
func ParsePosition(s string) (Position, error) {
	us, id, ok := strings.Cut(s, ".")
	if ok {
		at, err1 := strconv.ParseInt(us, 10, 64)
		n, err2 := strconv.Atoi(id)
		p := Position{At: time.UnixMicro(at).UTC(), ID: n}
		if err1 == nil && err2 == nil && n > 0 && p.String() == s {
			return p, nil
		}
	}
	return Position{}, ErrBadPosition
}

// Page returns up to first actions older than after (the zero Position:
// from the newest), newest first, and whether more follow. Newest is
// latest at, then highest ID: IDs alone are not in time order on a Galera
// cluster, whose nodes hand out interleaved auto-increment values. The
// caller checks first (1..100 in the API).
func (l *Log) Page(ctx context.Context, first int, after Position) ([]*ent.OperatorAction, bool, error) {
	if first < 1 {
		return nil, false, fmt.Errorf("list operator actions: first must be at least 1, got %d", first)
	}
	q := l.client.OperatorAction.Query()
	if !after.At.IsZero() || after.ID != 0 {
		q.Where(olderThan(after))
	}
	as, err := q.Order(operatoraction.ByAt(sql.OrderDesc()), operatoraction.ByID(sql.OrderDesc())).
		Limit(first + 1).All(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("list operator actions: %w", err)
	}
	if len(as) > first {
		return as[:first], true, nil
	}
	return as, false, nil
}

// olderThan: before p in newest-first order, as two ranges of the (at, id)
// index.
func olderThan(p Position) predicate.OperatorAction {
	return operatoraction.Or(
		operatoraction.AtLT(p.At),
		operatoraction.And(operatoraction.AtEQ(p.At), operatoraction.IDLT(p.ID)),
	)
}
