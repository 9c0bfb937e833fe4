package ingest

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/shopguard/shopguard"
)

// Metrics counts the events the sources read, by action, and the input they
// rejected, by reason. Create one per registry and share it between the
// sources and their Rejects. All methods are safe for concurrent use and do
// nothing on a nil *Metrics, so tests may pass nil.
type Metrics struct {
	events  []prometheus.Counter // indexed by shopguard.Action
	invalid [numReasons]prometheus.Counter
	unmatch prometheus.Counter

	// Plain totals for Stats, kept beside the counters so that a summary
	// does not have to gather the registry.
	nEvents  atomic.Int64
	nInvalid [numReasons]atomic.Int64
	nUnmatch atomic.Int64
}

// NewMetrics registers, on reg, shopguard_events_total{action},
// shopguard_events_invalid_total{reason} and
// shopguard_events_unmatched_total, with every series pre-created at
// zero. A nil reg creates unregistered metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	events := f.NewCounterVec(prometheus.CounterOpts{
		Name: "shopguard_events_total",
		Help: "Valid audit events read, by action (unknown actions are \"other\").",
	}, []string{"action"})
	invalid := f.NewCounterVec(prometheus.CounterOpts{
		Name: "shopguard_events_invalid_total",
		Help: "Input lines or messages rejected as invalid events and skipped, by reason.",
	}, []string{"reason"})
	m := &Metrics{unmatch: f.NewCounter(prometheus.CounterOpts{
		Name: "shopguard_events_unmatched_total",
		Help: "Well-formed input lines that describe no audit event (nginx lines no route matches), skipped.",
	})}
	for _, a := range shopguard.Actions() {
		m.events = append(m.events, events.WithLabelValues(a.String()))
	}
	for _, r := range Reasons() {
		m.invalid[r] = invalid.WithLabelValues(r.String())
	}
	return m
}

// Read counts one valid event of action a.
func (m *Metrics) Read(a shopguard.Action) {
	if m == nil {
		return
	}
	if int(a) >= len(m.events) {
		a = shopguard.ActionOther
	}
	m.events[a].Inc()
	m.nEvents.Add(1)
}

// ReadEvents counts the valid events evs, touching each counter once.
func (m *Metrics) ReadEvents(evs []shopguard.Event) {
	if m == nil || len(evs) == 0 {
		return
	}
	var n [256]int // one per possible Action value
	for i := range evs {
		n[evs[i].Action]++
	}
	for a, c := range n {
		if c > 0 {
			if a >= len(m.events) {
				a = int(shopguard.ActionOther)
			}
			m.events[a].Add(float64(c))
		}
	}
	m.nEvents.Add(int64(len(evs)))
}

// Invalid counts one rejected input. Values of r that are not Reason
// constants are counted as ReasonNotJSON, so no rejection goes uncounted.
func (m *Metrics) Invalid(r Reason) {
	if m == nil {
		return
	}
	if r == 0 || r >= numReasons {
		r = ReasonNotJSON
	}
	m.invalid[r].Inc()
	m.nInvalid[r].Add(1)
}

// Unmatched counts n inputs that matched no route (SPEC §7 nginx).
func (m *Metrics) Unmatched(n int) {
	if m == nil || n == 0 {
		return
	}
	m.unmatch.Add(float64(n))
	m.nUnmatch.Add(int64(n))
}

// Stats are plain totals for a summary.
type Stats struct {
	Events    int64            // valid events read
	Unmatched int64            // inputs skipped as matching no route
	Invalid   map[string]int64 // rejected inputs by reason label; zero counts omitted
}

// InvalidTotal returns the number of rejected inputs over all reasons.
func (s Stats) InvalidTotal() int64 {
	var n int64
	for _, c := range s.Invalid {
		n += c
	}
	return n
}

// Stats returns the totals counted so far. A nil *Metrics has none.
func (m *Metrics) Stats() Stats {
	st := Stats{Invalid: map[string]int64{}}
	if m == nil {
		return st
	}
	st.Events = m.nEvents.Load()
	st.Unmatched = m.nUnmatch.Load()
	for _, r := range Reasons() {
		if n := m.nInvalid[r].Load(); n > 0 {
			st.Invalid[r.String()] = n
		}
	}
	return st
}
