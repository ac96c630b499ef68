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
	edges, info := page(hs, more, func(h *ent.Hold) uuid.UUID { return h.ID },
		func(c string, h *ent.Hold) *model.HoldEdge { return &model.HoldEdge{Cursor: c, Node: h} })
	return &model.HoldConnection{Edges: edges, PageInfo: info}
}

// orderConnection is a page of orders as a connection.
func orderConnection(os []*ent.Order, more bool) *model.OrderConnection {
	edges, info := page(os, more, func(o *ent.Order) uuid.UUID { return o.ID },
		func(c string, o *ent.Order) *model.OrderEdge { return &model.OrderEdge{Cursor: c, Node: o} })
	return &model.OrderConnection{Edges: edges, PageInfo: info}
}

// page makes a page of nodes with UUIDv7 IDs into edges (cursor and node)
// and its PageInfo.
func page[N, E any](nodes []N, more bool, id func(N) uuid.UUID, edge func(cursor string, n N) E) ([]E, *model.PageInfo) {
	edges := make([]E, len(nodes))
	info := &model.PageInfo{HasNextPage: more}
	for i, n := range nodes {
		c := encodeIDCursor(id(n))
		edges[i] = edge(c, n)
		if i == len(nodes)-1 {
			info.EndCursor = &c
		}
	}
	return edges, info
}
