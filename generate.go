package main

// gqlgen reads gqlgen.yml from the module root; ent's generator runs from ent/generate.go.
//go:generate go tool gqlgen generate
