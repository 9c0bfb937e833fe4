package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
)

const runUsage = `usage: shopguard run --config FILE [flags]

The always-on consumer: joins the consumer group on the audit topic (SPEC §4:
a group with no committed offset starts at the earliest offset), detects, and
hands findings to the configured sinks. Offsets are committed only after the
findings of the events before them are held by the record sinks (at least
once). Serves /metrics, /healthz and /readyz on --listen. SIGINT or SIGTERM
stops fetching, drains, commits, flushes and exits 0.

flags:
`

func runRun(ctx context.Context, e env, args []string) int {
	var config, listen, brokers, logLevel, geoip, geoipASN string
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(e.stderr, runUsage); fs.PrintDefaults() }
	fs.StringVar(&config, "config", "", "YAML configuration `file` (required)")
	fs.StringVar(&listen, "listen", "", "HTTP `address` for /metrics, /healthz, /readyz (overrides listen; default 127.0.0.1:9464)")
	fs.StringVar(&brokers, "brokers", "", "comma-separated Kafka `brokers` (overrides kafka.brokers)")
	fs.StringVar(&geoip, "geoip", "", "MaxMind City database `path` (overrides geoip.path)")
	fs.StringVar(&geoipASN, "geoip-asn", "", "MaxMind ASN database `path` (GeoLite2-ASN.mmdb; overrides geoip.asn_path)")
	fs.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides log_level)")
	var format, watchlist string
	fs.StringVar(&format, "format", "", "input `format`: shopguard, ecs, ocsf, nginx or mapping (overrides input.format)")
	fs.StringVar(&watchlist, "watchlist", "", "watchlist `file` of leaked accounts, shop_id<TAB>actor per line, re-read when it changes and on SIGHUP (overrides watchlist.path)")
	if code := parseFlags(fs, e, args); code >= 0 {
		return code
	}
	if config == "" {
		return usageError(e, "run", "--config is required")
	}
	cfg, err := loadConfig(config)
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard run:", err)
		return exitUsage
	}
	if code := applyFormat(e, "run", &cfg, format); code >= 0 {
		return code
	}
	if listen != "" {
		cfg.Listen = listen
	}
	if brokers != "" {
		cfg.Kafka.Brokers = strings.Split(brokers, ",")
	}
	if geoip != "" {
		cfg.GeoIP.Path = geoip
	}
	if geoipASN != "" {
		cfg.GeoIP.ASNPath = geoipASN
	}
	if watchlist != "" {
		cfg.Watchlist.Path = watchlist
	}
	if logLevel != "" {
		if _, err := parseLevel(logLevel); err != nil {
			return usageError(e, "run", "--log-level: %v", err)
		}
		cfg.LogLevel = logLevel
	}
	l := &live{cfg: cfg, reg: newRegistry(), log: newLogger(e.stderr, cfg.LogLevel), ready: make(chan struct{})}
	applyMemoryLimit(cfg, l.log)
	if cfg.ScaleOut.Enabled {
		return exitCode(e, "run", l.serveScaleOut(ctx))
	}
	return exitCode(e, "run", l.serve(ctx))
}

// applyFormat sets input.format from --format, when given, and checks the
// input section with it: a usage error (exit 2) names the flag or the key.
// It returns -1 when the configuration is usable.
func applyFormat(e env, cmd string, cfg *Config, format string) int {
	if format == "" {
		return -1
	}
	cfg.Input.Format = format
	if err := cfg.Input.Validate(); err != nil {
		return usageError(e, cmd, "--format: %v", err)
	}
	return -1
}
