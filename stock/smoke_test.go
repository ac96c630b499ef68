package stock_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"flashsale/internal/testdb"
	"flashsale/database"
	"flashsale/stock"
)

func TestSmoke(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			db := testdb.Open(t, d, database.Options{MaxConns: 10})
			svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Minute, PaymentTimeout: time.Minute, MaxHoldQty: 10}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			ctx := context.Background()
			p, err := svc.CreateProduct(ctx, stock.NewProduct{Name: "x", PriceCents: 100, Stock: 5})
			if err != nil {
				t.Fatal(err)
			}
			h, err := svc.CreateHold(ctx, p.ID, 3)
			if err != nil {
				t.Fatal(err)
			}
			o, err := svc.CreateOrder(ctx, h.ID)
			if err != nil {
				t.Fatal(err)
			}
			r, err := svc.ApplyPayment(ctx, stock.Payment{Key: "k1", OrderID: o.ID, Status: "success"})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(r)
			r, err = svc.ApplyPayment(ctx, stock.Payment{Key: "k1", OrderID: o.ID, Status: "success"})
			t.Log(r, err)
			_, err = svc.CreateHold(ctx, p.ID, 3)
			t.Log(err)
			res, err := svc.Sweep(ctx)
			t.Log(res, err)
			bad, err := svc.Audit(ctx)
			if err != nil || len(bad) > 0 {
				t.Fatal(bad, err)
			}
		})
	}
}
