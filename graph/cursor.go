package graph

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/graph/model"
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

// pageArgs reads a page's first (default 20) and after, the ID its page
// continues from (below it newest first, above it oldest first).
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

// holdConnection is a page of holds as a connection.
func holdConnection(hs []*ent.Hold, more bool) *model.HoldConnection {
	conn := &model.HoldConnection{Edges: make([]*model.HoldEdge, len(hs)), PageInfo: &model.PageInfo{HasNextPage: more}}
	for i, h := range hs {
		conn.Edges[i] = &model.HoldEdge{Cursor: encodeIDCursor(h.ID), Node: h}
	}
	if len(hs) > 0 {
		conn.PageInfo.EndCursor = &conn.Edges[len(hs)-1].Cursor
	}
	return conn
}

// orderConnection is a page of orders as a connection.
func orderConnection(os []*ent.Order, more bool) *model.OrderConnection {
	conn := &model.OrderConnection{Edges: make([]*model.OrderEdge, len(os)), PageInfo: &model.PageInfo{HasNextPage: more}}
	for i, o := range os {
		conn.Edges[i] = &model.OrderEdge{Cursor: encodeIDCursor(o.ID), Node: o}
	}
	if len(os) > 0 {
		conn.PageInfo.EndCursor = &conn.Edges[len(os)-1].Cursor
	}
	return conn
}
