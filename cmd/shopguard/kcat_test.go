package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// TestE2EKcatDemo is the interop test of issue 4: kcat, a librdkafka
// client, produces a leaked-list campaign into `shopguard demo
// --generate=false` and reads the findings and the dead letters back from
// the embedded broker. The scenario goes in in one kcat call without keys,
// as the README tells users to do, so it lands wherever kcat's partitioner
// puts it; the demo must still find the takeover that follows the stuffing.
func TestE2EKcatDemo(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not on PATH: install it (apt-get install kcat; .ci/run does) to run the kcat interop test")
	}
	kafkaAddr, listen := e2eFreeAddr(t), e2eFreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr e2eBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"demo", "--generate=false", "--kafka-listen", kafkaAddr, "--listen", listen, "--duration", "40s"},
			nil, &stdout, &stderr)
	}()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "demo never ready; stderr:\n%s", stderr.tail())

	// 25 accounts fail from one address within 25 s, then one of them logs
	// in from it a minute later; a line that is not JSON sits in between.
	t0 := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
	line := func(at time.Duration, shop, action string) string {
		return fmt.Sprintf(`{"time":%q,"shop_id":%q,"actor":"owner@%s.example","action":%q,"ip":"45.95.147.9"}`,
			t0.Add(at).Format(time.RFC3339), shop, shop, action)
	}
	var lines []string
	for i := range 25 {
		lines = append(lines, line(time.Duration(i)*time.Second, fmt.Sprintf("shop-%d", i), "login.failure"))
		if i == 12 {
			lines = append(lines, "this line is not JSON")
		}
	}
	lines = append(lines, line(time.Minute, "shop-3", "login.success"))
	p := exec.Command(kcat, "-P", "-b", kafkaAddr, "-t", e2eAuditTopic)
	p.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := p.CombinedOutput()
	require.NoError(t, err, "kcat -P: %s", out)

	// kcat reads the findings topic from the beginning to its end; poll
	// until both findings are there. Each record is printed as
	// key TAB value, and the key must be the finding's id.
	var got map[string]shopguard.Finding
	require.Eventually(t, func() bool {
		out, err := exec.Command(kcat, "-C", "-b", kafkaAddr, "-t", e2eFindingsTopic, "-o", "beginning", "-e", "-q",
			"-f", "%k\t%s\n").Output()
		if err != nil {
			return false
		}
		got = map[string]shopguard.Finding{}
		for rec := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
			key, value, ok := strings.Cut(rec, "\t")
			var f shopguard.Finding
			if !ok || json.Unmarshal([]byte(value), &f) != nil {
				continue
			}
			require.Equal(t, f.ID, key, "findings are keyed by their id")
			got[f.Rule] = f
		}
		return len(got) >= 3
	}, 20*time.Second, 250*time.Millisecond, "findings topic never held three findings; stderr:\n%s", stderr.tail())
	require.Len(t, got, 3, "exactly the burst, stuffing and takeover: %v", got)
	stuffing, takeover := got[shopguard.RuleCredentialStuffing], got[shopguard.RuleAccountTakeover]
	// One failure a second from one address: the fifth is a failure_burst.
	require.Equal(t, t0.Add(4*time.Second), got[shopguard.RuleFailureBurst].Time)
	require.Equal(t, "45.95.147.9", stuffing.IP)
	require.Equal(t, t0.Add(19*time.Second), stuffing.Time, "fires at the 20th distinct account")
	require.Equal(t, "shop-3", takeover.ShopID)
	require.Equal(t, t0.Add(time.Minute), takeover.Time)

	// The bad line went to the dead-letter topic with its reason in a
	// header.
	out, err = exec.Command(kcat, "-C", "-b", kafkaAddr, "-t", e2eDLQTopic, "-o", "beginning", "-e", "-q",
		"-f", "%h|%s\n").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "this line is not JSON")
	require.Contains(t, string(out), "not_json")

	// The console shows them too, and the demo stops cleanly.
	require.Contains(t, stdout.String(), "credential_stuffing")
	require.Contains(t, stdout.String(), "account_takeover")
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.tail())
	case <-time.After(10 * time.Second):
		t.Fatalf("demo did not stop within 10 s; stderr:\n%s", stderr.tail())
	}
	// The broker is gone with the demo.
	_, err = net.DialTimeout("tcp", kafkaAddr, time.Second)
	require.Error(t, err)
}
