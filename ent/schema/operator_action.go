package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// OperatorAction is one operator mutation, written by package audit in the
// same transaction as the change it records: a committed change always has
// its row, a refused or rolled-back one never. Rows are never changed.
type OperatorAction struct{ ent.Schema }

func (OperatorAction) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "operator_actions"}}
}

func (OperatorAction) Fields() []ent.Field {
	return []ent.Field{
		// The operator's name (package operator: 1..64 of [a-z0-9_.-]).
		field.String("operator").NotEmpty().MaxLen(64).Immutable().
			SchemaType(map[string]string{dialect.MySQL: "varchar(64)"}),
		// The change's database time; for a product's, read once its lock
		// was held, so one product's actions are in the order they applied.
		field.Time("at").Immutable().Default(nowUTC).SchemaType(mysqlTime),
		// The GraphQL field, e.g. "adjustStock".
		field.String("mutation").NotEmpty().MaxLen(64).Immutable().
			SchemaType(map[string]string{dialect.MySQL: "varchar(64)"}),
		// The mutation's arguments as sent, as JSON. Unbounded: an input is
		// checked after it is trimmed, so what was sent may be long.
		field.Text("input").Immutable(),
		// The product as JSON before and after the change, where there is
		// one. Stored as product_*: BEFORE is a reserved word in SQL.
		field.Text("before").Optional().Nillable().Immutable().StorageKey("product_before"),
		field.Text("after").Optional().Nillable().Immutable().StorageKey("product_after"),
	}
}

func (OperatorAction) Indexes() []ent.Index {
	return []ent.Index{
		// The log newest first, and its pages: (at, id) below a cursor's.
		index.Fields("at", "id"),
	}
}
