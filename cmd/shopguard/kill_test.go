package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// TestKillAndRestart runs the consumer with checkpoints as a child process
// while events stream in, kills it hard (SIGKILL) at random points several
// times, restarts it each time, and checks that the findings (de-duplicated
// by id) equal those of an uninterrupted replay of the same events: no
// detection is lost across a restart, even an attack whose events straddle
// one, and none is invented.
func TestKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	s := ltNewScenario(t, 60_000)
	want := s.replayIDs(t)
	c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "shopguard-findings": 1, "admin-audit-dlq": 1})
	listen := ltFreeAddr(t)
	config := ltConfig(t, s, c, listen, filepath.Join(t.TempDir(), "findings.jsonl"))
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	// A killed member holds its partitions until its session times out:
	// keep that short so the restarted process takes over quickly.
	_, err = fmt.Fprintf(f, "checkpoint: {path: %q, interval: 100ms}\n", ckpt)
	require.NoError(t, err)
	b, err := os.ReadFile(config)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(config, []byte(strings.Replace(string(b), "kafka:\n",
		"kafka:\n  session_timeout: 6s\n  heartbeat_interval: 500ms\n  rebalance_timeout: 6s\n", 1)), 0o644))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	bin := ptBinary(t)

	rng := rand.New(rand.NewPCG(7, 7))
	start := func() (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(bin, "run", "--config", config)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		return cmd, &stderr
	}
	committed := func() int64 {
		var sum int64
		for _, off := range c.Committed(t, "shopguard-test", "admin-audit") {
			sum += off
		}
		return sum
	}
	// Each round: start the consumer, wait until it consumes (a killed
	// member holds the partition until its 6 s session times out), then
	// produce the next 8,000 events in small batches and SIGKILL it at a
	// random moment while they stream in.
	next, kills := 0, 0
	c.ProduceEvents(t, "admin-audit", s.evs[:2000]...)
	next = 2000
	for range 6 {
		cmd, errs := start()
		before := committed()
		deadline := time.Now().Add(30 * time.Second)
		for committed() == before && next > int(before) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		killAt := time.Now().Add(time.Duration(rng.IntN(400)) * time.Millisecond)
		for i := 0; i < 8 && next < len(s.evs); i++ {
			c.ProduceEvents(t, "admin-audit", s.evs[next:min(next+1000, len(s.evs))]...)
			next = min(next+1000, len(s.evs))
			time.Sleep(50 * time.Millisecond)
			if time.Now().After(killAt) {
				break
			}
		}
		time.Sleep(time.Until(killAt))
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		kills++
		t.Logf("kill %d at %d events produced, %d committed", kills, next, committed())
		if os.Getenv("KT_DEBUG") != "" {
			t.Logf("run %d:\n%s", kills, errs.String())
		}
	}
	c.ProduceEvents(t, "admin-audit", s.evs[next:]...)
	cmd, stderr := start()
	ltWaitCommitted(t, c, int64(len(s.evs)), stderr)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), stderrTail(stderr))
	require.Contains(t, stderr.String(), "checkpoint restored")

	got, n := ltTopicIDs(t, c)
	t.Logf("survived %d SIGKILLs; %d findings expected, %d distinct on the topic (%d messages, duplicates are re-sends after a restart)",
		kills, len(want), len(got), n)
	require.Equal(t, want, got)
}
