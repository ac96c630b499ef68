package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// StockAdjustment is one change of a product's physical stock by an
// operator: a restock (delta > 0) or a withdrawal of unsold units (< 0),
// kept with its reason and time. A product's initial stock is its first
// adjustment, so stock_received is always the sum of its adjustments.
type StockAdjustment struct{ ent.Schema }

func (StockAdjustment) Fields() []ent.Field {
	return []ent.Field{
		// A plain column, not an edge: see Order's product_id.
		field.Int("product_id").Immutable(),
		field.Int("delta").Immutable(),
		field.String("reason").NotEmpty().MaxLen(2000).Immutable(),
		field.Time("created_at").Immutable().Default(nowUTC).SchemaType(mysqlTime),
	}
}

func (StockAdjustment) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("product_id", "created_at"),
	}
}
