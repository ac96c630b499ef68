package audit_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"flashsale/audit"
	"flashsale/database"
	"flashsale/ent"
	"flashsale/internal/testdb"
)

func TestNewActionInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args map[string]any
		want string
	}{
		{"no arguments", nil, `{}`},
		{"keys sorted, nested too", map[string]any{"reason": "r", "delta": 5, "productId": "1"},
			`{"delta":5,"productId":"1","reason":"r"}`},
		{"null kept, left out absent", map[string]any{"id": "2", "input": map[string]any{"saleEndsAt": nil, "name": "x"}},
			`{"id":"2","input":{"name":"x","saleEndsAt":null}}`},
		{"no HTML escaping", map[string]any{"name": "Tom & Jerry <3"}, `{"name":"Tom & Jerry <3"}`},
		{"unicode as it is", map[string]any{"name": "Café ☕"}, `{"name":"Café ☕"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := audit.NewAction("alice", "adjustStock", tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if a.Input != tc.want || a.Operator != "alice" || a.Mutation != "adjustStock" {
				t.Fatalf("got %+v, want input %s", a, tc.want)
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	if audit.Snapshot(nil) != nil {
		t.Fatal("Snapshot(nil) is not nil")
	}
	limit := 2
	starts := time.Date(2026, 12, 24, 19, 0, 0, 500_000_000, time.FixedZone("CET", 3600))
	p := &ent.Product{ID: 7, Name: "Sneaker", PriceCents: 19900, StockAvailable: 10, StockReserved: 3,
		MaxPerCustomer: &limit, SaleStartsAt: &starts}
	s := audit.Snapshot(p)
	limit, p.StockAvailable = 5, 0 // the snapshot is a copy
	got := fmt.Sprintf("%s %s %d %d/%d/%d %d %s %v", s.ID, s.Name, s.PriceCents, s.StockAvailable, s.StockReserved,
		s.StockSellable, *s.MaxPerCustomer, *s.SaleStartsAt, s.SaleEndsAt)
	if want := "7 Sneaker 19900 10/3/7 2 2026-12-24T18:00:00.5Z <nil>"; got != want {
		t.Fatalf("snapshot:\n%s\nwant\n%s", got, want)
	}
}

func TestPosition(t *testing.T) {
	at := time.Date(2026, 12, 7, 6, 19, 26, 123456000, time.UTC)
	p := audit.Position{At: at, ID: 42}
	got, err := audit.ParsePosition(p.String())
	if err != nil || !got.At.Equal(at) || got.ID != 42 {
		t.Fatalf("round trip of %s: %+v, %v", p, got, err)
	}
	for _, s := range []string{"", ".", "1", "1.", ".1", "1.0", "1.-1", "01.1", "1.01", "x.1", "1.1.1", " 1.1", "1.1 "} {
		if _, err := audit.ParsePosition(s); !errors.Is(err, audit.ErrBadPosition) {
			t.Errorf("ParsePosition(%q): %v, want ErrBadPosition", s, err)
		}
	}
}

// TestRecordAndPage writes actions the way package stock does, in a
// transaction, and reads them back newest first in pages.
func TestRecordAndPage(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			db := testdb.Open(t, d, database.Options{})
			ctx := t.Context()
			record := func(act *audit.Action, at time.Time, before, after *audit.Product, commit bool) error {
				tx, err := db.Ent.Tx(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := audit.Record(ctx, tx, act, at, before, after); err != nil {
					_ = tx.Rollback()
					return err
				}
				if !commit {
					return tx.Rollback()
				}
				return tx.Commit()
			}
			base := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
			p := &ent.Product{ID: 1, Name: "p", StockAvailable: 5}
			// Seven actions; the 3rd and 4th at the same microsecond (the ID
			// breaks the tie), the 5th's nanoseconds dropped as DATETIME(6) does.
			ats := []time.Time{base, base.Add(time.Second), base.Add(2 * time.Second), base.Add(2 * time.Second),
				base.Add(3*time.Second + 999), base.Add(4 * time.Second), base.Add(5 * time.Second)}
			for i, at := range ats {
				act := &audit.Action{Operator: "alice", Mutation: fmt.Sprint("m", i), Input: `{}`}
				if err := record(act, at, nil, audit.Snapshot(p), true); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			// Recorded nothing: no action, a rolled-back transaction, a bad action.
			if err := record(nil, base, nil, nil, true); err != nil {
				t.Fatal(err)
			}
			if err := record(&audit.Action{Operator: "bob", Mutation: "rolledBack", Input: `{}`}, base, nil, nil, false); err != nil {
				t.Fatal(err)
			}
			for _, bad := range []audit.Action{{Mutation: "m", Input: `{}`}, {Operator: "o", Input: `{}`}, {Operator: "o", Mutation: "m", Input: `{`}} {
				if err := record(&bad, base, nil, nil, true); err == nil {
					t.Errorf("recorded %+v", bad)
				}
			}

			var got []string
			var from audit.Position
			for pages := 0; ; pages++ {
				as, more, err := audit.NewLog(db.Ent).Page(ctx, 3, from)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range as {
					got = append(got, a.Mutation)
					if a.Operator != "alice" || a.Input != `{}` || a.Before != nil || a.After == nil {
						t.Errorf("action %+v", a)
					}
				}
				if !more {
					if pages != 2 {
						t.Errorf("%d pages, want 3", pages+1)
					}
					break
				}
				from = audit.PositionOf(as[len(as)-1])
			}
			if want := []string{"m6", "m5", "m4", "m3", "m2", "m1", "m0"}; !slices.Equal(got, want) {
				t.Fatalf("newest first: %v, want %v", got, want)
			}
			if _, _, err := audit.NewLog(db.Ent).Page(ctx, 0, audit.Position{}); err == nil {
				t.Error("a page of 0 was read")
			}
		})
	}
}

// TestRecordInCallersTransaction: the row is the caller's transaction's,
// visible to others only once it commits.
func TestRecordInCallersTransaction(t *testing.T) {
	db := testdb.Open(t, "mysql", database.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	tx, err := db.Ent.Tx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	act := &audit.Action{Operator: "alice", Mutation: "adjustStock", Input: `{"delta":1}`}
	if err := audit.Record(ctx, tx, act, time.Now(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Ent.OperatorAction.Query().Count(ctx); err != nil || n != 0 {
		t.Fatalf("before commit, others see %d rows (%v)", n, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Ent.OperatorAction.Query().Count(ctx); err != nil || n != 1 {
		t.Fatalf("after commit, others see %d rows (%v)", n, err)
	}
}
