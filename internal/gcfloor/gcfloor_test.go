package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name        string
		live, floor uint64
		base, want  int
	}{
		{"small heap grows to the floor", 8 * mib, 128 * mib, 100, 1500},
		{"rounds up, so the goal is never under the floor", 3 * mib, 128 * mib, 100, 4167},
		{"half the floor: the base already reaches it", 64 * mib, 128 * mib, 100, 100},
		{"above the floor: base", 512 * mib, 128 * mib, 100, 100},
		{"a higher base is kept", 32 * mib, 128 * mib, 400, 400},
		{"an almost empty heap is capped", 1, 128 * mib, 100, maxPercent},
		{"no reading yet: base", 0, 128 * mib, 100, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Percent(c.live, c.floor, c.base); got != c.want {
				t.Errorf("Percent(%d, %d, %d) = %d, want %d", c.live, c.floor, c.base, got, c.want)
			}
		})
	}
}

// gogc reads the current setting.
func gogc() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestStartRaisesAndStopRestores(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set in the environment: the floor is off by design (TestExplicitGOGCWins)")
	}
	before := gogc()
	stop := Start(1 << 30) // far above this test binary's heap
	defer stop()
	deadline := time.Now().Add(5 * time.Second)
	for gogc() == before {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d after collections: the floor never tuned", before)
		}
		runtime.GC() // a cycle runs the armed cleanup
		time.Sleep(10 * time.Millisecond)
	}
	if got := gogc(); got <= before {
		t.Fatalf("GOGC = %d with a 1 GiB floor, want above %d", got, before)
	}
	stop()
	if got := gogc(); got != before {
		t.Fatalf("GOGC = %d after stop, want %d back", got, before)
	}
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := gogc(); got != before {
		t.Fatalf("GOGC = %d after stop and another cycle: the tuner still runs", got)
	}
}

func TestExplicitGOGCWins(t *testing.T) {
	t.Setenv("GOGC", "100")
	before := gogc()
	stop := Start(1 << 30)
	defer stop()
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := gogc(); got != before {
		t.Fatalf("GOGC = %d with GOGC set in the environment, want %d untouched", got, before)
	}
}
