package delivery

import "github.com/prometheus/client_golang/prometheus"

// Metrics are delivery's instruments; one set per process.
type Metrics struct {
	events      *prometheus.CounterVec
	jobs        *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	attempt     *prometheus.HistogramVec
	backlog     *prometheus.GaugeVec
	dead        *prometheus.CounterVec
	breaker     *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	inboxDepth  *prometheus.GaugeVec
	inboxOld    *prometheus.GaugeVec
	// fanoutStage times the fan-out of one event by stage (parse, facts,
	// match, store, total): when end-to-end latency grows, it says whether
	// the fan-out is waiting on disk, on JetStream or on CPU.
	fanoutStage *prometheus.HistogramVec
	// stages are fanoutStage's series, resolved once rather than by label
	// look-up five times per event.
	stages map[string]prometheus.Observer
}

// NewMetrics registers delivery's metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ems_delivery_events_total",
			Help: "Events fanned out, by outcome (matched, unmatched, retry; kept_in_progress: reported in progress while waiting their turn)."}, []string{"outcome"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ems_delivery_jobs_enqueued_total",
			Help: "Delivery jobs stored (one per event and endpoint), by channel."}, []string{"channel"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ems_delivery_deliveries_total",
			Help: "Delivery outcomes by channel, outcome and event type."}, []string{"channel", "outcome", "event"}),
		attempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ems_delivery_attempt_seconds",
			Help: "Latency of webhook attempts.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)}, []string{"channel"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ems_delivery_backlog",
			Help: "Jobs held in this process per endpoint token (waiting or in flight)."}, []string{"endpoint"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ems_delivery_dead_letters_total",
			Help: "Jobs moved to the dead-letter stream, by channel and reason."}, []string{"channel", "reason"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ems_delivery_breaker_state",
			Help: "Circuit breaker per endpoint token: 0 closed, 1 half-open, 2 open."}, []string{"endpoint"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ems_delivery_breaker_transitions_total",
			Help: "Circuit breaker state changes, by new state."}, []string{"state"}),
		inboxDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ems_mesh_inbox_depth",
			Help: "Unacknowledged messages per built-in MESH mailbox."}, []string{"mailbox"}),
		inboxOld: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ems_mesh_inbox_oldest_age_seconds",
			Help: "Age of the oldest unacknowledged message per mailbox (alert above the retention)."}, []string{"mailbox"}),
		fanoutStage: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ems_delivery_fanout_seconds",
			Help:    "Time to fan out one event, by stage: parse, facts (demographics and reference data), match, store (jobs acknowledged by JetStream), total.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"stage"}),
	}
	m.stages = map[string]prometheus.Observer{}
	for _, st := range []string{"parse", "facts", "match", "store", "total"} {
		m.stages[st] = m.fanoutStage.WithLabelValues(st)
	}
	if reg != nil {
		reg.MustRegister(m.events, m.jobs, m.deliveries, m.attempt, m.backlog, m.dead, m.breaker, m.transitions, m.inboxDepth, m.inboxOld, m.fanoutStage)
	}
	return m
}
