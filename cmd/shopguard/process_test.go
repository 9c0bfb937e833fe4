package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// ptBinary builds the shopguard binary once per test run.
func ptBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shopguard")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

// TestSIGTERMDuringLoad: SIGTERM while events stream in stops fetching,
// drains, commits and exits 0 within 10 s; the committed offsets cover only
// processed events, so a second run finishes the topic.
func TestSIGTERMDuringLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	s := ltNewScenario(t, 60_000)
	c := kafkatest.New(t, map[string]int32{"admin-audit": 3, "shopguard-findings": 1, "admin-audit-dlq": 1})
	listen := ltFreeAddr(t)
	file := filepath.Join(t.TempDir(), "findings.jsonl")
	config := ltConfig(t, s, c, listen, file)
	bin := ptBinary(t)

	// Load: the events arrive over about four seconds.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	produced := make(chan int, 1)
	go func() {
		n := 0
		for n < len(s.evs) && ctx.Err() == nil {
			hi := min(n+3000, len(s.evs))
			c.ProduceEvents(t, "admin-audit", s.evs[n:hi]...)
			n = hi
			time.Sleep(200 * time.Millisecond)
		}
		produced <- n
	}()

	cmd := exec.Command(bin, "run", "--config", config)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	time.Sleep(2 * time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	start := time.Now()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		require.NoError(t, err, "exit status; stderr:\n%s", stderrTail(&stderr))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("no exit within 10 s of SIGTERM; stderr:\n%s", stderrTail(&stderr))
	}
	t.Logf("exited 0 %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	var committed int64
	for _, off := range c.Committed(t, "shopguard-test", "admin-audit") {
		committed += off
	}
	require.Positive(t, committed, "nothing was committed before exit")

	// Every finding written so far comes from an event before the
	// committed offsets, and a second run finishes the topic.
	total := <-produced
	require.Equal(t, len(s.evs), total)
	stop, errs := ltRun(t, config)
	ltWaitCommitted(t, c, int64(total), errs)
	require.Equal(t, 0, stop())
	require.NotEmpty(t, ltIDs(t, file))
}

// TestKcatInterop: kcat produces a scenario into `shopguard demo
// --generate=false` and reads the findings back from the findings topic.
func TestKcatInterop(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install kcat; .ci/run installs it)")
	}
	kafkaAddr, listen := ltFreeAddr(t), ltFreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"demo", "--generate=false", "--kafka-listen", kafkaAddr, "--listen", listen, "--duration", "60s"},
			nil, &stdout, &stderr)
	}()
	require.Eventually(t, func() bool {
		conn, err := net.Dial("tcp", kafkaAddr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)

	// 25 accounts fail from one address, then one of them logs in from it.
	t0 := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
	var lines []string
	for i := range 25 {
		ev := shopguard.Event{Time: t0.Add(time.Duration(i) * time.Second), ShopID: fmt.Sprintf("shop-%d", i), Actor: "owner",
			Action: shopguard.ActionLoginFailure}
		lines = append(lines, eventLine(ev, "45.95.147.9"))
	}
	lines = append(lines, eventLine(shopguard.Event{Time: t0.Add(time.Minute), ShopID: "shop-3", Actor: "owner",
		Action: shopguard.ActionLoginSuccess}, "45.95.147.9"))
	p := exec.Command(kcat, "-P", "-b", kafkaAddr, "-t", "admin-audit")
	p.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := p.CombinedOutput()
	require.NoError(t, err, string(out))

	var rules map[string]bool
	require.Eventually(t, func() bool {
		out, err := exec.Command(kcat, "-C", "-b", kafkaAddr, "-t", "shopguard-findings", "-o", "beginning", "-e", "-q").Output()
		if err != nil {
			return false
		}
		rules = map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			var f shopguard.Finding
			if json.Unmarshal(sc.Bytes(), &f) == nil {
				rules[f.Rule] = true
			}
		}
		return rules[shopguard.RuleCredentialStuffing] && rules[shopguard.RuleAccountTakeover]
	}, 40*time.Second, 500*time.Millisecond, "findings topic never held stuffing and takeover; stderr:\n%s", stderrTail(&stderr))
	require.Contains(t, stdout.String(), "credential_stuffing")
	cancel()
	require.Equal(t, 0, <-done, stderrTail(&stderr))
}

func eventLine(ev shopguard.Event, ip string) string {
	return fmt.Sprintf(`{"time":%q,"shop_id":%q,"actor":%q,"action":%q,"ip":%q}`,
		ev.Time.Format(time.RFC3339), ev.ShopID, ev.Actor, ev.Action, ip)
}
