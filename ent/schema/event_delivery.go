package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// EventDelivery is the delivery state of one order event on one sink
// (webhook or NATS), made with the event for every sink configured then.
// Package events claims, attempts and records it.
type EventDelivery struct{ ent.Schema }

func (EventDelivery) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "event_deliveries"}}
}

func (EventDelivery) Fields() []ent.Field {
	return []ent.Field{
		field.String("event_id").MaxLen(64).Immutable(),
		field.Enum("sink").Values("webhook", "nats").Immutable(),
		// The event's order and sequence, copied from it, so a claim can
		// tell from this table alone whether an earlier event of the same
		// order is still pending on the sink.
		field.UUID("order_id", uuid.UUID{}).SchemaType(mysqlUUID).Immutable(),
		field.Int("sequence").Immutable(),
		field.Enum("status").Values("PENDING", "DELIVERED", "FAILED").Default("PENDING"),
		// Attempts started so far (counted when claimed, so an attempt
		// whose process died counts too).
		field.Int("attempts").NonNegative().Default(0),
		// PENDING: when it may next be claimed. While claimed, the end of
		// the claim's lease: a process that dies mid-attempt leaves a lease
		// that lapses, and another process takes the delivery over.
		field.Time("next_attempt_at").SchemaType(mysqlTime),
		// The claim's token while a process owns the delivery (nil when
		// none does); outcomes are recorded only by the claim's owner.
		field.String("lease").Optional().Nillable().MaxLen(64),
		field.Time("last_attempt_at").Optional().Nillable().SchemaType(mysqlTime),
		// Why the last attempt failed, e.g. "HTTP 500" or "timeout"; never
		// a response body.
		field.String("last_error").Optional().Nillable().MaxLen(255),
		field.Time("delivered_at").Optional().Nillable().SchemaType(mysqlTime),
		// The event's occurred_at, for the oldest pending event's age.
		field.Time("created_at").Immutable().SchemaType(mysqlTime),
	}
}

func (EventDelivery) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("event", OrderEvent.Type).Ref("deliveries").Field("event_id").Unique().Required().Immutable(),
	}
}

func (EventDelivery) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("event_id", "sink").Unique(),
		// Claims: a sink's due PENDING deliveries, soonest first; also the
		// pending count and age per sink.
		index.Fields("sink", "status", "next_attempt_at"),
		// Per-order order: is an earlier event of this order pending here?
		index.Fields("order_id", "sink", "sequence"),
	}
}
