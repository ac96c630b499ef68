package schema

import (
	"crypto/rand"
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// Hold reserves qty units of a product until expires_at.
type Hold struct{ ent.Schema }

func (Hold) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

func (Hold) Fields() []ent.Field {
	return []ent.Field{
		// Random IDs: whoever knows a hold ID can turn it into an order.
		field.UUID("id", uuid.UUID{}).SchemaType(mysqlUUID).Default(newID).Immutable(),
		// A plain column, not an edge: see Order's product_id.
		field.Int("product_id").Immutable(),
		field.Int("qty").Positive().Immutable(),
		field.Enum("status").Values("ACTIVE", "REDEEMED", "EXPIRED", "RELEASED").Default("ACTIVE"),
		field.Time("expires_at").Immutable().SchemaType(mysqlTime),
		customerField(),
		// The buyer's retry key, for reading; nil when the call gave none.
		// Its uniqueness per customer is kept by HoldKey.
		field.String("idempotency_key").Optional().Nillable().Immutable().SchemaType(mysqlExactText),
	}
}

func (Hold) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("order", Order.Type).Unique(),
		edge.To("key", HoldKey.Type).Unique(),
	}
}

func (Hold) Indexes() []ent.Index {
	return []ent.Index{
		// The sweeper's scan: ACTIVE holds ordered by expiry.
		index.Fields("status", "expires_at"),
		// Releasing one product's overdue holds under its lock.
		index.Fields("product_id", "status", "expires_at"),
		// A customer's units of a product (maxPerCustomer), under its lock,
		// and a customer's holds (me.holds). Customer first: every anonymous
		// hold has "", so a hot product's anonymous holds append at one end.
		index.Fields("customer_id", "product_id", "status"),
	}
}

// newID returns a UUID in version 7's layout: 48 bits of Unix milliseconds
// first, so InnoDB appends new rows to the primary key instead of
// splitting pages at random, then 74 bits from crypto/rand, so IDs cannot
// be guessed (the contract asks for at least 64). Not google/uuid's NewV7:
// it fills the 12 bits of rand_a with a sub-millisecond clock, leaving 62
// random bits.
func newID() uuid.UUID {
	var u uuid.UUID
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x70 // version 7
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return u
}
