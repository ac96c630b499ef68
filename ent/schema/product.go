package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
)

// Product is one sellable item and its stock counters. The counters are only
// changed by package stock, inside a transaction that holds this row's lock.
type Product struct{ ent.Schema }

func (Product) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

func (Product) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(200),
		field.Int64("price_cents").NonNegative(),
		// Units ever received: initial stock plus restocks. With the PAID
		// orders it lets an audit check stock_available.
		field.Int("stock_received").NonNegative(),
		// Physical units not yet sold.
		field.Int("stock_available").NonNegative(),
		// Units held by ACTIVE holds plus PENDING_PAYMENT orders.
		field.Int("stock_reserved").NonNegative().Default(0),
	}
}

func (Product) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("holds", Hold.Type),
		edge.To("orders", Order.Type),
	}
}
