package alert

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/shopguard/shopguard"
)

// AlertmanagerConfig configures the Alertmanager sink (`sinks.alertmanager`).
type AlertmanagerConfig struct {
	// URLs are the Alertmanagers, e.g. http://am:9093 (an HA pair lists
	// both). Findings go to every one of them; "/api/v2/alerts" is appended
	// unless the URL already ends in it.
	URLs      []string   `yaml:"urls"`
	BasicAuth *BasicAuth `yaml:"basic_auth,omitempty"`
	TLS       TLSConfig  `yaml:"tls,omitempty"`
	// Timeout bounds one POST to one Alertmanager.
	Timeout time.Duration `yaml:"timeout"`
	// ResolveAfter is how long an alert stays firing after it was last
	// sent: endsAt is max(startsAt, now) + ResolveAfter, so a repeat of the
	// same alert (same labels) extends it, and without repeats it resolves.
	ResolveAfter time.Duration `yaml:"resolve_after"`
	// GeneratorURL, if set, is the alerts' generatorURL, e.g. a link into
	// the finding store; "{id}" in it is replaced by the finding id.
	GeneratorURL string `yaml:"generator_url,omitempty"`

	QueueConfig `yaml:",inline"`
}

// DefaultAlertmanagerConfig is the Alertmanager sink unless configured.
var DefaultAlertmanagerConfig = AlertmanagerConfig{
	Timeout:      10 * time.Second,
	ResolveAfter: time.Hour,
	QueueConfig:  DefaultQueueConfig,
}

// UnmarshalYAML fills the fields the YAML leaves out from
// DefaultAlertmanagerConfig. It uses the function form of the interface,
// which keeps the decoder's strict handling of unknown keys.
func (c *AlertmanagerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultAlertmanagerConfig
	type plain AlertmanagerConfig
	return unmarshal((*plain)(c))
}

// Validate reports every problem of the config, naming its key.
func (c AlertmanagerConfig) Validate() error { return c.validate(configKey + ".alertmanager").err() }

func (c AlertmanagerConfig) validate(key string) problems {
	var p problems
	if len(c.URLs) == 0 {
		p.addf(key+".urls", "at least one Alertmanager URL is required")
	}
	for i, s := range c.URLs {
		validateHTTPURL(&p, fmt.Sprintf("%s.urls[%d]", key, i), s)
	}
	if c.BasicAuth != nil {
		p.add(c.BasicAuth.validate(key + ".basic_auth"))
	}
	p.add(problems(c.TLS.Validate(key + ".tls")))
	if c.TLS.Enabled {
		p.addf(key+".tls.enabled", "not used by HTTP sinks; TLS follows the URL scheme")
	}
	if c.Timeout <= 0 {
		p.addf(key+".timeout", "%s is not positive", c.Timeout)
	}
	if c.ResolveAfter <= 0 {
		p.addf(key+".resolve_after", "%s is not positive", c.ResolveAfter)
	}
	if c.GeneratorURL != "" {
		if u, err := url.Parse(strings.ReplaceAll(c.GeneratorURL, "{id}", "x")); err != nil || !u.IsAbs() {
			p.addf(key+".generator_url", "%q is not an absolute URL", c.GeneratorURL)
		}
	}
	p.add(c.QueueConfig.validate(key))
	return p
}

// Alertmanager is a notification sink that posts findings as alerts to the
// Alertmanager v2 API. Send only queues; Run delivers.
type Alertmanager struct {
	*notifier
	cfg       AlertmanagerConfig
	endpoints []endpoint
	client    *http.Client
	header    http.Header // basic auth, when configured
	limit     *logLimiter
}

var _ shopguard.Sink = (*Alertmanager)(nil)

// NewAlertmanager validates cfg, reads the basic-auth password and TLS files
// it names, and returns the sink. m may be shared with other sinks; nil
// means unregistered metrics. A nil logger discards.
func NewAlertmanager(cfg AlertmanagerConfig, m *Metrics, logger *slog.Logger) (*Alertmanager, error) {
	const key = configKey + ".alertmanager"
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = orDiscard(logger)
	client, err := newHTTPClient(key+".tls", cfg.TLS, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	a := &Alertmanager{cfg: cfg, client: client, header: http.Header{}, limit: newLogLimiter(time.Minute)}
	var password string
	if ba := cfg.BasicAuth; ba != nil {
		if password, err = readSecret(key+".basic_auth.password", ba.PasswordFile, ba.PasswordEnv); err != nil {
			return nil, err
		}
		a.header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(ba.Username+":"+password)))
	}
	for _, s := range cfg.URLs {
		u, _ := url.Parse(s) // validated above
		if !strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/api/v2/alerts") {
			u = u.JoinPath("api/v2/alerts")
		}
		a.endpoints = append(a.endpoints, newEndpoint(u, false, password))
	}
	a.notifier = newNotifier(sinkAlertmanager, cfg.QueueConfig, a.deliver, m.forSink(sinkAlertmanager), logger)
	return a, nil
}

// Send queues fs for delivery and returns at once; it never fails. When the
// queue is full the oldest findings are dropped and counted.
func (a *Alertmanager) Send(_ context.Context, fs ...shopguard.Finding) error {
	a.enqueue(fs)
	return nil
}

// Run delivers queued findings until ctx is done, then flushes for at most
// the configured flush_timeout and returns nil. Cancel ctx only after the
// last Send: findings sent after Run returned are dropped.
func (a *Alertmanager) Run(ctx context.Context) error { return a.run(ctx) }

// deliver posts one batch to every Alertmanager at once and counts it as
// delivered when any of them accepted it, as Prometheus does: members of an
// HA cluster do not share alerts, but each one holding an alert can notify,
// and they share the notification log so a receiver is not paged twice. A
// member that missed the batch is logged (rate-limited), not retried.
func (a *Alertmanager) deliver(ctx context.Context, batch []shopguard.Finding) error {
	body, err := a.encode(batch, time.Now())
	if err != nil {
		return err
	}
	errs := make([]error, len(a.endpoints))
	var wg sync.WaitGroup
	for i, ep := range a.endpoints {
		wg.Go(func() { errs[i] = post(ctx, a.client, ep, body, a.header) })
	}
	wg.Wait()
	failed := 0
	for _, e := range errs {
		if e != nil {
			failed++
		}
	}
	if failed == len(errs) {
		return errors.Join(errs...)
	}
	for i, e := range errs {
		if e == nil || ctx.Err() != nil {
			continue
		}
		if ok, more := a.limit.allow(a.endpoints[i].display); ok {
			a.log.Warn("one Alertmanager did not accept alerts; the others did", "url", a.endpoints[i].display,
				"class", ClassifyError(e), "err", e, "similar_messages_suppressed", more)
		}
	}
	return nil
}

// amAlert is a postable alert of the Alertmanager v2 API.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// encode turns a batch into the JSON array the v2 API takes.
//
// Labels identify an alert, and Alertmanager de-duplicates on them: they are
// alertname, rule, severity, shop_id and actor, which name the account (or,
// for rules keyed by source, the source address). The finding id is an
// annotation, not a label, so that a repeated finding for the same account
// updates one alert instead of opening another. Empty label values are left
// out (Alertmanager treats them as absent anyway). Attacker-controlled text
// is escaped (escapeText) so it reaches notification templates inert.
func (a *Alertmanager) encode(batch []shopguard.Finding, now time.Time) ([]byte, error) {
	alerts := make([]amAlert, 0, len(batch))
	for i := range batch {
		f := &batch[i]
		evidence, err := marshalEvidence(f)
		if err != nil {
			return nil, err
		}
		labels := map[string]string{
			"alertname": AlertName(f.Rule),
			"rule":      f.Rule,
			"severity":  string(f.Severity),
		}
		setNonEmpty(labels, "shop_id", escapeText(f.ShopID))
		setNonEmpty(labels, "actor", escapeText(f.Actor))
		if f.Actor == "" {
			// A finding keyed by source names no account; the source is what
			// tells two such alerts apart.
			setNonEmpty(labels, "source", escapeText(f.IP))
		}
		ann := map[string]string{
			"summary":     escapeText(f.Summary),
			"description": describe(f),
			"evidence":    string(evidence),
			"finding_id":  escapeText(f.ID),
		}
		setNonEmpty(ann, "ip", escapeText(f.IP))
		start := f.Time
		if start.IsZero() {
			start = now
		}
		alerts = append(alerts, amAlert{
			Labels:       labels,
			Annotations:  ann,
			StartsAt:     start.UTC(),
			EndsAt:       maxTime(start, now).Add(a.cfg.ResolveAfter).UTC(),
			GeneratorURL: strings.ReplaceAll(a.cfg.GeneratorURL, "{id}", url.PathEscape(f.ID)),
		})
	}
	b, err := json.Marshal(alerts)
	if err != nil {
		return nil, &permanentError{fmt.Errorf("encode alerts: %w", err)}
	}
	return b, nil
}

// AlertName is the alertname of a rule's alerts: "Shopguard" and the rule
// name in CamelCase, e.g. ShopguardImpossibleTravel for impossible_travel.
func AlertName(rule string) string {
	var b strings.Builder
	b.WriteString("Shopguard")
	upper := true
	for _, r := range rule {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			if upper {
				r = unicode.ToUpper(r)
			}
			b.WriteRune(r)
			upper = false
		default:
			upper = true // separators are dropped and start a new word
		}
	}
	return b.String()
}

// describe is the one-line description annotation of a finding.
func describe(f *shopguard.Finding) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)", f.Rule, f.Severity)
	if f.ShopID != "" {
		fmt.Fprintf(&b, " in shop %s", escapeText(f.ShopID))
	}
	if f.Actor != "" {
		fmt.Fprintf(&b, " for %s", escapeText(f.Actor))
	}
	if f.IP != "" {
		fmt.Fprintf(&b, " from %s", escapeText(f.IP))
	}
	if !f.Time.IsZero() {
		fmt.Fprintf(&b, " at %s", f.Time.UTC().Format(time.RFC3339))
	}
	return b.String()
}

func setNonEmpty(m map[string]string, k, v string) {
	if v != "" {
		m[k] = v
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// orDiscard returns l, or a logger that discards when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
