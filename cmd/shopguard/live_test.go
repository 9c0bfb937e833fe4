package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/generate"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// ltScenario is a generated stream with attacks of every kind, written to a
// JSONL file, with the demo GeoIP database beside it.
type ltScenario struct {
	dir, events, geo string
	evs              []shopguard.Event
}

func ltNewScenario(t *testing.T, n int64) *ltScenario {
	t.Helper()
	s := &ltScenario{dir: t.TempDir()}
	s.events = filepath.Join(s.dir, "events.jsonl")
	s.geo = filepath.Join(s.dir, "demo.mmdb")
	require.NoError(t, geodemo.Write(s.geo, geodemo.Cities))
	cfg := generate.DefaultConfig
	cfg.Seed, cfg.Events, cfg.AttackRate, cfg.Shops = 11, n, 40, 300
	g, err := generate.New(cfg)
	require.NoError(t, err)
	var buf bytes.Buffer
	var ev shopguard.Event
	for g.Next(&ev) {
		s.evs = append(s.evs, ev)
		buf.Write(append(generate.AppendJSON(nil, &ev), '\n'))
	}
	require.NoError(t, os.WriteFile(s.events, buf.Bytes(), 0o644))
	return s
}

// replayIDs is what `shopguard replay` finds in the scenario's file.
func (s *ltScenario) replayIDs(t *testing.T) map[string]bool {
	t.Helper()
	out := filepath.Join(s.dir, "replay.jsonl")
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"replay", "--geoip", s.geo, "--out", out, s.events}, nil, io.Discard, &stderr)
	require.Equal(t, 0, code, stderr.String())
	ids := ltIDs(t, out)
	require.NotEmpty(t, ids)
	return ids
}

func ltIDs(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	ids := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal([]byte(line), &f), line)
		ids[f.ID] = true
	}
	return ids
}

// topicIDs reads the finding ids on the findings topic (de-duplicated).
func ltTopicIDs(t *testing.T, c *kafkatest.Cluster) (map[string]bool, int) {
	ids := map[string]bool{}
	msgs := c.ReadAll(t, "shopguard-findings")
	for _, m := range msgs {
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal(m.Value, &f))
		require.Equal(t, f.ID, string(m.Key), "findings are keyed by id")
		ids[f.ID] = true
	}
	return ids, len(msgs)
}

func ltFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// ltConfig writes a run configuration for cluster c.
func ltConfig(t *testing.T, s *ltScenario, c *kafkatest.Cluster, listen, findingsFile string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shopguard.yml")
	cfg := fmt.Sprintf(`listen: %q
geoip: {path: %q}
kafka:
  brokers: [%q]
  topic: admin-audit
  group: shopguard-test
  commit_interval: 100ms
  max_wait: 100ms
  retry_backoff: 20ms
  retry_backoff_max: 200ms
  max_retries: 50
sinks:
  kafka: {topic: shopguard-findings}
  file: {path: %q}
`, listen, s.geo, c.Addrs()[0], findingsFile)
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
	return path
}

// ltRun runs `shopguard run` in-process until stop is called; it returns
// the exit status once stopped.
func ltRun(t *testing.T, config string) (stop func() int, stderr *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"run", "--config", config}, nil, io.Discard, stderr) }()
	return func() int {
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(15 * time.Second):
			t.Fatalf("run did not stop within 15 s; stderr:\n%s", stderr.String())
			return -1
		}
	}, stderr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ltWaitCommitted waits until the group has committed every event.
func ltWaitCommitted(t *testing.T, c *kafkatest.Cluster, total int64, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var sum int64
		for _, off := range c.Committed(t, "shopguard-test", "admin-audit") {
			sum += off
		}
		if sum == total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets cover %d of %d events after 60 s; stderr:\n%s", sum, total, stderrTail(stderr))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func stderrTail(s *syncBuffer) string {
	out := s.String()
	if len(out) > 4000 {
		out = out[len(out)-4000:]
	}
	return out
}

// TestRunMatchesReplay: the always-on consumer, fed through Kafka, finds
// exactly what a file replay of the same events finds, with the same ids,
// on the findings topic and in the JSONL file, and commits every event.
func TestRunMatchesReplay(t *testing.T) {
	s := ltNewScenario(t, 60_000)
	want := s.replayIDs(t)

	// One partition: the engine then sees the events in the file's order.
	c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "shopguard-findings": 1, "admin-audit-dlq": 1})
	c.ProduceEvents(t, "admin-audit", s.evs...)
	c.ProduceLines(t, "admin-audit", 1, `{"not":"an event"}`, `garbage`)
	listen := ltFreeAddr(t)
	file := filepath.Join(t.TempDir(), "findings.jsonl")
	stop, stderr := ltRun(t, ltConfig(t, s, c, listen, file))

	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "never ready; stderr:\n%s", stderrTail(stderr))
	ltWaitCommitted(t, c, int64(len(s.evs)+2), stderr)

	resp, err := http.Get("http://" + listen + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), `shopguard_events_total{action="login.success"}`)
	require.Contains(t, string(body), `shopguard_events_invalid_total{reason="missing_field"} 1`)
	require.Contains(t, string(body), `shopguard_events_invalid_total{reason="not_json"} 1`)
	resp, err = http.Get("http://" + listen + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.Equal(t, 0, stop(), stderrTail(stderr))
	got, _ := ltTopicIDs(t, c)
	require.Equal(t, want, got, "findings topic")
	require.Equal(t, want, ltIDs(t, file), "findings file")
	require.Len(t, c.ReadAll(t, "admin-audit-dlq"), 2, "bad messages are dead-lettered")
}

// TestRunSurvivesFaults injects failing fetches, commits and produces and
// cut coordinator connections: after recovery every event was processed and
// committed, and the finding ids equal the fault-free replay's.
func TestRunSurvivesFaults(t *testing.T) {
	s := ltNewScenario(t, 60_000)
	want := s.replayIDs(t)
	c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "shopguard-findings": 1, "admin-audit-dlq": 1})
	c.ProduceEvents(t, "admin-audit", s.evs...)
	c.Fail(kmsg.Fetch, "admin-audit", 3, nil)
	c.Fail(kmsg.OffsetCommit, "admin-audit", 3, nil)
	c.Fail(kmsg.Produce, "shopguard-findings", 5, nil)
	// The group coordinator's connection is cut twice. (A connection cut
	// on a Fetch is not here: kafka-go's reader then reports "unexpected
	// EOF" on every fetch against kfake and never recovers.)
	c.Disconnect(kmsg.Heartbeat, 2)

	listen := ltFreeAddr(t)
	file := filepath.Join(t.TempDir(), "findings.jsonl")
	stop, stderr := ltRun(t, ltConfig(t, s, c, listen, file))
	ltWaitCommitted(t, c, int64(len(s.evs)), stderr)
	require.Equal(t, 0, stop(), stderrTail(stderr))
	got, n := ltTopicIDs(t, c)
	require.Equal(t, want, got)
	require.GreaterOrEqual(t, n, len(want))
}

// TestRunRestartIsAtLeastOnce stops the consumer mid-stream and starts it
// again in the same group: every event is processed and committed, and
// nothing committed is read again by the second run.
func TestRunRestartIsAtLeastOnce(t *testing.T) {
	s := ltNewScenario(t, 60_000)
	c := kafkatest.New(t, map[string]int32{"admin-audit": 3, "shopguard-findings": 1, "admin-audit-dlq": 1})
	c.ProduceEvents(t, "admin-audit", s.evs[:30_000]...)
	listen := ltFreeAddr(t)
	file := filepath.Join(t.TempDir(), "findings.jsonl")
	config := ltConfig(t, s, c, listen, file)

	stop, stderr := ltRun(t, config)
	ltWaitCommitted(t, c, 30_000, stderr)
	require.Equal(t, 0, stop(), stderrTail(stderr))
	first := c.Committed(t, "shopguard-test", "admin-audit")

	c.ProduceEvents(t, "admin-audit", s.evs[30_000:]...)
	stop, stderr = ltRun(t, config)
	ltWaitCommitted(t, c, int64(len(s.evs)), stderr)
	require.Equal(t, 0, stop(), stderrTail(stderr))
	for p, off := range c.Committed(t, "shopguard-test", "admin-audit") {
		require.GreaterOrEqual(t, off, first[p])
	}
	// Both runs wrote findings; the file holds no id twice within a run
	// and every line is a valid finding.
	require.NotEmpty(t, ltIDs(t, file))
}

// TestReplayKafkaRange: replaying a time range of the topic (3 partitions,
// keyed by account) gives the ids the file replay of those events gives.
func TestReplayKafkaRange(t *testing.T) {
	s := ltNewScenario(t, 60_000)
	c := kafkatest.New(t, map[string]int32{"admin-audit": 3})
	c.ProduceEvents(t, "admin-audit", s.evs...)

	// The middle of the stream, by event time, and the same slice as a file.
	since, until := s.evs[10_000].Time, s.evs[50_000].Time
	var part bytes.Buffer
	for i := range s.evs {
		if ev := &s.evs[i]; !ev.Time.Before(since) && !ev.Time.After(until) {
			part.Write(append(generate.AppendJSON(nil, ev), '\n'))
		}
	}
	sub := &ltScenario{dir: t.TempDir(), geo: s.geo}
	sub.events = filepath.Join(sub.dir, "part.jsonl")
	require.NoError(t, os.WriteFile(sub.events, part.Bytes(), 0o644))
	want := sub.replayIDs(t)

	out := filepath.Join(t.TempDir(), "range.jsonl")
	code, _, errs := rtMain(t, "", "replay", "--geoip", s.geo, "--out", out, "--brokers", c.Addrs()[0], "--topic", "admin-audit",
		"--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano))
	require.Equal(t, 0, code, errs)
	require.Equal(t, want, ltIDs(t, out))
	require.Contains(t, errs, fmt.Sprintf("%d valid", strings.Count(part.String(), "\n")))
}
