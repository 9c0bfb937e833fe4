package alert

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shopguard/shopguard/internal/kafkaconf"
)

// Config is the `sinks:` section of the configuration file. A nil field
// means that sink is off; an empty mapping (`file: {}`) turns it on with its
// DefaultXConfig values.
//
//	sinks:
//	  file: {path: /var/lib/shopguard/findings.jsonl}
//	  kafka: {brokers: [kafka:9092]}
//	  alertmanager: {urls: [http://am-0:9093, http://am-1:9093]}
//	  webhook: {url_file: /run/secrets/slack_url, format: slack}
//	  pseudonymize: {key_file: /run/secrets/pseudonym_key}
type Config struct {
	File         *FileConfig         `yaml:"file,omitempty"`
	Kafka        *KafkaConfig        `yaml:"kafka,omitempty"`
	Alertmanager *AlertmanagerConfig `yaml:"alertmanager,omitempty"`
	Webhook      *WebhookConfig      `yaml:"webhook,omitempty"`
	Pseudonymize *PseudonymizeConfig `yaml:"pseudonymize,omitempty"`
}

// configKey is the key Config lives under; every problem Validate reports
// names its full key from there.
const configKey = "sinks"

// Validate returns every problem of the configured sinks at once, joined
// with errors.Join, each naming its key (e.g. "sinks.alertmanager.urls[0]").
// It checks the configuration only; secrets and certificates are read, and
// may fail, when the sinks are built. sinks.kafka.brokers may be empty here,
// for the program to fill in before Build (see KafkaConfig.Brokers).
func (c Config) Validate() error {
	var p problems
	if c.File != nil {
		p.add(c.File.validate(configKey + ".file"))
	}
	if c.Kafka != nil {
		p.add(c.Kafka.validate(configKey+".kafka", false))
	}
	if c.Alertmanager != nil {
		p.add(c.Alertmanager.validate(configKey + ".alertmanager"))
	}
	if c.Webhook != nil {
		p.add(c.Webhook.validate(configKey + ".webhook"))
	}
	if c.Pseudonymize != nil {
		p.add(c.Pseudonymize.validate(configKey + ".pseudonymize"))
	}
	return p.err()
}

// problems collects configuration errors so Validate can report all of them.
type problems []error

func (p *problems) addf(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (p *problems) add(errs problems) { *p = append(*p, errs...) }

func (p problems) err() error { return errors.Join(p...) }

// secretRef validates a secret read from a file or an environment variable:
// at most one of them may be set, and with required one must be.
func secretRef(p *problems, key, file, env string, required bool) {
	switch {
	case file != "" && env != "":
		p.addf(key+"_file", "set only one of %s_file and %s_env", lastKey(key), lastKey(key))
	case required && file == "" && env == "":
		p.addf(key+"_file", "required (or %s_env)", lastKey(key))
	}
}

func lastKey(key string) string { return key[strings.LastIndexByte(key, '.')+1:] }

// readSecret resolves a secret from a file (surrounding whitespace and the
// trailing newline editors add are trimmed) or from an environment
// variable. It returns "" when neither is set. Errors name the key and the
// file or variable, never the secret.
func readSecret(key, file, env string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", key, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%s_file: %s is empty", key, file)
		}
		return s, nil
	case env != "":
		s, ok := os.LookupEnv(env)
		if !ok || strings.TrimSpace(s) == "" {
			return "", fmt.Errorf("%s_env: environment variable %s is empty or unset", key, env)
		}
		return strings.TrimSpace(s), nil
	}
	return "", nil
}

// QueueConfig sizes the in-memory queue of a notification sink. It is
// inlined into the configs of the Alertmanager and webhook sinks.
type QueueConfig struct {
	// Capacity is the most findings the queue holds; when it is full the
	// oldest are dropped and counted in shopguard_sink_dropped_total.
	Capacity int `yaml:"queue_capacity"`
	// BatchSize is the most findings sent in one request.
	BatchSize int `yaml:"batch_size"`
	// FlushTimeout bounds how long shutdown waits for the queue to drain.
	FlushTimeout time.Duration `yaml:"flush_timeout"`
}

// DefaultQueueConfig is the queue of a notification sink unless configured.
var DefaultQueueConfig = QueueConfig{Capacity: 10000, BatchSize: 64, FlushTimeout: 5 * time.Second}

func (c QueueConfig) validate(key string) problems {
	var p problems
	if c.Capacity < 1 || c.Capacity > 1_000_000 {
		p.addf(key+".queue_capacity", "%d is out of range [1, 1000000]", c.Capacity)
	}
	if c.BatchSize < 1 || c.BatchSize > 1000 {
		p.addf(key+".batch_size", "%d is out of range [1, 1000]", c.BatchSize)
	}
	if c.FlushTimeout < 0 {
		p.addf(key+".flush_timeout", "%s is negative", c.FlushTimeout)
	}
	return p
}

// TLSConfig configures the client side of a TLS connection to a receiver:
// the same settings, validated and loaded by the same code, as every Kafka
// connection's tls section. HTTP sinks ignore Enabled and use TLS exactly
// when their URL is https.
type TLSConfig = kafkaconf.TLS

// BasicAuth is HTTP basic authentication. The password is read from a file
// or an environment variable, never written in the configuration.
type BasicAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

func (c *BasicAuth) validate(key string) problems {
	var p problems
	if c.Username == "" {
		p.addf(key+".username", "required")
	}
	secretRef(&p, key+".password", c.PasswordFile, c.PasswordEnv, true)
	return p
}

// validateHTTPURL checks that s is an absolute http or https URL without
// credentials in it (those belong in basic_auth, where they are read from a
// file and cannot end up in a log line).
func validateHTTPURL(p *problems, key, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		p.addf(key, "%q is not an http or https URL", s)
		return nil
	}
	if u.User != nil {
		p.addf(key, "credentials in the URL are not allowed; use basic_auth with password_file or password_env")
		return nil
	}
	return u
}

func oneOf(p *problems, key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		p.addf(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}
