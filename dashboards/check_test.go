package dashboards

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

// shopguardMetrics is the metric list of the shared notes (the contract the
// packages implement), as registered family names. cmd/shopguard checks the
// real files against its real registry too; this copy keeps the package's
// own test independent of the wiring.
var shopguardMetrics = []string{
	"shopguard_events_total",
	"shopguard_events_invalid_total",
	"shopguard_geoip_lookups_total",
	"shopguard_geoip_cache_hits_total",
	"shopguard_geoip_cache_misses_total",
	"shopguard_geoip_cache_entries",
	"shopguard_geoip_cache_bytes",
	"shopguard_kafka_messages_total",
	"shopguard_kafka_consumer_lag",
	"shopguard_kafka_commits_total",
	"shopguard_kafka_commit_errors_total",
	"shopguard_kafka_fetch_errors_total",
	"shopguard_dead_letters_total",
	"shopguard_findings_total",
	"shopguard_event_lag_seconds",
	"shopguard_processing_latency_seconds",
	"shopguard_state_entries",
	"shopguard_state_evictions_total",
	"shopguard_engine_events_total",
	"shopguard_sink_deliveries_total",
	"shopguard_sink_retries_total",
	"shopguard_sink_dropped_total",
	"shopguard_sink_queue_length",
	"shopguard_sink_up",
	"shopguard_build_info",
	// Campaigns (SPEC §3.2).
	"shopguard_wave_failing_accounts",
	"shopguard_wave_baseline_accounts",
	"shopguard_watchlist_accounts",
	"shopguard_watchlist_last_reload_successful",
}

func registry(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func TestCheckRealFiles(t *testing.T) {
	require.NoError(t, Check(FS, registry(shopguardMetrics...)))
}

// Every metric shopguard exposes is shown on a dashboard, directly or
// through a recording rule: a metric nobody can see is either missing from
// the dashboards or not worth its cost.
func TestDashboardsCoverEveryMetric(t *testing.T) {
	files, err := fs.Glob(FS, "grafana/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	files = append(files, "prometheus/shopguard-rules.yml")
	var all strings.Builder
	for _, f := range files {
		data, err := fs.ReadFile(FS, f)
		require.NoError(t, err)
		all.Write(data)
	}
	var missing []string
	for _, m := range shopguardMetrics {
		if !strings.Contains(all.String(), m) {
			missing = append(missing, m)
		}
	}
	require.Empty(t, missing, "metrics on no dashboard and in no rule")
}

// The real files fail against a registry that lacks one of their metrics,
// so TestCheckRealFiles cannot pass vacuously.
func TestCheckRealFilesMissingMetric(t *testing.T) {
	reg := registry(shopguardMetrics...)
	delete(reg, "shopguard_sink_up")
	err := Check(FS, reg)
	require.ErrorIs(t, err, ErrUnknownMetric)
	require.Contains(t, err.Error(), "grafana/overview.json")
	require.Contains(t, err.Error(), `panel "Sinks up"`)
}

const goodRules = `groups:
  - name: g
    rules:
      - record: shopguard:events:rate5m
        expr: sum by (action) (rate(shopguard_events_total[5m]))
      - alert: Quiet
        expr: sum(shopguard:events:rate5m) == 0
        for: 5m
        labels: {severity: medium}
        annotations: {summary: s, description: d}
`

// board returns a dashboard whose panels are the given JSON fragments.
func board(uid string, panels ...string) string {
	return `{"uid": "` + uid + `", "title": "T", "panels": [` + strings.Join(panels, ",") + `],
	  "templating": {"list": [
	    {"name": "datasource", "type": "datasource", "query": "prometheus"},
	    {"name": "instance", "type": "query", "query": {"query": "label_values(shopguard_build_info{job=~\"$job\"}, instance)"}}]}}`
}

func panelJSON(id, title, desc, expr string) string {
	return `{"id": ` + id + `, "type": "timeseries", "title": "` + title + `", "description": "` + desc + `",
	  "targets": [{"refId": "A", "expr": "` + strings.ReplaceAll(expr, `"`, `\"`) + `"}]}`
}

func TestCheck(t *testing.T) {
	reg := registry("shopguard_events_total", "shopguard_build_info", "shopguard_processing_latency_seconds")
	good := panelJSON("1", "Events", "Events per second.", `sum(rate(shopguard_events_total{job=~"$job"}[$__rate_interval]))`)

	tests := []struct {
		name  string
		files fstest.MapFS
		is    error    // nil: Check must pass
		want  []string // substrings of the error
	}{
		{
			name: "good",
			files: fstest.MapFS{
				"grafana/a.json": {Data: []byte(board("a", good,
					// Histogram series, a recording rule's output, the Go
					// collector, up, and Grafana's interval variables.
					panelJSON("2", "Latency", "p99.", `histogram_quantile(0.99, sum by (le) (rate(shopguard_processing_latency_seconds_bucket[$__rate_interval])))`),
					panelJSON("3", "Mean", "Mean.", `rate(shopguard_processing_latency_seconds_sum[5m]) / rate(shopguard_processing_latency_seconds_count[5m])`),
					panelJSON("4", "Recorded", "From a rule.", `sum(shopguard:events:rate5m) * on() group_left() max(up)`),
					panelJSON("5", "Heap", "Go heap.", `go_memstats_heap_alloc_bytes + process_resident_memory_bytes * 0`),
					panelJSON("6", "Range", "Over the range.", `increase(shopguard_events_total[${__range}]) / $__range_s`),
					`{"id": 7, "type": "row", "title": "Row", "panels": []}`,
				))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
				// promtool tests are not rule files and are not read.
				"prometheus/r.test.yml": {Data: []byte("tests: [this is not a rule file")},
			},
		},
		{
			name: "unknown metric in a panel",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", good, panelJSON("2", "Nope", "d.", `rate(shopguard_nope_total[5m])`)))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrUnknownMetric,
			want: []string{`grafana/a.json: panel "Nope" (id 2) target A`, "shopguard_nope_total"},
		},
		{
			name: "histogram suffix of a metric that is not registered",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", panelJSON("2", "B", "d.", `rate(shopguard_nope_seconds_bucket[5m])`)))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrUnknownMetric,
			want: []string{"shopguard_nope_seconds_bucket"},
		},
		{
			name: "unknown metric in a collapsed row",
			files: fstest.MapFS{
				"grafana/a.json": {Data: []byte(board("a", `{"id": 9, "type": "row", "title": "R", "collapsed": true, "panels": [`+
					panelJSON("10", "Inner", "d.", `shopguard_hidden`)+`]}`))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrUnknownMetric,
			want: []string{`panel "Inner" (id 10)`, "shopguard_hidden"},
		},
		{
			name: "unknown metric in a variable",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(strings.Replace(board("a", good), "shopguard_build_info", "shopguard_old_info", 1))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrUnknownMetric,
			want: []string{`variable "instance"`, "shopguard_old_info"},
		},
		{
			name: "bad expression",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", panelJSON("2", "Broken", "d.", `sum(rate(shopguard_events_total[5m])`)))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrPromQL,
			want: []string{`grafana/a.json: panel "Broken" (id 2) target A`},
		},
		{
			name: "Grafana variable outside a string",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", panelJSON("2", "Var", "d.", `topk($n, shopguard_events_total)`)))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrPromQL,
			want: []string{`panel "Var"`},
		},
		{
			name: "panel without description",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", panelJSON("2", "Bare", "", `shopguard_events_total`)))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrInvalid,
			want: []string{`panel "Bare" (id 2): invalid: no description`},
		},
		{
			name: "panel without title",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", panelJSON("2", "", "d.", `shopguard_events_total`)))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrInvalid,
			want: []string{`panel "" (id 2): invalid: no title`},
		},
		{
			name: "not JSON",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(`{"uid": "a", "panels": [`)},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrInvalid,
			want: []string{"grafana/a.json: invalid: JSON"},
		},
		{
			name: "duplicate dashboard uid",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("same", good))},
				"grafana/b.json":   {Data: []byte(board("same", good))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrInvalid,
			want: []string{`grafana/b.json: invalid: uid "same" is also used by grafana/a.json`},
		},
		{
			name: "unknown metric in a rule",
			files: fstest.MapFS{
				"grafana/a.json": {Data: []byte(board("a", good))},
				"prometheus/r.yml": {Data: []byte(strings.Replace(goodRules,
					"sum(shopguard:events:rate5m) == 0", "sum(rate(shopguard_evnts_total[5m])) == 0", 1))},
			},
			is:   ErrUnknownMetric,
			want: []string{`prometheus/r.yml: group "g": alert "Quiet"`, "shopguard_evnts_total"},
		},
		{
			name: "recorded name that no rule records",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", panelJSON("2", "Old", "d.", `shopguard:events:rate1m`)))},
				"prometheus/r.yml": {Data: []byte(goodRules)},
			},
			is:   ErrUnknownMetric,
			want: []string{`panel "Old"`, "shopguard:events:rate1m looks recorded, but no recording rule defines it"},
		},
		{
			name: "bad expression in a rule",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", good))},
				"prometheus/r.yml": {Data: []byte(strings.Replace(goodRules, "[5m]", "[5m", 1))},
			},
			is:   ErrPromQL,
			want: []string{`prometheus/r.yml: group "g": record "shopguard:events:rate5m"`},
		},
		{
			// The flaky ShopguardConsumerLagGrowing test of issue 12: an
			// alert in one group, the recording it reads in another.
			name: "rule reads a recording from another group",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", good))},
				"prometheus/r.yml": {Data: []byte(strings.Replace(goodRules, "      - alert: Quiet", "  - name: h\n    rules:\n      - alert: Quiet", 1))},
			},
			is:   ErrRuleOrder,
			want: []string{`prometheus/r.yml: group "h": alert "Quiet": reads a recording not made before it in its group: shopguard:events:rate5m`},
		},
		{
			name: "rule reads a recording made after it",
			files: fstest.MapFS{
				"grafana/a.json": {Data: []byte(board("a", good))},
				"prometheus/r.yml": {Data: []byte(`groups:
  - name: g
    rules:
      - record: shopguard:events:total5m
        expr: shopguard:events:rate5m * 300
      - record: shopguard:events:rate5m
        expr: sum by (action) (rate(shopguard_events_total[5m]))
`)},
			},
			is:   ErrRuleOrder,
			want: []string{`group "g": record "shopguard:events:total5m"`, `shopguard:events:rate5m; record it earlier in group "g"`},
		},
		{
			name: "alert without severity",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", good))},
				"prometheus/r.yml": {Data: []byte(strings.Replace(goodRules, "{severity: medium}", "{team: sre}", 1))},
			},
			is:   ErrInvalid,
			want: []string{`alert "Quiet": invalid: severity label ""`},
		},
		{
			name: "misspelt rule key",
			files: fstest.MapFS{
				"grafana/a.json":   {Data: []byte(board("a", good))},
				"prometheus/r.yml": {Data: []byte(strings.Replace(goodRules, "annotations:", "annotation:", 1))},
			},
			is:   ErrInvalid,
			want: []string{"prometheus/r.yml: invalid", "annotation"},
		},
		{
			name:  "nothing to check",
			files: fstest.MapFS{"prometheus/r.test.yml": {Data: []byte("tests: []")}},
			is:    ErrInvalid,
			want:  []string{"no rule file", "no dashboard"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.files, reg)
			if tt.is == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.is)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

// Check reports every problem, not only the first.
func TestCheckReportsAll(t *testing.T) {
	files := fstest.MapFS{
		"grafana/a.json": {Data: []byte(board("a",
			panelJSON("1", "One", "d.", `shopguard_one`),
			panelJSON("2", "Two", "", `shopguard_events_total`),
			panelJSON("3", "Three", "d.", `rate(`),
		))},
		"prometheus/r.yml": {Data: []byte(goodRules)},
	}
	err := Check(files, registry("shopguard_events_total", "shopguard_build_info"))
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined))
	require.Len(t, joined.Unwrap(), 3)
	require.ErrorIs(t, err, ErrUnknownMetric)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorIs(t, err, ErrPromQL)
}
