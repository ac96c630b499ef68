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
