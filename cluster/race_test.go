//go:build race

package cluster

// raceEnabled: the test runs under -race, so the servers are built with it too.
const raceEnabled = true
