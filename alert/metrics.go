package alert

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The sink label values. They are the only values the sink label takes.
const (
	sinkAlertmanager = "alertmanager"
	sinkWebhook      = "webhook"
	sinkKafka        = "kafka"
	sinkFile         = "file"
)

// sinkNames lists every sink label value; metrics pre-create a series for
// each, and pseudonymize.sinks is checked against it.
var sinkNames = []string{sinkAlertmanager, sinkWebhook, sinkKafka, sinkFile}

// Metrics are the delivery metrics shared by all sinks. Create one per
// registry with NewMetrics and hand it to every sink constructor.
//
// A delivery is one attempt to hand a batch of findings to a sink: one
// write+sync of the JSONL file, one produce of a batch to Kafka, one POST
// round to the Alertmanagers (successful when any accepted it) or to the
// webhook. Dropped counts findings, not batches.
type Metrics struct {
	deliveries  *prometheus.CounterVec
	retries     *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	queueLength *prometheus.GaugeVec
	up          *prometheus.GaugeVec
}

// NewMetrics registers the sink metrics on reg and pre-creates the counter
// and queue series of every sink. A nil reg registers nothing, which suits
// tests that do not look at metrics.
//
// shopguard_sink_up is created only for the sinks that are built, since a
// pre-created 0 for a sink nobody configured would read as "down".
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		deliveries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_sink_deliveries_total",
			Help: "Delivery attempts of a batch of findings to a sink, by result (success, failure).",
		}, []string{"sink", "result"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_sink_retries_total",
			Help: "Delivery attempts that repeated an earlier failed one.",
		}, []string{"sink"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_sink_dropped_total",
			Help: "Findings a notification sink gave up on: dropped from a full queue, rejected by the receiver, or left at shutdown.",
		}, []string{"sink"}),
		queueLength: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_sink_queue_length",
			Help: "Findings waiting in a notification sink's queue (always 0 for record sinks).",
		}, []string{"sink"}),
		up: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_sink_up",
			Help: "1 if the sink's last delivery attempt succeeded (or none failed yet), 0 if it failed.",
		}, []string{"sink"}),
	}
	for _, s := range sinkNames {
		m.deliveries.WithLabelValues(s, "success")
		m.deliveries.WithLabelValues(s, "failure")
		m.retries.WithLabelValues(s)
		m.dropped.WithLabelValues(s)
		m.queueLength.WithLabelValues(s)
	}
	return m
}

// sinkMetrics are one sink's children of Metrics, resolved once.
type sinkMetrics struct {
	success, failure prometheus.Counter
	retries, dropped prometheus.Counter
	queueLength, up  prometheus.Gauge
}

// forSink resolves the series of one sink and marks it up: a sink that was
// just built has not failed yet. A nil m yields unregistered metrics.
func (m *Metrics) forSink(name string) sinkMetrics {
	if m == nil {
		m = NewMetrics(nil)
	}
	sm := sinkMetrics{
		success:     m.deliveries.WithLabelValues(name, "success"),
		failure:     m.deliveries.WithLabelValues(name, "failure"),
		retries:     m.retries.WithLabelValues(name),
		dropped:     m.dropped.WithLabelValues(name),
		queueLength: m.queueLength.WithLabelValues(name),
		up:          m.up.WithLabelValues(name),
	}
	sm.up.Set(1)
	return sm
}

// delivered records the outcome of one delivery attempt.
func (sm sinkMetrics) delivered(err error) {
	if err == nil {
		sm.success.Inc()
		sm.up.Set(1)
		return
	}
	sm.failure.Inc()
	sm.up.Set(0)
}
