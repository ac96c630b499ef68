package schema

import (
	"errors"
	"unicode/utf8"

	"entgo.io/ent"
	"entgo.io/ent/dialect"
	"entgo.io/ent/schema/field"
)

// Product is one sellable item and its stock counters. The counters are only
// changed by package stock, inside a transaction that holds this row's lock.
type Product struct{ ent.Schema }

func (Product) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

func (Product) Fields() []ent.Field {
	return []ent.Field{
		// 200 characters: MaxLen would count bytes. MySQL's varchar(200)
		// counts characters too.
		field.String("name").NotEmpty().
			Validate(func(s string) error {
				if utf8.RuneCountInString(s) > 200 {
					return errors.New("longer than 200 characters")
				}
				return nil
			}).
			SchemaType(map[string]string{dialect.MySQL: "varchar(200)"}),
		field.Int64("price_cents").NonNegative(),
		// Units ever received: initial stock plus restocks. With the PAID
		// orders it lets an audit check stock_available.
		field.Int("stock_received").NonNegative(),
		// Physical units not yet sold.
		field.Int("stock_available").NonNegative(),
		// Units held by ACTIVE holds plus PENDING_PAYMENT orders.
		field.Int("stock_reserved").NonNegative().Default(0),
		// Most units one customer may hold, have pending and have bought;
		// nil: no limit.
		field.Int("max_per_customer").Optional().Nillable().Positive(),
		// The sale window, judged by the database clock; nil: open now, no end.
		field.Time("sale_starts_at").Optional().Nillable().SchemaType(mysqlTime),
		field.Time("sale_ends_at").Optional().Nillable().SchemaType(mysqlTime),
		// The waiting room (package stock, queue.go). Tickets admitted per
		// minute; nil: no waiting room.
		field.Int("queue_admit_per_minute").Optional().Nillable().Positive(),
		// Tickets numbered up to queue_serving are let in: a WAITING
		// ticket's position is its number minus this. Moved forward under
		// this row's lock only, by elapsed time times the rate.
		field.Int64("queue_serving").Default(0),
		// The number the next ticket that joins after the start gets.
		field.Int64("queue_next").Default(1),
		// Admissions owed but not yet made (the fraction of one carried
		// from one tick to the next).
		field.Float("queue_carry").Default(0),
		// Tickets WAITING, and tickets ever let in (ADMITTED, USED or
		// EXPIRED), kept with the changes so QueueStats costs no count.
		field.Int64("queue_waiting").Default(0),
		field.Int64("queue_admitted").Default(0),
		// When admission last moved forward; nil until the pre-queue has
		// been numbered at the sale's start.
		field.Time("queue_ticked_at").Optional().Nillable().SchemaType(mysqlTime),
	}
}
