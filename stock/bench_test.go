package stock_test

import (
	"context"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/database"
	"flashsale/internal/testdb"
	"flashsale/stock"
)

// BenchmarkCreateHold measures CreateHold on MariaDB (the numbers behind
// the README's figures): every goroutine on one hot product, and spread
// over 64 products. Run with
//
//	go test -run '^$' -bench CreateHold -cpu 1 ./stock/
//
// b.SetParallelism(32) gives 32 concurrent buyers per GOMAXPROCS.
func BenchmarkCreateHold(b *testing.B) {
	for _, bc := range []struct {
		name     string
		products int
	}{{"hot", 1}, {"spread64", 64}} {
		b.Run(bc.name, func(b *testing.B) {
			db := testdb.Open(b, dialect.MySQL, database.Options{MaxConns: 32})
			svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Hour, PaymentTimeout: time.Hour, MaxHoldQty: 10}, quietLog)
			ctx := context.Background()
			ids := make([]int, bc.products)
			for i := range ids {
				p, err := svc.CreateProduct(ctx, stock.NewProduct{Name: "bench", PriceCents: 100, Stock: 1_000_000_000})
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = p.ID
			}
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := svc.CreateHold(ctx, ids[i%len(ids)], 1); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "holds/s")
		})
	}
}
