package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/alert/report"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
)

// shutdownBudget bounds how long draining, committing and flushing may take
// after an interrupt; SIGTERM to exit stays well under 10 s.
const shutdownBudget = 5 * time.Second

// live is the always-on pipeline shared by run and demo: Kafka source →
// engine → sinks, with the HTTP endpoints beside it.
type live struct {
	cfg     Config
	reg     *prometheus.Registry
	log     *slog.Logger
	loc     shopguard.Locator // nil: from cfg.GeoIP
	console *alert.Console    // extra record sink, for the demo
	// ready is closed once the HTTP listener is bound (tests and the demo
	// read addr then).
	ready chan struct{}
	addr  string
	// incidents is the live incident view behind /incidents.
	incidents *report.Live
}

// newRegistry returns a registry with the standard collectors and build
// info; every package registers its own metrics on it.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "shopguard_build_info",
		Help: "A metric with a constant 1 value labelled by version and Go version.",
	}, []string{"version", "goversion"})
	bi.WithLabelValues(buildVersion(), runtime.Version()).Set(1)
	reg.MustRegister(bi)
	return reg
}

// serve runs until ctx is done or a part fails. It returns the exit status.
func (l *live) serve(ctx context.Context) error {
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
	// With checkpoints, the engine saves its state with the offsets it
	// corresponds to after a batch once the interval has passed, and only
	// then are those offsets committed: the group's offsets never run
	// ahead of the saved state.
	var ck *checkpointer
	var src *kafka.Source
	var extra []detect.Option
	if cfg.Checkpoint.Path != "" {
		ck = newCheckpointer(cfg.Checkpoint, cfg.Kafka.Topic, cfg.Kafka.Group, l.reg, l.log)
		extra = append(extra, detect.WithAfterBatch(func() {
			if !ck.due() {
				return
			}
			offsets := src.Acknowledged()
			if ck.write(offsets) != nil {
				return
			}
			fctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
			defer cancel()
			// Exactly the checkpoint's offsets: batches of invalid
			// messages only, which the source acknowledges itself, may
			// have been acknowledged since.
			if err := src.FlushTo(fctx, offsets); err != nil {
				l.log.Warn("offsets of the checkpoint not committed yet; the next checkpoint retries", "err", err)
			}
		}))
	}
	l.incidents = report.NewLive(report.LiveConfig{Window: cfg.HTTP.IncidentsWindow, MaxFindings: cfg.HTTP.IncidentsMaxFindings}, loc)
	extra = append(extra, detect.WithWatcher(l.incidents.Observe))
	eng, err := newEngine(cfg.Detect, loc, l.reg, l.log, extra...)
	if err != nil {
		return usageErr{err}
	}
	wl, err := startWatchlist(cfg.Watchlist, eng.SetWatchlist, l.reg, l.log)
	if err != nil {
		return err
	}
	var processed map[int]int64 // the restored checkpoint's offsets
	if ck != nil {
		ck.eng = eng
		if err := ck.prepare(); err != nil {
			return usageErr{err}
		}
		offsets, err := restoreCheckpoint(cfg.Checkpoint.Path, cfg.Kafka.Topic, cfg.Kafka.Group, eng)
		switch {
		case err != nil:
			l.log.Error("checkpoint not restored: starting with empty state from the committed offsets", "err", err)
		case offsets != nil:
			processed = offsets
			st := eng.Stats()
			l.log.Info("checkpoint restored", "path", cfg.Checkpoint.Path, "offsets", offsets,
				"accounts", st.Accounts, "sources", st.Sources, "watermark", st.Watermark)
		}
	}

	p, err := l.plumb(cfg)
	if err != nil {
		return err
	}
	defer p.close()
	sinks, im, km, rejects := p.sinks, p.im, p.km, p.rejects
	decode, err := ingest.NewDecoder(cfg.Input)
	if err != nil {
		return err
	}
	srcOpts := kafka.SourceOptions{Metrics: im, Kafka: km, Rejects: rejects, Logger: l.log,
		CommitOnFlush: ck != nil, Processed: processed, Decode: decode}
	var joined atomic.Pointer[kafka.Source] // for /readyz: nil until the source exists

	ready := func() error {
		if s := joined.Load(); s == nil || !s.Ready() {
			return errors.New("kafka consumer not joined or not fetching")
		}
		return sinks.Ready()
	}

	// The pipeline: stop fetching on interrupt, drain the engine, commit.
	work := func(srcCtx context.Context) error {
		// The group may have committed past the checkpoint (a final
		// checkpoint that could not be written, a run without
		// checkpoints since): set it back before joining, so the events
		// between meet the restored state. This may wait for a killed
		// process's session to time out, so it runs with HTTP up.
		if processed != nil {
			if _, err := kafka.RewindGroup(srcCtx, cfg.Kafka, processed, l.log); err != nil {
				if srcCtx.Err() != nil {
					return nil
				}
				l.log.Error("events between the checkpoint and the committed offsets are not processed with the restored state", "err", err)
			}
		}
		var err error
		if src, err = kafka.NewSource(cfg.Kafka, srcOpts); err != nil {
			return err
		}
		joined.Store(src)
		var in shopguard.Source = src
		if ck != nil {
			in = &heartbeatSource{src: src, every: cfg.Checkpoint.Interval}
		}
		err = pipeline(srcCtx, in, eng, sinks)
		if ck != nil && (err == nil || errors.Is(err, context.Canceled)) {
			// The engine is idle and has acknowledged everything it
			// processed: save its final state before Close commits the
			// offsets it corresponds to. (After an engine error it may
			// hold events whose batch was not acknowledged, so it is not
			// saved.)
			if cerr := ck.write(src.Acknowledged()); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
		cctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
		defer cancel()
		if cerr := src.Close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("commit offsets: %w", cerr))
		}
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		return err
	}
	return l.runActors(ctx, ready, sinks, withWatchlist(wl, work), "shopguard running",
		"listen", "", "brokers", cfg.Kafka.Brokers, "topic", cfg.Kafka.Topic, "group", cfg.Kafka.Group)
}

// runActors runs the process as an oklog/run group: ctx (signals,
// --duration) stops it; work runs until its context is cancelled; the
// notification sinks deliver until work has returned and then flush; the
// HTTP server (/metrics, /healthz, /readyz per ready) serves on cfg.Listen
// until work has returned. msg and args are logged once it all runs; a
// "listen" key gets the bound address.
func (l *live) runActors(ctx context.Context, ready func() error, sinks *alert.Fanout, work func(context.Context) error, msg string, args ...any) error {
	ln, err := net.Listen("tcp", l.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	l.addr = ln.Addr().String()
	srv := &http.Server{Handler: l.mux(ready), ReadHeaderTimeout: 10 * time.Second}

	var g run.Group
	stop := make(chan struct{})
	g.Add(func() error {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		return nil
	}, func(error) { closeOnce(stop) })

	workCtx, cancelWork := context.WithCancel(context.Background())
	workDone := make(chan struct{})
	g.Add(func() error {
		defer close(workDone)
		return work(workCtx)
	}, func(error) { cancelWork() })

	// Notification sinks deliver until the last findings are queued, then
	// flush within their budget.
	notifyCtx, cancelNotify := context.WithCancel(context.Background())
	g.Add(func() error { return sinks.Run(notifyCtx) }, func(error) {
		go func() { <-workDone; cancelNotify() }()
	})

	g.Add(func() error {
		close(l.ready)
		wc := l.cfg.WebConfigFile
		err := web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &wc}, l.log)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}, func(error) {
		go func() {
			<-workDone
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	})
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == "listen" {
			args[i+1] = l.addr
		}
	}
	l.log.Info(msg, args...)
	err = g.Run()
	l.log.Info("shopguard stopped", "err", err)
	return err
}

func (l *live) mux(ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(l.reg, promhttp.HandlerOpts{Registry: l.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if l.incidents != nil {
		l.incidents.Register(mux)
	}
	if l.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// usageErr marks a configuration problem found late (exit status 2).
type usageErr struct{ error }

func (u usageErr) Unwrap() error { return u.error }

// exitCode maps a serve error to an exit status.
func exitCode(e env, cmd string, err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "shopguard %s: %v\n", cmd, err)
	var u usageErr
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitRuntime
}

// heartbeatSource passes src's batches on and, when none came for every,
// an empty batch, so that the engine's after-batch checkpoint runs (and
// commits the offsets) even when the topic goes quiet.
type heartbeatSource struct {
	src   shopguard.Source
	every time.Duration
}

func (h *heartbeatSource) Run(ctx context.Context, out chan<- shopguard.Batch) error {
	mid := make(chan shopguard.Batch)
	errc := make(chan error, 1)
	go func() { errc <- h.src.Run(ctx, mid) }()
	t := time.NewTicker(h.every)
	defer t.Stop()
	quiet := false
	for {
		select {
		case b := <-mid:
			quiet = false
			select {
			case out <- b:
			case <-ctx.Done():
				return <-errc
			}
		case <-t.C:
			if quiet {
				select {
				case out <- shopguard.Batch{}:
				case <-ctx.Done():
				}
			}
			quiet = true
		case err := <-errc:
			return err
		}
	}
}

// plumbing is what the single-process and the scale-out pipelines share:
// the sinks and the handling of messages that are not events.
type plumbing struct {
	sinks   *alert.Fanout
	im      *ingest.Metrics
	km      *kafka.Metrics
	rejects *ingest.Rejects
	closers []func()
}

// plumb builds the configured sinks (the findings topic defaults to the
// audit topic's brokers) and the dead-letter writer.
func (l *live) plumb(cfg Config) (*plumbing, error) {
	if am := cfg.Sinks.Alertmanager; am != nil && am.GeneratorURL == "" && cfg.HTTP.ExternalURL != "" {
		a := *am
		a.GeneratorURL = generatorURL(cfg.HTTP.ExternalURL)
		cfg.Sinks.Alertmanager = &a
	}
	if cfg.Sinks.Kafka != nil && len(cfg.Sinks.Kafka.Brokers) == 0 {
		k := *cfg.Sinks.Kafka
		k.Brokers = cfg.Kafka.Brokers
		cfg.Sinks.Kafka = &k
	}
	sinks, err := alert.Build(cfg.Sinks, l.reg, l.log)
	if err != nil {
		return nil, err
	}
	p := &plumbing{sinks: sinks, closers: []func(){func() { _ = sinks.Close() }}}
	if l.console != nil {
		sinks.AddRecord(l.console)
	}
	p.im = ingest.NewMetrics(l.reg)
	p.km = kafka.NewMetrics(l.reg)
	p.rejects = &ingest.Rejects{Metrics: p.im, Logger: l.log}
	if cfg.Kafka.DeadLetterTopic != "" {
		dl, err := kafka.NewDeadLetter(cfg.Kafka, p.km, l.log)
		if err != nil {
			p.close()
			return nil, err
		}
		p.closers = append(p.closers, func() { _ = dl.Close() })
		p.rejects.DeadLetter = dl
	}
	return p, nil
}

// close closes what plumb opened, the dead-letter writer first.
func (p *plumbing) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}
