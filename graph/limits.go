package graph

import (
	"context"
	"fmt"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"flashsale/ent/eventdelivery"
	"flashsale/ent/order"
)

// Limits bound what one GraphQL request may ask of the server, so a hostile
// or careless query cannot tie up the database or the CPU. The defaults let
// the playground's own introspection query through.
type Limits struct {
	MaxQueryBytes int // longest query text (GRAPHQL_MAX_QUERY_BYTES)
	MaxDepth      int // deepest field nesting (GRAPHQL_MAX_DEPTH)
	MaxComplexity int // gqlgen complexity: one per field, lists times their `first`, introspection included (GRAPHQL_MAX_COMPLEXITY)
	MaxMutations  int // most mutation fields in one operation, aliases included (GRAPHQL_MAX_MUTATIONS)
	// Timeout bounds each top-level field's work (REQUEST_TIMEOUT); zero: none.
	Timeout time.Duration
}

// DefaultLimits are used for zero fields of Limits.
var DefaultLimits = Limits{MaxQueryBytes: 16 << 10, MaxDepth: 15, MaxComplexity: 1000, MaxMutations: 10}

func (l Limits) withDefaults() Limits {
	if l.MaxQueryBytes <= 0 {
		l.MaxQueryBytes = DefaultLimits.MaxQueryBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	if l.MaxComplexity <= 0 {
		l.MaxComplexity = DefaultLimits.MaxComplexity
	}
	if l.MaxMutations <= 0 {
		l.MaxMutations = DefaultLimits.MaxMutations
	}
	return l
}

// Error codes of the limits (gqlgen's own for complexity).
const (
	CodeQueryTooLarge = "QUERY_TOO_LARGE"
	CodeQueryTooDeep  = "QUERY_TOO_DEEP"
)

// CodeComplexityLimit is gqlgen's code for an operation over
// GRAPHQL_MAX_COMPLEXITY, also given to one over GRAPHQL_MAX_MUTATIONS.
const CodeComplexityLimit = "COMPLEXITY_LIMIT_EXCEEDED"

// limitExtension enforces MaxQueryBytes before parsing, and MaxDepth,
// MaxMutations and MaxComplexity after validation, before anything runs.
type limitExtension struct {
	Limits
	es graphql.ExecutableSchema // set by Validate
}

var (
	_ graphql.HandlerExtension          = &limitExtension{}
	_ graphql.OperationParameterMutator = &limitExtension{}
	_ graphql.OperationContextMutator   = &limitExtension{}
)

func (*limitExtension) ExtensionName() string { return "FlashsaleLimits" }
func (e *limitExtension) Validate(es graphql.ExecutableSchema) error {
	e.es = es
	return nil
}

func (e limitExtension) MutateOperationParameters(_ context.Context, p *graphql.RawParams) *gqlerror.Error {
	if len(p.Query) > e.MaxQueryBytes {
		err := gqlerror.Errorf("query is %d bytes, over the limit of %d", len(p.Query), e.MaxQueryBytes)
		err.Extensions = map[string]any{"code": CodeQueryTooLarge}
		return err
	}
	return nil
}

func (e limitExtension) MutateOperationContext(ctx context.Context, op *graphql.OperationContext) *gqlerror.Error {
	if op.Operation == nil {
		return nil
	}
	memo := map[string]int{}
	if d := depth(op.Operation.SelectionSet, memo); d > e.MaxDepth {
		err := gqlerror.Errorf("query is nested %d levels deep, over the limit of %d", d, e.MaxDepth)
		err.Extensions = map[string]any{"code": CodeQueryTooDeep}
		return err
	}
	if op.Operation.Operation == ast.Mutation {
		if n := rootFieldCount(op.Operation, ""); n > e.MaxMutations {
			err := gqlerror.Errorf("operation has %d mutation fields, over the limit of %d per operation: send them in several", n, e.MaxMutations)
			err.Extensions = map[string]any{"code": CodeComplexityLimit}
			return err
		}
	}
	if c := cost(ctx, e.es, op.Operation, op.Variables); c > e.MaxComplexity {
		err := gqlerror.Errorf("operation has complexity %d, which exceeds the limit of %d", c, e.MaxComplexity)
		err.Extensions = map[string]any{"code": CodeComplexityLimit}
		return err
	}
	return nil
}

// depth is the deepest field nesting of a selection set, looking through
// fragments. Validation has already rejected fragment cycles; memo keeps
// many spreads of one fragment from costing more than one walk.
func depth(set ast.SelectionSet, memo map[string]int) int {
	deepest := 0
	for _, sel := range set {
		var d int
		switch s := sel.(type) {
		case *ast.Field:
			d = 1 + depth(s.SelectionSet, memo)
		case *ast.InlineFragment:
			d = depth(s.SelectionSet, memo)
		case *ast.FragmentSpread:
			if s.Definition == nil {
				continue
			}
			var ok bool
			if d, ok = memo[s.Name]; !ok {
				d = depth(s.Definition.SelectionSet, memo)
				memo[s.Name] = d
			}
		}
		deepest = max(deepest, d)
	}
	return deepest
}

// complexity makes a page of any connection cost what it fetches.
func complexity() ComplexityRoot {
	var c ComplexityRoot
	c.Query.Products = pageCost
	c.Query.OperatorActions = pageCost
	c.Query.Orders = func(child int, _ *string, _ *order.Status, first *int, after *string) int {
		return pageCost(child, first, after)
	}
	c.Query.OrderEvents = func(child int, _ *string, _ *eventdelivery.Status, first *int, after *string) int {
		return pageCost(child, first, after)
	}
	c.Customer.Holds = pageCost
	c.Customer.Orders = pageCost
	return c
}

// pageCost makes a page of a connection cost first times its fields.
func pageCost(child int, first *int, _ *string) int {
	n := 20
	if first != nil {
		n = *first
	}
	if n < 1 || n > 100 {
		// The resolver refuses it with BAD_USER_INPUT, as the contract says.
		return 1
	}
	return 1 + n*child
}

func (l Limits) String() string {
	return fmt.Sprintf("query ≤ %d bytes, depth ≤ %d, complexity ≤ %d, mutations ≤ %d", l.MaxQueryBytes, l.MaxDepth, l.MaxComplexity, l.MaxMutations)
}
