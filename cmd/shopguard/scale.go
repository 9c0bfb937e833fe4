package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/scaleout"
)

// The account stage's engines take flags from the source stage, and every
// engine's state moves with its partition.
var (
	_ scaleout.Flagger      = (*detect.Engine)(nil)
	_ scaleout.Snapshotter  = (*detect.Engine)(nil)
	_ scaleout.Observer     = (*detect.Engine)(nil)
	_ scaleout.WaveFollower = (*detect.Engine)(nil)
)

// stageDetect returns the rules one stage of a scaled-out shopguard runs:
// the source stage only credential_stuffing and failure_burst, which are
// keyed by source; the account stage every other rule, keyed by account,
// and stuffing_wave, which counts the whole platform: every account task
// follows every failed login (scaleout.Options.FollowFailures), so each
// has the wave its account_takeover needs, and one reports it.
func stageDetect(c detect.Config, stage string) detect.Config {
	c = cloneDetect(c)
	switch stage {
	case scaleout.StageSource:
		c.StuffingWave.Enabled = false
		c.ImpossibleTravel.Enabled = false
		c.BruteForce.Enabled = false
		c.AccountTakeover.Enabled = false
		c.BulkExport.Enabled = false
		c.UnfamiliarLogin.Enabled = false
		c.SessionHijack.Enabled = false
		c.RiskyChange.Enabled = false
		c.LeakedCredentialUse.Enabled = false
	case scaleout.StageAccount:
		c.CredentialStuffing.Enabled = false
		c.FailureBurst.Enabled = false
	}
	return c
}

// keyPrefix6 is the IPv6 block failed logins are keyed by in scale-out:
// the widest source level of credential_stuffing (the /48 when on), so that
// every /64 of a /48 meets in one task.
func keyPrefix6(c detect.StuffingConfig) int {
	if w := c.IPv6WidePrefix; w > 0 && w < c.IPv6Prefix {
		return w
	}
	return c.IPv6Prefix
}

// serveScaleOut is `shopguard run` with scale_out.enabled: instead of the
// single-process pipeline, this process is one instance of the scaled-out
// topology (scaleout.Runtime; docs/scaling.md), with the same sinks and HTTP
// endpoints. It runs until ctx is done or a part fails.
func (l *live) serveScaleOut(ctx context.Context) error {
	cfg := l.cfg
	if err := cfg.Kafka.Validate(); err != nil {
		return usageErr{err}
	}
	loc := l.loc
	if loc == nil {
		g, closeGeo, err := openGeoIP(cfg.GeoIP, l.reg, l.log)
		if err != nil {
			return err
		}
		defer closeGeo()
		loc = g
	}
	// One set of engine metrics for all tasks' engines; the warning about
	// a missing GeoIP database once, not once per task.
	dm := detect.NewMetrics(l.reg)
	engLog := l.log
	if loc == nil {
		l.log.Warn("no GeoIP database: impossible_travel is not judged; pass --geoip or set geoip.path")
		engLog = slog.New(slog.DiscardHandler)
	}
	// One watchlist for all tasks' engines; each keeps the rotations of
	// its accounts.
	list := new(detect.SharedWatchlist)
	wl, err := startWatchlist(cfg.Watchlist, list.Set, l.reg, l.log)
	if err != nil {
		return err
	}
	var so *scaleout.Runtime
	newEngine := func(stage string) (scaleout.Engine, error) {
		opts := []detect.Option{detect.WithMetrics(dm), detect.WithLogger(engLog), detect.WithWatchlist(list)}
		if loc != nil {
			opts = append(opts, detect.WithLocator(loc))
		}
		c := stageDetect(cfg.Detect, stage)
		if cfg.State.MemoryBytes > 0 && so != nil {
			// The budget is the instance's: each task gets its share of
			// the stage's caps, so that an instance holding every
			// partition stays within it.
			c.MaxAccounts, c.MaxSources, c.HotAccounts = taskCaps(c, so.Partitions(stage))
		}
		return detect.New(c, opts...)
	}
	for _, stage := range []string{scaleout.StageSource, scaleout.StageAccount} {
		if _, err := newEngine(stage); err != nil {
			return usageErr{err}
		}
	}

	var decode ingest.DecodeFunc // nil: the native format, read as it is
	if f := cfg.Input.Format; f != "" && f != ingest.FormatShopguard {
		d, err := ingest.NewDecoder(cfg.Input)
		if err != nil {
			return usageErr{err}
		}
		decode = d
	}
	p, err := l.plumb(cfg)
	if err != nil {
		return err
	}
	defer p.close()
	sinks, im, km, rejects := p.sinks, p.im, p.km, p.rejects
	so, err = scaleout.New(cfg.Kafka, cfg.ScaleOut, scaleout.Options{
		NewEngine:      newEngine,
		FollowFailures: cfg.Detect.StuffingWave.Enabled,
		Sink:           sinks,
		IPv4Prefix:     cfg.Detect.CredentialStuffing.IPv4Prefix,
		IPv6Prefix:     keyPrefix6(cfg.Detect.CredentialStuffing),
		Metrics:        im,
		Kafka:          km,
		Scale:          scaleout.NewMetrics(l.reg),
		Decode:         decode,
		Rejects:        rejects,
		Logger:         l.log,
		ShutdownBudget: shutdownBudget,
	})
	if err != nil {
		return usageErr{err}
	}

	ready := func() error {
		if !so.Ready() {
			return errors.New("scale-out: not yet a member of all three consumer groups")
		}
		return sinks.Ready()
	}
	// The instance: on interrupt every task snapshots and commits, then
	// the groups are left.
	work := so.Run
	if wl != nil {
		work = withWatchlist(wl, func(ctx context.Context) error {
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { defer close(done); countWatchlist(so, list, dm, stop) }()
			defer func() { close(stop); <-done }()
			return so.Run(ctx)
		})
	}
	names := so.Names()
	return l.runActors(ctx, ready, sinks, work, "shopguard running scaled out",
		"listen", "", "brokers", cfg.Kafka.Brokers, "topic", cfg.Kafka.Topic, "group", cfg.Kafka.Group,
		"by_account", names.ByAccount, "by_source", names.BySource, "flags", names.Flags, "changelog", names.Changelog)
}

// watchCountInterval is how often a scaled-out instance recounts the
// watchlist gauges.
const watchCountInterval = 2 * time.Second

// countWatchlist sets shopguard_watchlist_accounts until stop is closed:
// the list's accounts, and the rotations the account tasks of all
// instances published to the flags topic. Every instance thus shows the
// platform's figures.
func countWatchlist(so *scaleout.Runtime, list *detect.SharedWatchlist, m *detect.Metrics, stop <-chan struct{}) {
	t := time.NewTicker(watchCountInterval)
	defer t.Stop()
	for {
		l := list.Load()
		c := detect.WatchCounts{Listed: l.Len(), Rotated: so.Rotations(l.HasKey)}
		c.Unrotated = c.Listed - c.Rotated
		m.SetWatchCounts(c)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// taskCaps divides the caps state.memory_bytes gave, and the hot set (one
// engine's default, the part of stateFixedBytes it was planned in), among
// the n partitions of a stage.
func taskCaps(c detect.Config, n int) (accounts, sources, hot int) {
	n = max(n, 1)
	return max(c.MaxAccounts/n, 1), max(c.MaxSources/n, 1), max(detect.DefaultHotAccounts/n, 1024)
}
