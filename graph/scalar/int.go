package scalar

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/99designs/gqlgen/graphql"
)

// ErrInvalid marks a value a scalar refused: the caller's input, mapped to
// BAD_USER_INPUT by graph.ErrorPresenter.
var ErrInvalid = errors.New("invalid value")

// MarshalInt writes a GraphQL Int.
func MarshalInt(i int) graphql.Marshaler { return graphql.MarshalInt(i) }

// UnmarshalInt reads a GraphQL Int strictly, as the spec says: a whole
// number in the signed 32-bit range. gqlgen's default also takes strings
// ("5") and wider numbers; a quantity sent as a string is a client bug
// worth a clear BAD_USER_INPUT rather than a silent guess.
func UnmarshalInt(v any) (int, error) {
	var n int64
	switch v := v.(type) {
	case int:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case json.Number:
		var err error
		if n, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return 0, fmt.Errorf("%w: Int must be a whole number from %d to %d, got %s", ErrInvalid, math.MinInt32, math.MaxInt32, v)
		}
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > math.MaxInt32 {
			return 0, fmt.Errorf("%w: Int must be a whole number from %d to %d, got %v", ErrInvalid, math.MinInt32, math.MaxInt32, v)
		}
		n = int64(v)
	default:
		return 0, fmt.Errorf("%w: Int must be a number, got %T", ErrInvalid, v)
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: Int must be a whole number from %d to %d, got %d", ErrInvalid, math.MinInt32, math.MaxInt32, n)
	}
	return int(n), nil
}
