package main

// Code generation, in dependency order: ent's client from ent/schema first,
// then gqlgen's executor (gqlgen.yml), which binds to the ent types.
//go:generate go tool ent generate --feature sql/lock,sql/versioned-migration,sql/execquery,sql/modifier ./ent/schema
//go:generate go tool gqlgen generate
