// Package audit owns the operator action log: one row per operator
// mutation (createProduct, updateProduct, adjustStock, redeliverEvents,
// redeliverFailedEvents) saying who made it, when, with which input, and
// the product before and after where there is one.
//
// Record writes the row inside the caller's transaction, the one that makes
// the change: a committed change always has its row, and a refused or
// rolled-back one never does. Log reads the rows back newest first.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"flashsale/ent"
)

// Action is one operator mutation as the operator asked for it.
type Action struct {
	Operator string // the operator's name (package operator)
	Mutation string // the GraphQL field, e.g. "adjustStock"
	Input    string // its arguments as sent, as a JSON object
}

// NewAction is the action of operator calling mutation with args (each
// argument by name, as sent). The input is stable, readable JSON: keys
// sorted, no HTML escaping of a product name's "<" or "&".
func NewAction(operator, mutation string, args map[string]any) (*Action, error) {
	if args == nil {
		args = map[string]any{}
	}
	in, err := marshal(args)
	if err != nil {
		return nil, fmt.Errorf("operator action %s: its input as JSON: %w", mutation, err)
	}
	return &Action{Operator: operator, Mutation: mutation, Input: in}, nil
}

// marshal is json.Marshal without HTML escaping (the log is read by
// people and tools, never embedded in a page as it is).
func marshal(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), nil
}

// Product is a product as the log keeps it: the API's field names, so a
// snapshot reads like the Product an operator queries. Its JSON never
// changes shape: fields are added, never renamed or removed.
type Product struct {
	ID             string  `json:"id"`
	Name           string  `json:"name"`
	PriceCents     int64   `json:"priceCents"`
	StockAvailable int     `json:"stockAvailable"`
	StockReserved  int     `json:"stockReserved"`
	StockSellable  int     `json:"stockSellable"`
	MaxPerCustomer *int    `json:"maxPerCustomer"`
	SaleStartsAt   *string `json:"saleStartsAt"`
	SaleEndsAt     *string `json:"saleEndsAt"`
	// The waiting room's rate; null: none.
	QueueAdmitPerMinute *int `json:"queueAdmitPerMinute"`
}

// Snapshot copies what the log keeps of p now; p may change afterwards
// (package stock updates the row it locked in place).
func Snapshot(p *ent.Product) *Product {
	if p == nil {
		return nil
	}
	s := &Product{
		ID:             strconv.Itoa(p.ID),
		Name:           p.Name,
		PriceCents:     p.PriceCents,
		StockAvailable: p.StockAvailable,
		StockReserved:  p.StockReserved,
		StockSellable:  p.StockAvailable - p.StockReserved,
		SaleStartsAt:   timeString(p.SaleStartsAt),
		SaleEndsAt:     timeString(p.SaleEndsAt),
	}
	if p.MaxPerCustomer != nil {
		n := *p.MaxPerCustomer
		s.MaxPerCustomer = &n
	}
	if p.QueueAdmitPerMinute != nil {
		n := *p.QueueAdmitPerMinute
		s.QueueAdmitPerMinute = &n
	}
	return s
}

// timeString formats t as the API's Time scalar does (RFC 3339, UTC).
func timeString(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

// Record writes act to the log in tx, the transaction that makes the
// change, at the change's database time, with the product before and
// after it (nil where there is none). A nil act is not an operator's
// change (the demo products, tests of the domain) and records nothing.
func Record(ctx context.Context, tx *ent.Tx, act *Action, at time.Time, before, after *Product) error {
	if act == nil {
		return nil
	}
	if act.Operator == "" || act.Mutation == "" || !json.Valid([]byte(act.Input)) {
		// A bug in the caller: refuse the change rather than log it anonymously.
		return fmt.Errorf("record operator action: operator %q, mutation %q and a JSON input are required", act.Operator, act.Mutation)
	}
	b, err := productJSON(before)
	if err != nil {
		return err
	}
	a, err := productJSON(after)
	if err != nil {
		return err
	}
	err = tx.OperatorAction.Create().
		SetOperator(act.Operator).SetMutation(act.Mutation).SetInput(act.Input).
		SetAt(at.UTC().Truncate(time.Microsecond)). // as DATETIME(6) keeps it, so cursors compare exactly
		SetNillableBefore(b).SetNillableAfter(a).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record operator action %s: %w", act.Mutation, err)
	}
	return nil
}

func productJSON(p *Product) (*string, error) {
	if p == nil {
		return nil, nil
	}
	s, err := marshal(p)
	if err != nil {
		return nil, fmt.Errorf("record operator action: product %s as JSON: %w", p.ID, err)
	}
	return &s, nil
}
