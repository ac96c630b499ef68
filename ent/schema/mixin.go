package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/dialect"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/mixin"
)

// mysqlTime stores times as DATETIME(6): microsecond precision, no 2038
// limit and no session time-zone conversion (TIMESTAMP has all three issues).
var mysqlTime = map[string]string{dialect.MySQL: "datetime(6)"}

// mysqlExactText stores a string of up to 255 characters that must compare
// byte for byte: MySQL's PAD SPACE collations would make "alice" and
// "alice " one customer, or one idempotency key.
var mysqlExactText = map[string]string{dialect.MySQL: "varbinary(1020)"}

// customerField is the customer a hold or order belongs to: the token's
// sub, or "" for an anonymous buyer (every row made before customers
// existed is anonymous).
func customerField() ent.Field {
	return field.String("customer_id").Default("").Immutable().SchemaType(mysqlExactText)
}

// mysqlUUID keeps UUIDs portable between MySQL 8 and MariaDB (whose native
// uuid type MySQL lacks).
var mysqlUUID = map[string]string{dialect.MySQL: "char(36)"}

// TimeMixin adds created_at and updated_at. The domain package sets both
// from the database clock; the Go defaults only cover ad-hoc inserts.
type TimeMixin struct{ mixin.Schema }

func (TimeMixin) Fields() []ent.Field {
	return []ent.Field{
		field.Time("created_at").Immutable().Default(nowUTC).SchemaType(mysqlTime),
		field.Time("updated_at").Default(nowUTC).SchemaType(mysqlTime),
	}
}

func nowUTC() time.Time { return time.Now().UTC() }
