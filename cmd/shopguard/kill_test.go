package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// ktAttack is a handcrafted attack split in two halves, neither of which
// raises its findings alone: 12 + 12 accounts failing from one address
// (credential_stuffing needs 20), 6 + 6 failures of one account
// (brute_force needs 10), and a login in Tokyo then one in Frankfurt
// (impossible_travel needs both).
type ktAttack struct {
	shop          string
	first, second []shopguard.Event
}

func ktNewAttack(r int, t1, t2 time.Time) ktAttack {
	a := ktAttack{shop: fmt.Sprintf("kill-%d", r)}
	sydney, _ := geodemo.Lookup("Sydney")
	tokyo, _ := geodemo.Lookup("Tokyo")
	frankfurt, _ := geodemo.Lookup("Frankfurt")
	// Each attack's stuffer in an IPv6 /48 of its own: two attacks from
	// one /48 within the window are one credential_stuffing campaign
	// (SPEC §3.2), and consecutive attacks are minutes apart.
	stuffer := ktStufferCity(r).Addr6(1<<40 + uint64(r))
	guesser := sydney.Addr6(1<<41 + uint64(r))
	ev := func(t time.Time, actor string, action shopguard.Action, ip string) shopguard.Event {
		e := shopguard.Event{Time: t, ShopID: a.shop, Actor: actor, Action: action, UserAgent: "kill-test"}
		e.IP = netip.MustParseAddr(ip)
		if action == shopguard.ActionLoginFailure {
			e.Reason = "bad_password"
		}
		return e
	}
	half := func(t time.Time, from int, login string) []shopguard.Event {
		var evs []shopguard.Event
		for k := range 12 {
			evs = append(evs, ev(t.Add(time.Duration(k)*100*time.Millisecond),
				fmt.Sprintf("victim%02d@%s.example", from+k, a.shop), shopguard.ActionLoginFailure, stuffer.String()))
		}
		for k := range 6 {
			evs = append(evs, ev(t.Add(2*time.Second+time.Duration(k)*100*time.Millisecond),
				"admin@"+a.shop+".example", shopguard.ActionLoginFailure, guesser.String()))
		}
		return append(evs, ev(t.Add(3*time.Second), "owner@"+a.shop+".example", shopguard.ActionLoginSuccess, login))
	}
	a.first = half(t1, 0, tokyo.Addr(60_000+uint32(r)).String())
	a.second = half(t2, 12, frankfurt.Addr(60_000+uint32(r)).String())
	return a
}

// ktStufferCity returns the r-th demo city with an IPv6 block, skipping
// Tokyo and Frankfurt, where the attacks' logins come from.
func ktStufferCity(r int) geodemo.City {
	var cs []geodemo.City
	for _, c := range geodemo.Cities {
		if c.Addr6(0).IsValid() && c.Name != "Tokyo" && c.Name != "Frankfurt" {
			cs = append(cs, c)
		}
	}
	return cs[r%len(cs)]
}

// found reports whether fs hold this attack's three findings, each raised
// by an event of the second half.
func (a ktAttack) found(fs map[string]shopguard.Finding) bool {
	rules := map[string]bool{}
	for _, f := range fs {
		if f.Time.Before(a.second[0].Time) {
			continue
		}
		switch {
		case f.Rule == shopguard.RuleCredentialStuffing && slices.ContainsFunc(f.Evidence.Accounts, func(x shopguard.Account) bool { return x.ShopID == a.shop }),
			f.Rule == shopguard.RuleBruteForce && f.ShopID == a.shop,
			f.Rule == shopguard.RuleImpossibleTravel && f.ShopID == a.shop:
			rules[f.Rule] = true
		}
	}
	return len(rules) == 3
}

// ktStream cuts generated traffic into kills+1 segments and puts one
// attack across each cut: its first half 1,500 background events before
// the end of a segment, its second half at the start of the next one.
// splits[r] is the index after the first half of attack r, ends[r] the end
// of segment r.
func ktStream(t *testing.T, bg []shopguard.Event, kills int) (evs []shopguard.Event, splits, ends []int, attacks []ktAttack) {
	t.Helper()
	const tail = 1500
	seg := len(bg) / (kills + 1)
	require.Greater(t, seg, 2*tail)
	for r := 0; r <= kills; r++ {
		part := bg[r*seg : (r+1)*seg]
		if r == kills {
			part = bg[r*seg:]
		}
		if r > 0 {
			evs = append(evs, attacks[r-1].second...)
		}
		if r == kills {
			evs = append(evs, part...)
			break
		}
		cut := len(part) - tail
		evs = append(evs, part[:cut]...)
		a := ktNewAttack(r, part[cut-1].Time, bg[(r+1)*seg].Time)
		require.Less(t, a.second[0].Time.Sub(a.first[0].Time), 4*time.Minute, "the halves must fall within the rules' windows")
		attacks = append(attacks, a)
		evs = append(evs, a.first...)
		splits = append(splits, len(evs))
		evs = append(evs, part[cut:]...)
		ends = append(ends, len(evs))
	}
	return evs, splits, ends, attacks
}

// ktReplay writes evs to a file and returns the findings `shopguard
// replay` finds in it with the scenario's GeoIP database, by id.
func ktReplay(t *testing.T, s *ltScenario, evs []shopguard.Event) map[string]shopguard.Finding {
	t.Helper()
	var buf bytes.Buffer
	for i := range evs {
		buf.Write(append(ingest.AppendJSON(nil, &evs[i]), '\n'))
	}
	in := filepath.Join(t.TempDir(), "events.jsonl")
	require.NoError(t, os.WriteFile(in, buf.Bytes(), 0o644))
	out := filepath.Join(t.TempDir(), "replay.jsonl")
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"replay", "--geoip", s.geo, "--out", out, in}, nil, io.Discard, &stderr)
	require.Equal(t, 0, code, stderr.String())
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	fs := map[string]shopguard.Finding{}
	for line := range strings.Lines(string(b)) {
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal([]byte(line), &f), line)
		fs[f.ID] = f
	}
	require.NotEmpty(t, fs)
	return fs
}

func ktIDs(fs map[string]shopguard.Finding) map[string]bool {
	ids := make(map[string]bool, len(fs))
	for id := range fs {
		ids[id] = true
	}
	return ids
}

// ktCommitted is the sum of the group's committed offsets (on one
// partition: how many events it has committed).
func ktCommitted(t *testing.T, c *kafkatest.Cluster) int64 {
	var sum int64
	for _, off := range c.Committed(t, "shopguard-test", "admin-audit") {
		sum += off
	}
	return sum
}

func ktWaitCommittedAtLeast(t *testing.T, c *kafkatest.Cluster, n int, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for ktCommitted(t, c) < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("committed %d of %d events after 30 s; stderr:\n%s", ktCommitted(t, c), n, stderrTail(stderr))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ktConfig is ltConfig with checkpoints every interval, and for the kill
// test a short Kafka session: a killed member holds its partition until
// its session times out.
func ktConfig(t *testing.T, s *ltScenario, c *kafkatest.Cluster, ckpt string, interval time.Duration, shortSession bool) string {
	t.Helper()
	config := ltConfig(t, s, c, ltFreeAddr(t), filepath.Join(t.TempDir(), "findings.jsonl"))
	b, err := os.ReadFile(config)
	require.NoError(t, err)
	text := string(b) + fmt.Sprintf("checkpoint: {path: %q, interval: %s}\n", ckpt, interval)
	if shortSession {
		text = strings.Replace(text, "kafka:\n", "kafka:\n  session_timeout: 2s\n  heartbeat_interval: 300ms\n  rebalance_timeout: 2s\n", 1)
	}
	require.NoError(t, os.WriteFile(config, []byte(text), 0o644))
	return config
}

// TestKillAndRestart runs the consumer with checkpoints as a child process
// and kills it hard (SIGKILL) six times, each time at a random moment
// while events stream in, restarting it each time. Across every kill lies
// an attack whose first half the killed process had checkpointed (its
// offsets were committed, and commits follow checkpoints) and whose second
// half is produced only after the kill, so only the restored state can
// complete it. The findings on the findings topic, de-duplicated by id,
// must equal those of `replay` over the same events in topic order: no
// detection lost across a restart, none invented.
func TestKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const kills = 6
	s := ltNewScenario(t, 42_000)
	evs, splits, ends, attacks := ktStream(t, s.evs, kills)
	want := ktReplay(t, s, evs)
	for _, a := range attacks {
		require.True(t, a.found(want), "the uninterrupted replay finds the attack on %s", a.shop)
	}

	// One partition: the consumer sees the events in the replay's order.
	c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "shopguard-findings": 1, "admin-audit-dlq": 1},
		kfake.GroupMinSessionTimeout(500*time.Millisecond))
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	config := ktConfig(t, s, c, ckpt, 150*time.Millisecond, true)
	bin := ptBinary(t)
	start := func() (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(bin, "run", "--config", config)
		stderr := &syncBuffer{}
		cmd.Stderr = stderr
		require.NoError(t, cmd.Start())
		return cmd, stderr
	}
	next := 0
	// produce sends events up to hi in chunks, pausing between them, and
	// stops early at until (if set).
	produce := func(hi, chunk int, pause time.Duration, until time.Time) {
		for next < hi && (until.IsZero() || time.Now().Before(until)) {
			n := min(next+chunk, hi)
			c.ProduceEvents(t, "admin-audit", evs[next:n]...)
			next = n
			time.Sleep(pause)
		}
	}

	rng := rand.New(rand.NewPCG(2026, 11))
	began := time.Now()
	for r := range kills {
		cmd, stderr := start()
		produce(splits[r], 1000, 10*time.Millisecond, time.Time{})
		// The first half of attack r is in a checkpoint once its offsets
		// are committed.
		ktWaitCommittedAtLeast(t, c, splits[r], stderr)
		killAt := time.Now().Add(time.Duration(rng.IntN(300)) * time.Millisecond)
		produce(ends[r], 250, 20*time.Millisecond, killAt)
		time.Sleep(time.Until(killAt))
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		if r > 0 {
			require.Contains(t, stderr.String(), "checkpoint restored", "restart %d", r)
		}
		require.NotContains(t, stderr.String(), "checkpoint not restored", "restart %d", r)
		t.Logf("kill %d: %d events produced, %d committed, the second half of attack %d not yet produced",
			r+1, next, ktCommitted(t, c), r)
	}
	produce(len(evs), 1000, 0, time.Time{})
	cmd, stderr := start()
	ltWaitCommitted(t, c, int64(len(evs)), stderr)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), stderrTail(stderr))
	require.Contains(t, stderr.String(), "checkpoint restored")
	require.NotContains(t, stderr.String(), "set back", "commits never run ahead of the checkpoint")

	got, n := ltTopicIDs(t, c)
	t.Logf("survived %d SIGKILLs in %s; %d findings expected, %d distinct on the topic (%d messages: a restart sends again what it finds after its checkpoint)",
		kills, time.Since(began).Round(time.Second), len(want), len(got), n)
	require.Equal(t, ktIDs(want), got)

	// The final checkpoint is whole and the only file left: temporary files
	// of killed writes were removed.
	left, err := filepath.Glob(filepath.Join(filepath.Dir(ckpt), "*"))
	require.NoError(t, err)
	hidden, err := filepath.Glob(filepath.Join(filepath.Dir(ckpt), ".*"))
	require.NoError(t, err)
	require.Equal(t, []string{ckpt}, append(left, hidden...))
}

// TestCheckpointBehindCommitted: when the group has committed past the
// checkpoint (here an older checkpoint put back; in life a run without
// checkpoints, or a last checkpoint that could not be written), run sets
// the group back to the checkpoint's offsets, so the events between are
// processed again with the restored state. A stuffing campaign spread over
// three runs is found only if the middle run's events meet the state of
// the first.
func TestCheckpointBehindCommitted(t *testing.T) {
	s := ltNewScenario(t, 9_000)
	bg := s.evs
	a := ktNewAttack(0, bg[2999].Time, bg[3000].Time)
	b := ktNewAttack(1, bg[5999].Time, bg[6000].Time)
	// Run 1: bg[:3000] and a's first half. Run 2: a's second half, then
	// b's first half. Run 3: b's second half and the rest, restored from
	// run 1's checkpoint: it must read run 2's events again, or b is
	// incomplete.
	var evs []shopguard.Event
	evs = append(append(evs, bg[:3000]...), a.first...)
	cut1 := len(evs)
	evs = append(append(append(evs, a.second...), bg[3000:6000]...), b.first...)
	cut2 := len(evs)
	evs = append(append(evs, b.second...), bg[6000:]...)
	want := ktReplay(t, s, evs)
	require.True(t, a.found(want))
	require.True(t, b.found(want))

	c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "shopguard-findings": 1, "admin-audit-dlq": 1})
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	config := ktConfig(t, s, c, ckpt, 100*time.Millisecond, false)
	runTo := func(lo, hi int) string {
		c.ProduceEvents(t, "admin-audit", evs[lo:hi]...)
		stop, stderr := ltRun(t, config)
		ltWaitCommitted(t, c, int64(hi), stderr)
		require.Equal(t, 0, stop(), stderrTail(stderr))
		return stderr.String()
	}
	runTo(0, cut1)
	old, err := os.ReadFile(ckpt)
	require.NoError(t, err)
	runTo(cut1, cut2)
	require.NoError(t, os.WriteFile(ckpt, old, 0o600))
	log := runTo(cut2, len(evs))
	got, _ := ltTopicIDs(t, c)
	require.Equal(t, ktIDs(want), got)
	require.Contains(t, log, "checkpoint restored")
	require.Contains(t, log, "committed offsets set back to the checkpoint's")
}

// TestCorruptCheckpointStartsEmpty: a checkpoint that cannot be used
// (here a truncated one, and one of other detect settings) is reported
// with the reason, and run starts with empty state from the committed
// offsets instead of failing; its first checkpoint replaces the bad file.
func TestCorruptCheckpointStartsEmpty(t *testing.T) {
	s := ltNewScenario(t, 4_000)
	a := ktNewAttack(0, s.evs[1999].Time, s.evs[2000].Time)
	evs := slices.Concat(s.evs[:2000], a.first, a.second, s.evs[2000:])
	want := ktReplay(t, s, evs)
	require.True(t, a.found(want))
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")

	// A whole checkpoint from another run, then spoilt two ways.
	good := func() []byte {
		cfg := DefaultCheckpointConfig
		cfg.Path = ckpt
		eng, err := detect.New(detect.DefaultConfig)
		require.NoError(t, err)
		ck := newCheckpointer(cfg, "admin-audit", "shopguard-test", nil, nil)
		ck.eng = eng
		require.NoError(t, ck.write(map[int]int64{0: 1}))
		b, err := os.ReadFile(ckpt)
		require.NoError(t, err)
		return b
	}()
	for _, tt := range []struct {
		name, reason string
		data         []byte
		detect       string
	}{
		{"truncated", "truncated", good[:len(good)-3], ""},
		{"other settings", "other detect settings", good, "detect: {brute_force: {threshold: 12}}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "shopguard-findings": 1, "admin-audit-dlq": 1})
			config := ktConfig(t, s, c, ckpt, 100*time.Millisecond, false)
			if tt.detect != "" {
				f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
				require.NoError(t, err)
				_, err = f.WriteString(tt.detect)
				require.NoError(t, err)
				require.NoError(t, f.Close())
			}
			require.NoError(t, os.WriteFile(ckpt, tt.data, 0o600))
			c.ProduceEvents(t, "admin-audit", evs...)
			stop, stderr := ltRun(t, config)
			ltWaitCommitted(t, c, int64(len(evs)), stderr)
			require.Equal(t, 0, stop(), stderrTail(stderr))
			require.Contains(t, stderr.String(), "checkpoint not restored")
			require.Contains(t, stderr.String(), tt.reason)
			got, _ := ltTopicIDs(t, c)
			if tt.detect == "" {
				require.Equal(t, ktIDs(want), got)
			} else {
				require.NotEmpty(t, got)
			}

			// The shutdown checkpoint replaced the bad file.
			cfg, err := loadConfig(config)
			require.NoError(t, err)
			eng, err := detect.New(cfg.Detect)
			require.NoError(t, err)
			offsets, err := restoreCheckpoint(ckpt, "admin-audit", "shopguard-test", eng)
			require.NoError(t, err)
			require.Equal(t, map[int]int64{0: int64(len(evs))}, offsets)
		})
	}
}
