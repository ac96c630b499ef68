package stock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"

	"flashsale/database"
	"flashsale/internal/testdb"
	"flashsale/stock"
)

// BenchmarkCreateHold measures CreateHold on MariaDB (the numbers behind
// docs/performance.md): every goroutine on one hot product, and spread
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
				p, err := svc.CreateProduct(ctx, nil, stock.NewProduct{Name: "bench", PriceCents: 100, Stock: 1_000_000_000})
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
					if _, err := svc.CreateHold(ctx, stock.HoldRequest{ProductID: ids[i%len(ids)], Qty: 1}); err != nil {
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

// benchService opens a fresh MariaDB database with one product of ample stock.
func benchService(b *testing.B) (*stock.Service, int) {
	b.Helper()
	db := testdb.Open(b, dialect.MySQL, database.Options{MaxConns: 32})
	svc := stock.New(db.Ent, db.Dialect, stock.Config{HoldTTL: time.Hour, PaymentTimeout: time.Hour, MaxHoldQty: 10}, quietLog)
	p, err := svc.CreateProduct(context.Background(), nil, stock.NewProduct{Name: "bench", PriceCents: 100, Stock: 1_000_000_000})
	if err != nil {
		b.Fatal(err)
	}
	return svc, p.ID
}

// benchHolds makes n holds of product pid, concurrently so that they are
// group-committed: setting up is not what is measured.
func benchHolds(b *testing.B, svc *stock.Service, pid, n int) chan uuid.UUID {
	b.Helper()
	holds := make(chan uuid.UUID, n)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < n && !failed.Load(); i += 64 {
				h, err := svc.CreateHold(context.Background(), stock.HoldRequest{ProductID: pid, Qty: 1})
				if err != nil {
					b.Error(err)
					failed.Store(true)
					return
				}
				holds <- h.ID
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		b.FailNow()
	}
	return holds
}

// BenchmarkCreateOrder redeems holds of one hot product, 32 buyers per core.
func BenchmarkCreateOrder(b *testing.B) {
	svc, pid := benchService(b)
	ctx := context.Background()
	holds := benchHolds(b, svc, pid, b.N)
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := svc.CreateOrder(ctx, <-holds, stock.Anonymous); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
}

// BenchmarkApplyPayment pays orders of one hot product, 32 deliveries per core.
func BenchmarkApplyPayment(b *testing.B) {
	svc, pid := benchService(b)
	ctx := context.Background()
	holds := benchHolds(b, svc, pid, b.N)
	orders := make(chan uuid.UUID, b.N)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				select {
				case h := <-holds:
					o, err := svc.CreateOrder(ctx, h, stock.Anonymous)
					if err != nil {
						b.Error(err)
						return
					}
					orders <- o.ID
				default:
					return
				}
			}
		})
	}
	wg.Wait()
	if len(orders) != b.N {
		b.FailNow()
	}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := <-orders
			if _, err := svc.ApplyPayment(ctx, stock.Payment{Key: "evt_" + id.String(), OrderID: id, Status: stock.PaymentSuccess}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "payments/s")
}

// BenchmarkProduct reads one product, as the product query does.
func BenchmarkProduct(b *testing.B) {
	svc, pid := benchService(b)
	ctx := context.Background()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := svc.Product(ctx, pid); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}
