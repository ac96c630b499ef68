package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lostAnswerWindow: an answer written to the killed server this shortly
// before its kill may never have been read, or its outcome never
// recorded, so the event is sent again; that is an answer lost too.
const lostAnswerWindow = 2 * time.Second

// eventRun is what the order event checks need to know of a run besides
// the database and the requests: who sent, and what explains a duplicate.
type eventRun struct {
	servers int // the senders: server i posts to /events/i
	// lost says why an answer to an earlier request of the event (earlier,
	// in arrival order) was lost, which makes h, a copy of it, legitimate;
	// "" when nothing does: a duplicate the contract does not allow.
	lost func(earlier []*hookReq, h *hookReq) string
	// victim is the server killed at killAt (-1: no server was killed):
	// what it had in flight or claimed must be taken over within
	// eventsTakeover of the kill.
	victim int
	killAt time.Time
}

// killedServerLost is TestEventsSurviveKill's lost: an earlier request's
// sender went away before its answer, or the answer went to the killed
// server just before the kill.
func killedServerLost(victim int, killAt time.Time) func([]*hookReq, *hookReq) string {
	return func(earlier []*hookReq, _ *hookReq) string {
		for _, e := range earlier {
			switch {
			case e.clientGone:
				return fmt.Sprintf("server %d went away before its answer", e.proc)
			case e.proc == victim && e.answered.After(killAt.Add(-lostAnswerWindow)):
				return fmt.Sprintf("answered to server %d within %s of its kill", e.proc, lostAnswerWindow)
			}
		}
		return ""
	}
}

// eventFigures are what the order event checks report.
type eventFigures struct {
	events, orders, requests, duplicates int
	byType, byStatus                     string
	dupWhy                               map[string]int // duplicates by what explained them ("" none)
	dupList                              []string       // every duplicate: the event, its requests, why
	inflightAtKill                       int            // the killed server's requests the receiver was answering at the kill
	reclaimed                            int            // deliveries claimed more than once (attempts > 1)
	takeover                             time.Duration  // from the kill to the last re-send of those in flight
	firstP50, firstP99, firstMax         time.Duration  // first arrival after occurredAt
}

// orderEventRow is a row of order_events.
type orderEventRow struct {
	id, orderID, typ, payload string
	seq                       int
	occurredAt                time.Time
	body                      hookBody
}

type deliveryRow struct {
	sink, status, lastErr string
	attempts              int
}

// wantStatus is the order status each event type reports.
var wantStatus = map[string]string{
	"order.created":         "PENDING_PAYMENT",
	"order.paid":            "PAID",
	"order.cancelled":       "CANCELLED",
	"order.refund_required": "REFUND_REQUIRED",
}

// checkOrderEvents checks what the receiver got against the database (the
// servers stopped) and the traffic's purchases; run says who sent and
// what explains a duplicate.
func checkOrderEvents(t *testing.T, ck *checker, reqs []hookReq, buys []purchase, run eventRun) eventFigures {
	t.Helper()
	fail := func(what string, items []string) {
		t.Helper()
		if len(items) > 0 {
			sort.Strings(items)
			t.Errorf("%d %s: %s", len(items), what, examples(items))
		}
	}

	// The database.
	events := map[string]*orderEventRow{}
	byOrder := map[string][]*orderEventRow{}
	types := map[string]int{}
	var r orderEventRow
	ck.rows(`SELECT id, order_id, sequence, type, payload, occurred_at FROM order_events`,
		func() []any { return []any{&r.id, &r.orderID, &r.seq, &r.typ, &r.payload, &r.occurredAt} },
		func() {
			row := r
			if err := json.Unmarshal([]byte(row.payload), &row.body); err != nil {
				t.Errorf("event %s: payload is not JSON: %v", row.id, err)
			}
			events[row.id] = &row
			byOrder[row.orderID] = append(byOrder[row.orderID], &row)
			types[row.typ]++
		})
	deliveries := map[string][]deliveryRow{}
	var d deliveryRow
	var eventID string
	ck.rows(`SELECT event_id, sink, status, attempts, COALESCE(last_error, '') FROM event_deliveries`,
		func() []any { return []any{&eventID, &d.sink, &d.status, &d.attempts, &d.lastErr} },
		func() { deliveries[eventID] = append(deliveries[eventID], d) })
	type orderRow struct {
		status   string
		eventSeq int
	}
	orders := map[string]orderRow{}
	statuses := map[string]int{}
	var orderID string
	var o orderRow
	ck.rows(`SELECT id, status, event_seq FROM orders`, func() []any { return []any{&orderID, &o.status, &o.eventSeq} },
		func() { orders[orderID] = o; statuses[o.status]++ })

	fig := eventFigures{events: len(events), orders: len(orders), requests: len(reqs),
		byType: countsText(types), byStatus: countsText(statuses), dupWhy: map[string]int{}}
	victim, killAt := run.victim, run.killAt

	// Each request on its own.
	var badReq, badSig, badBody, unknown []string
	copies := map[string][]*hookReq{} // event ID → its requests, in arrival order
	for i := range reqs {
		h := &reqs[i]
		switch {
		case h.method != "POST":
			badReq = append(badReq, fmt.Sprintf("%s: method %s", h.id, h.method))
		case !strings.HasPrefix(h.contentType, "application/json"):
			badReq = append(badReq, fmt.Sprintf("%s: Content-Type %q", h.id, h.contentType))
		case h.proc < 0 || h.proc >= run.servers:
			badReq = append(badReq, fmt.Sprintf("%s: to an unknown path (server %d)", h.id, h.proc))
		}
		if !h.sigOK {
			badSig = append(badSig, fmt.Sprintf("%s from server %d: %s", h.id, h.proc, h.sigErr))
		}
		if ts, err := strconv.ParseInt(h.ts, 10, 64); err != nil || ts < h.arrived.Unix()-30 || ts > h.arrived.Unix()+30 {
			badReq = append(badReq, fmt.Sprintf("%s: webhook-timestamp %q is not this attempt's time (%d)", h.id, h.ts, h.arrived.Unix()))
		}
		row := events[h.id]
		switch {
		case h.bodyErr != "":
			badBody = append(badBody, fmt.Sprintf("%s: %s", h.id, h.bodyErr))
		case row == nil:
			unknown = append(unknown, fmt.Sprintf("webhook-id %q (body id %q) from server %d", h.id, h.body.ID, h.proc))
			continue
		case h.body.ID != h.id:
			badBody = append(badBody, fmt.Sprintf("webhook-id %s but body id %s", h.id, h.body.ID))
		case string(h.raw) != row.payload:
			badBody = append(badBody, fmt.Sprintf("%s: body is not the event's payload:\n  got  %s\n  want %s", h.id, clip(h.raw), clip([]byte(row.payload))))
		case h.body.Data.Sequence != row.seq || h.body.Data.Order.ID != row.orderID || h.body.Type != row.typ:
			badBody = append(badBody, fmt.Sprintf("%s: body says %s #%d of order %s, the row %s #%d of order %s",
				h.id, h.body.Type, h.body.Data.Sequence, h.body.Data.Order.ID, row.typ, row.seq, row.orderID))
		}
		copies[h.id] = append(copies[h.id], h)
	}
	for _, cs := range copies {
		sort.Slice(cs, func(i, j int) bool { return cs[i].arrivalTk < cs[j].arrivalTk })
	}
	fail("requests not as the contract says (method, Content-Type, path, webhook-timestamp)", badReq)
	fail("requests whose signature did not verify", badSig)
	fail("requests whose body is not the event's", badBody)
	fail("requests for events not in order_events", unknown)

	// Duplicates: the same id and body, one attempt at a time, and only
	// after an answer was lost.
	var dupBody, overlap, unexplained []string
	for _, id := range slices.Sorted(maps.Keys(copies)) {
		cs := copies[id]
		fig.duplicates += len(cs) - 1
		for i := 1; i < len(cs); i++ {
			prev, h := cs[i-1], cs[i]
			if !bytes.Equal(h.raw, cs[0].raw) {
				dupBody = append(dupBody, fmt.Sprintf("%s: request %d's body differs from the first's:\n  first %s\n  now   %s", id, i+1, clip(cs[0].raw), clip(h.raw)))
			}
			if prev.status != 0 && h.arrivalTk < prev.answerTk {
				overlap = append(overlap, fmt.Sprintf("%s: %s while %s was not answered yet", id, h, prev))
			}
			why := run.lost(cs[:i], h)
			fig.dupWhy[why]++
			if why == "" {
				why = "UNEXPLAINED"
				unexplained = append(unexplained, fmt.Sprintf("%s: %s, %s after %s", id, h, h.arrived.Sub(prev.arrived).Round(time.Millisecond), prev))
			}
			fig.dupList = append(fig.dupList, fmt.Sprintf("%s (#%d of order %s): request %d from server %d %s after request %d from server %d (%s): %s",
				id, h.body.Data.Sequence, h.body.Data.Order.ID, i+1, h.proc, h.arrived.Sub(prev.arrived).Round(time.Millisecond), i, prev.proc,
				prev.arrived.Format("15:04:05.000"), why))
		}
	}
	fail("events received twice with different bodies", dupBody)
	fail("events attempted by two senders at once (a second request before the first was answered)", overlap)
	fail("events received again though no answer to them was lost", unexplained)

	// The kill: the killed server's requests in flight then, and how soon
	// they were sent again.
	var slowTakeover []string
	for id, cs := range copies {
		if victim < 0 {
			break
		}
		for i, h := range cs {
			if h.proc != victim || h.arrived.After(killAt) || !h.clientGone && h.answered.Before(killAt) {
				continue
			}
			fig.inflightAtKill++
			if i+1 < len(cs) {
				took := cs[i+1].arrived.Sub(killAt)
				fig.takeover = max(fig.takeover, took)
				if took > eventsTakeover {
					slowTakeover = append(slowTakeover, fmt.Sprintf("%s: sent again %s after the kill", id, took.Round(time.Millisecond)))
				}
			}
		}
	}

	// Every event delivered, once per sink, answered 2xx.
	var missing, badDelivery []string
	var firsts []time.Duration
	for id, row := range events {
		cs := copies[id]
		if !slices.ContainsFunc(cs, (*hookReq).answeredOK) {
			missing = append(missing, fmt.Sprintf("%s (#%d of order %s, %s): %d requests, none answered 2xx to its sender", id, row.seq, row.orderID, row.typ, len(cs)))
		}
		if len(cs) > 0 {
			firsts = append(firsts, cs[0].arrived.Sub(row.occurredAt))
		}
		ds := deliveries[id]
		if len(ds) != 1 || ds[0].sink != "webhook" {
			badDelivery = append(badDelivery, fmt.Sprintf("%s: deliveries %+v, want one to the webhook", id, ds))
			continue
		}
		if ds[0].status != "DELIVERED" {
			badDelivery = append(badDelivery, fmt.Sprintf("%s: %s after %d attempts (last error %q)", id, ds[0].status, ds[0].attempts, ds[0].lastErr))
		}
		if ds[0].attempts > 1 {
			fig.reclaimed++
			if victim >= 0 && len(cs) > 0 && cs[len(cs)-1].arrived.Sub(killAt) > eventsTakeover {
				slowTakeover = append(slowTakeover, fmt.Sprintf("%s: claimed %d times, last sent %s after the kill",
					id, ds[0].attempts, cs[len(cs)-1].arrived.Sub(killAt).Round(time.Millisecond)))
			}
		}
	}
	for id := range deliveries {
		if events[id] == nil {
			badDelivery = append(badDelivery, fmt.Sprintf("delivery of %s, which is not in order_events", id))
		}
	}
	fail(fmt.Sprintf("events the killed server had in flight or claimed not taken over within %s of the kill", eventsTakeover), slowTakeover)
	fail("events never answered 2xx at the receiver", missing)
	fail("events whose delivery rows are wrong", badDelivery)
	if len(firsts) > 0 {
		slices.Sort(firsts)
		fig.firstP50, fig.firstP99, fig.firstMax = firsts[len(firsts)/2], firsts[len(firsts)*99/100], firsts[len(firsts)-1]
	}

	// Per order: sequences 1..k with k its events, received in order, and
	// telling the order's story up to its current status.
	var badSeq, badRecv, order, badStatus []string
	for _, id := range slices.Sorted(maps.Keys(orders)) {
		if len(byOrder[id]) == 0 {
			badStatus = append(badStatus, fmt.Sprintf("order %s (%s) has no event", id, orders[id].status))
		}
	}
	for oid, rows := range byOrder {
		sort.Slice(rows, func(i, j int) bool { return rows[i].seq < rows[j].seq })
		k := len(rows)
		for i, row := range rows {
			if row.seq != i+1 {
				badSeq = append(badSeq, fmt.Sprintf("order %s: event %s is #%d, want #%d (sequences %v)", oid, row.id, row.seq, i+1, seqsOf(rows)))
				break
			}
		}
		if got := orders[oid].eventSeq; got != k {
			badSeq = append(badSeq, fmt.Sprintf("order %s: event_seq %d, but %d events", oid, got, k))
		}
		var got []int
		for _, row := range rows {
			if len(copies[row.id]) > 0 {
				got = append(got, copies[row.id][0].body.Data.Sequence)
			}
		}
		slices.Sort(got)
		if len(got) != k || slices.ContainsFunc(got, func(s int) bool { return s < 1 || s > k }) || len(slices.Compact(slices.Clone(got))) != k {
			badRecv = append(badRecv, fmt.Sprintf("order %s: received sequences %v, want 1..%d", oid, got, k))
		}
		for n := 0; n+1 < k; n++ {
			cur, next := copies[rows[n].id], copies[rows[n+1].id]
			if len(cur) == 0 || len(next) == 0 {
				continue // reported as never received
			}
			firstNext := next[0].arrivalTk
			var okAnswer *hookReq
			for _, h := range cur {
				if h.answeredOK() && (okAnswer == nil || h.answerTk < okAnswer.answerTk) {
					okAnswer = h
				}
			}
			switch {
			case okAnswer == nil || okAnswer.answerTk > firstNext:
				order = append(order, fmt.Sprintf("order %s: #%d %s arrived before #%d was answered 2xx (#%d: %v)",
					oid, n+2, next[0], n+1, n+1, reqStrings(cur)))
			case cur[len(cur)-1].arrivalTk > firstNext:
				order = append(order, fmt.Sprintf("order %s: #%d %s arrived again after #%d %s", oid, n+1, cur[len(cur)-1], n+2, next[0]))
			}
		}
		for i, row := range rows {
			b := row.body
			reason := ""
			if b.Data.Reason != nil {
				reason = *b.Data.Reason
			}
			switch {
			case i == 0 && row.typ != "order.created":
				badStatus = append(badStatus, fmt.Sprintf("order %s: event #1 is %s, want order.created", oid, row.typ))
			case wantStatus[row.typ] != b.Data.Order.Status:
				badStatus = append(badStatus, fmt.Sprintf("order %s: %s (#%d) says status %s", oid, row.typ, row.seq, b.Data.Order.Status))
			case row.typ == "order.cancelled" && reason != "payment_failed" && reason != "payment_timeout":
				badStatus = append(badStatus, fmt.Sprintf("order %s: order.cancelled (#%d) with reason %q", oid, row.seq, reason))
			case row.typ != "order.cancelled" && b.Data.Reason != nil:
				badStatus = append(badStatus, fmt.Sprintf("order %s: %s (#%d) with reason %q, want null", oid, row.typ, row.seq, reason))
			}
		}
		if last := rows[k-1]; last.body.Data.Order.Status != orders[oid].status {
			badStatus = append(badStatus, fmt.Sprintf("order %s is %s, its last event (#%d %s) says %s",
				oid, orders[oid].status, last.seq, last.typ, last.body.Data.Order.Status))
		}
	}
	fail("orders whose sequences in the database are wrong", badSeq)
	fail("orders whose received sequences (by event id) are not 1..k", badRecv)
	fail("times an order's event was received before its predecessor was delivered (2xx), or after its successor", order)
	fail("orders whose events disagree with their status", badStatus)

	// What the traffic did to each order.
	var badPlan []string
	for _, p := range buys {
		rows := byOrder[p.orderID]
		final := orders[p.orderID].status
		if len(rows) == 0 {
			continue // reported above, or not in the database at all:
		}
		last := rows[len(rows)-1]
		if p.plan == "silent" && (final != "CANCELLED" || len(rows) != 2 || last.body.Data.Reason == nil || *last.body.Data.Reason != "payment_timeout") {
			badPlan = append(badPlan, fmt.Sprintf("order %s, never paid: %s with events %v, want CANCELLED by payment_timeout as event #2", p.orderID, final, typesOf(rows)))
		}
		for _, a := range p.acks {
			if (a == "PAID" || a == "REFUND_REQUIRED" || p.plan == "failed" && a == "CANCELLED") && final != a {
				badPlan = append(badPlan, fmt.Sprintf("order %s (%s): the payment webhook answered %s, the order is %s (events %v)", p.orderID, p.plan, a, final, typesOf(rows)))
			}
		}
	}
	fail("orders whose events do not tell what the payments did", badPlan)
	return fig
}

func countsText(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func seqsOf(rows []*orderEventRow) []int {
	out := make([]int, len(rows))
	for i, r := range rows {
		out[i] = r.seq
	}
	return out
}

func typesOf(rows []*orderEventRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.typ
	}
	return out
}

func reqStrings(hs []*hookReq) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}
