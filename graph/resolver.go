// Package graph is where GraphQL meets the domain: gqlgen's generated
// executor (generated.go, from schema.graphqls), thin resolvers that parse
// arguments and call package stock, and the one error presenter that maps
// domain errors to the contract's extensions.code values.
package graph

import (
	"errors"

	"flashsale/live"
	"flashsale/stock"
)

// Resolver is the root resolver; it holds the dependencies of all others.
type Resolver struct {
	Stock *stock.Service
	// AdminToken guards operator fields; empty disables them.
	AdminToken string
	// Customers verifies customer tokens; nil when no customer key is
	// configured (buyers are then anonymous).
	Customers TokenVerifier
	// Live fans product changes out to subscriptions.
	Live *live.Hub
}

// nullIfNotFound turns ErrNotFound into a null result: the contract's
// lookup queries answer null, not an error, for an unknown ID.
func nullIfNotFound[T any](v *T, err error) (*T, error) {
	if errors.Is(err, stock.ErrNotFound) {
		return nil, nil
	}
	return v, err
}
