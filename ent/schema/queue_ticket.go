package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// QueueTicket is one buyer's place in a product's waiting room.
type QueueTicket struct{ ent.Schema }

func (QueueTicket) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

func (QueueTicket) Fields() []ent.Field {
	return []ent.Field{
		// Random, like a hold's: whoever has an anonymous ticket's ID may use it.
		field.UUID("id", uuid.UUID{}).SchemaType(mysqlUUID).Default(newID).Immutable(),
		// A plain column, not an edge, for the reason Order's product_id is.
		field.Int("product_id").Immutable(),
		// The customer, or nil for an anonymous ticket (a unique index
		// allows any number of NULLs: one ticket per customer per product).
		field.String("customer_id").Optional().Nillable().Immutable().SchemaType(mysqlExactText),
		field.Enum("status").Values("WAITING", "ADMITTED", "USED", "EXPIRED", "SOLD_OUT").Default("WAITING"),
		// The place in line: admitted once the product's queue_serving
		// reaches it. nil for a ticket of the pre-queue until the sale starts.
		field.Int64("number").Optional().Nillable(),
		// A random key: the pre-queue is numbered in its order at the start,
		// a uniformly random permutation whatever the join order.
		field.Int64("shuffle").Immutable(),
		field.Time("admitted_at").Optional().Nillable().SchemaType(mysqlTime),
		field.Time("pass_expires_at").Optional().Nillable().SchemaType(mysqlTime),
	}
}

func (QueueTicket) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("product_id", "customer_id").Unique(),
		// Admission: a product's WAITING tickets by number.
		index.Fields("product_id", "status", "number"),
		// Passes that ran out.
		index.Fields("status", "pass_expires_at"),
	}
}
