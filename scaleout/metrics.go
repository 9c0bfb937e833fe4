package scaleout

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The stages of a scaled-out shopguard, as metric labels and changelog key
// prefixes.
const (
	StageRepartition = "repartition"
	StageSource      = "source"
	StageAccount     = "account"
)

// The results of restoring a task, as metric labels.
const (
	restoreSnapshot = "snapshot" // from the changelog
	restoreEmpty    = "empty"    // no snapshot yet: a fresh task
	restoreUnusable = "unusable" // a snapshot was there but could not be used
)

// Metrics are the metrics of scale-out. One Metrics serves one
// Runtime; New makes unregistered ones when given none.
type Metrics struct {
	partitions *prometheus.GaugeVec
	buffered   *prometheus.GaugeVec
	events     *prometheus.CounterVec
	late       *prometheus.CounterVec
	restores   *prometheus.CounterVec
	snapshots  *prometheus.CounterVec
}

// NewMetrics registers the scale-out metrics on reg (nil:
// unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		partitions: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_scale_partitions",
			Help: "Partitions this instance owns, by stage (repartition: audit topic; source, account: their repartition topic).",
		}, []string{"stage"}),
		buffered: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_scale_buffered_events",
			Help: "Events received by a stage and waiting for the slowest input partition, by stage.",
		}, []string{"stage"}),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_scale_events_total",
			Help: "Events handled, by stage (repartition: re-keyed and written; source, account: processed by the engines).",
		}, []string{"stage"}),
		late: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_scale_late_total",
			Help: "Events and flags processed after one with a later key (after an idle input partition woke up, or beyond max_buffered), by stage.",
		}, []string{"stage"}),
		restores: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_scale_restores_total",
			Help: "Tasks taken over, by stage and result (snapshot: state restored from the changelog; empty: no snapshot yet; unusable: a snapshot that could not be used, state starts empty).",
		}, []string{"stage", "result"}),
		snapshots: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_scale_snapshots_total",
			Help: "Task snapshots written to the changelog, by stage.",
		}, []string{"stage"}),
	}
	for _, s := range []string{StageRepartition, StageSource, StageAccount} {
		m.partitions.WithLabelValues(s)
		m.events.WithLabelValues(s)
	}
	for _, s := range []string{StageSource, StageAccount} {
		m.buffered.WithLabelValues(s)
		m.late.WithLabelValues(s)
		m.snapshots.WithLabelValues(s)
		for _, r := range []string{restoreSnapshot, restoreEmpty, restoreUnusable} {
			m.restores.WithLabelValues(s, r)
		}
	}
	return m
}
