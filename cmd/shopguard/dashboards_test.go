package main

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/dashboards"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/geoip"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/scaleout"
)

// repoRoot is the repository root as seen from this package's directory,
// where go test runs.
const repoRoot = "../.."

// dbRegistry builds the registry that `run` and `demo` serve on /metrics:
// newRegistry, then the metrics every package registers in live.serve, with
// every sink configured (against addresses nothing listens on: building a
// sink does not connect) and GeoIP opened on the demo database, as the demo
// does, checkpoints and a watchlist on, and the scale-out metrics too (a process registers
// those instead of the checkpoint ones with scale_out.enabled; here the
// registry holds every metric run may serve). Nothing is sent or written.
func dbRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := newRegistry()
	dir := t.TempDir()

	geoPath := filepath.Join(dir, "demo-city.mmdb")
	require.NoError(t, geodemo.Write(geoPath, geodemo.Cities))
	gcfg := geoip.DefaultConfig
	gcfg.Path = geoPath
	geo, err := geoip.Open(gcfg, reg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = geo.Close() })

	detect.NewMetrics(reg)
	newWatchlistMetrics(reg)
	ck := DefaultCheckpointConfig
	ck.Path = filepath.Join(dir, "checkpoint")
	newCheckpointer(ck, kafka.DefaultConfig.Topic, kafka.DefaultConfig.Group, reg, nil)
	ingest.NewMetrics(reg)
	kafka.NewMetrics(reg)
	scaleout.NewMetrics(reg)

	file := alert.DefaultFileConfig
	file.Path = filepath.Join(dir, "findings.jsonl")
	kafka := alert.DefaultKafkaConfig
	kafka.Brokers = []string{"127.0.0.1:1"}
	am := alert.DefaultAlertmanagerConfig
	am.URLs = []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}
	wh := alert.DefaultWebhookConfig
	wh.URL = "http://127.0.0.1:1/hook"
	sinks, err := alert.Build(alert.Config{File: &file, Kafka: &kafka, Alertmanager: &am, Webhook: &wh}, reg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sinks.Close() })
	return reg
}

// dbMetric is one metric family as registered: its type (empty when it has
// no series yet, so gathering cannot tell) and its label names.
type dbMetric struct {
	typ    string
	labels []string
}

var (
	dbDescName   = regexp.MustCompile(`fqName: ("(?:[^"\\]|\\.)*")`)
	dbDescLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// dbMetrics lists every metric family reg knows. Gather alone would miss
// vectors without series (the per-partition consumer lag exists only once a
// partition is fetched), so the names and labels come from walking the
// collectors' descriptions, and the types from gathering.
func dbMetrics(t *testing.T, reg *prometheus.Registry) map[string]*dbMetric {
	t.Helper()
	ms := map[string]*dbMetric{}
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	for d := range ch {
		s := d.String()
		m := dbDescName.FindStringSubmatch(s)
		require.NotNil(t, m, "desc without a name: %s", s)
		name, err := strconv.Unquote(m[1])
		require.NoError(t, err, s)
		var labels []string
		if l := dbDescLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, v := range strings.Split(l[1], ",") {
				// Constrained labels print as c(name).
				labels = append(labels, strings.TrimSuffix(strings.TrimPrefix(v, "c("), ")"))
			}
		}
		slices.Sort(labels)
		ms[name] = &dbMetric{labels: labels}
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		m, ok := ms[mf.GetName()]
		require.True(t, ok, "%s is gathered but not described", mf.GetName())
		m.typ = strings.ToLower(mf.GetType().String()) // counter, gauge, histogram, …
	}
	return ms
}

// dbNames is the set of names dashboards.Check takes.
func dbNames(ms map[string]*dbMetric) map[string]bool {
	names := map[string]bool{}
	for n := range ms {
		names[n] = true
	}
	return names
}

func TestDashboardsUseRegisteredMetrics(t *testing.T) {
	names := dbNames(dbMetrics(t, dbRegistry(t)))
	require.NoError(t, dashboards.Check(dashboards.FS, names))

	// The check depends on the registry: without a metric the rules and
	// dashboards use, it reports that metric.
	delete(names, "shopguard_events_total")
	err := dashboards.Check(dashboards.FS, names)
	require.ErrorIs(t, err, dashboards.ErrUnknownMetric)
	require.ErrorContains(t, err, "shopguard_events_total")
}

// dbBoundedLabels are the label names shopguard's own metrics may carry:
// enumerations with a fixed set of values (SPEC §5), the Kafka partition
// number, and build info. Never a shop, actor or address.
var dbBoundedLabels = map[string]bool{
	"action": true, "reason": true, "result": true, "rule": true, "severity": true,
	"sink": true, "kind": true, "stage": true, "state": true, "partition": true, "version": true, "goversion": true,
}

func TestMetricLabelsAreBounded(t *testing.T) {
	for name, m := range dbMetrics(t, dbRegistry(t)) {
		if !strings.HasPrefix(name, "shopguard_") {
			continue
		}
		for _, l := range m.labels {
			require.True(t, dbBoundedLabels[l], "%s has label %q, which is not one of the bounded label names", name, l)
		}
	}
}

// dbDocRow is one row of the table in docs/metrics.md.
type dbDocRow struct {
	line   int
	name   string
	typ    string
	labels []string
}

// dbDocTable reads the metric tables of docs/metrics.md: the rows of every
// table whose header starts with "| metric |", each with a backquoted
// metric name, the type, the backquoted label names (or "—") and the
// meaning.
func dbDocTable(t *testing.T) []dbDocRow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	require.NoError(t, err)
	var rows []dbDocRow
	inTable := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case !strings.HasPrefix(line, "|"):
			inTable = false
			continue
		case strings.HasPrefix(line, "| metric |"):
			inTable = true
			continue
		case !inTable || strings.HasPrefix(line, "|---"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		require.Len(t, cells, 4, "docs/metrics.md:%d: want | metric | type | labels | meaning |", n)
		name := strings.TrimSpace(cells[0])
		require.Regexp(t, "^`shopguard_[a-z0-9_]+`$", name, "docs/metrics.md:%d: metric name", n)
		row := dbDocRow{line: n, name: strings.Trim(name, "`"), typ: strings.TrimSpace(cells[1])}
		for _, l := range strings.Split(cells[2], ",") {
			l = strings.TrimSpace(l)
			if l == "—" || l == "" {
				continue
			}
			row.labels = append(row.labels, strings.Trim(l, "`"))
		}
		slices.Sort(row.labels)
		require.NotEmpty(t, strings.TrimSpace(cells[3]), "docs/metrics.md:%d: %s has no meaning", n, row.name)
		rows = append(rows, row)
	}
	require.NoError(t, sc.Err())
	return rows
}

func TestMetricsDocMatchesRegistry(t *testing.T) {
	ms := dbMetrics(t, dbRegistry(t))
	rows := dbDocTable(t)
	require.NotEmpty(t, rows, "docs/metrics.md has no metric table")

	documented := map[string]bool{}
	for _, r := range rows {
		require.False(t, documented[r.name], "docs/metrics.md:%d: %s is listed twice", r.line, r.name)
		documented[r.name] = true
		m, ok := ms[r.name]
		require.True(t, ok, "docs/metrics.md:%d: %s is not registered by run or demo", r.line, r.name)
		if m.typ != "" {
			require.Equal(t, m.typ, r.typ, "docs/metrics.md:%d: type of %s", r.line, r.name)
		}
		require.Equal(t, m.labels, r.labels, "docs/metrics.md:%d: labels of %s", r.line, r.name)
	}
	// And the other way round: every metric of shopguard's own is in the
	// table (the Go and process collectors' are described by their docs).
	var missing []string
	for _, name := range slices.Sorted(maps.Keys(ms)) {
		if strings.HasPrefix(name, "shopguard_") && !documented[name] {
			missing = append(missing, name)
		}
	}
	require.Empty(t, missing, "registered but not in docs/metrics.md")
}

// dbTool returns the path of a command-line tool the checks below run, or
// skips the test, naming the Debian package that provides it.
func dbTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found on PATH: install the Debian package %s (.ci/run does) to run this check", name, pkg)
	}
	return path
}

// dbExec runs a tool in dir and returns its combined output; a non-zero
// exit fails the test with that output.
func dbExec(t *testing.T, dir, tool string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(tool), strings.Join(args, " "), out)
	return string(out)
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := dbTool(t, "promtool", "prometheus")
	out := dbExec(t, filepath.Join(repoRoot, "dashboards", "prometheus"), promtool, "check", "rules", "shopguard-rules.yml")
	require.Contains(t, out, "SUCCESS")
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := dbTool(t, "promtool", "prometheus")
	dbExec(t, filepath.Join(repoRoot, "dashboards", "prometheus"), promtool, "test", "rules", "shopguard-rules.test.yml")
}

// TestPromtoolCheckDeployConfig checks deploy/prometheus.yml with the rule
// file path it has inside the compose stack pointed at the repository's.
func TestPromtoolCheckDeployConfig(t *testing.T) {
	promtool := dbTool(t, "promtool", "prometheus")
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus.yml"))
	require.NoError(t, err)
	const inCompose = "/etc/prometheus/rules/shopguard-rules.yml"
	require.Contains(t, string(data), inCompose, "deploy/prometheus.yml no longer loads the rules from where docker-compose.yml mounts them")
	rules, err := filepath.Abs(filepath.Join(repoRoot, "dashboards", "prometheus", "shopguard-rules.yml"))
	require.NoError(t, err)
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(string(data), inCompose, rules)), 0o600))
	out := dbExec(t, ".", promtool, "check", "config", cfg)
	require.Regexp(t, `SUCCESS: [1-9][0-9]* rules found`, out)
}

func TestAmtoolCheckConfig(t *testing.T) {
	amtool := dbTool(t, "amtool", "prometheus-alertmanager")
	out := dbExec(t, repoRoot, amtool, "check-config", "deploy/alertmanager.yml")
	require.Contains(t, out, "SUCCESS")
}

// TestAlertmanagerRoutes checks the routing the README promises for the
// example configuration: critical pages and goes to the security channel,
// high to the security channel, medium and low to tickets; findings and
// health alerts alike.
func TestAlertmanagerRoutes(t *testing.T) {
	amtool := dbTool(t, "amtool", "prometheus-alertmanager")
	tests := []struct {
		labels []string
		want   string
	}{
		{[]string{"alertname=ShopguardAccountTakeover", "severity=critical", "shop_id=s1", "actor=a"}, "pager,security"},
		{[]string{"alertname=ShopguardDown", "severity=critical"}, "pager,security"},
		{[]string{"alertname=ShopguardCredentialStuffing", "severity=high", "source=192.0.2.1"}, "security"},
		{[]string{"alertname=ShopguardSinkFailing", "severity=high", "sink=webhook"}, "security"},
		{[]string{"alertname=ShopguardBruteForce", "severity=medium", "shop_id=s1", "actor=a"}, "ticket"},
		{[]string{"alertname=Other", "severity=low"}, "ticket"},
		{[]string{"alertname=Unlabelled"}, "ticket"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.labels, ","), func(t *testing.T) {
			args := append([]string{"config", "routes", "test", "--config.file=deploy/alertmanager.yml",
				"--verify.receivers=" + tt.want}, tt.labels...)
			cmd := exec.Command(amtool, args...)
			cmd.Dir = repoRoot
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			require.NoError(t, err, "want %s, stdout %q, stderr %q", tt.want, stdout.String(), stderr.String())
			require.Equal(t, tt.want, strings.TrimSpace(stdout.String()))
		})
	}
}

func TestDockerComposeConfig(t *testing.T) {
	compose, err := exec.LookPath("docker-compose")
	args := []string{"-f", "docker-compose.yml", "config", "-q"}
	if err != nil {
		// The compose plugin of the docker CLI reads the same file.
		docker, derr := exec.LookPath("docker")
		if derr != nil || exec.Command(docker, "compose", "version").Run() != nil {
			t.Skip("neither docker-compose nor docker compose found: install the Debian package docker-compose (.ci/run does) to run this check")
		}
		compose, args = docker, append([]string{"compose"}, args...)
	}
	dbExec(t, repoRoot, compose, args...)
}
