package kafka

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the metrics of the Kafka source and dead-letter writer.
// One Metrics may serve several sources.
type Metrics struct {
	messages     prometheus.Counter
	lag          *prometheus.GaugeVec
	commits      prometheus.Counter
	commitErrors prometheus.Counter
	redelivered  prometheus.Counter
	written      prometheus.Counter
	failed       prometheus.Counter

	// The merge of partitions by event time (Config.Lateness).
	buffered prometheus.Gauge
	late     prometheus.Counter
	forced   prometheus.Counter
	stalls   prometheus.Counter

	// fetch_errors_total is errors FetchMessage returned plus those
	// kafka-go retried internally, which only Reader.Stats reveals; it is
	// read at scrape time.
	fetchErrors atomic.Uint64
	mu          sync.Mutex
	sources     map[*Source]struct{}
	retired     uint64 // internal errors of closed sources
}

// NewMetrics registers the Kafka metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		messages: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_messages_total",
			Help: "Messages fetched from the audit topic, valid or not.",
		}),
		lag: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_kafka_consumer_lag",
			Help: "Messages in the partition after the last one fetched, as of that fetch.",
		}, []string{"partition"}),
		commits: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_commits_total",
			Help: "Successful offset commits.",
		}),
		commitErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_commit_errors_total",
			Help: "Offset commits that did not succeed (they are retried).",
		}),
		redelivered: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_redelivered_total",
			Help: "Messages fetched again after a rebalance or retry that this process had already processed; acknowledged, not processed twice.",
		}),
		buffered: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_kafka_merge_buffered_events",
			Help: "Events fetched and waiting for the partitions behind them, to be processed in event-time order.",
		}),
		late: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_merge_late_events_total",
			Help: "Events processed after an event of a later stream time (from a partition not waited for, or beyond max_buffered).",
		}),
		forced: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_merge_forced_total",
			Help: "Events released before the partitions behind them caught up, because kafka.max_buffered events were waiting.",
		}),
		stalls: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_merge_stalls_total",
			Help: "Times a partition that was behind delivered nothing for kafka.lateness and stopped being waited for.",
		}),
		sources: map[*Source]struct{}{},
	}
	dl := f.NewCounterVec(prometheus.CounterOpts{
		Name: "shopguard_dead_letters_total",
		Help: "Invalid messages written to the dead-letter topic, by result.",
	}, []string{"result"})
	m.written, m.failed = dl.WithLabelValues("written"), dl.WithLabelValues("failed")
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "shopguard_kafka_fetch_errors_total",
		Help: "Errors fetching from Kafka, including those the client retried on its own.",
	}, m.fetchErrorsTotal)
	return m
}

// FetchError counts one fetch that returned an error. The scale-out
// runtime's readers count theirs here too, so shopguard_kafka_fetch_errors_total
// covers every consumer of the process.
func (m *Metrics) FetchError() { m.fetchErrors.Add(1) }

// Message counts one message read from Kafka.
func (m *Metrics) Message() { m.messages.Inc() }

// Lag returns the consumer-lag gauge of one partition.
func (m *Metrics) Lag(partition int) prometheus.Gauge {
	return m.lag.WithLabelValues(strconv.Itoa(partition))
}

// Commit counts one offset commit, or one that returned err.
func (m *Metrics) Commit(err error) {
	if err != nil {
		m.commitErrors.Inc()
		return
	}
	m.commits.Inc()
}

func (m *Metrics) fetchErrorsTotal() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.fetchErrors.Load() + m.retired
	for s := range m.sources {
		n += s.readerStats().errors
	}
	return float64(n)
}

func (m *Metrics) attach(s *Source) {
	m.mu.Lock()
	m.sources[s] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) detach(s *Source) {
	m.mu.Lock()
	if _, ok := m.sources[s]; ok {
		delete(m.sources, s)
		m.retired += s.readerStats().errors
	}
	m.mu.Unlock()
}
