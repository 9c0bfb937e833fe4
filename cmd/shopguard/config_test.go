package main

import (
	"bytes"
	"context"
	"encoding"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest/geoip"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/internal/kafkaconf"
)

const (
	exampleConfig = "../../examples/shopguard.yml"
	deployConfig  = "../../deploy/shopguard.yml"
)

// configKeys lists the dotted keys of the configuration file, from the yaml
// tags of Config: sections (mappings decoded into a struct) and leaves.
func configKeys() (sections, leaves []string) {
	textUnmarshaler := reflect.TypeFor[encoding.TextUnmarshaler]()
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if strings.Contains(opts, "inline") {
				walk(ft, prefix)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			key := prefix + name
			if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) && ft != reflect.TypeFor[time.Time]() {
				sections = append(sections, key)
				walk(ft, key+".")
				continue
			}
			leaves = append(leaves, key)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return sections, leaves
}

// nested returns YAML that sets the dotted key to value, in block style.
func nested(key, value string) string {
	var b strings.Builder
	parts := strings.Split(key, ".")
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i) + p + ":")
		if i == len(parts)-1 {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// liveKeys lists the dotted keys a YAML document sets.
func liveKeys(t *testing.T, doc []byte) map[string]bool {
	t.Helper()
	var root yaml.Node
	require.NoError(t, yaml.Unmarshal(doc, &root))
	keys := map[string]bool{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := prefix + n.Content[i].Value
				keys[k] = true
				walk(n.Content[i+1], k+".")
			}
		}
	}
	walk(&root, "")
	return keys
}

func TestExampleConfigIsValidForRun(t *testing.T) {
	cfg, err := loadConfig(exampleConfig)
	require.NoError(t, err)
	// run checks the Kafka section too (replay does not need brokers).
	require.NoError(t, cfg.Kafka.Validate())
	require.NotEqual(t, defaultConfig(), cfg)
	require.NotNil(t, cfg.Sinks.File)
	require.NotNil(t, cfg.Sinks.Kafka)
	require.NotNil(t, cfg.Sinks.Alertmanager)
	require.NotNil(t, cfg.Sinks.Webhook)
	require.NotNil(t, cfg.Sinks.Pseudonymize)
	require.Len(t, cfg.Detect.Allowlist, 3)
	// The example documents the defaults: where it does not need a
	// different value to show a key, it has the default.
	def := defaultConfig()
	require.Equal(t, def.Listen, cfg.Listen)
	require.Equal(t, def.GeoIP, cfg.GeoIP)
	exDetect := cfg.Detect
	exDetect.Allowlist = nil
	require.Equal(t, def.Detect, exDetect)
	exKafka := cfg.Kafka
	exKafka.Brokers, exKafka.TLS, exKafka.SASL = nil, kafkaconf.TLS{}, kafkaconf.SASL{}
	require.Equal(t, def.Kafka, exKafka)
	require.Equal(t, alert.DefaultQueueConfig, cfg.Sinks.Alertmanager.QueueConfig)
	require.Equal(t, alert.DefaultWebhookConfig.Timeout, cfg.Sinks.Webhook.Timeout)
}

// TestExampleConfigCoversEveryKey keeps examples/shopguard.yml complete: every
// key of Config is set there, or, where it excludes a key that is set (the
// *_env alternative of a *_file secret), shown commented out at its place.
func TestExampleConfigCoversEveryKey(t *testing.T) {
	doc, err := os.ReadFile(exampleConfig)
	require.NoError(t, err)
	live := liveKeys(t, doc)
	sections, leaves := configKeys()
	for _, key := range append(sections, leaves...) {
		if live[key] {
			continue
		}
		// Commented out: "# name:" indented as the key would be, inside its
		// section.
		depth := strings.Count(key, ".")
		name := key[strings.LastIndexByte(key, '.')+1:]
		re := regexp.MustCompile(`(?m)^` + strings.Repeat("  ", depth) + `# ` + regexp.QuoteMeta(name) + `: \S`)
		require.Truef(t, re.Match(doc), "%s documents no key %s: add it (or, if it excludes a key set there, a commented-out line)", exampleConfig, key)
	}
	// And nothing in it is unknown: decoding is strict, so it loads.
	_, err = loadConfig(exampleConfig)
	require.NoError(t, err)
}

func TestDeployConfigIsValidForRun(t *testing.T) {
	cfg, err := loadConfig(deployConfig)
	require.NoError(t, err)
	require.NoError(t, cfg.Kafka.Validate())
}

func TestEmptyConfigIsDefaults(t *testing.T) {
	for _, doc := range []string{"", "\n", "# nothing but a comment\n", "---\n", "---\n...\n"} {
		cfg := defaultConfig()
		require.NoError(t, decodeConfig([]byte(doc), &cfg), "%q", doc)
		require.Equal(t, defaultConfig(), cfg, "%q", doc)
	}
	// And through the file, as run and replay load it.
	path := filepath.Join(t.TempDir(), "empty.yml")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	cfg, err := loadConfig(path)
	require.NoError(t, err)
	require.Equal(t, defaultConfig(), cfg)
	cfg, err = loadConfig("")
	require.NoError(t, err)
	require.Equal(t, defaultConfig(), cfg)
}

func TestConfigDefaults(t *testing.T) {
	def := defaultConfig()
	require.Equal(t, "127.0.0.1:9464", def.Listen)
	require.Equal(t, "info", def.LogLevel)
	require.False(t, def.Pprof)
	require.Empty(t, def.WebConfigFile)
	require.Equal(t, geoip.DefaultConfig, def.GeoIP)
	require.Equal(t, kafka.DefaultConfig, def.Kafka)
	require.Equal(t, detect.DefaultConfig, def.Detect)
	require.Equal(t, alert.Config{}, def.Sinks, "every sink is off unless configured")

	// A key left out keeps its default, in every section and at every depth.
	doc := `
kafka:
  brokers: [k:9092]
detect:
  brute_force:
    threshold: 3
  allowlist: [10.0.0.0/8]
sinks:
  file: {}
  alertmanager:
    urls: [http://am:9093]
    batch_size: 10
  webhook:
    url_env: HOOK
  pseudonymize:
    key_env: KEY
`
	cfg := defaultConfig()
	require.NoError(t, decodeConfig([]byte(doc), &cfg))
	require.Equal(t, def.Listen, cfg.Listen)
	require.Equal(t, def.GeoIP, cfg.GeoIP)

	wantKafka := kafka.DefaultConfig
	wantKafka.Brokers = []string{"k:9092"}
	require.Equal(t, wantKafka, cfg.Kafka)

	wantDetect := detect.DefaultConfig
	wantDetect.BruteForce.Threshold = 3
	wantDetect.Allowlist = cfg.Detect.Allowlist
	require.Equal(t, wantDetect, cfg.Detect)
	require.Equal(t, "10.0.0.0/8", cfg.Detect.Allowlist[0].String())

	require.Equal(t, &alert.DefaultFileConfig, cfg.Sinks.File)
	require.Nil(t, cfg.Sinks.Kafka)
	wantAM := alert.DefaultAlertmanagerConfig
	wantAM.URLs = []string{"http://am:9093"}
	wantAM.BatchSize = 10
	require.Equal(t, &wantAM, cfg.Sinks.Alertmanager)
	wantHook := alert.DefaultWebhookConfig
	wantHook.URLEnv = "HOOK"
	require.Equal(t, &wantHook, cfg.Sinks.Webhook)
	require.Equal(t, alert.DefaultPseudonymizeConfig.Sinks, cfg.Sinks.Pseudonymize.Sinks)

	// Decoding does not write through to the package defaults.
	require.Equal(t, def, defaultConfig())
	require.Empty(t, detect.DefaultConfig.Allowlist)
}

// TestConfigUnknownKeys puts an unknown key into every section of the file
// (found from Config's yaml tags, so new sections are covered) and expects
// an error that names the full key and its line.
func TestConfigUnknownKeys(t *testing.T) {
	sections, _ := configKeys()
	require.Greater(t, len(sections), 15)
	for _, sec := range append([]string{""}, sections...) {
		key := "bogus_key"
		if sec != "" {
			key = sec + "." + key
		}
		doc := nested(key, "1")
		cfg := defaultConfig()
		err := decodeConfig([]byte(doc), &cfg)
		require.Error(t, err, key)
		line := strings.Count(key, ".") + 1
		require.Contains(t, err.Error(), fmt.Sprintf("line %d: %s: unknown key", line, key), "%s", doc)
	}
	// A misspelt key among valid ones, and several at once.
	doc := "listen: 127.0.0.1:1\nkafka:\n  brokers: [k:1]\n  topik: x\ndetect:\n  brute_force:\n    treshold: 3\n"
	cfg := defaultConfig()
	err := decodeConfig([]byte(doc), &cfg)
	require.ErrorContains(t, err, "line 4: kafka.topik: unknown key")
	require.ErrorContains(t, err, "line 7: detect.brute_force.treshold: unknown key")
	// In flow style, where several keys share a line.
	cfg = defaultConfig()
	err = decodeConfig([]byte("sinks: {file: {path: x, sync: true}}\n"), &cfg)
	require.ErrorContains(t, err, "line 1: sinks.file.sync: unknown key")
}

// TestConfigBadValues: every bad value is an error naming its key, as
// `shopguard run --config` reports it (exit status 2).
func TestConfigBadValues(t *testing.T) {
	tests := []struct {
		doc  string
		want []string // each must be in the error
		not  string   // must not be in it (a secret)
	}{
		// Detect thresholds.
		{nested("detect.brute_force.threshold", "0"), []string{"detect.brute_force.threshold"}, ""},
		{nested("detect.credential_stuffing.threshold", "10001"), []string{"detect.credential_stuffing.threshold"}, ""},
		{nested("detect.account_takeover.failures", "-1"), []string{"detect.account_takeover.failures"}, ""},
		{nested("detect.bulk_export.threshold", "0"), []string{"detect.bulk_export.threshold"}, ""},
		{nested("detect.brute_force.threshold", "many"), []string{"line 3", "detect.brute_force.threshold", "many"}, ""},
		{nested("detect.credential_stuffing.ipv4_prefix", "33"), []string{"detect.credential_stuffing.ipv4_prefix"}, ""},
		{nested("detect.credential_stuffing.ipv6_prefix", "8"), []string{"detect.credential_stuffing.ipv6_prefix"}, ""},
		{nested("detect.impossible_travel.max_speed_kmh", "0"), []string{"detect.impossible_travel.max_speed_kmh"}, ""},
		{nested("detect.impossible_travel.max_speed_kmh", ".nan"), []string{"detect.impossible_travel.max_speed_kmh"}, ""},
		{nested("detect.impossible_travel.max_speed_kmh", ".inf"), []string{"detect.impossible_travel.max_speed_kmh"}, ""},
		{nested("detect.impossible_travel.min_distance_km", "-1"), []string{"detect.impossible_travel.min_distance_km"}, ""},
		{nested("detect.impossible_travel.min_distance_km", ".nan"), []string{"detect.impossible_travel.min_distance_km"}, ""},
		{nested("detect.max_accounts", "0"), []string{"detect.max_accounts"}, ""},
		{nested("detect.max_sources", "-5"), []string{"detect.max_sources"}, ""},
		{nested("detect.impossible_travel.enabled", "maybe"), []string{"line 3", "detect.impossible_travel.enabled"}, ""},
		// Durations.
		{nested("detect.brute_force.window", "0s"), []string{"detect.brute_force.window"}, ""},
		{nested("detect.brute_force.window", "200h"), []string{"detect.brute_force.window"}, ""},
		{nested("detect.impossible_travel.suppress", "-1m"), []string{"detect.impossible_travel.suppress"}, ""},
		{nested("detect.bulk_export.after_compromise", "10 parsecs"), []string{"line 3", "detect.bulk_export.after_compromise", "10 parsecs"}, ""},
		{nested("detect.account_takeover.window", "600"), []string{"detect.account_takeover.window"}, ""},
		// Severities.
		{nested("detect.brute_force.severity", "urgent"), []string{"detect.brute_force.severity", "urgent"}, ""},
		{nested("detect.bulk_export.compromise_severity", "CRITICAL"), []string{"detect.bulk_export.compromise_severity"}, ""},
		{nested("detect.impossible_travel.severity", `""`), []string{"detect.impossible_travel.severity"}, ""},
		// CIDRs in the allowlist.
		{nested("detect.allowlist", "[10.0.0.0/8, 10.0.0.300/8]"), []string{"line 2", "detect.allowlist[1]", "10.0.0.300/8"}, ""},
		{"detect:\n  allowlist:\n    - 2001:db8::/32\n    - office vpn\n", []string{"line 4", "detect.allowlist[1]", "office vpn"}, ""},
		{nested("detect.allowlist", "[10.0.0.0/33]"), []string{"detect.allowlist[0]", "10.0.0.0/33"}, ""},
		{nested("detect.allowlist", "10.0.0.0/8"), []string{"line 2", "detect.allowlist"}, ""},
		// Top level and geoip.
		{`listen: ""` + "\n", []string{"listen"}, ""},
		{"log_level: loud\n", []string{"log_level", "loud"}, ""},
		{"pprof: sometimes\n", []string{"line 1", "pprof"}, ""},
		{nested("geoip.cache_bytes", "1000"), []string{"geoip.cache_bytes"}, ""},
		{nested("geoip.cache_bytes", "lots"), []string{"line 2", "geoip.cache_bytes"}, ""},
		// The memory budget.
		{nested("state.memory_bytes", "lots"), []string{"line 2", "state.memory_bytes", "2GiB"}, ""},
		{nested("state.memory_bytes", "255MiB"), []string{"state.memory_bytes", "256MiB"}, ""},
		{"state: {memory_bytes: 2GiB}\ndetect: {max_accounts: 10}\n", []string{"detect.max_accounts", "state.memory_bytes"}, ""},
		{"state: {memory_bytes: 2GiB}\ngeoip: {cache_bytes: 67108864}\n", []string{"geoip.cache_bytes", "state.memory_bytes"}, ""},
		// Kafka, which run validates after loading.
		{nested("kafka.brokers", "[]"), []string{"kafka.brokers"}, ""},
		{nested("kafka.brokers", "[kafka]"), []string{"kafka.brokers[0]"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  start_offset: middle\n", []string{"kafka.start_offset", "middle"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  topic: bad topic!\n", []string{"kafka.topic"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  dead_letter_topic: admin-audit\n", []string{"kafka.dead_letter_topic"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  max_wait: 0s\n", []string{"kafka.max_wait"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  max_wait: soon\n", []string{"line 3", "kafka.max_wait"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  heartbeat_interval: 1m\n", []string{"kafka.heartbeat_interval"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  batch_size: 0\n", []string{"kafka.batch_size"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  tls: {enabled: true, cert_file: c.pem}\n", []string{"kafka.tls.cert_file"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  tls: {ca_file: ca.pem}\n", []string{"kafka.tls.enabled"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  sasl: {mechanism: GSSAPI, username: u, password_env: P}\n", []string{"kafka.sasl.mechanism", "GSSAPI"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  sasl: {mechanism: PLAIN, username: u, password_env: P}\n", []string{"kafka.sasl.mechanism", "clear text"}, ""},
		{"kafka:\n  brokers: [k:9092]\n  sasl: {mechanism: SCRAM-SHA-512, username: u}\n", []string{"kafka.sasl.password_file"}, ""},
		// Sinks.
		{nested("sinks.file.path", `""`), []string{"sinks.file.path"}, ""},
		{nested("sinks.kafka.timeout", "0s"), []string{"sinks.kafka.timeout"}, ""},
		{nested("sinks.kafka.brokers", "[nohost]"), []string{"sinks.kafka.brokers[0]"}, ""},
		{nested("sinks.alertmanager.urls", "[]"), []string{"sinks.alertmanager.urls"}, ""},
		{nested("sinks.alertmanager.urls", "[ftp://am:21]"), []string{"sinks.alertmanager.urls[0]"}, ""},
		{nested("sinks.alertmanager.urls", "[http://shopguard:hunter2@am:9093]"), []string{"sinks.alertmanager.urls[0]", "basic_auth"}, "hunter2"},
		{"sinks:\n  alertmanager:\n    urls: [http://am:9093]\n    queue_capacity: 0\n", []string{"sinks.alertmanager.queue_capacity"}, ""},
		{"sinks:\n  alertmanager:\n    urls: [http://am:9093]\n    batch_size: 5000\n", []string{"sinks.alertmanager.batch_size"}, ""},
		{"sinks:\n  alertmanager:\n    urls: [http://am:9093]\n    basic_auth: {password_file: p}\n", []string{"sinks.alertmanager.basic_auth.username"}, ""},
		{"sinks:\n  alertmanager:\n    urls: [http://am:9093]\n    resolve_after: never\n", []string{"line 4", "sinks.alertmanager.resolve_after"}, ""},
		{"sinks:\n  webhook:\n    url: https://hooks.example.com/T0/s3cr3tt0ken\n    url_env: HOOK\n", []string{"sinks.webhook.url", "exactly one"}, "s3cr3tt0ken"},
		{"sinks:\n  webhook:\n    url: https://user:s3cr3tt0ken@hooks.example.com/\n", []string{"sinks.webhook.url"}, "s3cr3tt0ken"},
		{"sinks:\n  webhook:\n    url_env: HOOK\n    format: xml\n", []string{"sinks.webhook.format", "xml"}, ""},
		{"sinks:\n  webhook:\n    url_env: HOOK\n    secret_file: s\n    secret_env: S\n", []string{"sinks.webhook.secret_file"}, ""},
		{"sinks:\n  webhook:\n    url_env: HOOK\n    tls: {enabled: true}\n", []string{"sinks.webhook.tls.enabled"}, ""},
		{nested("sinks.pseudonymize.sinks", "[alertmanager]"), []string{"sinks.pseudonymize.key_file"}, ""},
		{"sinks:\n  pseudonymize:\n    key_env: K\n    sinks: [pager]\n", []string{"sinks.pseudonymize.sinks[0]", "pager"}, ""},
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // should a row pass validation, run stops at once
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("bad-%d.yml", i))
			require.NoError(t, os.WriteFile(path, []byte(tt.doc), 0o600))
			var stdout, stderr bytes.Buffer
			code := Main(ctx, []string{"run", "--config", path, "--listen", "127.0.0.1:0"}, strings.NewReader(""), &stdout, &stderr)
			require.Equal(t, exitUsage, code, "doc:\n%s\nstderr:\n%s", tt.doc, stderr.String())
			for _, w := range tt.want {
				require.Contains(t, stderr.String(), w, "doc:\n%s", tt.doc)
			}
			if !strings.HasPrefix(tt.doc, "kafka:") {
				require.Contains(t, stderr.String(), path, "a config error names the file")
			}
			if tt.not != "" {
				require.NotContains(t, stderr.String(), tt.not, "the error repeats a secret")
			}
		})
	}
}

func TestConfigAllProblemsAtOnce(t *testing.T) {
	doc := "log_level: loud\ndetect:\n  brute_force:\n    threshold: 0\n    severity: urgent\n  max_sources: 0\n"
	cfg := defaultConfig()
	err := decodeConfig([]byte(doc), &cfg)
	for _, key := range []string{"log_level", "detect.brute_force.threshold", "detect.brute_force.severity", "detect.max_sources"} {
		require.ErrorContains(t, err, key)
	}
}

func TestConfigOneDocument(t *testing.T) {
	cfg := defaultConfig()
	err := decodeConfig([]byte("listen: 127.0.0.1:1\n---\nlisten: 0.0.0.0:9464\n"), &cfg)
	require.ErrorContains(t, err, "more than one YAML document")
}

func TestConfigSyntaxErrorNamesLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broken.yml")
	require.NoError(t, os.WriteFile(path, []byte("listen: 127.0.0.1:1\ndetect:\n  brute_force: [\n"), 0o600))
	_, err := loadConfig(path)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "line")
	_, err = loadConfig(filepath.Join(t.TempDir(), "missing.yml"))
	require.ErrorContains(t, err, "missing.yml")
}

// TestStateMemoryBytes: state.memory_bytes sizes the caps (the numbers
// worked out by hand from the costs in state.go), with a unit or without,
// from its minimum of 256MiB on.
func TestStateMemoryBytes(t *testing.T) {
	load := func(doc string) (Config, error) {
		cfg := defaultConfig()
		return cfg, decodeConfig([]byte(doc), &cfg)
	}
	cfg, err := load("state: {memory_bytes: 2GiB}\n")
	require.NoError(t, err)
	// 2 GiB − 112 MiB − 32 MiB (cache) = 1,996,488,704 bytes; 85% of it at
	// 250 bytes an account, 70% of 15% at 250 a source; the Go heap gets
	// what the cache and the accounts leave.
	require.Equal(t, 6_788_061, cfg.Detect.MaxAccounts)
	require.Equal(t, 838_525, cfg.Detect.MaxSources)
	require.Equal(t, 32<<20, cfg.GeoIP.CacheBytes)
	require.Equal(t, int64(416_913_966), capsFor(2<<30).HeapBytes)

	same, err := load("state: {memory_bytes: 2147483648}\n")
	require.NoError(t, err)
	require.Equal(t, cfg.Detect, same.Detect)

	// 8 GiB: the cache grows to 1/64 of the budget.
	big, err := load("state: {memory_bytes: 8GiB}\n")
	require.NoError(t, err)
	require.Equal(t, 128<<20, big.GeoIP.CacheBytes)

	low, err := load("state: {memory_bytes: 256MiB}\n")
	require.NoError(t, err)
	// 256 MiB − 144 MiB = 117,440,512 bytes.
	require.Equal(t, 399_297, low.Detect.MaxAccounts)
	_, err = load("state: {memory_bytes: 268435455}\n")
	require.ErrorContains(t, err, "below the minimum")

	none, err := load("state: {}\n")
	require.NoError(t, err)
	require.Equal(t, detect.DefaultConfig.MaxAccounts, none.Detect.MaxAccounts)
}

// TestTaskCaps: scaled out, each task of a stage gets its share of the
// caps, never 0, and of the hot set, never below 1,024.
func TestTaskCaps(t *testing.T) {
	c := detect.DefaultConfig
	c.MaxAccounts, c.MaxSources = 600, 5
	a, s, h := taskCaps(c, 6)
	require.Equal(t, [3]int{100, 1, 10_922}, [3]int{a, s, h})
	a, s, h = taskCaps(c, 0)
	require.Equal(t, [3]int{600, 5, 65_536}, [3]int{a, s, h})
	_, _, h = taskCaps(c, 64)
	require.Equal(t, 1024, h, "64 tasks: 1,024 hot accounts each")
	_, _, h = taskCaps(c, 65)
	require.Equal(t, 1024, h, "never fewer")
}
