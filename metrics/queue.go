package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// queueMetrics are the waiting rooms' metrics (package stock's queue.go).
func (m *Metrics) queueMetrics() (joins, admitted prometheus.Counter, waiting prometheus.GaugeFunc) {
	joins = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flashsale_queue_joins_total",
		Help: "Waiting-room tickets made by this process (a customer joining again gets the same ticket and is not counted).",
	})
	admitted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flashsale_queue_admitted_total",
		Help: "Waiting-room tickets let in by this process's admission rounds.",
	})
	waiting = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flashsale_queue_waiting",
		Help: "Waiting-room tickets WAITING, all products and server processes together (read at scrape time).",
	}, func() float64 {
		f := m.queueWaiting.Load()
		if f == nil {
			return 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := (*f)(ctx)
		if err != nil {
			return 0
		}
		return float64(n)
	})
	return joins, admitted, waiting
}

// QueueJoined counts n new waiting-room tickets.
func (m *Metrics) QueueJoined(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.queueJoins.Add(float64(n))
}

// QueueAdmitted counts n tickets let in.
func (m *Metrics) QueueAdmitted(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.queueAdmitted.Add(float64(n))
}

// WatchQueue makes flashsale_queue_waiting read from waiting at scrape
// time (stock.Service.QueueWaiting: one small query).
func (m *Metrics) WatchQueue(waiting func(context.Context) (int64, error)) {
	if m == nil || waiting == nil {
		return
	}
	m.queueWaiting.Store(&waiting)
}
