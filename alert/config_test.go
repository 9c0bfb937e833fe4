package alert

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// decodeSinks decodes YAML the way the program does: strictly, under a
// top-level sinks key.
func decodeSinks(t *testing.T, src string) (Config, error) {
	t.Helper()
	var doc struct {
		Sinks Config `yaml:"sinks"`
	}
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return doc.Sinks, err
	}
	return doc.Sinks, nil
}

func TestConfigDecodeAppliesDefaults(t *testing.T) {
	cfg, err := decodeSinks(t, `
sinks:
  file: {}
  kafka: {brokers: ["k1:9092"]}
  alertmanager:
    urls: [http://am-0:9093, http://am-1:9093]
    queue_capacity: 500
    basic_auth: {username: sg, password_file: /run/secrets/am}
  webhook: {url_env: HOOK, format: slack}
  pseudonymize: {key_env: PSEUDO_KEY}
`)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())

	require.Equal(t, DefaultFileConfig, *cfg.File)
	require.Equal(t, "shopguard-findings", cfg.Kafka.Topic)
	require.Equal(t, 10*time.Second, cfg.Kafka.Timeout)
	require.Equal(t, time.Hour, cfg.Alertmanager.ResolveAfter)
	require.Equal(t, 500, cfg.Alertmanager.Capacity)
	require.Equal(t, 64, cfg.Alertmanager.BatchSize)
	require.Equal(t, 5*time.Second, cfg.Alertmanager.FlushTimeout)
	require.Equal(t, FormatSlack, cfg.Webhook.Format)
	require.Equal(t, 10000, cfg.Webhook.Capacity)
	require.Equal(t, []string{"alertmanager", "webhook"}, cfg.Pseudonymize.Sinks)

	// Absent means off.
	cfg, err = decodeSinks(t, "sinks: {file: {path: out.jsonl, fsync: false}}\n")
	require.NoError(t, err)
	require.Nil(t, cfg.Kafka)
	require.Nil(t, cfg.Alertmanager)
	require.Equal(t, FileConfig{Path: "out.jsonl"}, *cfg.File)
}

func TestConfigDecodeIsStrict(t *testing.T) {
	for _, src := range []string{
		"sinks: {alertmanager: {urls: [http://am:9093], timeuot: 5s}}",
		"sinks: {webhook: {url: http://x, secret: plain-text-secret}}",
		"sinks: {kafka: {brokers: [k:9092], sasl: {mechanism: PLAIN, password: pw}}}",
		"sinks: {file: {path: x, rotate: true}}",
		"sinks: {pseudonymize: {key: inline}}",
		"sinks: {slack: {}}",
	} {
		_, err := decodeSinks(t, src)
		require.Error(t, err, src)
		require.Contains(t, err.Error(), "not found", src)
	}
}

func TestConfigValidateNamesEveryKey(t *testing.T) {
	cfg, err := decodeSinks(t, `
sinks:
  file: {path: ""}
  kafka:
    brokers: ["k1"]
    topic: ""
    sasl: {mechanism: PLAIN, username: u, password_file: /pw}
  alertmanager:
    urls: ["ht tp://x", "http://user:pw@am:9093"]
    batch_size: 0
    basic_auth: {username: sg, password_file: /a, password_env: B}
    resolve_after: 0s
  webhook: {format: teams}
  pseudonymize: {sinks: [slack]}
`)
	require.NoError(t, err)
	err = cfg.Validate()
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		`sinks.file.path: required`,
		`sinks.kafka.brokers[0]: "k1" is not host:port`,
		`sinks.kafka.topic: required`,
		`sinks.kafka.sasl.mechanism: PLAIN sends the password in clear text`,
		`sinks.alertmanager.urls[0]: "ht tp://x" is not an http or https URL`,
		`sinks.alertmanager.urls[1]: credentials in the URL are not allowed`,
		`sinks.alertmanager.batch_size: 0 is out of range`,
		`sinks.alertmanager.basic_auth.password_file: set only one of password_file and password_env`,
		`sinks.alertmanager.resolve_after: 0s is not positive`,
		`sinks.webhook.url: set exactly one of url, url_file and url_env`,
		`sinks.webhook.format: "teams" is not one of json, slack`,
		`sinks.pseudonymize.key_file: required (or key_env)`,
		`sinks.pseudonymize.sinks[0]: "slack" is not one of alertmanager, webhook, kafka, file`,
	} {
		require.Contains(t, msg, want)
	}
	require.NotContains(t, msg, "user:pw", "a URL with credentials is not echoed")
	require.Len(t, strings.Split(msg, "\n"), 13, "one line per problem:\n%s", msg)
}

func TestWebhookURLFromFileIsNotEchoed(t *testing.T) {
	path := writeFile(t, "url", "hooks.example.com/services/T0/B0/SECRET\n") // no scheme
	cfg := DefaultWebhookConfig
	cfg.URLFile = path
	_, err := NewWebhook(cfg, nil, nil)
	require.ErrorContains(t, err, "sinks.webhook.url: not an http or https URL")
	require.NotContains(t, err.Error(), "SECRET")
}

func TestBuildSecretErrorsNameKeys(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Alertmanager: &AlertmanagerConfig{URLs: []string{"http://am:9093"}, BasicAuth: &BasicAuth{Username: "u", PasswordFile: missing}, Timeout: time.Second, ResolveAfter: time.Hour, QueueConfig: DefaultQueueConfig}},
			"sinks.alertmanager.basic_auth.password_file: open " + missing},
		{Config{Webhook: &WebhookConfig{URL: "http://hook", Format: FormatJSON, SecretEnv: "SHOPGUARD_TEST_UNSET_VAR", Timeout: time.Second, QueueConfig: DefaultQueueConfig}},
			"sinks.webhook.secret_env: environment variable SHOPGUARD_TEST_UNSET_VAR is empty or unset"},
		{Config{Pseudonymize: &PseudonymizeConfig{KeyFile: writeFile(t, "k", "short\n")}},
			"sinks.pseudonymize: pseudonymization key is 5 bytes, want at least 16"},
		{Config{Kafka: &KafkaConfig{Topic: "t", Timeout: time.Second}},
			"sinks.kafka.brokers: at least one broker (host:port) is required"},
	} {
		_, err := Build(tc.cfg, nil, nil)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestBuildWiresSinks(t *testing.T) {
	am := newFakeAM(t)
	srv := newTestServer(t, am)
	path := filepath.Join(t.TempDir(), "findings.jsonl")
	t.Setenv("SHOPGUARD_TEST_PSEUDO_KEY", testKey)
	logger, logs := captureLogs()
	cfg, err := decodeSinks(t, `
sinks:
  file: {path: `+path+`}
  alertmanager: {urls: [`+srv.URL+`]}
  pseudonymize: {key_env: SHOPGUARD_TEST_PSEUDO_KEY}
`)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	fan, err := Build(cfg, reg, logger)
	require.NoError(t, err)
	runSink(t, fan)

	require.NoError(t, fan.Send(t.Context(), travelFinding("a")))
	am.wait(1)
	require.NoError(t, fan.Close())

	// The file keeps the real actor; Alertmanager gets the pseudonym.
	require.Equal(t, "owner@example.jp", readJSONL(t, path)[0].Actor)
	p, err := NewPseudonymizer(nopSink{}, []byte(testKey))
	require.NoError(t, err)
	require.Equal(t, p.Pseudonym("shop-17", "owner@example.jp"), am.allPosts()[0][0].Labels["actor"])
	require.NotContains(t, logs.String(), testKey)

	// Every sink's series exist from the start; up only for built sinks.
	for _, s := range sinkNames {
		require.Zero(t, metric(t, reg, "shopguard_sink_dropped_total", s))
		require.Zero(t, metric(t, reg, "shopguard_sink_deliveries_total", s, "failure"))
	}
	require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "file"))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "shopguard_sink_up" {
			require.Len(t, mf.GetMetric(), 2, "file and alertmanager only")
		}
	}
}
