package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/broker"
	"github.com/shopguard/shopguard/ingest/generate"
	"github.com/shopguard/shopguard/ingest/kafka"
)

const demoUsage = `usage: shopguard demo [flags]

Everything on one machine with nothing installed: an embedded Kafka-protocol
broker on --kafka-listen (kcat or any Kafka client can produce to it), a
generator of normal admin traffic with labelled attacks mixed in, the
detector reading the audit topic through a consumer group exactly as 'run'
does, metrics on --listen, and findings on standard output and on the
findings topic. GeoIP uses built-in demo City and ASN databases of real city
coordinates with synthetic address blocks (--geoip and --geoip-asn take real
ones). Runs until interrupted, or for --duration.

In the demo, event time runs --speed times faster than the clock, so that
attacks that take an hour in real life show within minutes.

flags:
`

func runDemo(ctx context.Context, e env, args []string) int {
	var (
		config, kafkaListen, listen, alertmanagers, labels string
		gen                                                bool
		duration                                           time.Duration
		rate, speed, attackRate                            float64
		seed                                               int64
		partitions                                         int
	)
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(e.stderr, demoUsage); fs.PrintDefaults() }
	fs.StringVar(&config, "config", "", "optional YAML configuration `file` (thresholds, extra sinks)")
	fs.StringVar(&kafkaListen, "kafka-listen", broker.DefaultListen, "`address` of the embedded Kafka-protocol broker")
	fs.StringVar(&listen, "listen", "127.0.0.1:9464", "HTTP `address` for /metrics, /healthz, /readyz")
	fs.BoolVar(&gen, "generate", true, "produce synthetic traffic into the broker (false: produce it yourself, e.g. kcat -P)")
	fs.DurationVar(&duration, "duration", 0, "stop after this long (0: until interrupted)")
	fs.Float64Var(&rate, "rate", 300, "generated events per second of wall-clock time")
	fs.Float64Var(&speed, "speed", 10, "how much faster event time runs than the clock")
	fs.Float64Var(&attackRate, "attack-rate", 20, "attack episodes per 10,000 benign events")
	fs.Int64Var(&seed, "seed", 1, "generator seed")
	fs.IntVar(&partitions, "partitions", 6, "`partitions` of the audit topic (merged by event time, kafka.lateness)")
	fs.StringVar(&alertmanagers, "alertmanager", "", "also send findings to these comma-separated Alertmanager `URLs`")
	fs.StringVar(&labels, "labels", "", "on exit, write the ground truth of the generated attacks to this `file`")
	var format, geoipCity, geoipASN, watchlist string
	fs.StringVar(&geoipCity, "geoip", "demo", "MaxMind City database `path`, or \"demo\" for the built-in demo world (overrides geoip.path)")
	fs.StringVar(&geoipASN, "geoip-asn", "", "MaxMind ASN database `path` (overrides geoip.asn_path; the demo world has its own)")
	fs.StringVar(&watchlist, "watchlist", "", "watchlist `file` of leaked accounts, shop_id<TAB>actor per line, re-read when it changes and on SIGHUP (overrides watchlist.path)")
	fs.StringVar(&format, "format", "", "input `format` of the audit topic: shopguard, ecs, ocsf, nginx or mapping (overrides input.format; other than shopguard needs --generate=false)")
	if code := parseFlags(fs, e, args); code >= 0 {
		return code
	}
	if rate <= 0 || speed <= 0 {
		return usageError(e, "demo", "--rate and --speed must be above 0")
	}
	if partitions < 1 || partitions > 1000 {
		return usageError(e, "demo", "--partitions %d is not between 1 and 1000", partitions)
	}
	cfg, err := loadConfig(config)
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard demo:", err)
		return exitUsage
	}
	if code := applyFormat(e, "demo", &cfg, format); code >= 0 {
		return code
	}
	if watchlist != "" {
		cfg.Watchlist.Path = watchlist
	}
	if gen && cfg.Input.Format != "" && cfg.Input.Format != "shopguard" {
		return usageError(e, "demo", "--format %s: the generator writes the native format; add --generate=false and produce %s yourself", cfg.Input.Format, cfg.Input.Format)
	}
	// The embedded broker stands in for kafka.brokers; the rest of the
	// kafka section (topic names above all) is the user's and is checked
	// before the broker creates topics from it.
	check := cfg.Kafka
	check.Brokers = []string{broker.DefaultListen}
	if err := check.Validate(); err != nil {
		fmt.Fprintf(e.stderr, "shopguard demo: config %s: %v\n", config, err)
		return exitUsage
	}
	cfg.Listen = listen
	log := newLogger(e.stderr, cfg.LogLevel)
	applyMemoryLimit(cfg, log)
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}

	topic := cfg.Kafka.Topic
	// The broker outlives ctx: the consumer commits its offsets to it while
	// shutting down, and the deferred Close stops it last.
	//
	// The audit topic has --partitions partitions, like a real one: the
	// consumer merges them by event time (kafka.lateness), whatever the
	// producer (kcat -P without a key included) keys by.
	topics := map[string]int32{topic: int32(partitions), alert.DefaultKafkaConfig.Topic: 1}
	if cfg.Kafka.DeadLetterTopic != "" { // empty turns dead letters off
		topics[cfg.Kafka.DeadLetterTopic] = 1
	}
	b, err := broker.Start(context.WithoutCancel(ctx), broker.Config{
		Listen:           kafkaListen,
		Topics:           topics,
		AutoCreateTopics: true,
		Retention:        30 * time.Minute,
	}, log)
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard demo: --kafka-listen:", err)
		return exitRuntime
	}
	defer b.Close()
	cfg.Kafka.Brokers = b.Addrs()
	if cfg.Sinks.Kafka == nil {
		k := alert.DefaultKafkaConfig
		cfg.Sinks.Kafka = &k
	}
	if alertmanagers != "" {
		am := alert.DefaultAlertmanagerConfig
		am.URLs = strings.Split(alertmanagers, ",")
		cfg.Sinks.Alertmanager = &am
	}
	geoipGiven := false
	fs.Visit(func(f *flag.Flag) { geoipGiven = geoipGiven || f.Name == "geoip" })
	if geoipGiven || cfg.GeoIP.Path == "" {
		cfg.GeoIP.Path = geoipCity
	}
	if geoipASN != "" {
		cfg.GeoIP.ASNPath = geoipASN
	}
	fmt.Fprintf(e.stderr, "shopguard demo: broker on %s (topics %s, %s, %s), metrics on http://%s/metrics\n",
		strings.Join(b.Addrs(), ","), topic, alert.DefaultKafkaConfig.Topic, cfg.Kafka.DeadLetterTopic, listen)

	var wg sync.WaitGroup
	var g *generate.Generator
	if gen {
		gc := generate.DefaultConfig
		gc.Seed, gc.AttackRate = seed, attackRate
		gc.Start = time.Now().UTC().Truncate(time.Second)
		gc.EventsPerSecond = rate / speed
		if g, err = generate.New(gc); err != nil {
			return usageError(e, "demo", "%v", err)
		}
		kc := cfg.Kafka
		p, err := kafka.NewProducer(kc, ingest.AppendJSON)
		if err != nil {
			fmt.Fprintln(e.stderr, "shopguard demo:", err)
			return exitRuntime
		}
		defer p.Close()
		wg.Go(func() {
			n, err := produce(ctx, g, p, rate, nil)
			if err != nil && ctx.Err() == nil {
				log.Error("generator stopped", "err", err)
			}
			log.Info("generator done", "events", n)
		})
	} else {
		fmt.Fprintf(e.stderr, "shopguard demo: not generating; produce JSON events to topic %s, e.g.\n  kcat -P -b %s -t %s < events.jsonl\n",
			topic, b.Addrs()[0], topic)
	}

	l := &live{cfg: cfg, reg: newRegistry(), log: log, console: alert.NewConsole(e.stdout), ready: make(chan struct{})}
	err = l.serve(ctx)
	wg.Wait()
	if g != nil && labels != "" {
		if lerr := writeLabels(labels, g.TakeLabels(nil)); lerr != nil {
			fmt.Fprintln(e.stderr, "shopguard demo: --labels:", lerr)
		}
	}
	return exitCode(e, "demo", err)
}
