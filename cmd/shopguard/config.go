package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/geoip"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/scaleout"
)

// Config is the whole configuration file. Every section is optional; an
// absent key keeps its default. Unknown keys are errors.
type Config struct {
	// Listen is the HTTP address for /metrics, /healthz and /readyz.
	Listen string `yaml:"listen"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// Pprof serves /debug/pprof on the HTTP listener.
	Pprof bool `yaml:"pprof"`
	// WebConfigFile is an exporter-toolkit web configuration (TLS, basic
	// auth) for the HTTP listener.
	WebConfigFile string `yaml:"web_config_file"`

	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	// HTTP configures the live incident pages on the HTTP listener.
	HTTP HTTPConfig `yaml:"http"`

	// Input chooses the input format (SPEC §7).
	Input  ingest.InputConfig `yaml:"input"`
	GeoIP  geoip.Config       `yaml:"geoip"`
	Kafka  kafka.Config       `yaml:"kafka"`
	Detect detect.Config      `yaml:"detect"`
	Sinks  alert.Config       `yaml:"sinks"`
	// ScaleOut runs `shopguard run` as one of N instances (docs/scaling.md).
	ScaleOut scaleout.Config `yaml:"scale_out"`
	// Watchlist is the file of leaked accounts (SPEC §3.2; watchlist.go).
	Watchlist WatchlistConfig `yaml:"watchlist"`
	// State is the memory budget that sizes the state caps (state.go).
	State StateConfig `yaml:"state"`
}

// defaultConfig returns the configuration an empty file means.
func defaultConfig() Config {
	return Config{
		Listen:     "127.0.0.1:9464",
		LogLevel:   "info",
		GeoIP:      geoip.DefaultConfig,
		Input:      ingest.DefaultInputConfig,
		Checkpoint: DefaultCheckpointConfig,
		HTTP:       DefaultHTTPConfig,
		Kafka:      kafka.DefaultConfig,
		Detect:     cloneDetect(detect.DefaultConfig),
		ScaleOut:   scaleout.DefaultConfig,
		Watchlist:  DefaultWatchlistConfig,
	}
}

// cloneDetect copies c so that decoding into it cannot write through to the
// package default's slices.
func cloneDetect(c detect.Config) detect.Config {
	c.Allowlist = append([]detect.Network(nil), c.Allowlist...)
	c.UnfamiliarLogin.HostingASNs = append([]uint32(nil), c.UnfamiliarLogin.HostingASNs...)
	return c
}

// loadConfig reads path (strictly: unknown keys are errors) over the
// defaults and validates the result. Every error names the file and the key.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := decodeConfig(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// decodeConfig decodes YAML strictly over cfg and validates it.
func decodeConfig(b []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return withKeys(b, err)
	}
	// A second document would otherwise be ignored without a word.
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document (---); a configuration file holds one")
	}
	if err := cfg.applyState(); err != nil {
		return err
	}
	return cfg.Validate()
}

// withKeys adds the dotted key to the errors of decoding doc, which yaml
// reports by line only ("line 3: cannot unmarshal !!str `10 parsecs` into
// time.Duration"), or, when a value's own parser rejects it (a CIDR in the
// allowlist), not at all.
func withKeys(doc []byte, err error) error {
	var root yaml.Node
	if yaml.Unmarshal(doc, &root) != nil {
		return err // a syntax error, which names its line
	}
	type place struct {
		line       int
		key, value string
	}
	var names, values []place // every mapping key (value: its name), every scalar value
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, key)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				name := n.Content[i].Value
				k := name
				if key != "" {
					k = key + "." + name
				}
				names = append(names, place{n.Content[i].Line, k, name})
				walk(n.Content[i+1], k)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", key, i))
			}
		case yaml.ScalarNode:
			values = append(values, place{n.Line, key, n.Value})
		} // Aliases are not followed, so an alias bomb costs nothing here.
	}
	walk(&root, "")
	find := func(ps []place, line int, match func(string) bool) (place, bool) {
		for _, p := range ps {
			if (line == 0 || p.line == line) && p.key != "" && match(p.value) {
				return p, true
			}
		}
		return place{}, false
	}

	var te *yaml.TypeError
	if !errors.As(err, &te) {
		// A parser's own error quotes the value it rejected: find that value.
		msg := err.Error()
		if p, ok := find(values, 0, func(v string) bool {
			v = strings.TrimSpace(v)
			return v != "" && strings.Contains(msg, strconv.Quote(v))
		}); ok {
			return fmt.Errorf("line %d: %s: %w", p.line, p.key, err)
		}
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		var line int
		if _, serr := fmt.Sscanf(m, "line %d:", &line); serr != nil {
			continue
		}
		rest := strings.TrimPrefix(m, fmt.Sprintf("line %d: ", line))
		var (
			p  place
			ok bool
		)
		if field, isField := strings.CutPrefix(rest, "field "); isField && strings.Contains(field, " not found in type ") {
			field = field[:strings.Index(field, " not found in type ")]
			p, ok = find(names, line, func(v string) bool { return v == field })
			rest = "unknown key"
		} else if _, v, quoted := strings.Cut(rest, "`"); quoted {
			v, _, _ = strings.Cut(v, "`")
			v = strings.TrimSuffix(v, "...") // yaml shortens long values
			p, ok = find(values, line, func(s string) bool { return strings.HasPrefix(s, v) })
		} else {
			p, ok = find(names, line, func(string) bool { return true })
		}
		if ok {
			msgs[i] = fmt.Sprintf("line %d: %s: %s", line, p.key, rest)
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Validate checks every section and returns all problems at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen: must not be empty"))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("log_level: %w", err))
	}
	if err := c.Checkpoint.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Input.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HTTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.GeoIP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Detect.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Sinks.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.ScaleOut.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Watchlist.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

// newLogger logs text to w at level.
func newLogger(w io.Writer, level string) *slog.Logger {
	l, err := parseLevel(level)
	if err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// HTTPConfig configures the live incident pages (/incidents,
// /findings/{id}) that run and demo serve beside /metrics.
type HTTPConfig struct {
	// ExternalURL is where people reach this listener, e.g.
	// https://shopguard.example:9464; with it, Alertmanager alerts link
	// their finding's page (generatorURL).
	ExternalURL string `yaml:"external_url,omitempty"`
	// IncidentsWindow is how long an incident stays on /incidents after
	// its last finding, in event time.
	IncidentsWindow time.Duration `yaml:"incidents_window"`
	// IncidentsMaxFindings caps the findings the pages hold in memory; the
	// oldest incidents are forgotten first.
	IncidentsMaxFindings int `yaml:"incidents_max_findings"`
}

// DefaultHTTPConfig is the http section unless configured.
var DefaultHTTPConfig = HTTPConfig{IncidentsWindow: 24 * time.Hour, IncidentsMaxFindings: 10_000}

// Validate reports every problem, naming its key.
func (c HTTPConfig) Validate() error {
	var errs []error
	if c.ExternalURL != "" {
		if u, err := url.Parse(c.ExternalURL); err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") {
			errs = append(errs, fmt.Errorf("http.external_url: %q is not an absolute http(s) URL", c.ExternalURL))
		}
	}
	if c.IncidentsWindow <= 0 {
		errs = append(errs, fmt.Errorf("http.incidents_window: %s is not positive", c.IncidentsWindow))
	}
	if c.IncidentsMaxFindings <= 0 {
		errs = append(errs, fmt.Errorf("http.incidents_max_findings: %d is not positive", c.IncidentsMaxFindings))
	}
	return errors.Join(errs...)
}

// generatorURL is the Alertmanager generatorURL template for external: the
// finding's page, "{id}" standing for its path-escaped id.
func generatorURL(external string) string {
	return strings.TrimRight(external, "/") + "/findings/{id}"
}
