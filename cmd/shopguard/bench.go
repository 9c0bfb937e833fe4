package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/alert"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/generate"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/geoip"
	"github.com/shopguard/shopguard/ingest/kafka"
)

const benchUsage = `usage: shopguard bench [flags]

Generates a realistic event file once (cached in --dir), then measures, each
in a child process of its own so that peak RSS is per run:

  naive     a loop that only encoding/json-unmarshals each line into a struct
  replay    shopguard's whole replay pipeline: parallel decode, GeoIP with its
            cache (demo database), all five rules, findings to /dev/null

and prints a table with events/s, the ratio to the naive loop, heap
allocations per event and peak RSS. --workload distinct instead gives every
event a new account and a new address over a day of event time, to measure
memory with millions of keys.

flags:
`

// benchResult is what a bench child reports on its standard output.
type benchResult struct {
	Events    int64   `json:"events"`
	Seconds   float64 `json:"seconds"`
	Allocs    uint64  `json:"allocs"`
	MaxRSSKiB int64   `json:"max_rss_kib"`
	Findings  int     `json:"findings"`
	Accounts  int     `json:"accounts"`
	Sources   int     `json:"sources"`
	Evicted   int64   `json:"evicted"` // accounts and sources evicted at their caps
}

func runBench(ctx context.Context, e env, args []string) int {
	if len(args) > 1 && args[0] == "child" && args[1] == "broker" {
		return brokerChild(ctx, e)
	}
	if len(args) > 0 && args[0] == "child" {
		return benchChild(ctx, e, args[1:])
	}
	var (
		dir, sizes, workload string
		workers              int
		live                 bool
		liveRate             float64
		liveSeconds          int
		liveRounds           int
		lateness             time.Duration
		cpuProfile           string
		config               string
		geoPath              string
	)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(e.stderr, benchUsage); fs.PrintDefaults() }
	fs.StringVar(&sizes, "events", "1000000", "comma-separated event counts to measure, e.g. 100000,1000000,3000000")
	fs.StringVar(&dir, "dir", filepath.Join(os.TempDir(), "shopguard-bench"), "`directory` for the generated files (reused)")
	fs.StringVar(&geoPath, "geoip", "", "City `database` for the replay runs (e.g. GeoLite2-City.mmdb) instead of the generated demo one")
	fs.StringVar(&workload, "workload", "realistic", "realistic (generator traffic), distinct (a new account and address per event) or accounts (events/2 accounts logging in twice: the memory budget)")
	fs.IntVar(&workers, "workers", 0, "replay decoders (0: one per CPU)")
	fs.BoolVar(&live, "live", false, "measure the live path through the embedded broker instead (consume rate vs kafka-go, latency)")
	fs.Float64Var(&liveRate, "live-rate", 20000, "with --live: produce rate for the latency measurement, events/s")
	fs.IntVar(&liveSeconds, "live-seconds", 10, "with --live: how long the latency measurement produces")
	fs.IntVar(&liveRounds, "live-rounds", 2, "with --live: alternating pairs of raw and shopguard consumes")
	fs.DurationVar(&lateness, "lateness", kafka.DefaultConfig.Lateness, "with --live: kafka.lateness of the shopguard consumer (0: partitions as fetched, no merge)")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "with --live: write a CPU profile of the run to this `file`")
	fs.StringVar(&config, "config", "", "configuration `file` for the replay runs and the --live shopguard consumer (e.g. state.memory_bytes), over the defaults")
	if code := parseFlags(fs, e, args); code >= 0 {
		return code
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return usageError(e, "bench", "--cpuprofile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return usageError(e, "bench", "--cpuprofile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	if live {
		n, err := strconv.Atoi(strings.Split(sizes, ",")[0])
		if err != nil || n <= 0 {
			return usageError(e, "bench", "--events: %q is not a positive count", sizes)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(e.stderr, "shopguard bench:", err)
			return exitRuntime
		}
		if liveRounds < 1 {
			return usageError(e, "bench", "--live-rounds: %d is below 1", liveRounds)
		}
		return benchLive(ctx, e, dir, config, n, liveRate, liveSeconds, liveRounds, lateness)
	}
	if workload != "realistic" && workload != "distinct" && workload != "accounts" {
		return usageError(e, "bench", "--workload: %q is not realistic, distinct or accounts", workload)
	}
	var ns []int64
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(strings.ReplaceAll(s, "_", "")), 10, 64)
		if err != nil || n <= 0 {
			return usageError(e, "bench", "--events: %q is not a positive count", s)
		}
		ns = append(ns, n)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(e.stderr, "shopguard bench:", err)
		return exitRuntime
	}
	geo := filepath.Join(dir, "demo-city.mmdb")
	if err := geodemo.Write(geo, geodemo.Cities); err != nil {
		fmt.Fprintln(e.stderr, "shopguard bench:", err)
		return exitRuntime
	}
	if geoPath != "" {
		// Opened here first, so that a wrong path is one clear error.
		gc := geoip.DefaultConfig
		gc.Path = geoPath
		_, closeGeo, err := openGeoIP(gc, prometheus.NewRegistry(), nil)
		if err != nil {
			return usageError(e, "bench", "--geoip: %v", err)
		}
		closeGeo()
		geo = geoPath
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(e.stderr, "shopguard bench:", err)
		return exitRuntime
	}

	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "workload\tevents\trun\tseconds\tevents/s\tvs naive\tallocs/event\tpeak RSS MiB\tfindings\taccounts\tsources\tevicted\tB/account\t\n")
	for _, n := range ns {
		file := filepath.Join(dir, fmt.Sprintf("%s-%d.jsonl", workload, n))
		if _, err := os.Stat(file); err != nil {
			fmt.Fprintf(e.stderr, "bench: generating %s\n", file)
			if err := writeBenchFile(file, workload, n); err != nil {
				fmt.Fprintln(e.stderr, "shopguard bench:", err)
				return exitRuntime
			}
		}
		var naive benchResult
		for _, mode := range []string{"naive", "replay"} {
			cmd := exec.CommandContext(ctx, self, "bench", "child", mode, file, geo, strconv.Itoa(workers), config)
			cmd.Stderr = e.stderr
			out, err := cmd.Output()
			if err != nil {
				fmt.Fprintf(e.stderr, "shopguard bench: %s run: %v\n", mode, err)
				return exitRuntime
			}
			var r benchResult
			if err := json.Unmarshal(out, &r); err != nil {
				fmt.Fprintf(e.stderr, "shopguard bench: %s run printed %q: %v\n", mode, out, err)
				return exitRuntime
			}
			if mode == "naive" {
				naive = r
			}
			rate := float64(r.Events) / r.Seconds
			ratio := rate / (float64(naive.Events) / naive.Seconds)
			// The budget of issue 17: (peak RSS − 100 MiB) per account held.
			perAccount := "-"
			if r.Accounts > 0 {
				perAccount = strconv.FormatInt((r.MaxRSSKiB*1024-100<<20)/int64(r.Accounts), 10)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%.2f\t%.0f\t%.2f×\t%.2f\t%.0f\t%d\t%d\t%d\t%d\t%s\t\n", workload, r.Events, mode, r.Seconds, rate, ratio,
				float64(r.Allocs)/float64(max(r.Events, 1)), float64(r.MaxRSSKiB)/1024, r.Findings, r.Accounts, r.Sources, r.Evicted, perAccount)
		}
	}
	if err := tw.Flush(); err != nil {
		return exitRuntime
	}
	fmt.Fprintf(e.stdout, "\n%s/%s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	return exitOK
}

// writeBenchFile writes n events of the workload as JSONL.
func writeBenchFile(path, workload string, n int64) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var buf []byte
	var ev shopguard.Event
	switch workload {
	case "realistic":
		cfg := generate.DefaultConfig
		cfg.Events, cfg.Shops = n, 20_000
		cfg.EventsPerSecond = 200
		g, err := generate.New(cfg)
		if err != nil {
			return err
		}
		for g.Next(&ev) {
			buf = append(ingest.AppendJSON(buf[:0], &ev), '\n')
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
	case "distinct":
		// Every event a new account and a new address, spread over a day
		// of event time; half are failures, half successes.
		start := generate.DefaultConfig.Start
		step := 24 * time.Hour / time.Duration(n)
		for i := range n {
			ev = shopguard.Event{Time: start.Add(time.Duration(i) * step), ShopID: "shop-" + strconv.FormatInt(i, 36),
				Actor: "owner", Action: shopguard.ActionLoginSuccess, IP: distinctAddr(i)}
			if i%2 == 0 {
				ev.Action = shopguard.ActionLoginFailure
			}
			buf = append(ingest.AppendJSON(buf[:0], &ev), '\n')
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
	case "accounts":
		// n/2 accounts, each logging in twice with a browser and a session
		// id, each time from another address of its city: every account first in
		// the first 12 hours of event time, then again in the next 12, so
		// that all are held at the end.
		start := generate.DefaultConfig.Start
		half := n / 2
		step := 12 * time.Hour / time.Duration(max(half, 1))
		const ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
		for i := range 2 * half {
			k := i % half
			c := geodemo.Cities[k%int64(len(geodemo.Cities))]
			ev = shopguard.Event{Time: start.Add(time.Duration(i) * step), ShopID: "shop-" + strconv.FormatInt(k/8, 36),
				Actor: "staff-" + strconv.FormatInt(k%8, 10) + "@example.jp", Action: shopguard.ActionLoginSuccess,
				IP: c.Addr(uint32(k/int64(len(geodemo.Cities))*2 + int64(i)/half)), UserAgent: ua,
				SessionID: "s" + strconv.FormatInt(i, 36)}
			buf = append(ingest.AppendJSON(buf[:0], &ev), '\n')
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// distinctAddr gives event i an address no other event has: failures (every
// other event) from 11.0.0.0 upwards, each in a /24 of its own for long
// stretches so that no block crosses the stuffing threshold; successes from
// 60.0.0.0 upwards, of which a quarter are replaced by an address of the
// demo world so that they are located and travel keeps state.
func distinctAddr(i int64) netip.Addr {
	v := uint32(60<<24) + uint32(i/2)
	switch {
	case i%2 == 0:
		v = uint32(11<<24) + uint32(i/2)*257
	case i%8 == 1:
		c := geodemo.Cities[(i/8)%int64(len(geodemo.Cities))]
		return c.Addr(uint32(i / 8 / int64(len(geodemo.Cities))))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// benchChild runs one measured pass and prints a benchResult.
func benchChild(ctx context.Context, e env, args []string) int {
	if len(args) != 5 {
		return usageError(e, "bench child", "want MODE FILE GEOIP WORKERS CONFIG")
	}
	mode, file, geo, config := args[0], args[1], args[2], args[4]
	workers, _ := strconv.Atoi(args[3])
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	var r benchResult
	var err error
	switch mode {
	case "naive":
		r.Events, err = naiveDecode(file)
	case "replay":
		r, err = benchReplay(ctx, file, geo, workers, config)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	r.Seconds = time.Since(start).Seconds()
	runtime.ReadMemStats(&after)
	r.Allocs = after.Mallocs - before.Mallocs
	r.MaxRSSKiB = maxRSSKiB()
	if err != nil {
		fmt.Fprintln(e.stderr, "bench child:", err)
		return exitRuntime
	}
	_ = json.NewEncoder(e.stdout).Encode(r)
	return exitOK
}

// naiveEvent is what the naive baseline decodes into: the SPEC §1 fields.
type naiveEvent struct {
	Time      time.Time `json:"time"`
	ShopID    string    `json:"shop_id"`
	Actor     string    `json:"actor"`
	Action    string    `json:"action"`
	IP        string    `json:"ip"`
	UserAgent string    `json:"user_agent"`
	SessionID string    `json:"session_id"`
	Reason    string    `json:"reason"`
	Records   int64     `json:"records"`
	Resource  string    `json:"resource"`
	ID        string    `json:"id"`
}

// naiveDecode is the baseline of issue 6: read lines, unmarshal each with
// encoding/json, nothing else.
func naiveDecode(file string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), ingest.MaxEventSize+1)
	var n int64
	var ev naiveEvent
	for sc.Scan() {
		ev = naiveEvent{}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return n, fmt.Errorf("line %d: %w", n+1, err)
		}
		n++
	}
	return n, sc.Err()
}

// benchReplay runs the replay pipeline exactly as `shopguard replay` wires
// it, with findings written to /dev/null.
func benchReplay(ctx context.Context, file, geo string, workers int, config string) (benchResult, error) {
	reg := newRegistry()
	cfg, err := loadConfig(config)
	if err != nil {
		return benchResult{}, err
	}
	applyMemoryLimit(cfg, slog.New(slog.DiscardHandler))
	cfg.GeoIP.Path = geo
	loc, closeGeo, err := openGeoIP(cfg.GeoIP, reg, nil)
	if err != nil {
		return benchResult{}, err
	}
	defer closeGeo()
	eng, err := newEngine(cfg.Detect, loc, reg, nil)
	if err != nil {
		return benchResult{}, err
	}
	im := ingest.NewMetrics(reg)
	src := &ingest.FileSource{Paths: []string{file}, Workers: workers, Metrics: im}
	out, err := alert.NewFile(alert.FileConfig{Path: os.DevNull}, nil, nil)
	if err != nil {
		return benchResult{}, err
	}
	counted := &countingSink{next: out, byRule: map[string]int{}}
	err = pipeline(ctx, src, eng, counted)
	_ = out.Close()
	st := eng.Stats()
	return benchResult{Events: im.Stats().Events, Findings: counted.total, Accounts: st.Accounts, Sources: st.Sources,
		Evicted: capEvictions(reg)}, err
}

// capEvictions sums shopguard_state_evictions_total{reason="cap"}.
func capEvictions(g prometheus.Gatherer) int64 {
	mfs, _ := g.Gather()
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "shopguard_state_evictions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == "cap" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int64(n)
}
