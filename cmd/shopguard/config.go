package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest"
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

	GeoIP  ingest.GeoIPConfig `yaml:"geoip"`
	Kafka  ingest.KafkaConfig `yaml:"kafka"`
	Detect detect.Config      `yaml:"detect"`
	Sinks  alert.Config       `yaml:"sinks"`
}

// defaultConfig returns the configuration an empty file means.
func defaultConfig() Config {
	return Config{
		Listen:   "127.0.0.1:9464",
		LogLevel: "info",
		GeoIP:    ingest.DefaultGeoIPConfig,
		Kafka:    ingest.DefaultKafkaConfig,
		Detect:   cloneDetect(detect.DefaultConfig),
	}
}

// cloneDetect copies c so that decoding into it cannot write through to the
// package default's slices.
func cloneDetect(c detect.Config) detect.Config {
	c.Allowlist = append([]detect.Network(nil), c.Allowlist...)
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
		return err
	}
	return cfg.Validate()
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
	if err := c.GeoIP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Detect.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Sinks.Validate(); err != nil {
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
