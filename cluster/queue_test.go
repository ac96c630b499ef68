package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// The waiting room across processes (the contract's "Waiting room"; the
// design in docs/design.md, "The waiting room"): three server processes on
// one MariaDB, each running the admission round every 500 ms.
const (
	wrJoins   = 300              // pre-queue tickets of the first product
	wrBlock   = 20               // joins sent to one server in a row
	wrRate    = 600              // queueAdmitPerMinute of the first product: 10 a second
	wrStock   = 1000             // its stock: admission never pauses
	wrWindow  = 6 * time.Second  // one measurement of the rate
	wrVictim  = 1                // the server killed (kill -9) mid-admission
	wrLeadIn  = 2 * time.Second  // saleStartsAt this far ahead once every join is in
	wrSoldOut = 15 * time.Second // generous: the contract says 1 s, the test only logs it
	// The sell-out product: stock 3, a high rate, 3 + 7 joins.
	wrSmallStock = 3
	wrSmallRate  = 6000
	wrLateJoins  = 7
)

// wrJoined is a ticket of the pre-queue and the server that answered its join.
type wrJoined struct {
	id     string
	server int
}

// wrTicket is a queue ticket as the API shows it.
type wrTicket struct {
	ID       string
	Status   string
	Position *int64
}

const wrTicketFields = `id status position`

// TestWaitingRoomAcrossProcesses: the waiting room's guarantees hold
// across three real server processes on one MariaDB, one of them killed
// (kill -9) mid-admission.
//
//  1. 300 pre-queue tickets joined through the three servers in blocks are
//     numbered 1..300 at the start, in an order independent of the join
//     order and of the server joined through (rank correlation, runs, and
//     each server's mean number).
//  2. The three processes together admit at the product's rate, not three
//     times it, measured with the database's clock.
//  3. After one process is killed, the other two go on at the rate.
//  4. A product of stock 3 sells out through the line: admitted tickets take
//     holds with their passes, orders are paid by signed webhooks, and then
//     every WAITING ticket becomes SOLD_OUT (and a later join is SOLD_OUT at
//     once).
//  5. The audit and the stock check pass, every hold on either product
//     spent a pass (holds = USED tickets), and the products' queue counters
//     match the ticket rows.
func TestWaitingRoomAcrossProcesses(t *testing.T) {
	testStart := time.Now()
	bin := filepath.Join(t.TempDir(), "flashsale")
	built := make(chan error, 1)
	var buildTook time.Duration
	go func() {
		var err error
		buildTook, err = buildBinary(bin)
		built <- err
	}()
	db := startMariaDB(t)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	t.Logf("built the server (race detector %v) in %s", raceEnabled, buildTook.Round(time.Millisecond))

	secret := newWebhookSecret()
	settings := serverSettings(db.url(), secret)
	delete(settings, "SWEEP_INTERVAL") // the default; the waiting rooms' round is every 500 ms whatever it says
	// Nothing of this test should lapse while it runs, even under -race.
	settings["HOLD_TTL"], settings["PAYMENT_TIMEOUT"] = "1m", "1m"
	servers := make([]*server, serverCount)
	for i := range servers {
		servers[i] = startServerLog(t, bin, i, settings, fmt.Sprintf("queue-server%d.log", i))
	}
	for _, s := range servers {
		if err := s.waitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newClient(servers, secret, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ck := newChecker(t, db.url(), "")
	defer ck.close()

	// 1. The pre-queue. The product goes on sale far ahead; once every join
	// is in, the operator moves saleStartsAt to wrLeadIn from now, so that
	// all 300 join before the start however slow the joins are (-race).
	var created struct{ CreateProduct struct{ ID string } }
	if o, _ := wrGQL(c, 0, "createProduct", `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`,
		map[string]any{"in": map[string]any{"name": "Queued drop", "priceCents": 2500, "stock": wrStock,
			"queueAdmitPerMinute": wrRate, "saleStartsAt": wrDBNow(t, ck).Add(10 * time.Minute).Format(time.RFC3339Nano)}},
		true, &created); o != outOK {
		t.Fatalf("createProduct: %s", o)
	}
	p1 := created.CreateProduct.ID

	tickets := make([]wrJoined, wrJoins)
	joinStart := time.Now()
	for j := range wrJoins {
		var out struct{ JoinQueue wrTicket }
		o, srv := wrGQL(c, (j/wrBlock)%serverCount, "joinQueue", `mutation($p: ID!) { joinQueue(productId: $p) { `+wrTicketFields+` } }`,
			map[string]any{"p": p1}, false, &out)
		if o != outOK {
			t.Fatalf("joinQueue %d (server %d): %s", j, srv, o)
		}
		if tk := out.JoinQueue; tk.Status != "WAITING" || tk.Position != nil {
			t.Fatalf("joinQueue %d before the start: %+v, want WAITING without a position", j, tk)
		}
		tickets[j] = wrJoined{out.JoinQueue.ID, srv}
	}
	joinsTook := time.Since(joinStart)

	var unnumbered int
	if err := ck.db.SQL.QueryRowContext(ck.ctx, `SELECT COUNT(*) FROM queue_tickets WHERE product_id = ? AND number IS NULL AND status = 'WAITING'`, p1).Scan(&unnumbered); err != nil {
		t.Fatal(err)
	}
	if unnumbered != wrJoins {
		t.Fatalf("before the start %d of %d tickets are WAITING without a number", unnumbered, wrJoins)
	}
	startsAt := wrDBNow(t, ck).Add(wrLeadIn).Truncate(time.Millisecond)
	if o, _ := wrGQL(c, 2, "updateProduct", `mutation($id: ID!, $in: UpdateProductInput!) { updateProduct(id: $id, input: $in) { id } }`,
		map[string]any{"id": p1, "in": map[string]any{"saleStartsAt": startsAt.Format(time.RFC3339Nano)}}, true, nil); o != outOK {
		t.Fatalf("updateProduct saleStartsAt: %s", o)
	}
	t.Logf("%d joins through %d servers in blocks of %d took %s; the sale starts at %s (database clock)",
		wrJoins, serverCount, wrBlock, joinsTook.Round(time.Millisecond), startsAt.Format("15:04:05.000"))

	// Every ticket gets its number once the sale has started (the contract:
	// within 1 s; asserted with room, logged).
	waitFor(t, 60*time.Second, 20*time.Millisecond, func() bool { return !wrDBNow(t, ck).Before(startsAt) },
		func() string { return "the database clock never reached saleStartsAt" })
	var numberedAt time.Time
	waitFor(t, 10*time.Second, 20*time.Millisecond, func() bool {
		var n int
		if err := ck.db.SQL.QueryRowContext(ck.ctx, `SELECT COUNT(number), UTC_TIMESTAMP(6) FROM queue_tickets WHERE product_id = ?`, p1).Scan(&n, &numberedAt); err != nil {
			t.Fatal(err)
		}
		return n == wrJoins
	}, func() string {
		return fmt.Sprintf("the pre-queue was not numbered within 10 s of saleStartsAt %s", startsAt)
	})
	t.Logf("every pre-queue ticket had its number %s after saleStartsAt (database clock; the contract: within 1 s)",
		numberedAt.Sub(startsAt).Round(time.Millisecond))

	number := map[string]int64{}
	var id string
	var n int64
	ck.rows(fmt.Sprintf(`SELECT id, number FROM queue_tickets WHERE product_id = %s`, p1),
		func() []any { return []any{&id, &n} }, func() { number[id] = n })
	checkPermutation(t, tickets, func(i int) (int64, int) { return number[tickets[i].id], tickets[i].server })

	// Every server shows every ticket its position now (the ones made by
	// another process too, and the ones it made and kept before the start).
	posFrom := time.Now()
	waitFor(t, 10*time.Second, 50*time.Millisecond, func() bool {
		for srv := range serverCount {
			for j := srv; j < wrJoins; j += 29 {
				var out struct{ QueueTicket *wrTicket }
				if o, _ := wrGQL(c, srv, "queueTicket", `query($id: ID!) { queueTicket(id: $id) { `+wrTicketFields+` } }`,
					map[string]any{"id": tickets[j].id}, false, &out); o != outOK || out.QueueTicket == nil {
					t.Fatalf("queueTicket %s on server %d: %s %+v", tickets[j].id, srv, o, out.QueueTicket)
				}
				tk := out.QueueTicket
				switch {
				case tk.Status == "WAITING" && tk.Position == nil:
					return false
				case tk.Status == "WAITING" && (*tk.Position < 1 || *tk.Position > number[tk.ID]):
					t.Fatalf("server %d: ticket %s (number %d) at position %d", srv, tk.ID, number[tk.ID], *tk.Position)
				case tk.Status != "WAITING" && tk.Status != "ADMITTED":
					t.Fatalf("server %d: ticket %s is %s", srv, tk.ID, tk.Status)
				}
			}
		}
		return true
	}, func() string {
		return "some server still shows a pre-queue ticket WAITING without a position 10 s after the numbering"
	})
	t.Logf("every server showed the sampled tickets' positions %s after the numbering was seen", time.Since(posFrom).Round(time.Millisecond))

	// 2. The rate, held by three processes together.
	fig1 := wrMeasure(t, ck, p1, "three processes")

	// 3. One process dies mid-admission (at a random moment of its 500 ms
	// round); the other two go on at the rate.
	time.Sleep(rand.N(500 * time.Millisecond))
	victim := servers[wrVictim]
	victim.current().kill()
	t.Logf("killed server %d (kill -9) with %d of %d tickets admitted", wrVictim, fig1.admitted1, wrJoins)
	fig2 := wrMeasure(t, ck, p1, "two processes after the kill")

	var survivors []*server
	for _, s := range servers {
		if s != victim {
			survivors = append(survivors, s)
		}
	}
	c2, err := newClient(survivors, secret, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.close()

	// A pass of the first product: an ADMITTED ticket takes one hold, a
	// WAITING one is NOT_ADMITTED.
	var admittedID, waitingID string
	if err := ck.db.SQL.QueryRowContext(ck.ctx, `SELECT
			(SELECT MIN(id) FROM queue_tickets WHERE product_id = ? AND status = 'ADMITTED'),
			(SELECT MIN(id) FROM queue_tickets WHERE product_id = ? AND status = 'WAITING')`, p1, p1).Scan(&admittedID, &waitingID); err != nil {
		t.Fatalf("an ADMITTED and a WAITING ticket of product %s: %v", p1, err)
	}
	holdQ := `mutation($p: ID!, $t: ID) { createHold(productId: $p, qty: 1, queueTicketId: $t) { id status } }`
	if o, _ := wrGQL(c2, 0, "createHold", holdQ, map[string]any{"p": p1, "t": waitingID}, false, nil); o != "NOT_ADMITTED" {
		t.Errorf("createHold with a WAITING ticket: %s, want NOT_ADMITTED", o)
	}
	if o, _ := wrGQL(c2, 1, "createHold", holdQ, map[string]any{"p": p1, "t": admittedID}, false, nil); o != outOK {
		t.Errorf("createHold with an ADMITTED ticket: %s", o)
	}
	if o, _ := wrGQL(c2, 0, "createHold", holdQ, map[string]any{"p": p1, "t": admittedID}, false, nil); o != "QUEUE_REQUIRED" {
		t.Errorf("createHold with a ticket whose pass was spent: %s, want QUEUE_REQUIRED", o)
	}

	// 4. Sell-out through the line.
	p2, delay := sellOutThroughLine(t, c2, ck)

	// 5. The end: the survivors stop cleanly (no race, no panic), the killed
	// one logged none before its death, and the database is right.
	stopServers(t, survivors)
	if race := dataRace(victim.logPath); race != "" {
		t.Errorf("server %d (killed): the race detector found a data race:\n%s", wrVictim, race)
	}
	if p := panics(victim.logPath); len(p) > 0 {
		t.Errorf("server %d (killed) logged %d panics: %s", wrVictim, len(p), examples(p))
	}
	ck.audit()
	ck.stock([]product{{id: p1, stock: wrStock}, {id: p2, stock: wrSmallStock}})
	for _, p := range []string{p1, p2} {
		checkQueueRows(t, ck, p)
	}

	t.Logf("figures: admitted %d in %.2f s with 3 processes (want %.1f), %d in %.2f s with 2 (want %.1f); sold-out %s after the last payment; run %s",
		fig1.admitted, fig1.elapsed, fig1.want, fig2.admitted, fig2.elapsed, fig2.want, delay.Round(time.Millisecond), time.Since(testStart).Round(time.Second))
}

// wrGQL runs one GraphQL operation on server srv (the next one when it
// refuses the connection), decoding its data into v when it succeeds. It
// returns the outcome (see classifyGraphQL) and the server that answered.
func wrGQL(c *client, srv int, op, query string, vars map[string]any, admin bool, v any) (string, int) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	var header func(http.Header)
	if admin {
		header = func(h http.Header) { h.Set("Authorization", "Bearer "+c.token) }
	}
	rep := c.post(op, "/graphql", srv%len(c.servers), body, header, classifyGraphQL)
	if rep.outcome == outOK && v != nil {
		var r gqlResponse
		if err := json.Unmarshal(rep.body, &r); err != nil || json.Unmarshal(r.Data, v) != nil {
			return "undecodable data", rep.server
		}
	}
	return rep.outcome, rep.server
}

// wrDBNow is the database's clock, the one the servers judge time by.
func wrDBNow(t *testing.T, ck *checker) time.Time {
	t.Helper()
	var now time.Time
	if err := ck.db.SQL.QueryRowContext(ck.ctx, `SELECT UTC_TIMESTAMP(6)`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

// checkPermutation checks the pre-queue's numbers: 1..n each once, and an
// order independent of the join order and of the server joined through.
// at(i) is join i's number and the server that took it.
//
// Under the contract every order is equally likely, so the numbers are a
// uniformly random permutation of 1..n whatever the join order and server.
// Each statistic below has a known distribution under that hypothesis, and
// each bound sits at 4.3-4.5 standard deviations: a correct server fails
// one of the five about 4 times in 10^5 runs; the failures they exist for
// (numbers in join order, or by server, or in blocks) land tens of
// deviations out.
//
//   - Spearman's rank correlation between join order and number: mean 0,
//     sd 1/sqrt(n−1) (0.058 for n = 300). |rho| < 0.25 is 4.3 sd. Numbers
//     in join order give rho = 1.
//   - Wald-Wolfowitz runs of "which server" in number order, for k
//     categories with counts n_i (N = Σn_i): mean (N(N+1) − Σn_i²)/N,
//     variance (Σn_i²(Σn_i² + N(N+1)) − 2NΣn_i³ − N³)/(N²(N−1)). Three
//     servers of 100: mean 201, sd 8.1; within 4.5 sd. Numbers in join
//     order (blocks of 20) give 15 runs, numbers by server 3.
//   - Each server's mean number: a sample of m of 1..N without replacement
//     has mean (N+1)/2 and variance (N²−1)/12/m × (N−m)/(N−1) (100 of 300:
//     150.5, sd 7.1); within 4.5 sd. A server whose joins went first or
//     last is off by about 100.
func checkPermutation(t *testing.T, tickets []wrJoined, at func(i int) (int64, int)) {
	t.Helper()
	n := len(tickets)
	byNumber := make([]int, n) // number−1 → join index
	seen := make([]bool, n)
	for i := range n {
		num, _ := at(i)
		if num < 1 || num > int64(n) || seen[num-1] {
			t.Fatalf("join %d (ticket %s) has number %d: want each of 1..%d once", i, tickets[i].id, num, n)
		}
		seen[num-1] = true
		byNumber[num-1] = i
	}

	// Spearman: join ranks 1..n against numbers 1..n, no ties.
	var d2 float64
	for i := range n {
		num, _ := at(i)
		d := float64(int64(i+1) - num)
		d2 += d * d
	}
	fn := float64(n)
	rho := 1 - 6*d2/(fn*(fn*fn-1))
	rhoSD := 1 / math.Sqrt(fn-1)
	t.Logf("Spearman rho(join order, number) = %.4f (sd under a uniform shuffle %.3f: %.1f sd; bound |rho| < 0.25)", rho, rhoSD, math.Abs(rho)/rhoSD)
	if math.Abs(rho) >= 0.25 {
		t.Errorf("the pre-queue's numbers follow the join order: Spearman rho = %.4f (|rho| must be < 0.25)", rho)
	}

	// Runs of the server in number order.
	counts := map[int]float64{}
	runs, prev := 0, -1
	for _, i := range byNumber {
		_, srv := at(i)
		counts[srv]++
		if srv != prev {
			runs++
		}
		prev = srv
	}
	var s2, s3 float64
	for _, m := range counts {
		s2 += m * m
		s3 += m * m * m
	}
	mean := (fn*(fn+1) - s2) / fn
	sd := math.Sqrt((s2*(s2+fn*(fn+1)) - 2*fn*s3 - fn*fn*fn) / (fn * fn * (fn - 1)))
	t.Logf("runs of the server joined through, in number order: %d (mean %.1f, sd %.2f under a uniform shuffle: %+.1f sd; bound ±4.5 sd); joins per server %v",
		runs, mean, sd, (float64(runs)-mean)/sd, counts)
	if math.Abs(float64(runs)-mean) > 4.5*sd {
		t.Errorf("the pre-queue's numbers depend on the server joined through: %d runs, want %.1f ± %.1f", runs, mean, 4.5*sd)
	}

	// Each server's mean number.
	sums := map[int]float64{}
	for i := range n {
		num, srv := at(i)
		sums[srv] += float64(num)
	}
	for _, srv := range slices.Sorted(maps.Keys(counts)) {
		m := counts[srv]
		if m == fn {
			break // one server took every join: nothing to compare
		}
		avg := sums[srv] / m
		sdm := math.Sqrt((fn*fn - 1) / 12 / m * (fn - m) / (fn - 1))
		t.Logf("server %d: %d joins, mean number %.1f (want %.1f, sd %.1f: %+.1f sd)", srv, int(m), avg, (fn+1)/2, sdm, (avg-(fn+1)/2)/sdm)
		if math.Abs(avg-(fn+1)/2) > 4.5*sdm {
			t.Errorf("server %d's joins have mean number %.1f, want %.1f ± %.1f: the order depends on the server", srv, avg, (fn+1)/2, 4.5*sdm)
		}
	}
}

// wrFigures is one measurement of the admission rate.
type wrFigures struct {
	admitted0, admitted1, admitted int64
	elapsed                        float64 // seconds, by the database's clock
	want                           float64 // rate × elapsed
}

// wrMeasure counts the tickets of product p admitted over wrWindow, with
// the elapsed time from the database's clock (the clock admission runs
// on), and checks it against the product's rate: within 2 s worth + 2 of
// rate × elapsed either way. Admission moves in rounds, each about the
// time since the last one × rate (at most 2 s worth, fractions carried),
// so the count over a window is rate × elapsed give or take what the
// rounds just before each end of the window earned; 2 s worth covers a
// round delayed by a second or more on a loaded CI machine, and 2 covers
// the fractions. A per-process clock (each process admitting for its own
// time since its own last round) would admit 2 or 3 × rate × elapsed, far
// above the bound, which is checked on its own too.
func wrMeasure(t *testing.T, ck *checker, p, what string) wrFigures {
	t.Helper()
	read := func() (time.Time, int64) {
		var at time.Time
		var admitted int64
		if err := ck.db.SQL.QueryRowContext(ck.ctx, `SELECT UTC_TIMESTAMP(6), queue_admitted FROM products WHERE id = ?`, p).Scan(&at, &admitted); err != nil {
			t.Fatal(err)
		}
		return at, admitted
	}
	t0, a0 := read()
	time.Sleep(wrWindow)
	t1, a1 := read()
	f := wrFigures{admitted0: a0, admitted1: a1, admitted: a1 - a0, elapsed: t1.Sub(t0).Seconds()}
	perSec := float64(wrRate) / 60
	f.want = perSec * f.elapsed
	slack := 2*perSec + 2
	t.Logf("%s: admitted %d in %.3f s (database clock), want %.1f ± %.0f (rate %d/min)", what, f.admitted, f.elapsed, f.want, slack, wrRate)
	if float64(f.admitted) < f.want-slack || float64(f.admitted) > f.want+slack {
		t.Errorf("%s admitted %d tickets in %.3f s at %d a minute: want %.1f ± %.0f", what, f.admitted, f.elapsed, wrRate, f.want, slack)
	}
	if float64(f.admitted) >= 1.5*f.want {
		t.Errorf("%s admitted %d tickets in %.3f s, at least 1.5 × the rate's %.1f: each process admits on its own clock", what, f.admitted, f.elapsed, f.want)
	}
	return f
}

// sellOutThroughLine sells a product of stock 3 out through its line: 3
// joins are admitted and take holds with their passes (nothing sellable is
// left, so admission pauses and the 7 who join then wait), the 3 holds are
// ordered and paid by signed webhooks, and then every WAITING ticket must
// become SOLD_OUT, and a later join be SOLD_OUT at once. It returns the
// product and how long after the last payment's answer the line was ended.
func sellOutThroughLine(t *testing.T, c *client, ck *checker) (string, time.Duration) {
	t.Helper()
	var created struct{ CreateProduct struct{ ID string } }
	if o, _ := wrGQL(c, 0, "createProduct", `mutation($in: CreateProductInput!) { createProduct(input: $in) { id } }`,
		map[string]any{"in": map[string]any{"name": "Tiny drop", "priceCents": 4200, "stock": wrSmallStock, "queueAdmitPerMinute": wrSmallRate}},
		true, &created); o != outOK {
		t.Fatalf("createProduct: %s", o)
	}
	p := created.CreateProduct.ID
	join := func(i int) wrTicket {
		var out struct{ JoinQueue wrTicket }
		if o, srv := wrGQL(c, i, "joinQueue", `mutation($p: ID!) { joinQueue(productId: $p) { `+wrTicketFields+` } }`,
			map[string]any{"p": p}, false, &out); o != outOK {
			t.Fatalf("joinQueue of product %s (server %d): %s", p, srv, o)
		}
		return out.JoinQueue
	}
	ticket := func(i int, id string) wrTicket {
		var out struct{ QueueTicket *wrTicket }
		if o, srv := wrGQL(c, i, "queueTicket", `query($id: ID!) { queueTicket(id: $id) { `+wrTicketFields+` } }`,
			map[string]any{"id": id}, false, &out); o != outOK || out.QueueTicket == nil {
			t.Fatalf("queueTicket %s (server %d): %s %+v", id, srv, o, out.QueueTicket)
		}
		return *out.QueueTicket
	}

	var first []wrTicket
	for i := range wrSmallStock {
		first = append(first, join(i))
	}
	var holds []string
	for i, tk := range first {
		waitFor(t, 10*time.Second, 50*time.Millisecond, func() bool { return ticket(i+1, tk.ID).Status == "ADMITTED" },
			func() string {
				return fmt.Sprintf("ticket %s of product %s (stock %d, %d/min) not ADMITTED after 10 s", tk.ID, p, wrSmallStock, wrSmallRate)
			})
		var out struct{ CreateHold struct{ ID, Status string } }
		if o, srv := wrGQL(c, i, "createHold", `mutation($p: ID!, $t: ID) { createHold(productId: $p, qty: 1, queueTicketId: $t) { id status } }`,
			map[string]any{"p": p, "t": tk.ID}, false, &out); o != outOK {
			t.Fatalf("createHold with admitted ticket %s (server %d): %s", tk.ID, srv, o)
		}
		holds = append(holds, out.CreateHold.ID)
		// Read through the other server, whose copy of the ticket may be
		// about a second stale (a ticket read costs no query, like a
		// product read; stock/queue_read.go).
		seen := time.Now()
		waitFor(t, 5*time.Second, 20*time.Millisecond, func() bool { return ticket(i+1, tk.ID).Status == "USED" },
			func() string {
				return fmt.Sprintf("ticket %s is not USED through the other server 5 s after its hold", tk.ID)
			})
		t.Logf("ticket %s: USED through the other server %s after its hold", tk.ID, time.Since(seen).Round(time.Millisecond))
	}

	// Nothing is sellable: the late joiners wait, and stay WAITING (two
	// rounds of every process pass) while the holds are being paid for.
	var late []wrTicket
	for i := range wrLateJoins {
		tk := join(i)
		if tk.Status != "WAITING" {
			t.Errorf("join with nothing sellable: %+v, want WAITING", tk)
		}
		late = append(late, tk)
	}
	time.Sleep(1200 * time.Millisecond)
	for i, tk := range late {
		if got := ticket(i, tk.ID); got.Status != "WAITING" || got.Position == nil {
			t.Errorf("ticket %s joined with nothing sellable: %+v after 1.2 s, want WAITING with a position (admission pauses)", tk.ID, got)
		}
	}

	var paidAt time.Time
	for i, h := range holds {
		var out struct{ CreateOrder struct{ ID, Status string } }
		if o, srv := wrGQL(c, i, "createOrder", `mutation($h: ID!) { createOrder(holdId: $h) { id status } }`,
			map[string]any{"h": h}, false, &out); o != outOK {
			t.Fatalf("createOrder of hold %s (server %d): %s", h, srv, o)
		}
		o, a := c.webhook("webhook", fmt.Sprintf("msg_queue_%d", i), fmt.Sprintf("evt_queue_%d", i), out.CreateOrder.ID, "success")
		if o != outOK || a == nil || a.OrderStatus != "PAID" {
			t.Fatalf("payment webhook of order %s: %s %+v, want 200 PAID", out.CreateOrder.ID, o, a)
		}
		paidAt = time.Now()
	}

	var waiting, soldOut int
	waitFor(t, wrSoldOut, 20*time.Millisecond, func() bool {
		if err := ck.db.SQL.QueryRowContext(ck.ctx, `SELECT COUNT(CASE WHEN status = 'WAITING' THEN 1 END), COUNT(CASE WHEN status = 'SOLD_OUT' THEN 1 END)
			FROM queue_tickets WHERE product_id = ?`, p).Scan(&waiting, &soldOut); err != nil {
			t.Fatal(err)
		}
		return waiting == 0
	}, func() string {
		return fmt.Sprintf("product %s sold out, but %d tickets still WAITING %s after the last payment", p, waiting, wrSoldOut)
	})
	delay := time.Since(paidAt)
	t.Logf("sold out: every WAITING ticket ended %s after the last payment's answer (the contract: within 1 s; asserted within %s)",
		delay.Round(time.Millisecond), wrSoldOut)
	if soldOut != wrLateJoins {
		t.Errorf("product %s after its sell-out: %d tickets SOLD_OUT, want the %d that waited", p, soldOut, wrLateJoins)
	}
	// Through the API, on both servers (each one's copy at most about a
	// second stale).
	for i, tk := range late {
		for srv := range len(c.servers) {
			var got wrTicket
			waitFor(t, 5*time.Second, 20*time.Millisecond, func() bool {
				got = ticket(i+srv, tk.ID)
				return got.Status == "SOLD_OUT" && got.Position == nil
			}, func() string {
				return fmt.Sprintf("ticket %s through server %d 5 s after the sell-out was seen: %+v, want SOLD_OUT without a position", tk.ID, srv, got)
			})
		}
	}
	if tk := join(0); tk.Status != "SOLD_OUT" {
		t.Errorf("join after the sell-out: %+v, want SOLD_OUT at once", tk)
	}

	// First come first served after the start: numbers in join order.
	var prev int64
	for _, tk := range append(first, late...) {
		var num int64
		if err := ck.db.SQL.QueryRowContext(ck.ctx, `SELECT number FROM queue_tickets WHERE id = ?`, tk.ID).Scan(&num); err != nil {
			t.Fatalf("ticket %s's number: %v", tk.ID, err)
		}
		if num <= prev {
			t.Errorf("product %s: ticket %s joined later than number %d but has number %d (first come first served)", p, tk.ID, prev, num)
		}
		prev = num
	}
	return p, delay
}

// checkQueueRows: every hold on product p spent a pass (as many holds as
// USED tickets: a pass takes one hold), numbers are unique, and the
// product's queue_waiting and queue_admitted match its ticket rows.
func checkQueueRows(t *testing.T, ck *checker, p string) {
	t.Helper()
	var holds, used, waiting, admitted, numbered, distinct, qWaiting, qAdmitted int64
	err := ck.db.SQL.QueryRowContext(context.Background(), `SELECT
			(SELECT COUNT(*) FROM holds WHERE product_id = p.id),
			(SELECT COUNT(*) FROM queue_tickets WHERE product_id = p.id AND status = 'USED'),
			(SELECT COUNT(*) FROM queue_tickets WHERE product_id = p.id AND status = 'WAITING'),
			(SELECT COUNT(*) FROM queue_tickets WHERE product_id = p.id AND status IN ('ADMITTED', 'USED', 'EXPIRED')),
			(SELECT COUNT(number) FROM queue_tickets WHERE product_id = p.id),
			(SELECT COUNT(DISTINCT number) FROM queue_tickets WHERE product_id = p.id),
			p.queue_waiting, p.queue_admitted
		FROM products p WHERE p.id = ?`, p).Scan(&holds, &used, &waiting, &admitted, &numbered, &distinct, &qWaiting, &qAdmitted)
	if err != nil {
		t.Fatalf("product %s's queue: %v", p, err)
	}
	t.Logf("product %s at the end: %d holds, %d USED tickets, %d WAITING (queue_waiting %d), %d let in (queue_admitted %d)",
		p, holds, used, waiting, qWaiting, admitted, qAdmitted)
	if holds != used {
		t.Errorf("product %s: %d holds but %d USED tickets: a hold was taken without spending a pass (or a pass spent without a hold)", p, holds, used)
	}
	if numbered != distinct {
		t.Errorf("product %s: %d numbered tickets share %d numbers", p, numbered, distinct)
	}
	if qWaiting != waiting {
		t.Errorf("product %s: queue_waiting %d, but %d tickets WAITING", p, qWaiting, waiting)
	}
	if qAdmitted != admitted {
		t.Errorf("product %s: queue_admitted %d, but %d tickets ADMITTED, USED or EXPIRED", p, qAdmitted, admitted)
	}
}
