package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// HoldKey is a createHold idempotency key, unique in its customer's scope
// ("" for anonymous buyers). A table of its own rather than a unique index
// on holds: most holds carry no key, and a hot product's hold batches should
// not pay for maintaining that index on every row.
type HoldKey struct{ ent.Schema }

func (HoldKey) Fields() []ent.Field {
	return []ent.Field{
		field.String("customer_id").Immutable().SchemaType(mysqlExactText),
		field.String("idempotency_key").NotEmpty().Immutable().SchemaType(mysqlExactText),
		field.UUID("hold_id", uuid.UUID{}).SchemaType(mysqlUUID).Unique().Immutable(),
	}
}

func (HoldKey) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("hold", Hold.Type).Ref("key").Field("hold_id").Unique().Required().Immutable(),
	}
}

func (HoldKey) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("customer_id", "idempotency_key").Unique(),
	}
}
