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

// Order is a redeemed hold waiting for, or done with, payment.
type Order struct{ ent.Schema }

func (Order) Annotations() []schema.Annotation {
	// "order" is a reserved word in SQL; a plural table name avoids quoting surprises.
	return []schema.Annotation{entsql.Annotation{Table: "orders"}}
}

func (Order) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

func (Order) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).SchemaType(mysqlUUID).Default(newID).Immutable(),
		// Unique: one order per hold, enforced by the database.
		field.UUID("hold_id", uuid.UUID{}).SchemaType(mysqlUUID).Unique().Immutable(),
		// The hold's product, copied from it. A plain column, not an edge:
		// InnoDB checks a foreign key by taking a shared lock on the parent
		// row, also when a row's status changes in the index that backs the
		// key, so createOrder would queue behind the hold batches that keep
		// a hot product's row locked. Holds and orders are only made by
		// package stock, for a product it has just read; products are never
		// deleted.
		field.Int("product_id").Immutable(),
		field.Int("qty").Positive().Immutable(),
		field.Int64("amount_cents").NonNegative().Immutable(),
		field.Enum("status").Values("PENDING_PAYMENT", "PAID", "CANCELLED", "REFUND_REQUIRED").Default("PENDING_PAYMENT"),
		// Fixed when the order is made (created_at + PAYMENT_TIMEOUT), so every
		// server agrees on it whatever its own setting.
		field.Time("payment_due_at").Immutable().SchemaType(mysqlTime),
		// The hold's customer, copied from it.
		customerField(),
		// The payment provider's ID of the payment, from the first webhook
		// event that carries one.
		field.String("payment_reference").Optional().Nillable().MaxLen(1020).
			SchemaType(map[string]string{dialect.MySQL: "varchar(255)"}),
		// How many order events this order has had: its next event is
		// number event_seq+1. Changed under the order row's lock, so its
		// events are numbered in commit order, whatever retention deletes.
		field.Int("event_seq").NonNegative().Default(0),
	}
}

func (Order) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("hold", Hold.Type).Ref("order").Field("hold_id").Unique().Required().Immutable(),
		edge.To("payment_events", PaymentEvent.Type),
	}
}

func (Order) Indexes() []ent.Index {
	return []ent.Index{
		// The payment-timeout sweep: PENDING_PAYMENT orders by due time.
		index.Fields("status", "payment_due_at"),
		index.Fields("product_id", "status", "payment_due_at"),
		// A customer's units of a product (maxPerCustomer), under its lock,
		// and a customer's orders (me.orders).
		index.Fields("customer_id", "product_id", "status"),
	}
}
