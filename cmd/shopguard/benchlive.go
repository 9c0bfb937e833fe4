package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/broker"
	"github.com/shopguard/shopguard/ingest/generate"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/kafka"
)

// tapSource passes a source's batches on and reports each batch's events
// once the batch is Done, i.e. once its findings are held by the sinks.
type tapSource struct {
	src    shopguard.Source
	onDone func(evs []shopguard.Event, at time.Time)
}

func (t *tapSource) Run(ctx context.Context, out chan<- shopguard.Batch) error {
	mid := make(chan shopguard.Batch)
	var err error
	go func() { err = t.src.Run(ctx, mid); close(mid) }()
	for b := range mid {
		done, evs := b.Done, b.Events
		b.Done = func() {
			// Before done: the source may reuse the events after it.
			t.onDone(evs, time.Now())
			if done != nil {
				done()
			}
		}
		select {
		case out <- b:
		case <-ctx.Done():
		}
	}
	return err
}

// liveRig is a broker (in a child process) with the engine wired as `run`
// wires it.
type liveRig struct {
	addrs    []string
	geo      string
	lateness time.Duration
	cfg      Config // of the shopguard consumer
}

// kafka is the configuration of every client of the bench, the raw
// consumer's included: --config's kafka section over the defaults, with
// the bench's broker, topic and group.
func (r *liveRig) kafka(topic, group string) kafka.Config {
	kc := r.cfg.Kafka
	kc.Brokers, kc.Topic, kc.Group, kc.DeadLetterTopic, kc.Lateness = r.addrs, topic, group, "", r.lateness
	return kc
}

// benchPartitions is the partition count of the live bench's topics, like
// the demo's.
const benchPartitions = 6

// startBrokerChild starts `shopguard bench child broker` and returns the
// address it listens on; stop ends it.
func startBrokerChild(ctx context.Context, e env) (addr string, pid int, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.CommandContext(ctx, self, "bench", "child", "broker")
	cmd.Stderr = e.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() {
		stdin.Close() // the child stops when its standard input closes
		if cmd.Wait() != nil {
			_ = cmd.Process.Kill()
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("broker child: %w", err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid, stop, nil
}

// cpuTime is the CPU time (user and system) process pid has used so far,
// from /proc; ok is false where that cannot be read.
func cpuTime(pid int) (d time.Duration, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	if err != nil || i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // from the state, field 3
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * time.Second / 100, true // USER_HZ
}

// cpuSpan is the CPU time of the bench's process and of its broker over
// one measurement.
type cpuSpan struct{ self, broker time.Duration }

// measureCPU runs fn, its goroutines labelled phase for --cpuprofile
// (pprof -tagfocus phase=shopguard), and returns the CPU time both
// processes used meanwhile.
func measureCPU(ctx context.Context, brokerPID int, phase string, fn func(context.Context) error) (cpuSpan, error) {
	s0, _ := cpuTime(os.Getpid())
	b0, _ := cpuTime(brokerPID)
	var err error
	pprof.Do(ctx, pprof.Labels("phase", phase), func(ctx context.Context) { err = fn(ctx) })
	s1, _ := cpuTime(os.Getpid())
	b1, _ := cpuTime(brokerPID)
	return cpuSpan{s1 - s0, b1 - b0}, err
}

// brokerChild is the live bench's broker process: it serves the bench
// topics on a free port, prints the address and runs until its standard
// input closes.
func brokerChild(ctx context.Context, e env) int {
	b, err := broker.Start(ctx, broker.Config{Listen: "127.0.0.1:0",
		Topics: map[string]int32{"bench-audit": benchPartitions, "bench-latency": benchPartitions}}, nil)
	if err != nil {
		fmt.Fprintln(e.stderr, "bench child broker:", err)
		return exitRuntime
	}
	defer b.Close()
	fmt.Fprintln(e.stdout, b.Addrs()[0])
	_, _ = io.Copy(io.Discard, e.stdin)
	return exitOK
}

// consume runs source → engine → /dev/null over topic in a fresh group
// until stop says so; onDone sees every processed batch.
func (r *liveRig) consume(ctx context.Context, topic, group string, onDone func([]shopguard.Event, time.Time)) error {
	reg := newRegistry()
	cfg := r.cfg
	cfg.GeoIP.Path = r.geo
	loc, closeGeo, err := openGeoIP(cfg.GeoIP, reg, nil)
	if err != nil {
		return err
	}
	defer closeGeo()
	eng, err := newEngine(cfg.Detect, loc, reg, nil)
	if err != nil {
		return err
	}
	src, err := kafka.NewSource(r.kafka(topic, group), kafka.SourceOptions{Metrics: ingest.NewMetrics(reg)})
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	out, err := alert.NewFile(alert.FileConfig{Path: os.DevNull}, nil, nil)
	if err != nil {
		return err
	}
	defer out.Close()
	return pipeline(ctx, &tapSource{src: src, onDone: onDone}, eng, out)
}

// consumeN consumes and detects n events of topic in a fresh group and
// returns how long that took.
func (r *liveRig) consumeN(ctx context.Context, topic, group string, n int) (time.Duration, error) {
	var processed atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var took atomic.Int64
	err := r.consume(ctx, topic, group, func(evs []shopguard.Event, at time.Time) {
		if processed.Add(int64(len(evs))) >= int64(n) && took.CompareAndSwap(0, int64(at.Sub(start))) {
			cancel()
		}
	})
	if took.Load() == 0 && err == nil {
		err = fmt.Errorf("consume stopped after %d of %d events", processed.Load(), n)
	}
	return time.Duration(took.Load()), err
}

// benchLive measures, through the embedded broker run as a child process,
// on six partitions, in one run: kafka-go's bare group consume rate of a
// topic next to shopguard's consume-and-detect rate of the same topic
// (rounds alternating pairs), then the end-to-end latency (produce to
// findings held by the sink) at a fixed produce rate.
func benchLive(ctx context.Context, e env, dir, config string, n int, rate float64, seconds, rounds int, lateness time.Duration) int {
	fail := func(err error) int { fmt.Fprintln(e.stderr, "shopguard bench --live:", err); return exitRuntime }
	cfg, err := loadConfig(config)
	if err != nil {
		return fail(err)
	}
	// As `run` would: the budget's memory limit and collector setting hold
	// for this whole process, the raw consumer's rounds included.
	applyMemoryLimit(cfg, slog.New(slog.DiscardHandler))
	addr, brokerPID, stopBroker, err := startBrokerChild(ctx, e)
	if err != nil {
		return fail(err)
	}
	defer stopBroker()
	rig := &liveRig{addrs: []string{addr}, geo: filepath.Join(dir, "demo-city.mmdb"), lateness: lateness, cfg: cfg}
	if err := geodemo.Write(rig.geo, geodemo.Cities); err != nil {
		return fail(err)
	}

	// Fill the topic.
	gc := generate.DefaultConfig
	gc.Events, gc.Shops, gc.EventsPerSecond = int64(n), 20_000, 200
	g, err := generate.New(gc)
	if err != nil {
		return fail(err)
	}
	p, err := kafka.NewProducer(rig.kafka("bench-audit", ""), ingest.AppendJSON)
	if err != nil {
		return fail(err)
	}
	if _, err := produce(ctx, g, p, 0, nil); err != nil {
		return fail(err)
	}
	p.Close()

	// A first read of the topic, not counted: right after the produce it
	// was 1.7 to 4.3 times slower than every later one (the broker and this
	// process still busy with the produce's garbage), which made the first
	// round's ratio a measure of that.
	warm, err := kafka.RawConsume(ctx, rig.kafka("bench-audit", "bench-warm-up"), n)
	if err != nil {
		return fail(err)
	}
	// And a first consume-and-detect, not counted either: the first one
	// in a process took up to 1.6 times the CPU of every later one (each
	// with a fresh engine, as every round has), the cost of the Go heap
	// growing to its working size, which a long-running consumer pays once.
	warmSG, err := rig.consumeN(ctx, "bench-audit", "bench-warm-up-shopguard", n)
	if err != nil {
		return fail(err)
	}
	var raws, tooks []time.Duration
	var rawCPU, sgCPU []cpuSpan
	for round := range rounds {
		var raw time.Duration
		c, err := measureCPU(ctx, brokerPID, "raw", func(ctx context.Context) (err error) {
			raw, err = kafka.RawConsume(ctx, rig.kafka("bench-audit", fmt.Sprint("bench-raw-", round)), n)
			return err
		})
		if err != nil {
			return fail(err)
		}
		rawCPU = append(rawCPU, c)
		var took time.Duration
		c, err = measureCPU(ctx, brokerPID, "shopguard", func(ctx context.Context) (err error) {
			took, err = rig.consumeN(ctx, "bench-audit", fmt.Sprint("bench-shopguard-", round), n)
			return err
		})
		if err != nil {
			return fail(err)
		}
		sgCPU = append(sgCPU, c)
		raws, tooks = append(raws, raw), append(tooks, took)
	}

	// Latency at a fixed rate: events are stamped with the wall clock as
	// they are produced, and measured when their batch is Done.
	var mu sync.Mutex
	var lat []time.Duration
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	var wg sync.WaitGroup
	var consumeErr error
	wg.Go(func() {
		consumeErr = rig.consume(lctx, "bench-latency", "bench-latency", func(evs []shopguard.Event, at time.Time) {
			mu.Lock()
			for i := range evs {
				lat = append(lat, at.Sub(evs[i].Time))
			}
			mu.Unlock()
		})
	})
	gc.Events = 0
	g, err = generate.New(gc)
	if err != nil {
		return fail(err)
	}
	p, err = kafka.NewProducer(rig.kafka("bench-latency", ""), ingest.AppendJSON)
	if err != nil {
		return fail(err)
	}
	sent := paced(lctx, g, p, rate, time.Duration(seconds)*time.Second)
	p.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(lat)
		mu.Unlock()
		if int64(got) >= sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	lcancel()
	wg.Wait()
	if consumeErr != nil {
		return fail(consumeErr)
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(f*float64(len(lat))))]
	}

	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "live (broker in a child process, %d partitions, kafka.lateness %s)\tround\tevents\tseconds\tevents/s\tvs raw\tCPU s: consumer\tbroker\t\n", benchPartitions, lateness)
	var sum float64
	for i := range raws {
		rawRate := float64(n) / raws[i].Seconds()
		ratio := float64(n) / tooks[i].Seconds() / rawRate
		sum += ratio
		fmt.Fprintf(tw, "kafka-go raw group consume\t%d\t%d\t%.2f\t%.0f\t1.00×\t%.2f\t%.2f\t\n", i+1, n, raws[i].Seconds(), rawRate,
			rawCPU[i].self.Seconds(), rawCPU[i].broker.Seconds())
		fmt.Fprintf(tw, "shopguard consume+detect\t%d\t%d\t%.2f\t%.0f\t%.2f×\t%.2f\t%.2f\t\n", i+1, n, tooks[i].Seconds(), float64(n)/tooks[i].Seconds(), ratio,
			sgCPU[i].self.Seconds(), sgCPU[i].broker.Seconds())
	}
	_ = tw.Flush()
	fmt.Fprintf(e.stdout, "mean shopguard vs raw over %d rounds: %.2f× (first reads, not counted, took %.2f s raw and %.2f s shopguard)\n", len(raws), sum/float64(len(raws)), warm.Seconds(), warmSG.Seconds())
	fmt.Fprintf(e.stdout, "\nlatency at %.0f events/s for %ds (produce → findings held by the sink): %d events, p50 %s, p99 %s, max %s\n",
		rate, seconds, len(lat), q(0.5).Round(100*time.Microsecond), q(0.99).Round(100*time.Microsecond), q(1).Round(100*time.Microsecond))
	return exitOK
}

// paced produces g's events at rate per second for d, each stamped with the
// wall clock as its event time, and returns how many it produced.
func paced(ctx context.Context, g *generate.Generator, p *kafka.Producer, rate float64, d time.Duration) int64 {
	const tick = 20 * time.Millisecond
	per := max(1, int(rate*tick.Seconds()))
	batch := make([]shopguard.Event, per)
	begin := time.Now()
	var n int64
	for time.Since(begin) < d && ctx.Err() == nil {
		now := time.Now()
		for i := range batch {
			g.Next(&batch[i])
			batch[i].Time = now
		}
		if err := p.Produce(ctx, batch...); err != nil {
			return n
		}
		n += int64(per)
		time.Sleep(time.Until(begin.Add(time.Duration(float64(n) / rate * float64(time.Second)))))
	}
	return n
}
