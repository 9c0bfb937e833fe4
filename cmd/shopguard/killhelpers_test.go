package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
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
		buf.Write(append(ingest.AppendJSON(nil, &ev), '\n'))
	}
	require.NoError(t, os.WriteFile(s.events, buf.Bytes(), 0o644))
	return s
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

// ptBinary builds the shopguard binary for tests that run it as a child
// process.
func ptBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shopguard")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}
