package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// OrderEvent is one change of an order, written by package stock in the
// same transaction as the change (a transactional outbox): a committed
// change always has its event, a rolled-back one never. Package events
// delivers it to every sink configured when it was written (one
// EventDelivery each) and deletes it once all are delivered and
// EVENTS_RETENTION has passed.
type OrderEvent struct{ ent.Schema }

func (OrderEvent) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "order_events"}}
}

func (OrderEvent) Fields() []ent.Field {
	return []ent.Field{
		// "evt_" + 32 hex digits: a millisecond time prefix (new rows append
		// to the primary key; operators page oldest first by it) and 80
		// random bits, so receivers cannot guess other events' IDs.
		field.String("id").MaxLen(64).NotEmpty().Immutable().
			SchemaType(map[string]string{dialect.MySQL: "varchar(64)"}),
		// A plain column, not an edge: see Order's product_id.
		field.UUID("order_id", uuid.UUID{}).SchemaType(mysqlUUID).Immutable(),
		// The order's events are numbered 1, 2, 3... in commit order (the
		// order row's lock orders them; see Order's event_seq).
		field.Int("sequence").Positive().Immutable(),
		field.Enum("type").NamedValues(
			"OrderCreated", "order.created",
			"OrderPaid", "order.paid",
			"OrderCancelled", "order.cancelled",
			"OrderRefundRequired", "order.refund_required",
		).Immutable(),
		// The change's database time.
		field.Time("occurred_at").Immutable().SchemaType(mysqlTime),
		// The exact JSON body every sink is sent.
		field.Text("payload").Immutable().SchemaType(map[string]string{dialect.MySQL: "text"}),
	}
}

func (OrderEvent) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("deliveries", EventDelivery.Type),
	}
}

func (OrderEvent) Indexes() []ent.Index {
	return []ent.Index{
		// One event per order and number: a bug that numbered two events
		// alike rolls its transaction back instead of sending both.
		index.Fields("order_id", "sequence").Unique(),
		// Retention: the oldest events first.
		index.Fields("occurred_at"),
	}
}
