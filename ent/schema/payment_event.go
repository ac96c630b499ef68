package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// PaymentEvent is the audit record of one distinct webhook event. The unique
// idempotency key is what makes a redelivered event apply at most once.
type PaymentEvent struct{ ent.Schema }

func (PaymentEvent) Fields() []ent.Field {
	return []ent.Field{
		// varchar(255): 255 characters, as stock's one key rule allows (ent's
		// MaxLen would count bytes).
		field.String("idempotency_key").NotEmpty().SchemaType(map[string]string{dialect.MySQL: "varchar(255)"}).Unique().Immutable(),
		field.UUID("order_id", uuid.UUID{}).SchemaType(mysqlUUID).Immutable(),
		field.Enum("status").Values("success", "failure").Immutable(),
		// What the event did: APPLIED, IGNORED or REFUND_REQUIRED.
		field.Enum("outcome").Values("APPLIED", "IGNORED", "REFUND_REQUIRED").Immutable(),
		// The order's status before and after the event, for audit.
		field.String("order_status_before").Immutable(),
		field.String("order_status_after").Immutable(),
		// The provider's payment ID, when the event carried one.
		field.String("payment_reference").Optional().Nillable().MaxLen(1020).Immutable().
			SchemaType(map[string]string{dialect.MySQL: "varchar(255)"}),
		field.Time("created_at").Immutable().Default(nowUTC).SchemaType(mysqlTime),
	}
}

func (PaymentEvent) Indexes() []ent.Index {
	return []ent.Index{
		// Retention deletes the oldest first.
		index.Fields("created_at"),
	}
}

func (PaymentEvent) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("order", Order.Type).Ref("payment_events").Field("order_id").Unique().Required().Immutable(),
	}
}
