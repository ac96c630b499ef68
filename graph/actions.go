package graph

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"

	"flashsale/audit"
)

// operatorAction refuses the running mutation to everyone but an operator
// (requireAdmin) and returns the action it records in the operator action
// log: the calling operator, the field's name (not its alias) and its
// arguments as the request sent them, variables filled in, so the log shows
// what was asked, left-out fields left out and nulls kept.
func (r *Resolver) operatorAction(ctx context.Context) (*audit.Action, error) {
	if err := r.requireAdmin(ctx); err != nil {
		return nil, err
	}
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || !graphql.HasOperationContext(ctx) {
		return nil, fmt.Errorf("operator action: called outside a GraphQL field")
	}
	args := fc.Field.ArgumentMap(graphql.GetOperationContext(ctx).Variables)
	return audit.NewAction(callerOf(ctx).Operator, fc.Field.Name, args)
}
