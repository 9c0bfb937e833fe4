package alert

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shopguard/shopguard"
)

// The headers a webhook request carries.
const (
	// SignatureHeader is "sha256=" and the hex HMAC-SHA256 of the request
	// body keyed with the shared secret, as GitHub's X-Hub-Signature-256.
	SignatureHeader = "X-Shopguard-Signature"
	// TimestampHeader is the Unix time in seconds the request was made. The
	// JSON body repeats it as "sent_at", where the signature covers it, so
	// a receiver can reject stale replays; re-delivered findings are
	// harmless anyway because their ids are deterministic.
	TimestampHeader = "X-Shopguard-Timestamp"
)

// The webhook body formats.
const (
	// FormatJSON posts {"sent_at": RFC 3339 time, "findings": [finding...]}
	// with each finding as on the JSONL sink.
	FormatJSON = "json"
	// FormatSlack posts Slack-compatible {"text": "..."}, one line per
	// finding, for Slack, Mattermost and the like.
	FormatSlack = "slack"
)

// WebhookConfig configures the webhook sink (`sinks.webhook`).
type WebhookConfig struct {
	// The receiver URL, given in exactly one way. Because URLs such as
	// Slack's carry a secret token, url_file and url_env are there to keep
	// it out of the configuration; logs only ever show scheme and host.
	URL     string `yaml:"url,omitempty"`
	URLFile string `yaml:"url_file,omitempty"`
	URLEnv  string `yaml:"url_env,omitempty"`
	// Format is "json" (the default) or "slack".
	Format string `yaml:"format"`
	// The HMAC signing secret, from a file or an environment variable.
	// Without one, requests are not signed.
	SecretFile string    `yaml:"secret_file,omitempty"`
	SecretEnv  string    `yaml:"secret_env,omitempty"`
	TLS        TLSConfig `yaml:"tls,omitempty"`
	// Timeout bounds one POST.
	Timeout time.Duration `yaml:"timeout"`

	QueueConfig `yaml:",inline"`
}

// DefaultWebhookConfig is the webhook sink unless configured.
var DefaultWebhookConfig = WebhookConfig{
	Format:      FormatJSON,
	Timeout:     10 * time.Second,
	QueueConfig: DefaultQueueConfig,
}

// UnmarshalYAML fills the fields the YAML leaves out from
// DefaultWebhookConfig, keeping the decoder strict.
func (c *WebhookConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultWebhookConfig
	type plain WebhookConfig
	return unmarshal((*plain)(c))
}

// Validate reports every problem of the config, naming its key.
func (c WebhookConfig) Validate() error { return c.validate(configKey + ".webhook").err() }

func (c WebhookConfig) validate(key string) problems {
	var p problems
	set := 0
	for _, s := range []string{c.URL, c.URLFile, c.URLEnv} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		p.addf(key+".url", "set exactly one of url, url_file and url_env")
	}
	if c.URL != "" {
		validateWebhookURL(&p, key+".url", c.URL)
	}
	oneOf(&p, key+".format", c.Format, FormatJSON, FormatSlack)
	secretRef(&p, key+".secret", c.SecretFile, c.SecretEnv, false)
	p.add(problems(c.TLS.Validate(key + ".tls")))
	if c.TLS.Enabled {
		p.addf(key+".tls.enabled", "not used by HTTP sinks; TLS follows the URL scheme")
	}
	if c.Timeout <= 0 {
		p.addf(key+".timeout", "%s is not positive", c.Timeout)
	}
	p.add(c.QueueConfig.validate(key))
	return p
}

// validateWebhookURL checks a webhook URL without quoting it: it may hold a
// secret token.
func validateWebhookURL(p *problems, key, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		p.addf(key, "not an http or https URL")
		return nil
	}
	if u.User != nil {
		p.addf(key, "credentials in the URL are not allowed")
		return nil
	}
	return u
}

// Webhook is a notification sink that posts findings as JSON to a URL,
// signed with HMAC-SHA256. Send only queues; Run delivers.
type Webhook struct {
	*notifier
	format   string
	endpoint endpoint
	client   *http.Client
	secret   []byte // nil: unsigned
}

var _ shopguard.Sink = (*Webhook)(nil)

// NewWebhook validates cfg, reads the URL, secret and TLS files it names,
// and returns the sink. m may be shared with other sinks; nil means
// unregistered metrics. A nil logger discards.
func NewWebhook(cfg WebhookConfig, m *Metrics, logger *slog.Logger) (*Webhook, error) {
	const key = configKey + ".webhook"
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = orDiscard(logger)
	raw := cfg.URL
	if raw == "" {
		var err error
		if raw, err = readSecret(key+".url", cfg.URLFile, cfg.URLEnv); err != nil {
			return nil, err
		}
	}
	var p problems
	u := validateWebhookURL(&p, key+".url", raw)
	if err := p.err(); err != nil {
		return nil, err
	}
	secret, err := readSecret(key+".secret", cfg.SecretFile, cfg.SecretEnv)
	if err != nil {
		return nil, err
	}
	client, err := newHTTPClient(key+".tls", cfg.TLS, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	w := &Webhook{format: cfg.Format, endpoint: newEndpoint(u, true, secret), client: client}
	if secret != "" {
		w.secret = []byte(secret)
	} else if cfg.Format == FormatJSON {
		logger.Warn("webhook requests are not signed; set secret_file or secret_env so the receiver can verify them",
			"url", w.endpoint.display)
	}
	w.notifier = newNotifier(sinkWebhook, cfg.QueueConfig, w.deliver, m.forSink(sinkWebhook), logger)
	return w, nil
}

// Send queues fs for delivery and returns at once; it never fails. When the
// queue is full the oldest findings are dropped and counted.
func (w *Webhook) Send(_ context.Context, fs ...shopguard.Finding) error {
	w.enqueue(fs)
	return nil
}

// Run delivers queued findings until ctx is done, then flushes for at most
// the configured flush_timeout and returns nil. Cancel ctx only after the
// last Send: findings sent after Run returned are dropped.
func (w *Webhook) Run(ctx context.Context) error { return w.run(ctx) }

func (w *Webhook) deliver(ctx context.Context, batch []shopguard.Finding) error {
	now := time.Now()
	var (
		body []byte
		err  error
	)
	if w.format == FormatSlack {
		body, err = slackBody(batch)
	} else {
		body, err = jsonBody(batch, now)
	}
	if err != nil {
		return err
	}
	header := http.Header{}
	header.Set(TimestampHeader, strconv.FormatInt(now.Unix(), 10))
	if w.secret != nil {
		mac := hmac.New(sha256.New, w.secret)
		mac.Write(body)
		header.Set(SignatureHeader, "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	return post(ctx, w.client, w.endpoint, body, header)
}

// jsonBody is the FormatJSON body.
func jsonBody(batch []shopguard.Finding, now time.Time) ([]byte, error) {
	findings := make([]json.RawMessage, len(batch))
	for i := range batch {
		b, err := marshalFinding(&batch[i])
		if err != nil {
			return nil, err
		}
		findings[i] = b
	}
	b, err := json.Marshal(struct {
		SentAt   time.Time         `json:"sent_at"`
		Findings []json.RawMessage `json:"findings"`
	}{now.UTC(), findings})
	if err != nil {
		return nil, &permanentError{fmt.Errorf("encode webhook body: %w", err)}
	}
	return b, nil
}

// slackBody is the FormatSlack body: one line per finding, e.g.
//
//	[HIGH] impossible_travel: login from Frankfurt, DE … (shop shop-17, actor owner@example.jp, ip 18.184.0.1, id 9f2c…)
//
// Attacker-controlled text is escaped twice: control characters as for all
// alert text, and &, < and > as Slack requires, so an actor name cannot
// inject mentions (<!channel>) or links.
func slackBody(batch []shopguard.Finding) ([]byte, error) {
	var b strings.Builder
	for i := range batch {
		f := &batch[i]
		if i > 0 {
			b.WriteByte('\n')
		}
		var line strings.Builder
		fmt.Fprintf(&line, "[%s] %s: %s (", strings.ToUpper(string(f.Severity)), f.Rule, f.Summary)
		sep := ""
		for _, kv := range [][2]string{{"shop", f.ShopID}, {"actor", f.Actor}, {"ip", f.IP}, {"id", f.ID}} {
			if kv[1] != "" {
				fmt.Fprintf(&line, "%s%s %s", sep, kv[0], kv[1])
				sep = ", "
			}
		}
		line.WriteByte(')')
		b.WriteString(slackEscape(truncate(escapeText(line.String()), 1000)))
	}
	body, err := json.Marshal(struct {
		Text string `json:"text"`
	}{b.String()})
	if err != nil {
		return nil, &permanentError{fmt.Errorf("encode slack body: %w", err)}
	}
	return body, nil
}

var slackReplacer = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackEscape(s string) string { return slackReplacer.Replace(s) }
