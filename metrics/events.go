package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// eventMetrics are the order events' metrics (package events delivers them).
func eventMetrics() (events, attempts *prometheus.CounterVec, pending, oldest *prometheus.GaugeVec) {
	events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_events_total",
		Help: "Order events written (in the same transaction as their change), by type.",
	}, []string{"type"})
	attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_event_attempts_total",
		Help: `Order event delivery attempts by this process, by sink and outcome ("delivered", "failed" to be retried, "dead": the last attempt failed and the event is FAILED on the sink).`,
	}, []string{"sink", "outcome"})
	pending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flashsale_events_pending",
		Help: "Order events not yet delivered to a sink (all server processes together), by sink.",
	}, []string{"sink"})
	oldest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flashsale_events_oldest_pending_seconds",
		Help: "Age of the oldest order event not yet delivered to a sink, by sink (0: none).",
	}, []string{"sink"})
	return events, attempts, pending, oldest
}

// EventsWritten counts n order events of type typ (order.created,
// order.paid, order.cancelled, order.refund_required; else "other").
func (m *Metrics) EventsWritten(typ string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.events.get(typ).Add(float64(n))
}

// EventAttempt counts one delivery attempt on sink (webhook, nats) by
// outcome (delivered, failed, dead); anything else → "other".
func (m *Metrics) EventAttempt(sink, outcome string) {
	if m == nil {
		return
	}
	s := m.attempts.get(sink)
	s.get(outcome).Inc()
}

// EventsPending sets a sink's pending events and the oldest one's age.
func (m *Metrics) EventsPending(sink string, n int, oldest time.Duration) {
	if m == nil {
		return
	}
	m.pending.get(sink).Set(float64(n))
	m.oldest.get(sink).Set(oldest.Seconds())
}
