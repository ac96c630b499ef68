package testkit

import (
	"io"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is a /metrics page parsed as Prometheus parses it.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics parses a /metrics body with the Prometheus text parser and
// fails the test if the parser refuses it.
func ParseMetrics(t testing.TB, r io.Reader) Metrics {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses /metrics: %v", err)
	}
	return fams
}

// Scrape fetches http://addr/metrics and parses it (ParseMetrics).
func Scrape(t testing.TB, addr string) Metrics {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	return ParseMetrics(t, resp.Body)
}

// Value returns the value of family's series whose label name is value (a
// histogram's sample count), or of its first series when name is "", and
// whether there is one.
func (m Metrics) Value(family, name, value string) (float64, bool) {
	if name == "" {
		return m.Labeled(family)
	}
	return m.Labeled(family, name, value)
}

// Labeled returns the value of family's first series whose labels include
// every name, value pair of pairs (name1, value1, name2, value2, ...; none:
// the first series) — a histogram's sample count — and whether there is one.
func (m Metrics) Labeled(family string, pairs ...string) (float64, bool) {
	for _, s := range m[family].GetMetric() {
		have := map[string]string{}
		for _, l := range s.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(pairs); i += 2 {
			match = match && have[pairs[i]] == pairs[i+1]
		}
		switch {
		case !match:
		case s.Counter != nil:
			return s.Counter.GetValue(), true
		case s.Gauge != nil:
			return s.Gauge.GetValue(), true
		case s.Histogram != nil:
			return float64(s.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}
