package graph

import (
	"encoding/base64"
	"strconv"
	"strings"

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
