package graph

import (
	"strconv"
	"testing"
	"time"

	"flashsale/ent"
	"flashsale/ent/queueticket"
	"flashsale/stock"
)

func ticketAt(status queueticket.Status, pos int64) stock.QueueTicketView {
	v := stock.QueueTicketView{QueueTicket: &ent.QueueTicket{Status: status}}
	if pos > 0 {
		v.Position = &pos
	}
	return v
}

// TestTicketFeed: a far-back ticket's moves wait for positionGap (the
// latest one goes when it is due); its first position, admission and the
// end of the line go at once, and drop a move still waiting.
func TestTicketFeed(t *testing.T) {
	const w = queueticket.StatusWAITING
	for _, c := range []struct {
		name      string
		sent      stock.QueueTicketView
		since     time.Duration // since it was sent
		offer     []stock.QueueTicketView
		want      string // the status and position sent at once, "" for none
		wantLater bool   // a move is waiting
	}{
		{"far back, just sent: waits", ticketAt(w, 500), 0, []stock.QueueTicketView{ticketAt(w, 499), ticketAt(w, 498)}, "", true},
		{"far back, gap over: goes", ticketAt(w, 500), 6 * time.Second, []stock.QueueTicketView{ticketAt(w, 499)}, "WAITING 499", false},
		{"near the front: goes", ticketAt(w, 5), 60 * time.Millisecond, []stock.QueueTicketView{ticketAt(w, 4)}, "WAITING 4", false},
		{"first position: goes", ticketAt(w, 0), 0, []stock.QueueTicketView{ticketAt(w, 300)}, "WAITING 300", false},
		{"admitted: goes, the move dropped", ticketAt(w, 500), 0, []stock.QueueTicketView{ticketAt(w, 499), ticketAt(queueticket.StatusADMITTED, 0)}, "ADMITTED 0", false},
		{"sold out: goes", ticketAt(w, 900), 0, []stock.QueueTicketView{ticketAt(queueticket.StatusSOLD_OUT, 0)}, "SOLD_OUT 0", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := make(chan *stock.QueueTicketView, 1)
			f := ticketFeed{out: out, sent: c.sent, at: time.Now().Add(-c.since)}
			for _, v := range c.offer {
				f.offer(v)
			}
			got := ""
			select {
			case v := <-out:
				var pos int64
				if v.Position != nil {
					pos = *v.Position
				}
				got = string(v.Status) + " " + strconv.FormatInt(pos, 10)
			default:
			}
			if got != c.want || (f.pending != nil) != c.wantLater {
				t.Fatalf("sent %q, a move waiting %v; want %q, %v", got, f.pending != nil, c.want, c.wantLater)
			}
			if c.wantLater {
				f.flush()
				if v := <-out; *v.Position != *c.offer[len(c.offer)-1].Position {
					t.Fatalf("flushed position %d, want the latest %d", *v.Position, *c.offer[len(c.offer)-1].Position)
				}
			}
		})
	}
}
