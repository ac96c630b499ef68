package stock

import (
	"strconv"

	"github.com/google/uuid"
)

// ParseProductID parses a product ID as the API shows it: a positive
// integer in canonical form, so "+1" or "01" is not another name for "1".
func ParseProductID(s string) (int, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 || strconv.FormatInt(id, 10) != s {
		return 0, InvalidInput("malformed product ID %q", truncate(s))
	}
	return int(id), nil
}

// ParseID parses a hold or order ID (a UUID in canonical form).
func ParseID(kind, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, InvalidInput("malformed %s ID %q", kind, truncate(s))
	}
	return id, nil
}

// Truncate keeps echoed input short in error messages (64 characters).
func Truncate(s string) string { return truncate(s) }

// truncate keeps echoed input short in error messages.
func truncate(s string) string {
	const max = 64
	if r := []rune(s); len(r) > max {
		return string(r[:max]) + "…"
	}
	return s
}
