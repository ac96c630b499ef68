package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"flashsale/events"
)

// Order events on Galera: the three servers of TestGalera deliver their
// order events to a receiver in the test, and the checks of
// TestEventsSurviveKill run on what it got. No server is killed there, a
// node is: a duplicate is legitimate only when the node's loss lost an
// attempt's answer, which the relay shows by a lease that lapsed.
const (
	// galeraEventsDrain bounds the wait, after the sale, for every event
	// to be delivered: seconds, plus a lease (25 s) if an outcome write
	// failed near the end.
	galeraEventsDrain = 45 * time.Second

	// lapsedLeaseGap is the least time between two attempts of one event
	// when the second claimed it because the first's lease lapsed: a lease
	// lasts events.DefaultLease from its claim, and an attempt starts at
	// the latest Lease - EVENTS_TIMEOUT - Lease/5 after its claim (later,
	// the relay gives the delivery back unsent), so the second attempt
	// comes at least EVENTS_TIMEOUT + Lease/5 after the first. Two senders
	// that both think they own an event send it within moments.
	galeraEventsTimeout = 5 * time.Second
	lapsedLeaseGap      = galeraEventsTimeout + events.DefaultLease/5

	// outcomeWriteWithin: how long after an attempt's answer its outcome
	// write may still be in progress (or be given up: the relay's
	// recordTimeout of 10 s, its retries' pauses, a batch before it).
	outcomeWriteWithin = 15 * time.Second
)

// relayLines is what a server's log says about its order event relay.
type relayLines struct {
	// unrecorded: the times of "could not record ..." warnings: an outcome
	// write failed after its retries, so the lease lapses and the
	// delivery is attempted again.
	unrecorded []time.Time
	// claimFailed: "claiming deliveries failed" warnings (the database
	// failed a claim) and "keep losing lock races" debug lines (a claim
	// lost its race more than maxClaimRaces times in a row); suppressed:
	// warnings of the relay the log left out.
	claimFailed, suppressed int
	// claimRaces: those of claimFailed with Error 1213 (a deadlock, which
	// is how Galera reports a certification failure or a brute-force
	// abort): claims that lost their race claimRaces+1 times in a row.
	claimRaces int
	errs       map[string]int // both kinds', by message and error
}

func scanRelayLog(path string) relayLines {
	rl := relayLines{errs: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return rl
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), "order event") {
			continue
		}
		var line struct {
			Time       time.Time `json:"time"`
			Msg        string    `json:"msg"`
			Err        string    `json:"err"`
			Suppressed int       `json:"similar_warnings_suppressed"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch {
		case strings.Contains(line.Msg, "could not record"):
			rl.unrecorded = append(rl.unrecorded, line.Time)
		case strings.Contains(line.Msg, "keep losing lock races"): // at debug level
			rl.claimFailed++
			rl.claimRaces++
		case strings.Contains(line.Msg, "claiming deliveries failed"):
			rl.claimFailed++
			if strings.Contains(line.Err, "Error 1213") {
				rl.claimRaces++
			}
		default:
			continue
		}
		rl.suppressed += line.Suppressed
		msg, _, _ := strings.Cut(line.Msg, ";")
		rl.errs[msg+": "+errClass(line.Err)]++
	}
	return rl
}

// galeraLost explains a duplicate on Galera: the event was sent again
// after a lapsed lease (lapsedLeaseGap or more after the previous
// attempt), and that attempt's answer was lost, because either its
// server logged that it could not record an outcome within
// outcomeWriteWithin after the answer, or its server is the one whose
// node was killed and the attempt or its outcome write overlapped the
// node's outage (kill -9 to Synced again). An attempt whose sender gave
// up waiting for the answer (EVENTS_TIMEOUT) was lost too. Anything else,
// two senders at about the same time above all, is not explained.
func galeraLost(f *nodeFault, onKilledNode int, relay []relayLines) func([]*hookReq, *hookReq) string {
	return func(earlier []*hookReq, h *hookReq) string {
		prev := earlier[len(earlier)-1]
		if prev.clientGone {
			// No server is killed here: its attempt timed out, a failed
			// attempt, retried.
			return fmt.Sprintf("server %d gave up waiting for the answer", prev.proc)
		}
		if h.arrived.Sub(prev.arrived) < lapsedLeaseGap {
			return ""
		}
		if prev.proc >= 0 && prev.proc < len(relay) {
			for _, at := range relay[prev.proc].unrecorded {
				if !at.Before(prev.answered) && at.Sub(prev.answered) <= outcomeWriteWithin {
					return fmt.Sprintf("server %d could not record the outcome (its log); lease lapsed", prev.proc)
				}
			}
		}
		if prev.proc == onKilledNode && !prev.arrived.After(f.synced) && prev.answered.Add(outcomeWriteWithin).After(f.killed) {
			return fmt.Sprintf("server %d's node was down or rejoining during the attempt or its outcome write; lease lapsed", prev.proc)
		}
		return ""
	}
}

// purchases are the load's acknowledged orders as the event checks take
// them: those never paid ("silent": no payment webhook was sent for them,
// so the payment timeout cancels them), and the others with the order
// statuses their payment webhooks were answered with.
func (l *load) purchases() []purchase {
	l.mu.Lock()
	defer l.mu.Unlock()
	byOrder := map[string]*purchase{}
	for id := range l.orders {
		byOrder[id] = &purchase{orderID: id, plan: "silent"}
	}
	for _, ev := range l.events {
		p := byOrder[ev.orderID]
		if p == nil {
			continue
		}
		p.plan = ""
		ev.mu.Lock()
		for _, a := range ev.acks {
			p.acks = append(p.acks, a.OrderStatus)
		}
		ev.mu.Unlock()
	}
	out := make([]purchase, 0, len(byOrder))
	for _, p := range byOrder {
		out = append(out, *p)
	}
	return out
}

// galeraEvents is what the summary says of the order events.
type galeraEvents struct {
	fig               eventFigures
	reqs              []hookReq
	relay             []relayLines
	drained           bool
	waited, afterSale time.Duration          // the wait for the drain; from the sale's end to drained
	state             drainState             // at the end of the wait
	counters          [2][]map[string]string // every node's, before and after the wait for the events
	maxResend         time.Duration          // longest gap of an explained duplicate
	heldAtKill        int                    // the attempts of the killed node's server held at the receiver at the kill
	checksTook        time.Duration          // reading the logs and the rows, and the checks
}

// claimRaces is package events' maxClaimRaces: a claim that loses its
// race is made again at once, silently, this many times.
const claimRaces = 3

// text renders the figures: events, requests per server, duplicates and
// why, lapsed leases, the node kill, what the relays logged, Galera's
// conflict counters while only the relays wrote, and the timings.
func (e *galeraEvents) text(f *nodeFault, g *galera) string {
	var b strings.Builder
	fig := e.fig
	perServer := map[string]int{}
	inflight := map[string]int{}
	for _, h := range e.reqs {
		perServer[fmt.Sprintf("server %d", h.proc)]++
		if !h.arrived.After(f.killed) && (h.status == 0 || h.answered.After(f.killed)) {
			inflight[fmt.Sprintf("server %d", h.proc)]++
		}
	}
	fmt.Fprintf(&b, "order events (webhook sink, a receiver in the test): %d events (%s) of %d orders; %d requests (%s); %d duplicates",
		fig.events, fig.byType, fig.orders, fig.requests, others(perServer), fig.duplicates)
	if fig.duplicates > 0 {
		why := map[string]int{}
		for k, v := range fig.dupWhy {
			if k == "" {
				k = "UNEXPLAINED"
			}
			why[k] = v
		}
		fmt.Fprintf(&b, " (%s; longest gap of an explained one %s: %s)", others(why), e.maxResend.Round(time.Millisecond), examples(fig.dupList))
	}
	fmt.Fprintf(&b, "; %d deliveries claimed more than once (a lease lapsed, or a claim committed but its answer was lost)\n", fig.reclaimed)
	fmt.Fprintf(&b, "  at the node kill: %d requests in flight at the receiver (%s; %d of server %d's held there from %s before the kill to just after it)\n",
		sumCounts(inflight), others(inflight), e.heldAtKill, f.node, holdBeforeKill)
	b.WriteString("  relays' warnings:")
	races, suppressed := 0, 0
	kinds := map[string]int{}
	for i, rl := range e.relay {
		fmt.Fprintf(&b, " server %d: %d could not record an outcome, %d claims failed (%d lost %d races in a row), %d suppressed;",
			i, len(rl.unrecorded), rl.claimFailed, rl.claimRaces, claimRaces+1, rl.suppressed)
		races, suppressed = races+rl.claimRaces, suppressed+rl.suppressed
		for k, v := range rl.errs {
			kinds[k] += v
		}
	}
	fmt.Fprintf(&b, " kinds: %s\n", others(kinds))
	fmt.Fprintf(&b, "  claim conflicts: a claim that loses its race (Error 1213) is made again at once, silently, up to %d times; %d claims lost %d in a row, so at least %d conflicts (and %d warnings of the relays suppressed); the others are among Galera's certification failures and brute-force aborts (above), not told apart from the sale's",
		claimRaces, races, claimRaces+1, races*(claimRaces+1), suppressed)
	if e.waited < time.Second {
		b.WriteString("; no wait for the events after the sale (every one was delivered when first checked)")
	} else {
		b.WriteString("; during the wait for the events, with the sale over, those rose by:")
		for i := range g.nodes {
			d := func(name string) int {
				return atoi(e.counters[1][i][name]) - atoi(e.counters[0][i][name])
			}
			fmt.Fprintf(&b, " node %d: %d and %d;", i, d("wsrep_local_cert_failures"), d("wsrep_local_bf_aborts"))
		}
	}
	fmt.Fprintf(&b, "\n  first attempt after the event: p50 %s, p99 %s, max %s; every event delivered (DELIVERED on the cluster, answered 2xx): %v, checked %s after the sale ended, after a wait of %s (bound %s)",
		fig.firstP50.Round(time.Millisecond), fig.firstP99.Round(time.Millisecond), fig.firstMax.Round(time.Millisecond),
		e.drained, (e.afterSale - e.waited).Round(100*time.Millisecond), e.waited.Round(100*time.Millisecond), galeraEventsDrain)
	if !e.drained {
		fmt.Fprintf(&b, "; still: %s", e.state)
	}
	fmt.Fprintf(&b, "; the checks took %s", e.checksTook.Round(time.Millisecond))
	b.WriteString("\n")
	return b.String()
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// explainedResends returns the longest gap between an explained
// duplicate and the attempt before it, and the explained ones that came
// later than eventsTakeover after it (the contract: another process takes
// an event over within 30 s).
func explainedResends(reqs []hookReq, lost func([]*hookReq, *hookReq) string) (longest time.Duration, slow []string) {
	copies := map[string][]*hookReq{}
	for i := range reqs {
		copies[reqs[i].id] = append(copies[reqs[i].id], &reqs[i])
	}
	for _, cs := range copies {
		slices.SortFunc(cs, func(a, b *hookReq) int { return int(a.arrivalTk - b.arrivalTk) })
		for i := 1; i < len(cs); i++ {
			if lost(cs[:i], cs[i]) == "" {
				continue
			}
			gap := cs[i].arrived.Sub(cs[i-1].arrived)
			longest = max(longest, gap)
			if gap > eventsTakeover {
				slow = append(slow, fmt.Sprintf("%s: sent again %s after %s", cs[i].id, gap.Round(time.Millisecond), cs[i-1]))
			}
		}
	}
	return longest, slow
}

// TestLapsedLeaseDuplicates: which duplicates galeraLost explains, on
// made-up requests (no database).
func TestLapsedLeaseDuplicates(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := &nodeFault{node: 1, killed: t0.Add(10 * time.Second), synced: t0.Add(40 * time.Second)}
	relay := []relayLines{{unrecorded: []time.Time{t0.Add(61 * time.Second)}}, {}, {}}
	lost := galeraLost(f, f.node, relay)
	req := func(proc int, at time.Duration) *hookReq {
		return &hookReq{proc: proc, arrived: t0.Add(at), answered: t0.Add(at + 40*time.Millisecond), status: 204}
	}
	for _, c := range []struct {
		name      string
		prev, dup *hookReq
		explained bool
	}{
		{"two senders at once", req(0, 60*time.Second), req(2, 60*time.Second+300*time.Millisecond), false},
		{"the sender gave up waiting", &hookReq{proc: 2, arrived: t0, answered: t0.Add(5 * time.Second), status: 204, clientGone: true}, req(0, 5500*time.Millisecond), true},
		{"same sender at once", req(1, 11*time.Second), req(1, 11*time.Second+100*time.Millisecond), false},
		{"outcome write failed, lease lapsed", req(0, 60*time.Second), req(2, 85*time.Second), true},
		{"outcome write failed, resent too soon for a lapsed lease", req(0, 60*time.Second), req(2, 62*time.Second), false},
		{"no failed write logged", req(2, 60*time.Second), req(0, 85*time.Second), false},
		{"on the killed node across the kill", req(1, 9*time.Second), req(0, 34*time.Second), true},
		{"on the killed node while it rejoined", req(1, 35*time.Second), req(2, 60*time.Second), true},
		{"on the killed node after it was Synced", req(1, 45*time.Second), req(2, 70*time.Second), false},
		{"on the killed node well before the kill", req(1, -20*time.Second), req(2, 5*time.Second), false},
	} {
		why := lost([]*hookReq{c.prev}, c.dup)
		if (why != "") != c.explained {
			t.Errorf("%s: explained %q, want explained %v", c.name, why, c.explained)
		}
	}
}
