package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/generate"
	"github.com/shopguard/shopguard/ingest/kafka"
)

const generateUsage = `usage: shopguard generate [flags]

Writes synthetic admin audit traffic as JSONL to standard output: many shops'
owners and staff logging in from their home cities, with labelled attacks
mixed in (credential stuffing from a leaked list, brute force, a travelling
session hijack, /24 and /64 address rotation, an insider's bulk export, a
quiet takeover with the right password, a stolen session, a failure burst). The
output is deterministic for a seed; its addresses resolve in the demo GeoIP
database (replay --geoip demo). --labels writes the ground truth for
'shopguard eval'.

With --brokers it produces into Kafka instead, paced at --rate events per
second of wall-clock time, until interrupted or --events are written.

flags:
`

func runGenerate(ctx context.Context, e env, args []string) int {
	cfg := generate.DefaultConfig
	var (
		labels, brokers, topic, start string
		rate                          float64
	)
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(e.stderr, generateUsage); fs.PrintDefaults() }
	fs.Int64Var(&cfg.Events, "events", 100_000, "how many events to write (0: no end)")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed: the same seed gives the same output")
	fs.IntVar(&cfg.Shops, "shops", cfg.Shops, "number of shops")
	fs.Float64Var(&cfg.AttackRate, "attack-rate", cfg.AttackRate, "attack episodes per 10,000 benign events")
	fs.Float64Var(&cfg.EventsPerSecond, "events-per-second", cfg.EventsPerSecond, "mean benign event rate in event time")
	fs.StringVar(&start, "start", cfg.Start.Format(time.RFC3339), "event `time` of the first event (RFC 3339, or \"now\")")
	fs.StringVar(&labels, "labels", "", "write the attacks' ground truth as JSONL to this `file`")
	fs.StringVar(&brokers, "brokers", "", "produce to Kafka at these comma-separated `brokers` instead of standard output")
	fs.StringVar(&topic, "topic", kafka.DefaultConfig.Topic, "with --brokers: the events `topic`")
	fs.Float64Var(&rate, "rate", 200, "with --brokers: events per second of wall-clock time (0: as fast as possible)")
	var campaigns float64
	fs.Float64Var(&campaigns, "campaigns", 0, "weight of each campaign attack (a list wave, an unknown-user spray, a /48 rotation) against the others' defaults (0: none; stuffing_wave needs a day of events first)")
	if code := parseFlags(fs, e, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(e, "generate", "unexpected argument %q", fs.Arg(0))
	}
	cfg.Mix.ListWave, cfg.Mix.UnknownSpray, cfg.Mix.RotationV6W = campaigns, campaigns, campaigns
	if start == "now" {
		cfg.Start = time.Now().UTC().Truncate(time.Second)
	} else {
		t, err := time.Parse(time.RFC3339, start)
		if err != nil {
			return usageError(e, "generate", "--start: %q is not an RFC 3339 time", start)
		}
		cfg.Start = t
	}
	if rate < 0 {
		return usageError(e, "generate", "--rate: must not be negative")
	}
	g, err := generate.New(cfg)
	if err != nil {
		return usageError(e, "generate", "%v", err)
	}

	if brokers != "" {
		kc := kafka.DefaultConfig
		kc.Brokers, kc.Topic = strings.Split(brokers, ","), topic
		p, err := kafka.NewProducer(kc, ingest.AppendJSON)
		if err != nil {
			return usageError(e, "generate", "%v", err)
		}
		defer p.Close()
		n, err := produce(ctx, g, p, rate, nil)
		fmt.Fprintf(e.stderr, "generate: produced %d events to %s\n", n, topic)
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(e.stderr, "shopguard generate:", err)
			return exitRuntime
		}
	} else {
		w := bufio.NewWriterSize(e.stdout, 1<<20)
		var ev shopguard.Event
		var buf []byte
		for g.Next(&ev) {
			buf = append(ingest.AppendJSON(buf[:0], &ev), '\n')
			if _, err := w.Write(buf); err != nil {
				fmt.Fprintln(e.stderr, "shopguard generate:", err)
				return exitRuntime
			}
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintln(e.stderr, "shopguard generate:", err)
			return exitRuntime
		}
	}
	if labels != "" {
		if err := writeLabels(labels, g.TakeLabels(nil)); err != nil {
			fmt.Fprintln(e.stderr, "shopguard generate: --labels:", err)
			return exitRuntime
		}
	}
	return exitOK
}

func writeLabels(path string, ls []generate.Label) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := generate.WriteLabels(f, ls); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// produce writes g's events to p in batches, paced at rate events per
// wall-clock second (0: unpaced), until g ends or ctx is done. onBatch, if
// set, sees each batch after it was produced.
func produce(ctx context.Context, g *generate.Generator, p *kafka.Producer, rate float64, onBatch func([]shopguard.Event)) (int64, error) {
	const tick = 20 * time.Millisecond
	per := 1000
	if rate > 0 {
		per = max(1, int(rate*tick.Seconds()))
	}
	batch := make([]shopguard.Event, 0, per)
	begin := time.Now()
	var n int64
	for {
		batch = batch[:0]
		for len(batch) < per {
			batch = append(batch, shopguard.Event{})
			if !g.Next(&batch[len(batch)-1]) {
				batch = batch[:len(batch)-1]
				break
			}
		}
		if len(batch) == 0 {
			return n, nil
		}
		if err := p.Produce(ctx, batch...); err != nil {
			return n, err
		}
		n += int64(len(batch))
		if onBatch != nil {
			onBatch(batch)
		}
		if rate > 0 {
			due := begin.Add(time.Duration(float64(n) / rate * float64(time.Second)))
			select {
			case <-ctx.Done():
				return n, ctx.Err()
			case <-time.After(time.Until(due)):
			}
		} else if ctx.Err() != nil {
			return n, ctx.Err()
		}
	}
}
