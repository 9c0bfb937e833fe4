package main

// Helpers shared by the command-level end-to-end tests (main_test.go,
// kafka_e2e_test.go, shutdown_test.go, kcat_test.go). Every name starts
// with e2e so that other test files in this package can add their own
// helpers without clashing.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/generate"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// Topic and group names the e2e configurations use (the defaults of SPEC §4,
// spelled out so that a changed default cannot silently move a test).
const (
	e2eAuditTopic    = "admin-audit"
	e2eFindingsTopic = "shopguard-findings"
	e2eDLQTopic      = "admin-audit-dlq"
	e2eGroup         = "shopguard-e2e"
)

// e2eBuffer is an io.Writer safe for the concurrent writes of a running
// command and the reads of the test.
type e2eBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *e2eBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *e2eBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail returns the last 4,000 bytes, for failure messages.
func (s *e2eBuffer) tail() string {
	out := s.String()
	if len(out) > 4000 {
		out = "…" + out[len(out)-4000:]
	}
	return out
}

// e2eMain runs the command line in-process and returns its exit status,
// standard output and standard error.
func e2eMain(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// e2eFreeAddr returns a loopback address with a port that was free a moment
// ago.
func e2eFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// e2eEvents generates n events with attacks of every kind (seeded, so the
// same arguments give the same events).
func e2eEvents(t *testing.T, seed, n int64) []shopguard.Event {
	t.Helper()
	cfg := generate.DefaultConfig
	cfg.Seed, cfg.Events, cfg.AttackRate, cfg.Shops = seed, n, 40, 300
	g, err := generate.New(cfg)
	require.NoError(t, err)
	evs := make([]shopguard.Event, 0, n)
	var ev shopguard.Event
	for g.Next(&ev) {
		evs = append(evs, ev)
	}
	require.Len(t, evs, int(n))
	return evs
}

// e2eWriteEvents writes evs as JSONL to a new file in dir.
func e2eWriteEvents(t *testing.T, dir, name string, evs []shopguard.Event) string {
	t.Helper()
	var buf bytes.Buffer
	for i := range evs {
		buf.Write(append(ingest.AppendJSON(nil, &evs[i]), '\n'))
	}
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	return path
}

// e2eGeoDB writes the demo City and ASN databases (what `--geoip demo`
// uses) into dir and returns the City one's path, for configurations that
// need a real path; e2eRunConfig adds the ASN one next to it.
func e2eGeoDB(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "demo-city.mmdb")
	require.NoError(t, geodemo.Write(path, geodemo.Cities))
	require.NoError(t, geodemo.WriteASN(filepath.Join(dir, "demo-asn.mmdb"), geodemo.Cities))
	return path
}

// e2eReplay runs `shopguard replay --geoip demo` over files and returns
// the findings it wrote, by id.
func e2eReplay(t *testing.T, files ...string) map[string]shopguard.Finding {
	t.Helper()
	out := filepath.Join(t.TempDir(), "replay-findings.jsonl")
	args := append([]string{"replay", "--geoip", "demo", "--out", out}, files...)
	code, _, errs := e2eMain(t, "", args...)
	require.Equal(t, 0, code, errs)
	return e2eFindingsFile(t, out)
}

// e2eFindingsFile reads a JSONL findings file, by id. Every line must be a
// finding with an id.
func e2eFindingsFile(t *testing.T, path string) map[string]shopguard.Finding {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return e2eParseFindings(t, b)
}

func e2eParseFindings(t *testing.T, b []byte) map[string]shopguard.Finding {
	t.Helper()
	fs := map[string]shopguard.Finding{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal(sc.Bytes(), &f), sc.Text())
		require.NotEmpty(t, f.ID, sc.Text())
		fs[f.ID] = f
	}
	require.NoError(t, sc.Err())
	return fs
}

// e2eTopicFindings reads the findings topic in full: the distinct findings
// by id, and how many messages it holds (re-deliveries included).
func e2eTopicFindings(t *testing.T, c *kafkatest.Cluster) (map[string]shopguard.Finding, int) {
	t.Helper()
	msgs := c.ReadAll(t, e2eFindingsTopic)
	fs := map[string]shopguard.Finding{}
	for _, m := range msgs {
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal(m.Value, &f), string(m.Value))
		require.Equal(t, f.ID, string(m.Key), "findings are keyed by id")
		fs[f.ID] = f
	}
	return fs, len(msgs)
}

// e2eIDs returns the ids of fs, as a set that require.Equal diffs well.
func e2eIDs(fs map[string]shopguard.Finding) map[string]bool {
	ids := make(map[string]bool, len(fs))
	for id := range fs {
		ids[id] = true
	}
	return ids
}

// e2eRunConfig describes the configuration file of a `shopguard run`.
type e2eRunConfig struct {
	brokers    string
	listen     string
	geoip      string
	findings   string // JSONL file sink
	checkpoint string // checkpoint.path; empty: none
	// shortSession (heartbeats every 500 ms, 6 s session) makes a lost
	// coordinator connection, or a member that vanished without leaving
	// the group, noticed within seconds.
	shortSession bool
}

// write writes the configuration into a new file and returns its path.
func (rc e2eRunConfig) write(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	asn := filepath.Join(filepath.Dir(rc.geoip), "demo-asn.mmdb")
	if _, err := os.Stat(asn); rc.geoip == "" || err != nil {
		asn = ""
	}
	fmt.Fprintf(&b, "listen: %q\ngeoip: {path: %q, asn_path: %q}\n", rc.listen, rc.geoip, asn)
	fmt.Fprintf(&b, `kafka:
  brokers: [%q]
  topic: %s
  group: %s
  dead_letter_topic: %s
  commit_interval: 100ms
  max_wait: 100ms
  retry_backoff: 20ms
  retry_backoff_max: 200ms
  max_retries: 50
`, rc.brokers, e2eAuditTopic, e2eGroup, e2eDLQTopic)
	if rc.shortSession {
		b.WriteString("  session_timeout: 6s\n  heartbeat_interval: 500ms\n  rebalance_timeout: 6s\n")
	}
	fmt.Fprintf(&b, "sinks:\n  kafka: {topic: %s}\n  file: {path: %q}\n", e2eFindingsTopic, rc.findings)
	if rc.checkpoint != "" {
		fmt.Fprintf(&b, "checkpoint: {path: %q, interval: 100ms}\n", rc.checkpoint)
	}
	path := filepath.Join(t.TempDir(), "shopguard.yml")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	return path
}

// e2eRunning is a `shopguard run` started in-process by e2eStartRun.
type e2eRunning struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan int
	stderr *e2eBuffer
	listen string
}

// e2eStartRun runs `shopguard run --config config` in-process until stop.
func e2eStartRun(t *testing.T, config, listen string) *e2eRunning {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &e2eRunning{t: t, cancel: cancel, done: make(chan int, 1), stderr: &e2eBuffer{}, listen: listen}
	go func() { r.done <- Main(ctx, []string{"run", "--config", config}, nil, io.Discard, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stop cancels the run as SIGTERM does and returns its exit status; it
// fails the test if the run takes more than 10 s to stop (issue 4).
func (r *e2eRunning) stop() int {
	r.t.Helper()
	r.cancel()
	select {
	case code := <-r.done:
		r.done <- code // for the cleanup
		return code
	case <-time.After(10 * time.Second):
		r.t.Fatalf("run did not stop within 10 s; stderr:\n%s", r.stderr.tail())
		return -1
	}
}

// get fetches path from the run's HTTP listener and returns the status
// code and body; a connection error gives status 0.
func (r *e2eRunning) get(path string) (int, string) {
	resp, err := http.Get("http://" + r.listen + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of the sample of /metrics whose name and labels
// are exactly series (e.g. `shopguard_kafka_messages_total`), or fails.
func (r *e2eRunning) metric(series string) float64 {
	r.t.Helper()
	code, body := r.get("/metrics")
	require.Equal(r.t, http.StatusOK, code, body)
	return e2eMetricValue(r.t, body, series)
}

func e2eMetricValue(t *testing.T, exposition, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err, line)
			return f
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return 0
}

// e2eCommitted sums the offsets the e2e group committed on the audit topic:
// with offsets starting at 0, how many messages it has acknowledged.
func e2eCommitted(t *testing.T, c *kafkatest.Cluster) int64 {
	t.Helper()
	var sum int64
	for _, off := range c.Committed(t, e2eGroup, e2eAuditTopic) {
		sum += off
	}
	return sum
}

// e2eWaitCommitted waits up to 30 s until the group committed total
// messages.
func e2eWaitCommitted(t *testing.T, c *kafkatest.Cluster, total int64, stderr *e2eBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := e2eCommitted(t, c)
		if got == total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets cover %d of %d messages after 30 s; stderr:\n%s", got, total, stderr.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// e2eCut makes the broker close the client's connection instead of
// answering the next n requests of kind key, and returns how many it cut.
// (kafkatest.Disconnect and Drop with n >= 2 never stop: the KeepControl
// of their first call stays set in kfake for good, so every later request
// of the kind is cut too. DropControl on the nth call removes the control.)
func e2eCut(c *kafkatest.Cluster, key kmsg.Key, n int) *atomic.Int32 {
	var cut atomic.Int32
	c.ControlKey(key.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if cut.Add(1) >= int32(n) {
			c.DropControl()
		}
		return nil, errors.New("e2e: injected disconnect"), true
	})
	return &cut
}

// e2eBinary builds the shopguard binary into the test's temporary
// directory.
func e2eBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shopguard")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	return bin
}
