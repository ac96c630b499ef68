package graph

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"flashsale/audit"
	"flashsale/ent"
	"flashsale/events"
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
	if s, ok := cursorValue(c, cursorPrefix); ok {
		if id, err := strconv.Atoi(s); err == nil && id > 0 && strconv.Itoa(id) == s {
			return id, nil
		}
	}
	return 0, malformedCursor(c)
}

// cursorValue is what cursor c holds after prefix, if c is base64url of
// prefix and a value.
func cursorValue(c, prefix string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	return strings.CutPrefix(string(b), prefix)
}

func malformedCursor(c string) error { return stock.InvalidInput("malformed cursor %q", c) }

// Hold and order cursors are base64url of "id:<uuid>": UUIDv7 IDs are in
// creation order, so a page newest first continues below the last ID.
const idCursorPrefix = "id:"

func encodeIDCursor(id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(idCursorPrefix + id.String()))
}

func decodeIDCursor(c string) (uuid.UUID, error) {
	if s, ok := cursorValue(c, idCursorPrefix); ok {
		if id, err := uuid.Parse(s); err == nil && id.String() == s {
			return id, nil
		}
	}
	return uuid.Nil, malformedCursor(c)
}

// defaultPage is a connection's first when a caller gives null (the
// schema's default, first: Int = 20, covers leaving it out).
const defaultPage = 20

// pageSize is a connection's first.
func pageSize(first *int) int {
	if first == nil {
		return defaultPage
	}
	return *first
}

// pageArgs reads a page's first and after, the ID its page continues from
// (below it newest first, above it oldest first).
func pageArgs(first *int, after *string) (int, uuid.UUID, error) {
	n := pageSize(first)
	if after == nil {
		return n, uuid.Nil, nil
	}
	id, err := decodeIDCursor(*after)
	return n, id, err
}

// Order event cursors are base64url of "event:<id>": event IDs begin
// with their time, so a page oldest first continues above the last ID.
const eventCursorPrefix = "event:"

func encodeEventCursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(eventCursorPrefix + id))
}

// eventPageArgs is pageArgs for order events.
func eventPageArgs(first *int, after *string) (int, string, error) {
	n := pageSize(first)
	if after == nil {
		return n, "", nil
	}
	if s, ok := cursorValue(*after, eventCursorPrefix); ok {
		if _, err := events.ParseEventID(s); err == nil {
			return n, s, nil
		}
	}
	return 0, "", malformedCursor(*after)
}

// Operator action cursors are base64url of "action:<position>" (package
// audit's Position): the log is newest first by time, then ID.
const actionCursorPrefix = "action:"

func encodeActionCursor(a *ent.OperatorAction) string {
	return base64.RawURLEncoding.EncodeToString([]byte(actionCursorPrefix + audit.PositionOf(a).String()))
}

// actionPageArgs is pageArgs for the operator action log.
func actionPageArgs(first *int, after *string) (int, audit.Position, error) {
	n := pageSize(first)
	if after == nil {
		return n, audit.Position{}, nil
	}
	if s, ok := cursorValue(*after, actionCursorPrefix); ok {
		if p, err := audit.ParsePosition(s); err == nil {
			return n, p, nil
		}
	}
	return 0, audit.Position{}, malformedCursor(*after)
}

// operatorActionConnection is a page of operator actions as a connection.
func operatorActionConnection(as []*ent.OperatorAction, more bool) *model.OperatorActionConnection {
	edges, info := page(as, more, encodeActionCursor,
		func(c string, a *ent.OperatorAction) *model.OperatorActionEdge {
			return &model.OperatorActionEdge{Cursor: c, Node: a}
		})
	return &model.OperatorActionConnection{Edges: edges, PageInfo: info}
}

// holdConnection is a page of holds as a connection.
func holdConnection(hs []*ent.Hold, more bool) *model.HoldConnection {
	edges, info := page(hs, more, func(h *ent.Hold) string { return encodeIDCursor(h.ID) },
		func(c string, h *ent.Hold) *model.HoldEdge { return &model.HoldEdge{Cursor: c, Node: h} })
	return &model.HoldConnection{Edges: edges, PageInfo: info}
}

// orderConnection is a page of orders as a connection.
func orderConnection(os []*ent.Order, more bool) *model.OrderConnection {
	edges, info := page(os, more, func(o *ent.Order) string { return encodeIDCursor(o.ID) },
		func(c string, o *ent.Order) *model.OrderEdge { return &model.OrderEdge{Cursor: c, Node: o} })
	return &model.OrderConnection{Edges: edges, PageInfo: info}
}

// orderEventConnection is a page of order events as a connection.
func orderEventConnection(es []*ent.OrderEvent, more bool) *model.OrderEventConnection {
	edges, info := page(es, more, func(e *ent.OrderEvent) string { return encodeEventCursor(e.ID) },
		func(c string, e *ent.OrderEvent) *model.OrderEventEdge {
			return &model.OrderEventEdge{Cursor: c, Node: e}
		})
	return &model.OrderEventConnection{Edges: edges, PageInfo: info}
}

// page makes a page of nodes into edges (cursor and node) and its PageInfo.
func page[N, E any](nodes []N, more bool, cursor func(N) string, edge func(cursor string, n N) E) ([]E, *model.PageInfo) {
	edges := make([]E, len(nodes))
	info := &model.PageInfo{HasNextPage: more}
	for i, n := range nodes {
		c := cursor(n)
		edges[i] = edge(c, n)
		if i == len(nodes)-1 {
			info.EndCursor = &c
		}
	}
	return edges, info
}
