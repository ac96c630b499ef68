package main

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseScenarios(t *testing.T) {
	got, err := parseScenarios("db-lifecycle,db-forupdate, typename,read")
	if err != nil || strings.Join(got, ",") != "typename,read,db-forupdate,db-lifecycle" {
		t.Fatalf("got %v, %v", got, err)
	}
	if all, _ := parseScenarios("all"); slices.Contains(all, scSubscribers) {
		t.Fatal("all includes subscribers, which must be named")
	}
	if all, _ := parseScenarios("all"); slices.Contains(all, scEdge) {
		t.Fatal("all includes edge, which must be named")
	}
	if all, _ := parseScenarios("all"); slices.Contains(all, scQueueSubscribers) || !slices.Contains(all, scQueueJoin) || !slices.Contains(all, scQueuePosition) {
		t.Fatalf("all: %v; want queue-join and queue-position, not queue-subscribers", all)
	}
	if got, _ := parseScenarios("subscribers"); strings.Join(got, ",") != scSubscribers {
		t.Fatalf("subscribers named: %v", got)
	}
	if _, err := parseScenarios("typename,nope"); err == nil {
		t.Fatal("unknown scenario accepted")
	}
	// A database scenario named outright needs a MySQL -db.
	for _, db := range []string{"", "sqlite://x.db"} {
		var errb bytes.Buffer
		_, err := parseFlags([]string{"loadtest", "-token", "x", "-db", db, "-scenarios", "typename,db-lifecycle"}, noEnv, &errb)
		if err == nil || !strings.Contains(err.Error(), "db-lifecycle needs a MySQL") {
			t.Errorf("-db %q: db-lifecycle accepted: %v", db, err)
		}
	}
}

// Scenarios take turns slice by slice, in order; one that ends before it
// drives is skipped, and one slice runs at a time.
func TestTurns(t *testing.T) {
	order := []string{"a", "b", "c"}
	tr := newTurns(order, 3)
	var (
		mu      sync.Mutex
		got     []string
		running atomic.Int32
	)
	var wg sync.WaitGroup
	for _, name := range order {
		wg.Go(func() {
			defer close(tr.left[name])
			if name == "b" {
				return // failed before it drove
			}
			for range tr.slices {
				<-tr.grant[name]
				if running.Add(1) != 1 {
					t.Errorf("%s runs while another slice runs", name)
				}
				mu.Lock()
				got = append(got, name)
				mu.Unlock()
				running.Add(-1)
				tr.done <- struct{}{}
			}
		})
	}
	tr.run()
	wg.Wait()
	if want := []string{"a", "c", "a", "c", "a", "c"}; !slices.Equal(got, want) {
		t.Fatalf("slices ran in the order %v, want %v", got, want)
	}
}

func TestSliceCount(t *testing.T) {
	for _, c := range []struct {
		slices   int
		duration time.Duration
		want     int
	}{
		{5, 10 * time.Second, 5},
		{1, 10 * time.Second, 1},
		{5, 300 * time.Millisecond, 3}, // no slice under 100ms
		{5, 100 * time.Millisecond, 1},
	} {
		if got := sliceCount(options{Slices: c.slices, Duration: c.duration}); got != c.want {
			t.Errorf("sliceCount(-slices %d, -duration %s) = %d, want %d", c.slices, c.duration, got, c.want)
		}
	}
}
