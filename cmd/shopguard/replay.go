package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/alert/report"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/geoip"
	"github.com/shopguard/shopguard/ingest/kafka"
)

const replayUsage = `usage: shopguard replay [flags] FILE...
       shopguard replay [flags] --brokers B --topic T --since T1 --until T2

Replays historical admin audit logs through the detection engine, in event
time, and writes every finding as one JSON object per line. FILEs are read in
the order given; "-" is standard input, and names ending in .gz are
gunzipped. Bad lines are counted, logged (rate-limited) and skipped, unless
--strict. A summary goes to standard error.

Exit status: 0 done, 1 runtime failure (or a bad line with --strict),
2 usage or configuration error.

flags:
`

type replayFlags struct {
	config, geoip, geoipASN, out, deadLetter, logLevel string
	format                                             string
	report                                             string
	strict                                             bool
	workers                                            int
	brokers, topic, since, until                       string
	watchlist                                          string
}

func runReplay(ctx context.Context, e env, args []string) int {
	var f replayFlags
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(e.stderr, replayUsage); fs.PrintDefaults() }
	fs.StringVar(&f.config, "config", "", "YAML configuration `file` (thresholds, allowlist, geoip); defaults when absent")
	fs.StringVar(&f.geoip, "geoip", "", "MaxMind City database `path` (GeoLite2-City.mmdb), or \"demo\" for the built-in demo world (with its ASN database); overrides geoip.path")
	fs.StringVar(&f.geoipASN, "geoip-asn", "", "MaxMind ASN database `path` (GeoLite2-ASN.mmdb), or \"demo\"; overrides geoip.asn_path")
	fs.StringVar(&f.out, "out", "-", "write findings as JSONL to this `file` (- is standard output)")
	fs.StringVar(&f.format, "format", "", "input `format`: shopguard, ecs, ocsf, nginx or mapping (overrides input.format)")
	fs.StringVar(&f.report, "report", "", "also write an incident report (report.html, accounts.csv, incidents.json) into this `directory`")
	fs.BoolVar(&f.strict, "strict", false, "stop at the first bad line with exit status 1, naming it")
	fs.StringVar(&f.deadLetter, "dead-letter", "", "append rejected lines with their reason to this JSONL `file`")
	fs.IntVar(&f.workers, "workers", 0, "parallel decoders (0: one per CPU)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (overrides log_level)")
	fs.StringVar(&f.brokers, "brokers", "", "replay a Kafka topic instead of files: comma-separated bootstrap `brokers`")
	fs.StringVar(&f.topic, "topic", "", "Kafka `topic` to replay (default: kafka.topic from the config)")
	fs.StringVar(&f.since, "since", "", "with --brokers: first event `time` (RFC 3339), by Kafka message timestamp")
	fs.StringVar(&f.until, "until", "", "with --brokers: last event `time` (RFC 3339)")
	fs.StringVar(&f.watchlist, "watchlist", "", "watchlist `file` of leaked accounts, shop_id<TAB>actor per line (overrides watchlist.path)")
	if code := parseFlags(fs, e, args); code >= 0 {
		return code
	}
	files := fs.Args()
	if f.brokers == "" && len(files) == 0 {
		return usageError(e, "replay", "no input: name one or more FILEs (- for standard input) or --brokers")
	}
	if f.brokers != "" && len(files) > 0 {
		return usageError(e, "replay", "give either FILEs or --brokers, not both")
	}
	if f.brokers == "" && (f.since != "" || f.until != "" || f.topic != "") {
		return usageError(e, "replay", "--since, --until and --topic go with --brokers")
	}

	cfg, err := loadConfig(f.config)
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard replay:", err)
		return exitUsage
	}
	if f.geoip != "" {
		cfg.GeoIP.Path = f.geoip
	}
	if f.geoipASN != "" {
		cfg.GeoIP.ASNPath = f.geoipASN
	}
	if f.watchlist == "" {
		f.watchlist = cfg.Watchlist.Path
	}
	if f.logLevel != "" {
		if _, err := parseLevel(f.logLevel); err != nil {
			return usageError(e, "replay", "--log-level: %v", err)
		}
		cfg.LogLevel = f.logLevel
	}
	if f.format != "" {
		cfg.Input.Format = f.format
	}
	decode, err := ingest.NewDecoder(cfg.Input)
	if err != nil {
		if f.format != "" {
			return usageError(e, "replay", "--format: %v", err)
		}
		fmt.Fprintln(e.stderr, "shopguard replay: config:", err)
		return exitUsage
	}
	log := newLogger(e.stderr, cfg.LogLevel)
	applyMemoryLimit(cfg, log)
	reg := prometheus.NewRegistry()

	var src shopguard.Source
	im := ingest.NewMetrics(reg)
	rejects := &ingest.Rejects{Metrics: im, Logger: log}
	if f.deadLetter != "" {
		dl, err := ingest.NewFileDeadLetter(f.deadLetter)
		if err != nil {
			fmt.Fprintln(e.stderr, "shopguard replay: --dead-letter:", err)
			return exitRuntime
		}
		defer dl.Close()
		rejects.DeadLetter = dl
	}
	if f.brokers != "" {
		rs, code := kafkaRangeSource(e, cfg, f, rejects, log, decode)
		if code >= 0 {
			return code
		}
		src = rs
	} else {
		src = &ingest.FileSource{Paths: files, Stdin: e.stdin, Strict: f.strict, Workers: f.workers,
			Rejects: rejects, Metrics: im, Logger: log, Decode: decode}
	}

	loc, closeGeo, err := openGeoIP(cfg.GeoIP, reg, log)
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard replay:", err)
		return exitRuntime
	}
	defer closeGeo()
	var rb *report.Builder
	var extra []detect.Option
	if f.report != "" {
		// The builder runs in the engine goroutine: it sees each event with
		// the findings it raised, in order, and costs no channel hop.
		rb = report.New(report.Options{Locator: loc})
		extra = append(extra, detect.WithWatcher(rb.Observe))
	}
	eng, err := newEngine(cfg.Detect, loc, reg, log, extra...)
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard replay:", err)
		return exitUsage
	}
	if f.watchlist != "" {
		wl, err := loadWatchlist(f.watchlist, log)
		if err != nil {
			fmt.Fprintln(e.stderr, "shopguard replay: --watchlist:", err)
			return exitUsage
		}
		eng.SetWatchlist(wl)
	}

	// A replay's output is not on a commit path: sync once, at Close, not
	// after every batch.
	var out *alert.File
	if f.out == "-" {
		out = alert.NewWriterFile(e.stdout, "standard output", alert.NewMetrics(reg), log)
	} else if out, err = alert.NewFile(alert.FileConfig{Path: f.out}, alert.NewMetrics(reg), log); err != nil {
		fmt.Fprintln(e.stderr, "shopguard replay: --out:", err)
		return exitRuntime
	}
	counted := &countingSink{next: out, byRule: map[string]int{}}

	start := time.Now()
	err = pipeline(ctx, src, eng, counted)
	elapsed := time.Since(start)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", f.out, cerr)
	}
	summary(e.stderr, im.Stats(), counted, elapsed)
	campaignSummary(e.stderr, cfg.Detect, eng, f.watchlist != "")
	if err == nil && rb != nil {
		rstart := time.Now()
		rep := rb.Report(time.Now())
		if err = rep.WriteDir(f.report); err == nil {
			s := rep.Summary
			fmt.Fprintf(e.stderr, "report: %s (%d incidents, %d accounts tried, %d logged in, %d changed or exported, %d rows exported; written in %s)\n",
				filepath.Join(f.report, "report.html"), s.Incidents, s.AccountsTried, s.AccountsLoggedIn, s.AccountsChanged, s.RowsExported,
				time.Since(rstart).Round(time.Millisecond))
		} else {
			err = fmt.Errorf("--report: %w", err)
		}
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard replay:", err)
		return exitRuntime
	}
	return exitOK
}

// campaignSummary prints the wave and watchlist figures of a replay (SPEC
// §3.2): how many waves, the baseline it ended with (or that it was still
// warming up), and the listed, rotated and unrotated accounts.
func campaignSummary(w io.Writer, cfg detect.Config, eng *detect.Engine, watchlist bool) {
	if cfg.StuffingWave.Enabled {
		ws := eng.WaveStats()
		if ws.WarmedUp {
			fmt.Fprintf(w, "waves: %d (baseline %.1f accounts failing an hour at the end)\n", ws.Waves, ws.Baseline)
		} else {
			fmt.Fprintf(w, "waves: %d (baseline still warming up: less than %d complete hours of events)\n", ws.Waves, cfg.StuffingWave.WarmUp)
		}
	}
	if watchlist {
		wc := eng.WatchCounts()
		fmt.Fprintf(w, "watchlist: %d listed, %d rotated, %d unrotated\n", wc.Listed, wc.Rotated, wc.Unrotated)
	}
}

// openGeoIP opens the configured database, or returns a nil Locator when no
// path is configured (travel is then not judged, and the engine says so).
func openGeoIP(cfg geoip.Config, reg prometheus.Registerer, log *slog.Logger) (shopguard.Locator, func(), error) {
	if cfg.Path == "" {
		return nil, func() {}, nil
	}
	cleanup := func() {}
	if cfg.Path == "demo" || cfg.ASNPath == "demo" {
		// The built-in demo world (real city coordinates, synthetic
		// blocks, one network per city), written to temporary files; the
		// loader warns that it is demo data. The demo City database comes
		// with the demo ASN database unless another one is given.
		dir, err := os.MkdirTemp("", "shopguard-geoip-")
		if err != nil {
			return nil, nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		if cfg.Path == "demo" {
			cfg.Path = filepath.Join(dir, "demo-city.mmdb")
			if err := geodemo.Write(cfg.Path, geodemo.Cities); err != nil {
				cleanup()
				return nil, nil, fmt.Errorf("build the demo GeoIP database: %w", err)
			}
			if cfg.ASNPath == "" {
				cfg.ASNPath = "demo"
			}
		}
		if cfg.ASNPath == "demo" {
			cfg.ASNPath = filepath.Join(dir, "demo-asn.mmdb")
			if err := geodemo.WriteASN(cfg.ASNPath, geodemo.Cities); err != nil {
				cleanup()
				return nil, nil, fmt.Errorf("build the demo ASN database: %w", err)
			}
		}
	}
	g, err := geoip.Open(cfg, reg, log)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return g, func() { _ = g.Close(); cleanup() }, nil
}

func newEngine(cfg detect.Config, loc shopguard.Locator, reg prometheus.Registerer, log *slog.Logger, extra ...detect.Option) (*detect.Engine, error) {
	opts := append([]detect.Option{detect.WithMetrics(detect.NewMetrics(reg)), detect.WithLogger(log)}, extra...)
	if loc != nil {
		opts = append(opts, detect.WithLocator(loc))
	}
	return detect.New(cfg, opts...)
}

// pipeline runs src into eng into sink until src's input ends, src fails or
// ctx is done. The engine drains what the source produced before returning.
func pipeline(ctx context.Context, src shopguard.Source, eng *detect.Engine, sink shopguard.Sink) error {
	srcCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan shopguard.Batch, 4)
	var srcErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		srcErr = src.Run(srcCtx, ch)
		close(ch)
	})
	// The sinks keep their context through the drain, and lose it a
	// shutdown budget after ctx is done, so that a record sink that is down
	// cannot hold shutdown forever.
	sinkCtx, cancelSink := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSink()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownBudget, cancelSink) })
	defer stop()
	engErr := eng.Run(sinkCtx, ch, sink)
	if engErr != nil {
		cancel()
		for range ch { // let the source see the cancellation and return
		}
	}
	wg.Wait()
	return errors.Join(srcErr, engErr)
}

// countingSink counts findings per rule on their way to next.
type countingSink struct {
	next   shopguard.Sink
	mu     sync.Mutex
	byRule map[string]int
	total  int
}

func (c *countingSink) Send(ctx context.Context, fs ...shopguard.Finding) error {
	if err := c.next.Send(ctx, fs...); err != nil {
		return err
	}
	c.mu.Lock()
	for i := range fs {
		c.byRule[fs[i].Rule]++
	}
	c.total += len(fs)
	c.mu.Unlock()
	return nil
}

// summary prints what a replay did.
func summary(w io.Writer, st ingest.Stats, c *countingSink, elapsed time.Duration) {
	var invalid int64
	var reasons []string
	for _, r := range slices.Sorted(maps.Keys(st.Invalid)) {
		if n := st.Invalid[r]; n > 0 {
			invalid += n
			reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
		}
	}
	total := st.Events + invalid + st.Unmatched
	rate := float64(total) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "events: %d read, %d valid, %d invalid", total, st.Events, invalid)
	if len(reasons) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(reasons, ", "))
	}
	if st.Unmatched > 0 {
		fmt.Fprintf(w, ", %d unmatched (skipped)", st.Unmatched)
	}
	fmt.Fprintf(w, "\ntime: %s, %.0f events/s\n", elapsed.Round(time.Millisecond), rate)
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(w, "findings: %d", c.total)
	var parts []string
	for _, r := range shopguard.Rules() {
		if n := c.byRule[r]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r, n))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
}

// kafkaRangeSource builds the source of `replay --brokers`: every partition
// of the topic from --since to --until, without joining the group.
func kafkaRangeSource(e env, cfg Config, f replayFlags, rejects *ingest.Rejects, log *slog.Logger, decode ingest.DecodeFunc) (shopguard.Source, int) {
	if f.since == "" || f.until == "" {
		return nil, usageError(e, "replay", "--brokers needs --since and --until")
	}
	since, err := time.Parse(time.RFC3339Nano, f.since)
	if err != nil {
		return nil, usageError(e, "replay", "--since: %q is not an RFC 3339 time", f.since)
	}
	until, err := time.Parse(time.RFC3339Nano, f.until)
	if err != nil {
		return nil, usageError(e, "replay", "--until: %q is not an RFC 3339 time", f.until)
	}
	kc := cfg.Kafka
	kc.Brokers = strings.Split(f.brokers, ",")
	if f.topic != "" {
		kc.Topic = f.topic
	}
	src, err := kafka.NewRangeSource(kc, kafka.Range{Since: since, Until: until, Strict: f.strict},
		kafka.SourceOptions{Metrics: rejects.Metrics, Rejects: rejects, Logger: log, Decode: decode})
	if err != nil {
		return nil, usageError(e, "replay", "%v", err)
	}
	return src, -1
}
