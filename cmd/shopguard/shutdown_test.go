package main

import (
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shopguard/shopguard/ingest/kafkatest"
	"github.com/stretchr/testify/require"
)

// TestE2ESIGTERMUnderLoad runs the built binary as `shopguard run` against
// a kfake cluster in the test process while events keep arriving, sends it
// SIGTERM, and checks issue 4's graceful shutdown: exit status 0 within
// 10 s, something committed, and no offset committed past an event whose
// findings are not in the findings file. A second run in the same group
// then finishes the topic: with checkpoints the two runs' findings are
// exactly the replay's; without, the second run reads every event after
// the first run's commits (the engine state is not carried over).
func TestE2ESIGTERMUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := e2eBinary(t)
	dir := t.TempDir()
	evs := e2eEvents(t, 13, 60_000)
	want := e2eReplay(t, e2eWriteEvents(t, dir, "events.jsonl", evs))
	geo := e2eGeoDB(t, dir)

	for _, checkpoint := range []bool{true, false} {
		name := "without checkpoint"
		if checkpoint {
			name = "with checkpoint"
		}
		t.Run(name, func(t *testing.T) {
			// One partition, so that offset i is event i.
			c := kafkatest.New(t, map[string]int32{e2eAuditTopic: 1, e2eFindingsTopic: 1, e2eDLQTopic: 1})
			rc := e2eRunConfig{brokers: c.Addrs()[0], listen: e2eFreeAddr(t), geoip: geo,
				findings: filepath.Join(t.TempDir(), "findings.jsonl")}
			if checkpoint {
				rc.checkpoint = filepath.Join(t.TempDir(), "state.ckpt")
			}
			config := rc.write(t)

			cmd := exec.Command(bin, "run", "--config", config)
			var stderr e2eBuffer
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()

			// The load: 5,000 events every 100 ms. SIGTERM comes right after
			// the chunk that ends at event 30,000 was produced, while the
			// consumer is busy with it and the rest is still to come.
			const signalAt = 30_000
			var signalled atomic.Int64 // UnixNano
			loaded := make(chan struct{})
			go func() {
				defer close(loaded)
				for n := 0; n < len(evs); n += 5000 {
					c.ProduceEvents(t, e2eAuditTopic, evs[n:n+5000]...)
					if n+5000 == signalAt {
						signalled.Store(time.Now().UnixNano())
						_ = cmd.Process.Signal(syscall.SIGTERM)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-loaded
			})

			require.Eventually(t, func() bool { return signalled.Load() != 0 }, 20*time.Second, time.Millisecond)
			select {
			case err := <-waited:
				require.NoError(t, err, "exit status; stderr:\n%s", stderr.tail())
			case <-time.After(10*time.Second - time.Since(time.Unix(0, signalled.Load()))):
				t.Fatalf("no exit within 10 s of SIGTERM; stderr:\n%s", stderr.tail())
			}
			took := time.Since(time.Unix(0, signalled.Load()))
			committed1 := e2eCommitted(t, c)
			t.Logf("exit 0 %s after SIGTERM; %d events produced then, %d committed",
				took.Round(time.Millisecond), signalAt, committed1)
			require.Positive(t, committed1)
			require.LessOrEqual(t, committed1, int64(signalAt))
			require.Contains(t, stderr.String(), "shopguard stopped")

			// Nothing committed past an event whose findings were not
			// written (one partition: offset i is event i), and nothing
			// written that the replay does not find.
			fromFirst := e2eFindingsFile(t, rc.findings)
			prefix := e2eReplay(t, e2eWriteEvents(t, t.TempDir(), "prefix.jsonl", evs[:committed1]))
			for id, f := range prefix {
				require.Contains(t, fromFirst, id, "committed past the %s finding at %s", f.Rule, f.Time)
			}
			require.Subset(t, e2eIDs(want), e2eIDs(fromFirst))

			<-loaded
			second := e2eStartRun(t, config, rc.listen)
			e2eWaitCommitted(t, c, int64(len(evs)), second.stderr)
			read2 := second.metric("shopguard_kafka_messages_total")
			require.Equal(t, 0, second.stop(), second.stderr.tail())
			require.GreaterOrEqual(t, read2, float64(int64(len(evs))-committed1))
			both := e2eFindingsFile(t, rc.findings) // the first run's and the second's
			if checkpoint {
				require.Contains(t, second.stderr.String(), "checkpoint restored")
				require.Equal(t, e2eIDs(want), e2eIDs(both))
				got, _ := e2eTopicFindings(t, c)
				require.Equal(t, e2eIDs(want), e2eIDs(got))
			} else {
				t.Logf("without checkpoint: %d of the replay's %d findings", len(both), len(want))
			}
		})
	}
}
