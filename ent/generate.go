// Package ent holds the generated entgo.io/ent client. The hand-written part is
// the schema in ./schema; everything else here is produced by go generate
// (see generate.go at the module root).
package ent
