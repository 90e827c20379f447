package broker

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ems-broker/ems/fhir/catalog"
)

// metrics counts publishes by outcome and event type. The event label only
// takes catalogue codes (or "unknown"), so a hostile publisher cannot blow up
// the label space.
type metrics struct {
	known    map[string]bool
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, cat *catalog.Catalog) (*metrics, error) {
	m := &metrics{
		known: map[string]bool{},
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ems", Subsystem: "publish", Name: "messages_total",
			Help: "Event messages received on $process-message, by outcome (accepted, duplicate, rejected, refused, error) and event type.",
		}, []string{"outcome", "event"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ems", Subsystem: "publish", Name: "duration_seconds",
			Help:    "Time from request to response on $process-message, including the durable store's acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"outcome"}),
	}
	for _, e := range cat.All() {
		m.known[e.Code] = true
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.total, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering publish metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(event, outcome string, d time.Duration) {
	if !m.known[event] {
		event = "unknown"
	}
	m.total.WithLabelValues(outcome, event).Inc()
	m.duration.WithLabelValues(outcome).Observe(d.Seconds())
}
