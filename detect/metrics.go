package detect

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/shopguard/shopguard"
)

// Metrics are the engine's Prometheus metrics. A nil *Metrics is valid and
// records nothing.
type Metrics struct {
	findings  *prometheus.CounterVec
	events    prometheus.Counter
	lag       prometheus.Gauge
	latency   prometheus.Histogram
	entries   *prometheus.GaugeVec
	evictions *prometheus.CounterVec
	sensitive *prometheus.CounterVec
	watch     *prometheus.GaugeVec
	waveNow   prometheus.Gauge
	waveBase  prometheus.Gauge
}

// NewMetrics registers the engine's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		findings: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_findings_total",
			Help: "Findings raised, by rule and severity.",
		}, []string{"rule", "severity"}),
		events: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_engine_events_total",
			Help: "Events the detection engine processed.",
		}),
		lag: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_event_lag_seconds",
			Help: "Wall-clock time minus the event time of the newest event processed.",
		}),
		latency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "shopguard_processing_latency_seconds",
			Help:    "Time from a source taking in a batch of events to its findings being handed to the sinks.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		entries: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_state_entries",
			Help: "Keys the engine tracks, by kind (account, source).",
		}, []string{"kind"}),
		evictions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_state_evictions_total",
			Help: "State entries evicted, by kind and reason (expired: idle past the longest window in event time; cap: max_accounts or max_sources reached).",
		}, []string{"kind", "reason"}),
		sensitive: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_sensitive_changes_total",
			Help: "Sensitive changes (password, MFA, email, API key, payout, staff, app) seen, by action.",
		}, []string{"action"}),
		watch: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_watchlist_accounts",
			Help: "Accounts of the watchlist of leaked accounts, by state (listed; rotated: password changed or reset since; unrotated).",
		}, []string{"state"}),
		waveNow: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_wave_failing_accounts",
			Help: "Distinct accounts with failed logins in the last hour of event time, platform-wide (stuffing_wave).",
		}),
		waveBase: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_wave_baseline_accounts",
			Help: "Trailing baseline of the hourly count of distinct failing accounts (stuffing_wave); 0 during the warm-up.",
		}),
	}
	for _, s := range []string{"listed", "rotated", "unrotated"} {
		m.watch.WithLabelValues(s)
	}
	for _, a := range shopguard.Actions() {
		if a.Sensitive() {
			m.sensitive.WithLabelValues(a.String())
		}
	}
	for _, rule := range shopguard.Rules() {
		for _, s := range shopguard.Severities() {
			m.findings.WithLabelValues(rule, string(s))
		}
	}
	for _, k := range []string{"account", "source"} {
		m.entries.WithLabelValues(k)
		for _, r := range []string{"expired", "cap"} {
			m.evictions.WithLabelValues(k, r)
		}
	}
	return m
}

func (m *Metrics) found(f *shopguard.Finding) {
	if m != nil {
		m.findings.WithLabelValues(f.Rule, string(f.Severity)).Inc()
	}
}

// evicted returns the callback a state table reports evictions to.
func (m *Metrics) evicted(kind string) func(reason string, n int) {
	return func(reason string, n int) {
		if m != nil {
			m.evictions.WithLabelValues(kind, reason).Add(float64(n))
		}
	}
}

func (m *Metrics) countSensitive(a shopguard.Action) {
	if m != nil {
		m.sensitive.WithLabelValues(a.String()).Inc()
	}
}

// SetWatchCounts sets shopguard_watchlist_accounts; a scaled-out
// shopguard sets it from every task's rotations (Engine.TakeRotations),
// which no one engine holds.
func (m *Metrics) SetWatchCounts(c WatchCounts) {
	m.watch.WithLabelValues("listed").Set(float64(c.Listed))
	m.watch.WithLabelValues("rotated").Set(float64(c.Rotated))
	m.watch.WithLabelValues("unrotated").Set(float64(c.Unrotated))
}
