package stock

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"entgo.io/ent/dialect/sql"
	"github.com/google/uuid"

	"flashsale/ent"
	"flashsale/ent/hold"
	"flashsale/ent/holdkey"
	"flashsale/ent/order"
	"flashsale/ent/orderevent"
	"flashsale/ent/predicate"
	"flashsale/ent/product"
)

// HoldRequest is one createHold call.
type HoldRequest struct {
	ProductID      int
	Qty            int
	Customer       string // the customer's ID; "" for an anonymous buyer
	IdempotencyKey string // "" for none
	// QueueTicket is the caller's admitted ticket, for a product with a
	// waiting room (zero: none; products without one ignore it).
	QueueTicket uuid.UUID
}

// CreateHold reserves qty units of a product for the hold TTL.
//
// Concurrent calls for one product are committed together (holdBatch),
// each decided as if it ran alone at its turn, under the product's lock:
//   - a call with an idempotency key this customer used before gets the
//     hold that key made, in whatever state it is now (ErrKeyReused if that
//     was for another product or qty), and changes nothing;
//   - outside the product's sale window: ErrSaleNotStarted (a
//     *SaleNotStartedError) or ErrSaleEnded, by the database clock;
//   - past the product's maxPerCustomer (the customer's ACTIVE holds,
//     PENDING_PAYMENT and PAID orders; an anonymous hold counts as its own
//     buyer): ErrPurchaseLimit;
//   - short of sellable stock: ErrInsufficientStock. Before refusing, the
//     batch releases the product's overdue holds and orders, so stock that
//     has lapsed is sold again without waiting for the sweeper.
//
// A product this process just saw sold out is refused without a database
// round trip for a short while (soldOutRecheck), unless the call carries a
// key (its retry must find its hold). A caller that leaves before its
// answer may still get its hold committed; a retry with the same key finds
// it, and without a key nobody learns its ID, so it expires.
func (s *Service) CreateHold(ctx context.Context, req HoldRequest) (*ent.Hold, error) {
	if req.Qty < 1 || req.Qty > s.cfg.MaxHoldQty {
		return nil, InvalidInput("qty must be between 1 and %d", s.cfg.MaxHoldQty)
	}
	if req.IdempotencyKey != "" && !validKey(req.IdempotencyKey) {
		return nil, InvalidInput("idempotencyKey must be 1 to %d printable characters", maxKeyRunes)
	}
	if req.Customer != "" && !validKey(req.Customer) {
		return nil, InvalidInput("customer ID must be 1 to %d printable characters", maxKeyRunes)
	}
	if req.IdempotencyKey == "" && s.soldOut(req.ProductID) {
		return nil, &ShortError{Requested: req.Qty, SoldOut: true}
	}
	return s.holds.do(ctx, req.ProductID, req)
}

// holdKey is a hold idempotency key in its customer's scope.
type holdKey struct{ customer, key string }

// holdBatch is one transaction for concurrent holds of a product: lock the
// row and read what the calls' decisions depend on (lockForHolds), decide
// every call in arrival order (decideHolds), write the new holds in one
// statement and the product once (writeHolds), then let the product's next
// batch start while this one commits.
func (s *Service) holdBatch(ctx context.Context, productID int, reqs []HoldRequest, next func()) []result[*ent.Hold] {
	var (
		results []result[*ent.Hold]
		changed *ent.Product
		passes  passes
	)
	err := s.txUnique(ctx, "create hold", func(tx *ent.Tx) error {
		p, now, used, known, err := s.lockForHolds(ctx, tx, productID, reqs)
		if err != nil {
			return err
		}
		if passes, err = passesOf(ctx, tx, p, reqs); err != nil {
			return err
		}
		plan := decideHolds(p, now, reqs, used, known, passes)
		if results, err = s.writeHolds(ctx, tx, p, now, reqs, plan); err != nil {
			return err
		}
		if err := passes.spendAll(ctx, tx, now, reqs, plan); err != nil {
			return err
		}
		changed = p
		next()
		return nil
	})
	if err != nil {
		return fail[*ent.Hold](len(reqs), err)
	}
	s.observer.HoldBatch(len(reqs))
	s.productChanged(changed)
	for id := range passes.spent {
		s.tickets.forget(id) // now USED: the next read asks the database
	}
	return results
}

// lockForHolds locks the product and reads, under its lock, the units its
// customers of the batch already have (maxPerCustomer) and the holds the
// batch's keys made before. When the stock or a limit looks short, it
// first releases the product's lapsed holds and orders, which may be what
// stands in the way.
func (s *Service) lockForHolds(ctx context.Context, tx *ent.Tx, productID int, reqs []HoldRequest) (
	p *ent.Product, now time.Time, used map[string]int, known map[holdKey]*ent.Hold, err error) {
	if p, now, err = s.lockProduct(ctx, tx, productID); err != nil {
		return
	}
	customers := customersOf(reqs)
	if used, err = s.unitsOfCustomers(ctx, tx, p, customers); err != nil {
		return
	}
	if Sellable(p) < demand(reqs) || overLimit(p, used, reqs) {
		if err = s.releaseOverdueNow(ctx, tx, p, now); err != nil {
			return
		}
		if used, err = s.unitsOfCustomers(ctx, tx, p, customers); err != nil {
			return
		}
	}
	// Read after any release, so a retried key sees its hold as it is now.
	known, err = s.keyedHolds(ctx, tx, reqs)
	return
}

// holdPlan is what a hold batch decided: the answers of the calls that make
// no hold, the calls that do, and how many units they take.
type holdPlan struct {
	results []result[*ent.Hold]
	made    []int // the calls that make a hold, in arrival order
	sameKey []int // for a call repeating a key made in this batch: that call, plus one
	taken   int
}

// decideHolds decides every call in arrival order, as if each ran alone at
// its turn: a known key answers with its hold; then the sale window, the
// customer's limit (used is updated as holds are made) and the sellable
// stock. A call that does not fit is refused without stopping smaller ones
// behind it. It reads and writes nothing else.
func decideHolds(p *ent.Product, now time.Time, reqs []HoldRequest, used map[string]int, known map[holdKey]*ent.Hold, passes passes) holdPlan {
	plan := holdPlan{results: make([]result[*ent.Hold], len(reqs)), sameKey: make([]int, len(reqs))}
	madeWithKey := map[holdKey]int{}
	for i, r := range reqs {
		k := holdKey{r.Customer, r.IdempotencyKey}
		if r.IdempotencyKey != "" {
			if h, ok := known[k]; ok {
				plan.results[i] = replay(h, r)
				continue
			}
			if j, ok := madeWithKey[k]; ok {
				if reqs[j].Qty != r.Qty {
					plan.results[i].err = keyReused(r, p.ID, reqs[j].Qty)
				} else {
					plan.sameKey[i] = j + 1
				}
				continue
			}
			// A key whose earlier call was refused made nothing: this
			// call is decided afresh, as it would be on its own.
		}
		if err := admit(p, now, r, used, Sellable(p)-plan.taken, passes); err != nil {
			plan.results[i].err = err
			continue
		}
		passes.spend(r.QueueTicket)
		plan.taken += r.Qty
		if used != nil && r.Customer != "" {
			used[r.Customer] += r.Qty
		}
		plan.made = append(plan.made, i)
		if r.IdempotencyKey != "" {
			madeWithKey[k] = i
		}
	}
	return plan
}

// admit refuses a call outside the sale window, without a usable queue
// pass where the product has a waiting room, past its customer's
// maxPerCustomer, or short of the units left; nil admits it.
func admit(p *ent.Product, now time.Time, r HoldRequest, used map[string]int, left int, passes passes) error {
	if err := saleOpen(p, now); err != nil {
		return err
	}
	if err := passes.check(p, now, r); err != nil {
		return err
	}
	if limit := p.MaxPerCustomer; limit != nil {
		have := 0
		if r.Customer != "" {
			have = used[r.Customer]
		}
		if have+r.Qty > *limit {
			return fmt.Errorf("%w: %d requested, %d of at most %d per customer already held, pending or bought",
				ErrPurchaseLimit, r.Qty, have, *limit)
		}
	}
	if r.Qty > left {
		return &ShortError{Requested: r.Qty, Sellable: max(left, 0)}
	}
	return nil
}

// writeHolds writes what plan decided: the new holds in one statement, the
// product's reserved units once, the keys; and answers every call.
func (s *Service) writeHolds(ctx context.Context, tx *ent.Tx, p *ent.Product, now time.Time, reqs []HoldRequest, plan holdPlan) ([]result[*ent.Hold], error) {
	results := plan.results
	if plan.taken > 0 {
		builders := make([]*ent.HoldCreate, len(plan.made))
		for j, i := range plan.made {
			r := reqs[i]
			c := tx.Hold.Create().
				SetProductID(p.ID).SetQty(r.Qty).SetStatus(hold.StatusACTIVE).SetCustomerID(r.Customer).
				SetExpiresAt(now.Add(s.cfg.HoldTTL)).SetCreatedAt(now).SetUpdatedAt(now)
			if r.IdempotencyKey != "" {
				c.SetIdempotencyKey(r.IdempotencyKey)
			}
			builders[j] = c
		}
		holds, err := tx.Hold.CreateBulk(builders...).Save(ctx)
		if err != nil {
			return nil, err
		}
		if err := tx.Product.Update().Where(product.ID(p.ID)).AddStockReserved(plan.taken).SetUpdatedAt(now).Exec(ctx); err != nil {
			return nil, err
		}
		p.StockReserved += plan.taken
		p.UpdatedAt = now
		for j, i := range plan.made {
			results[i].out = holds[j]
		}
		if err := s.storeKeys(ctx, tx, holds); err != nil {
			return nil, err
		}
	}
	for i, j := range plan.sameKey {
		if j > 0 {
			results[i] = results[j-1]
		}
	}
	return results, nil
}

// replay answers a call whose key made hold h before: h as it is now, or
// ErrKeyReused when the call asks for something else.
func replay(h *ent.Hold, r HoldRequest) result[*ent.Hold] {
	if h.ProductID != r.ProductID || h.Qty != r.Qty {
		return result[*ent.Hold]{err: keyReused(r, h.ProductID, h.Qty)}
	}
	return result[*ent.Hold]{out: h}
}

func keyReused(r HoldRequest, productID, qty int) error {
	return fmt.Errorf("%w: idempotencyKey %q was used for %d of product %d", ErrKeyReused, truncate(r.IdempotencyKey), qty, productID)
}

// saleOpen refuses a hold outside the product's sale window at now.
func saleOpen(p *ent.Product, now time.Time) error {
	if p.SaleStartsAt != nil && now.Before(*p.SaleStartsAt) {
		return &SaleNotStartedError{StartsAt: p.SaleStartsAt.UTC()}
	}
	if p.SaleEndsAt != nil && !now.Before(*p.SaleEndsAt) {
		return fmt.Errorf("%w: the sale closed at %s", ErrSaleEnded, p.SaleEndsAt.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// keyedHolds returns the holds the batch's idempotency keys made before,
// in any product. A key another batch stores meanwhile makes this batch's
// storeKeys fail on the unique key; txUnique then runs it again.
func (s *Service) keyedHolds(ctx context.Context, tx *ent.Tx, reqs []HoldRequest) (map[holdKey]*ent.Hold, error) {
	var preds []predicate.HoldKey
	for _, r := range reqs {
		if r.IdempotencyKey != "" {
			preds = append(preds, holdkey.And(holdkey.CustomerID(r.Customer), holdkey.IdempotencyKey(r.IdempotencyKey)))
		}
	}
	if len(preds) == 0 {
		return nil, nil
	}
	hs, err := tx.Hold.Query().Where(hold.HasKeyWith(holdkey.Or(preds...))).All(ctx)
	if err != nil {
		return nil, err
	}
	known := make(map[holdKey]*ent.Hold, len(hs))
	for _, h := range hs {
		if h.IdempotencyKey != nil {
			known[holdKey{h.CustomerID, *h.IdempotencyKey}] = h
		}
	}
	return known, nil
}

// storeKeys records the keys of new holds, in key order (so two batches
// that share keys wait for each other in one order).
func (s *Service) storeKeys(ctx context.Context, tx *ent.Tx, holds []*ent.Hold) error {
	var keyed []*ent.Hold
	for _, h := range holds {
		if h.IdempotencyKey != nil {
			keyed = append(keyed, h)
		}
	}
	if len(keyed) == 0 {
		return nil
	}
	slices.SortFunc(keyed, func(a, b *ent.Hold) int {
		return cmp.Or(strings.Compare(a.CustomerID, b.CustomerID), strings.Compare(*a.IdempotencyKey, *b.IdempotencyKey))
	})
	builders := make([]*ent.HoldKeyCreate, len(keyed))
	for i, h := range keyed {
		builders[i] = tx.HoldKey.Create().SetCustomerID(h.CustomerID).SetIdempotencyKey(*h.IdempotencyKey).SetHoldID(h.ID)
	}
	return tx.HoldKey.CreateBulk(builders...).Exec(ctx)
}

// customersOf returns the distinct customers of a batch (not anonymous),
// in arrival order.
func customersOf(reqs []HoldRequest) []string {
	var out []string
	seen := make(map[string]bool, len(reqs))
	for _, r := range reqs {
		if r.Customer != "" && !seen[r.Customer] {
			seen[r.Customer] = true
			out = append(out, r.Customer)
		}
	}
	return out
}

// demand is the units the batch's calls ask for.
func demand(reqs []HoldRequest) int {
	n := 0
	for _, r := range reqs {
		n += r.Qty
	}
	return n
}

// overLimit reports whether a customer of the batch would pass the
// product's maxPerCustomer if every one of their calls were admitted.
func overLimit(p *ent.Product, used map[string]int, reqs []HoldRequest) bool {
	if p.MaxPerCustomer == nil || len(used) == 0 {
		return false
	}
	asked := make(map[string]int, len(used))
	for _, r := range reqs {
		if r.Customer != "" {
			asked[r.Customer] += r.Qty
		}
	}
	for c, n := range used {
		if n+asked[c] > *p.MaxPerCustomer {
			return true
		}
	}
	return false
}

// unitsOfCustomers returns, for each of the customers, the units of
// product p they hold (ACTIVE), have pending or bought: what counts against
// maxPerCustomer (nil when p has no limit). Read under the product's lock,
// the only lock under which these counts change, so no concurrent call can
// slip past the limit.
func (s *Service) unitsOfCustomers(ctx context.Context, tx *ent.Tx, p *ent.Product, customers []string) (map[string]int, error) {
	if p.MaxPerCustomer == nil || len(customers) == 0 {
		return nil, nil
	}
	return customerUnits(ctx, tx, p.ID, customers)
}

// customerUnits sums, per customer, the units of a product held (ACTIVE),
// pending or bought: of the customers given (each present, 0 if none), or
// of every customer when none is given. Holds are read before orders, so a
// concurrent createOrder (which moves units from a hold to an order
// without the product's lock) can only be counted twice, never missed.
func customerUnits(ctx context.Context, tx *ent.Tx, productID int, customers []string) (map[string]int, error) {
	units := make(map[string]int, len(customers))
	for _, c := range customers {
		units[c] = 0
	}
	holdOf, orderOf := hold.CustomerIDNEQ(""), order.CustomerIDNEQ("")
	if len(customers) > 0 {
		holdOf, orderOf = hold.CustomerIDIn(customers...), order.CustomerIDIn(customers...)
	}
	var sums []struct {
		CustomerID string `json:"customer_id"`
		Sum        int    `json:"sum"`
	}
	if err := tx.Hold.Query().
		Where(hold.ProductID(productID), holdOf, hold.StatusEQ(hold.StatusACTIVE)).
		GroupBy(hold.FieldCustomerID).Aggregate(ent.Sum(hold.FieldQty)).Scan(ctx, &sums); err != nil {
		return nil, err
	}
	for _, r := range sums {
		units[r.CustomerID] += r.Sum
	}
	sums = sums[:0]
	if err := tx.Order.Query().
		Where(order.ProductID(productID), orderOf, order.StatusIn(order.StatusPENDING_PAYMENT, order.StatusPAID)).
		GroupBy(order.FieldCustomerID).Aggregate(ent.Sum(order.FieldQty)).Scan(ctx, &sums); err != nil {
		return nil, err
	}
	for _, r := range sums {
		units[r.CustomerID] += r.Sum
	}
	return units, nil
}

// priceColumn carries a hold's product price in orderBatch's locking read.
const priceColumn = "unit_price_cents"

// withPrice adds the product's price to a read of holds, from a subquery
// that takes no lock (MySQL and MariaDB lock only the rows of the outer
// SELECT ... FOR UPDATE): an order never waits for the product's row, and
// needs no round trip of its own for the price.
func withPrice(sel *sql.Selector) {
	sel.AppendSelectExprAs(sql.Raw(fmt.Sprintf("(SELECT `%s` FROM `%s` WHERE `%s`.`%s` = %s)",
		product.FieldPriceCents, product.Table, product.Table, product.FieldID, sel.C(hold.FieldProductID))), priceColumn)
}

// priceOf returns the price read by withPrice.
func priceOf(h *ent.Hold) (int64, error) {
	v, err := h.Value(priceColumn)
	if err != nil {
		return 0, err
	}
	switch p := v.(type) {
	case int64:
		return p, nil
	case []byte: // a driver that returns integers as text
		return strconv.ParseInt(string(p), 10, 64)
	}
	return 0, fmt.Errorf("price of hold %s: got %T", h.ID, v)
}

// CreateOrder turns an ACTIVE, unexpired hold into a PENDING_PAYMENT order.
// The hold's units stay reserved, now for the order, so no product counter
// changes and the product's row is not locked: orders never queue behind
// the hold batches of a hot product. Concurrent calls are committed
// together (orderBatch).
//
// Another customer's hold is ErrNotFound to the caller. A hold past its
// expires_at is refused with ErrHoldExpired even before the sweeper saw it;
// the refusal changes nothing (the sweeper releases it). A caller that
// leaves before its answer may still get its order committed; a retry then
// gets ErrHoldNotActive, and the hold shows the order.
func (s *Service) CreateOrder(ctx context.Context, holdID uuid.UUID, by Caller) (*ent.Order, error) {
	return s.orders.do(ctx, orderShard(holdID), orderCall{holdID: holdID, by: by})
}

// orderCall is one createOrder call.
type orderCall struct {
	holdID uuid.UUID
	by     Caller
}

// orderBatch is one transaction for concurrent createOrder calls: lock
// their holds (by ID, reading the database clock once the locks are held,
// and the price without a lock), decide each call in arrival order
// (decideOrders), insert all orders in one statement, mark their holds
// REDEEMED in another, and write their order.created events.
func (s *Service) orderBatch(ctx context.Context, _ int, calls []orderCall, _ func()) []result[*ent.Order] {
	var results []result[*ent.Order]
	err := s.tx(ctx, "create order", func(tx *ent.Tx) error {
		holdIDs := make([]uuid.UUID, len(calls))
		for i, c := range calls {
			holdIDs[i] = c.holdID
		}
		hs, now, err := s.lockHolds(ctx, tx, holdIDs, withPrice)
		if err != nil {
			return err
		}
		byID := make(map[uuid.UUID]*ent.Hold, len(hs))
		for _, h := range hs {
			byID[h.ID] = h
		}
		var admitted []int
		results, admitted = decideOrders(calls, byID, now)
		return s.insertOrders(ctx, tx, now, calls, byID, admitted, results)
	})
	if err != nil {
		return fail[*ent.Order](len(calls), err)
	}
	made := 0
	for _, r := range results {
		if r.err == nil && r.out != nil {
			made++
		}
	}
	s.observer.OrdersReached(string(order.StatusPENDING_PAYMENT), made)
	return results
}

// decideOrders decides each call in arrival order against its hold (as
// locked): another customer's or a missing hold is not found, an expired
// or inactive one refused; an admitted call's hold is marked REDEEMED in
// byID, so a second call for it in the batch is refused. It returns the
// refusals and the admitted calls.
func decideOrders(calls []orderCall, byID map[uuid.UUID]*ent.Hold, now time.Time) ([]result[*ent.Order], []int) {
	results := make([]result[*ent.Order], len(calls))
	admitted := make([]int, 0, len(calls))
	for i, c := range calls {
		h := byID[c.holdID]
		switch {
		case h == nil || !c.by.mayAct(h.CustomerID):
			results[i].err = fmt.Errorf("%w: no hold with ID %s", ErrNotFound, c.holdID)
		case h.Status == hold.StatusEXPIRED || (h.Status == hold.StatusACTIVE && !now.Before(h.ExpiresAt)):
			results[i].err = fmt.Errorf("%w: hold expired at %s", ErrHoldExpired, h.ExpiresAt.UTC().Format(time.RFC3339))
		case h.Status != hold.StatusACTIVE:
			// REDEEMED or RELEASED, or redeemed earlier in this batch.
			results[i].err = fmt.Errorf("%w: hold is %s", ErrHoldNotActive, h.Status)
		default:
			h.Status, h.UpdatedAt = hold.StatusREDEEMED, now
			admitted = append(admitted, i)
		}
	}
	return results, admitted
}

// insertOrders inserts the admitted calls' orders in one statement, marks
// their holds REDEEMED in another, writes their order.created events, and
// answers the calls.
func (s *Service) insertOrders(ctx context.Context, tx *ent.Tx, now time.Time, calls []orderCall,
	byID map[uuid.UUID]*ent.Hold, admitted []int, results []result[*ent.Order]) error {
	if len(admitted) == 0 {
		return nil
	}
	builders := make([]*ent.OrderCreate, len(admitted))
	redeemed := make([]uuid.UUID, len(admitted))
	for j, i := range admitted {
		h := byID[calls[i].holdID]
		price, err := priceOf(h)
		if err != nil {
			return err
		}
		redeemed[j] = h.ID
		builders[j] = tx.Order.Create().
			SetHoldID(h.ID).SetProductID(h.ProductID).SetQty(h.Qty).SetCustomerID(h.CustomerID).
			SetAmountCents(price * int64(h.Qty)).
			SetStatus(order.StatusPENDING_PAYMENT).
			SetPaymentDueAt(now.Add(s.cfg.PaymentTimeout)).
			SetEventSeq(1). // order.created, written below
			SetCreatedAt(now).SetUpdatedAt(now)
	}
	os, err := tx.Order.CreateBulk(builders...).Save(ctx)
	if err != nil {
		return err
	}
	if err := tx.Hold.Update().Where(hold.IDIn(redeemed...)).
		SetStatus(hold.StatusREDEEMED).SetUpdatedAt(now).Exec(ctx); err != nil {
		return err
	}
	ob := s.newOutbox(tx)
	for j, i := range admitted {
		ob.add(os[j], orderevent.TypeOrderCreated, "", now)
		os[j].Edges.Hold = byID[os[j].HoldID]
		results[i].out = os[j]
	}
	return ob.flush(ctx)
}

// ReleaseHold gives an ACTIVE hold's units back at once (RELEASED; one that
// has lapsed by the database clock becomes EXPIRED, as the sweeper would
// make it). An EXPIRED or RELEASED hold comes back unchanged, so releasing
// is idempotent; a REDEEMED one is ErrHoldNotActive, since its units are
// the order's now. Another customer's hold is ErrNotFound.
func (s *Service) ReleaseHold(ctx context.Context, holdID uuid.UUID, by Caller) (*ent.Hold, error) {
	// The hold's product never changes, so it can be read before locking:
	// the product's lock comes first.
	h0, err := s.client.Hold.Get(ctx, holdID)
	if ent.IsNotFound(err) || (err == nil && !by.mayAct(h0.CustomerID)) {
		return nil, fmt.Errorf("%w: no hold with ID %s", ErrNotFound, holdID)
	}
	if err != nil {
		return nil, classify("release hold", err)
	}
	var (
		out     *ent.Hold
		changed *ent.Product
	)
	err = s.tx(ctx, "release hold", func(tx *ent.Tx) error {
		p, now, err := s.lockProduct(ctx, tx, h0.ProductID)
		if err != nil {
			return err
		}
		hs, _, err := s.lockHolds(ctx, tx, []uuid.UUID{holdID})
		if err != nil {
			return err
		}
		if len(hs) == 0 {
			return fmt.Errorf("%w: no hold with ID %s", ErrNotFound, holdID)
		}
		h := hs[0]
		switch h.Status {
		case hold.StatusREDEEMED:
			return fmt.Errorf("%w: hold is REDEEMED; its units belong to its order", ErrHoldNotActive)
		case hold.StatusEXPIRED, hold.StatusRELEASED:
			out = h
			return nil
		}
		to := hold.StatusRELEASED
		if !now.Before(h.ExpiresAt) {
			to = hold.StatusEXPIRED
		}
		if err := tx.Hold.Update().Where(hold.ID(h.ID)).SetStatus(to).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
		if err := tx.Product.Update().Where(product.ID(p.ID)).AddStockReserved(-h.Qty).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
		h.Status, h.UpdatedAt = to, now
		p.StockReserved -= h.Qty
		p.UpdatedAt = now
		out, changed = h, p
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.productChanged(changed)
	return out, nil
}

// Hold returns a hold the caller may read, or ErrNotFound.
func (s *Service) Hold(ctx context.Context, id uuid.UUID, by Caller) (*ent.Hold, error) {
	h, err := s.client.Hold.Get(ctx, id)
	if ent.IsNotFound(err) || (err == nil && !by.mayRead(h.CustomerID)) {
		return nil, ErrNotFound
	}
	return h, classify("get hold", err)
}

// Order returns an order the caller may read, or ErrNotFound.
func (s *Service) Order(ctx context.Context, id uuid.UUID, by Caller) (*ent.Order, error) {
	o, err := s.client.Order.Get(ctx, id)
	if ent.IsNotFound(err) || (err == nil && !by.mayRead(o.CustomerID)) {
		return nil, ErrNotFound
	}
	return o, classify("get order", err)
}

// OrderOfHold returns the order made from a hold, or nil if there is none.
// An order has its hold's customer, so whoever read the hold may read it.
func (s *Service) OrderOfHold(ctx context.Context, holdID uuid.UUID) (*ent.Order, error) {
	o, err := s.client.Order.Query().Where(order.HoldID(holdID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return o, classify("get order of hold", err)
}

// HoldsByID returns the holds of ids that exist, by ID, whoever made them:
// for a caller already allowed to read them (the hold of an order it read).
func (s *Service) HoldsByID(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*ent.Hold, error) {
	hs, err := s.client.Hold.Query().Where(hold.IDIn(sortedIDs(ids)...)).All(ctx)
	if err != nil {
		return nil, classify("get holds", err)
	}
	out := make(map[uuid.UUID]*ent.Hold, len(hs))
	for _, h := range hs {
		out[h.ID] = h
	}
	return out, nil
}

// OrdersOfHolds returns the orders made from the holds, by hold ID (a hold
// without an order is left out). An order has its hold's customer, so
// whoever read the hold may read it.
func (s *Service) OrdersOfHolds(ctx context.Context, holdIDs []uuid.UUID) (map[uuid.UUID]*ent.Order, error) {
	os, err := s.client.Order.Query().Where(order.HoldIDIn(sortedIDs(holdIDs)...)).All(ctx)
	if err != nil {
		return nil, classify("get orders of holds", err)
	}
	out := make(map[uuid.UUID]*ent.Order, len(os))
	for _, o := range os {
		out[o.HoldID] = o
	}
	return out, nil
}

// CustomerHolds returns up to first of a customer's holds, newest first,
// older than the hold before (uuid.Nil: from the newest), and whether more
// follow. Hold IDs are UUIDv7, so their order is their creation order.
func (s *Service) CustomerHolds(ctx context.Context, customer string, first int, before uuid.UUID) ([]*ent.Hold, bool, error) {
	if err := CheckFirst(first); err != nil {
		return nil, false, err
	}
	q := s.client.Hold.Query().Where(hold.CustomerID(customer))
	if before != uuid.Nil {
		q = q.Where(hold.IDLT(before))
	}
	hs, err := q.Order(ent.Desc(hold.FieldID)).Limit(first + 1).All(ctx)
	if err != nil {
		return nil, false, classify("list holds", err)
	}
	return page(hs, first)
}

// CustomerOrders is CustomerHolds for orders.
func (s *Service) CustomerOrders(ctx context.Context, customer string, first int, before uuid.UUID) ([]*ent.Order, bool, error) {
	if err := CheckFirst(first); err != nil {
		return nil, false, err
	}
	q := s.client.Order.Query().Where(order.CustomerID(customer))
	if before != uuid.Nil {
		q = q.Where(order.IDLT(before))
	}
	os, err := q.Order(ent.Desc(order.FieldID)).Limit(first + 1).All(ctx)
	if err != nil {
		return nil, false, classify("list orders", err)
	}
	return page(os, first)
}

// MaxPage is the largest page a list returns (a connection's first).
const MaxPage = 100

// CheckFirst refuses a page size (a connection's first) outside 1..MaxPage.
func CheckFirst(first int) error {
	if first < 1 || first > MaxPage {
		return InvalidInput("first must be between 1 and %d", MaxPage)
	}
	return nil
}

// page cuts a list read with one row to spare to its page, saying whether
// more follow.
func page[T any](rows []T, first int) ([]T, bool, error) {
	if len(rows) > first {
		return rows[:first], true, nil
	}
	return rows, false, nil
}

// Now returns the clock that decides expiry and sale windows.
func (s *Service) Now(ctx context.Context) (time.Time, error) {
	t, err := s.now(ctx, s.client)
	return t, classify("read the clock", err)
}
