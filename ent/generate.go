// Package ent holds the generated entgo.io/ent client. The hand-written part is
// the schema in ./schema; everything else here is produced by go generate.
package ent

//go:generate go tool ent generate --feature sql/lock,sql/versioned-migration,sql/execquery,sql/modifier ./schema
