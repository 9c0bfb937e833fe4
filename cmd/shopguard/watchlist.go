package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/shopguard/shopguard/detect"
)

// WatchlistConfig is the watchlist section: the file of leaked accounts
// (SPEC §3.2). What the list changes in the rules is detect.watchlist.
type WatchlistConfig struct {
	// Path is the file, lines shop_id<TAB>actor; empty means no watchlist.
	// --watchlist overrides it.
	Path string `yaml:"path"`
	// CheckInterval is how often run and demo look at the file's size and
	// modification time and re-read it when they changed. SIGHUP re-reads
	// it at once.
	CheckInterval time.Duration `yaml:"check_interval"`
}

// DefaultWatchlistConfig is what an absent watchlist section means.
var DefaultWatchlistConfig = WatchlistConfig{CheckInterval: 10 * time.Second}

// Validate reports every problem with c at once.
func (c WatchlistConfig) Validate() error {
	if c.CheckInterval < 100*time.Millisecond || c.CheckInterval > 24*time.Hour {
		return fmt.Errorf("watchlist.check_interval: must be between 100ms and 24h, got %s", c.CheckInterval)
	}
	return nil
}

// loadWatchlist reads the watchlist file at path. A malformed line is
// logged with its line number and skipped; a file that cannot be read is
// an error, and the caller keeps its previous list.
func loadWatchlist(path string, log *slog.Logger) (*detect.Watchlist, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("watchlist: %w", err)
	}
	defer f.Close()
	w, bad, err := detect.ParseWatchlist(f)
	for _, b := range bad {
		log.Warn("watchlist line skipped", "file", path, "line", b.Line, "err", b.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("watchlist %s: %w", path, err)
	}
	log.Info("watchlist loaded", "file", path, "accounts", w.Len(), "skipped_lines", len(bad))
	return w, nil
}

// watchlistMetrics are the reloads of the watchlist file. The listed,
// rotated and unrotated gauges are the engine's (detect.Metrics), because
// rotations are engine state.
type watchlistMetrics struct {
	reloads     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	lastTime    prometheus.Gauge
}

func newWatchlistMetrics(reg prometheus.Registerer) *watchlistMetrics {
	f := promauto.With(reg)
	m := &watchlistMetrics{
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_watchlist_reloads_total",
			Help: "Reads of the watchlist file, by result (success; failure: unreadable, the previous list is kept).",
		}, []string{"result"}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_watchlist_last_reload_successful",
			Help: "Whether the last read of the watchlist file succeeded (1) or failed and the previous list is in use (0).",
		}),
		lastTime: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_watchlist_last_reload_success_timestamp_seconds",
			Help: "Wall-clock time of the last successful read of the watchlist file.",
		}),
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// watchlistReloader keeps an engine's watchlist in step with its file: it
// re-reads the file when its size or modification time changes and on
// SIGHUP. A file that cannot be read keeps the previous list, and says so
// in the log and in shopguard_watchlist_last_reload_successful.
type watchlistReloader struct {
	path  string
	every time.Duration
	set   func(*detect.Watchlist)
	log   *slog.Logger
	m     *watchlistMetrics
	hup   <-chan os.Signal // nil: SIGHUP is subscribed to by Run

	stamp  fileStamp // of the last successful read
	failed fileStamp // of the last failed one (zero when stat failed)
}

// fileStamp is what tells a changed file.
type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.Size(), fi.ModTime()}, nil
}

// load reads the file once and, when it could, hands the list over.
func (r *watchlistReloader) load() error {
	st, _ := stampOf(r.path)
	w, err := loadWatchlist(r.path, r.log)
	if err != nil {
		r.m.reloads.WithLabelValues("failure").Inc()
		r.m.lastSuccess.Set(0)
		return err
	}
	r.set(w)
	r.stamp = st
	r.m.reloads.WithLabelValues("success").Inc()
	r.m.lastSuccess.Set(1)
	r.m.lastTime.Set(float64(time.Now().UnixNano()) / 1e9)
	return nil
}

// Run reloads until ctx is done; it returns nil then. The first load is
// the caller's (load), so that a missing file stops the start.
func (r *watchlistReloader) Run(ctx context.Context) error {
	hup := r.hup
	if hup == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		defer signal.Stop(ch)
		hup = ch
	}
	t := time.NewTicker(r.every)
	defer t.Stop()
	failing := false
	for {
		var st fileStamp
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			r.log.Info("SIGHUP: re-reading the watchlist", "file", r.path)
			st, _ = stampOf(r.path)
		case <-t.C:
			var err error
			st, err = stampOf(r.path)
			if err == nil && st == r.stamp && !failing {
				continue
			}
			if failing && st == r.failed {
				continue // said so already; the metric stays at 0
			}
		}
		if err := r.load(); err != nil {
			failing, r.failed = true, st
			r.log.Error("watchlist not re-read: keeping the previous list", "file", r.path, "err", err)
			continue
		}
		failing = false
	}
}

// startWatchlist loads the configured watchlist into set and returns the
// reloader that keeps it current, or nil without a watchlist. An
// unreadable file at start is a usage error naming it.
func startWatchlist(cfg WatchlistConfig, set func(*detect.Watchlist), reg prometheus.Registerer, log *slog.Logger) (*watchlistReloader, error) {
	if cfg.Path == "" {
		return nil, nil
	}
	r := &watchlistReloader{path: cfg.Path, every: cfg.CheckInterval, set: set, log: log, m: newWatchlistMetrics(reg)}
	if err := r.load(); err != nil {
		return nil, usageErr{fmt.Errorf("watchlist.path: %w", err)}
	}
	return r, nil
}

// withWatchlist runs r beside work, for as long as work runs.
func withWatchlist(r *watchlistReloader, work func(context.Context) error) func(context.Context) error {
	if r == nil {
		return work
	}
	return func(ctx context.Context) error {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(rctx) }()
		defer func() { cancel(); <-done }()
		return work(ctx)
	}
}
