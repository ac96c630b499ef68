package graph

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"flashsale/stock"
)

// Cursors are opaque to clients: base64url of "product:<id>", so the
// encoding can change without breaking anyone who treats them as tokens.
const cursorPrefix = "product:"

func encodeCursor(id int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.Itoa(id)))
}

func decodeCursor(c string) (int, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if s, ok := strings.CutPrefix(string(b), cursorPrefix); ok {
			if id, err := strconv.Atoi(s); err == nil && id > 0 && strconv.Itoa(id) == s {
				return id, nil
			}
		}
	}
	return 0, stock.InvalidInput("malformed cursor %q", c)
}

// Hold and order cursors are base64url of "id:<uuid>": UUIDv7 IDs are in
// creation order, so a page newest first continues below the last ID.
const idCursorPrefix = "id:"

func encodeIDCursor(id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(idCursorPrefix + id.String()))
}

func decodeIDCursor(c string) (uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if s, ok := strings.CutPrefix(string(b), idCursorPrefix); ok {
			if id, err := uuid.Parse(s); err == nil && id.String() == s {
				return id, nil
			}
		}
	}
	return uuid.Nil, stock.InvalidInput("malformed cursor %q", c)
}

// pageArgs reads a newest-first page's first (default 20) and after.
func pageArgs(first *int, after *string) (int, uuid.UUID, error) {
	n := 20
	if first != nil {
		n = *first
	}
	if after == nil {
		return n, uuid.Nil, nil
	}
	id, err := decodeIDCursor(*after)
	return n, id, err
}
