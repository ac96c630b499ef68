// Package graph is where GraphQL meets the domain: gqlgen's generated
// executor (generated.go, from schema.graphqls), thin resolvers that parse
// arguments and call package stock, and the one error presenter that maps
// domain errors to the contract's extensions.code values (docs/api.md,
// "Errors").
package graph

import (
	"context"
	"errors"

	"github.com/99designs/gqlgen/graphql"

	"flashsale/audit"
	"flashsale/ent"
	"flashsale/events"
	"flashsale/live"
	"flashsale/metrics"
	"flashsale/operator"
	"flashsale/stock"
)

// Resolver is the root resolver; it holds the dependencies of all others.
type Resolver struct {
	Stock *stock.Service
	// Operators are the operators' tokens (ADMIN_TOKEN, OPERATOR_TOKENS);
	// none disables operator fields.
	Operators *operator.Tokens
	// Customers verifies customer tokens; nil when no customer key is
	// configured (buyers are then anonymous).
	Customers TokenVerifier
	// Live fans product changes out to subscriptions.
	Live *live.Hub
	// Metrics counts createHold's answers; nil: off.
	Metrics *metrics.Metrics
	// Events serves operators' reads and redeliveries of order events.
	Events *events.Relay
	// Actions reads the operator action log (operatorActions).
	Actions *audit.Log
}

// nullIfNotFound turns ErrNotFound into a null result: the contract's
// lookup queries answer null, not an error, for an unknown ID.
func nullIfNotFound[T any](v *T, err error) (*T, error) {
	if errors.Is(err, stock.ErrNotFound) {
		return nil, nil
	}
	return v, err
}

// change maps an input field that may be left out (unchanged) or null
// (cleared) onto the domain's Change.
func change[T any](o graphql.Omittable[*T]) stock.Change[T] {
	return changeAs(o, func(v T) T { return v })
}

// changeAs is change with the value converted to the domain's type.
func changeAs[T, U any](o graphql.Omittable[*T], conv func(T) U) stock.Change[U] {
	v, set := o.ValueOK()
	switch {
	case !set:
		return stock.Change[U]{}
	case v == nil:
		return stock.Cleared[U]()
	}
	return stock.To(conv(*v))
}

// createHold is the createHold resolver's work; the resolver counts its answer.
func (r *Resolver) createHold(ctx context.Context, productID string, qty int, idempotencyKey, queueTicketID *string) (*ent.Hold, error) {
	id, err := stock.ParseProductID(productID)
	if err != nil {
		return nil, err
	}
	ticket, err := parseTicketID(queueTicketID)
	if err != nil {
		return nil, err
	}
	by, err := r.buyer(ctx)
	if err != nil {
		return nil, err
	}
	req := stock.HoldRequest{ProductID: id, Qty: qty, Customer: by.Customer, QueueTicket: ticket}
	if idempotencyKey != nil {
		if *idempotencyKey == "" {
			return nil, stock.InvalidInput("idempotencyKey must be 1 to 255 printable characters, or left out")
		}
		req.IdempotencyKey = *idempotencyKey
	}
	return r.Stock.CreateHold(ctx, req)
}
