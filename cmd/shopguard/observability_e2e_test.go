package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/alert"
)

// TestObservabilityEndToEnd runs `shopguard demo` against the real
// Prometheus and Alertmanager (Debian packages prometheus and
// prometheus-alertmanager), configured from deploy/prometheus.yml and
// deploy/alertmanager.yml with only addresses, intervals and receiver URLs
// changed. It checks that
//
//   - Prometheus scrapes shopguard, loads dashboards/prometheus/shopguard-
//     rules.yml, evaluates every rule without error, and every recording rule
//     yields a series from the live metrics;
//   - the demo's findings arrive in Alertmanager as alerts (amtool alert
//     query), one per account or source, credential stuffing and account
//     takeover among them;
//   - Alertmanager routes them as the example configuration promises
//     (critical to pager and security, high to security) and inhibits an
//     account's lesser findings while it has a critical or high one.
//
// The demo stops as soon as all that has been seen (about 20 s here), or
// the test fails after 70 s naming what is still missing.
func TestObservabilityEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the end-to-end test with Prometheus and Alertmanager takes 20 to 70 s")
	}
	promBin := dbTool(t, "prometheus", "prometheus")
	amtool := dbTool(t, "amtool", "prometheus-alertmanager")
	amBin, err := exec.LookPath("prometheus-alertmanager") // Debian's name
	if err != nil {
		amBin = dbTool(t, "alertmanager", "prometheus-alertmanager")
	}
	for _, bin := range []string{promBin, amBin, amtool} {
		out, _ := exec.Command(bin, "--version").CombinedOutput()
		first, _, _ := strings.Cut(string(out), "\n")
		t.Logf("%s: %s", filepath.Base(bin), first)
	}
	start := time.Now()
	dir := t.TempDir() // before the processes: removed after they are stopped

	recv := &oeReceiver{got: map[string]map[string]int{}}
	hook := httptest.NewServer(recv)
	t.Cleanup(hook.Close)

	amAddr, promAddr, sgAddr := oeFreeAddr(t), oeFreeAddr(t), oeFreeAddr(t)
	amURL := "http://" + amAddr
	am := oeStart(t, "alertmanager", amBin,
		"--config.file="+oeAlertmanagerConfig(t, dir, hook.URL),
		"--storage.path="+filepath.Join(dir, "alertmanager"),
		"--web.listen-address="+amAddr,
		"--cluster.listen-address=", // no gossip: a single instance
		"--log.level=warn")
	prom := oeStart(t, "prometheus", promBin,
		"--config.file="+oePrometheusConfig(t, dir, sgAddr, amAddr, promAddr),
		"--storage.tsdb.path="+filepath.Join(dir, "prometheus"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	oeWaitReady(t, am, "http://"+amAddr+"/-/ready")
	oeWaitReady(t, prom, "http://"+promAddr+"/-/ready")

	// shopguard demo, in-process, with a JSONL sink beside the console so
	// that the test knows every finding the Alertmanager sink was given.
	findingsPath := filepath.Join(dir, "findings.jsonl")
	sgConfig := filepath.Join(dir, "shopguard.yml")
	require.NoError(t, os.WriteFile(sgConfig, fmt.Appendf(nil, "sinks:\n  file: {path: %q, fsync: false}\n", findingsPath), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	sgErr := &oeBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"demo", "--config", sgConfig, "--duration", "80s",
			"--kafka-listen", "127.0.0.1:0", "--listen", sgAddr, "--alertmanager", amURL},
			strings.NewReader(""), io.Discard, sgErr)
	}()
	stopped := false
	stop := func() int {
		cancel()
		select {
		case code := <-done:
			stopped = true
			return code
		case <-time.After(20 * time.Second):
			t.Fatalf("shopguard demo did not stop within 20 s; stderr:\n%s", sgErr.tail())
			return -1
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
		if t.Failed() {
			t.Logf("shopguard stderr:\n%s", sgErr.tail())
		}
	})

	// Wait until everything the test looks for has happened, or report
	// what has not after the deadline.
	p := &oeProm{t: t, base: "http://" + promAddr}
	var pending []string
	for deadline := time.Now().Add(70 * time.Second); ; {
		pending = pending[:0]
		pending = append(pending, p.pending(start, sgAddr, amAddr)...)
		alerts := oeQuery(t, amtool, amURL)
		names := map[string]bool{}
		for _, a := range alerts {
			names[a.Labels["alertname"]] = true
		}
		for _, want := range []string{"ShopguardCredentialStuffing", "ShopguardAccountTakeover"} {
			if !names[want] {
				pending = append(pending, "alert "+want+" in Alertmanager")
			}
		}
		for _, want := range [][2]string{
			{"security", "ShopguardCredentialStuffing"},
			{"pager", "ShopguardAccountTakeover"},
			{"security", "ShopguardAccountTakeover"},
		} {
			if recv.count(want[0], want[1]) == 0 {
				pending = append(pending, "notification of "+want[1]+" to receiver "+want[0])
			}
		}
		if len(pending) == 0 {
			break
		}
		select {
		case code := <-done:
			stopped = true
			t.Fatalf("shopguard demo exited with %d before the test was done; still waiting for: %s", code, strings.Join(pending, "; "))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still waiting for:\n  %s", time.Since(start).Round(time.Second), strings.Join(pending, "\n  "))
		}
		time.Sleep(time.Second)
	}
	t.Logf("all conditions met %s after start", time.Since(start).Round(time.Second))
	require.Equal(t, exitOK, stop(), "shopguard demo exit status")

	// The demo flushed its Alertmanager sink before exiting: every finding
	// it wrote to the JSONL sink is now an alert (one per account or
	// source: repeats update it), and there is no other finding alert.
	findings := oeFindings(t, findingsPath)
	require.NotEmpty(t, findings)
	want := map[string][]string{} // alert identity → finding ids
	for _, f := range findings {
		k := oeKey(alert.AlertName(f.Rule), f.Rule, string(f.Severity), f.ShopID, f.Actor, f.IP)
		want[k] = append(want[k], f.ID)
	}
	got := map[string]oeAlert{}
	arrived := map[string]int{}
	for _, a := range oeQuery(t, amtool, amURL) {
		if !oeFindingAlert(a) {
			continue // a health alert from Prometheus
		}
		l := a.Labels
		k := oeKey(l["alertname"], l["rule"], l["severity"], l["shop_id"], l["actor"], l["source"])
		got[k] = a
		arrived[l["alertname"]+" ("+l["severity"]+")"]++
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(want)), slices.Collect(maps.Keys(got)),
		"alerts in Alertmanager vs findings in the JSONL sink")
	for k, a := range got {
		require.Contains(t, want[k], a.Annotations["finding_id"], "alert %s carries the id of one of its findings", k)
	}

	// Inhibition (deploy/alertmanager.yml): while an account has a
	// critical finding, its high, medium and low ones are suppressed; while
	// it has a high one, its medium and low ones. Whether the demo's
	// findings in this short run overlap on an account depends on timing,
	// so shopguard's Alertmanager sink also sends a takeover, a bulk export
	// and a brute force of one account, and a brute force of another.
	// Alertmanager marks alerts when their group is flushed, so the last
	// ones to arrive may take a moment.
	oeSendFindings(t, amURL, []shopguard.Finding{
		{ID: "e2e-1", Rule: "brute_force", Severity: "medium", ShopID: "e2e-shop", Actor: "owner@e2e.example", IP: "198.51.100.7", Summary: "e2e"},
		{ID: "e2e-2", Rule: "account_takeover", Severity: "critical", ShopID: "e2e-shop", Actor: "owner@e2e.example", IP: "198.51.100.7", Summary: "e2e"},
		{ID: "e2e-3", Rule: "bulk_export", Severity: "high", ShopID: "e2e-shop", Actor: "owner@e2e.example", IP: "198.51.100.7", Summary: "e2e"},
		{ID: "e2e-4", Rule: "brute_force", Severity: "medium", ShopID: "e2e-shop", Actor: "staff@e2e.example", IP: "198.51.100.8", Summary: "e2e"},
	})
	var wrong []string
	inhibited := 0
	for deadline := time.Now().Add(15 * time.Second); ; {
		wrong, inhibited = oeInhibition(oeQuery(t, amtool, amURL))
		if len(wrong) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	require.Empty(t, wrong, "inhibition by deploy/alertmanager.yml")
	require.GreaterOrEqual(t, inhibited, 2, "the sent brute force and bulk export of the account with a takeover are inhibited")

	t.Logf("findings: %d; alerts in Alertmanager by name: %v; inhibited by a more severe finding of the same account: %d",
		len(findings), arrived, inhibited)
	t.Logf("notifications by receiver and alert: %v", recv.snapshot())
}

// oeFindingAlert reports whether a is a finding from shopguard's sink
// rather than a health alert from Prometheus (ShopguardFindingsSurge has
// a rule label too).
func oeFindingAlert(a oeAlert) bool {
	return slices.ContainsFunc(shopguard.Rules(), func(r string) bool {
		return a.Labels["rule"] == r && a.Labels["alertname"] == alert.AlertName(r)
	})
}

// oeKey is an alert's identity: the labels the Alertmanager sink sets.
func oeKey(alertname, rule, severity, shop, actor, source string) string {
	if actor != "" {
		source = "" // only source-keyed findings carry the source label
	}
	return strings.Join([]string{alertname, rule, severity, shop, actor, source}, "|")
}

// oeSendFindings posts findings to the Alertmanager through shopguard's
// own sink and returns once they are delivered.
func oeSendFindings(t *testing.T, amURL string, fs []shopguard.Finding) {
	t.Helper()
	cfg := alert.DefaultAlertmanagerConfig
	cfg.URLs = []string{amURL}
	m := alert.NewMetrics(nil)
	sink, err := alert.NewAlertmanager(cfg, m, nil)
	require.NoError(t, err)
	now := time.Now().UTC()
	for i := range fs {
		fs[i].Time = now
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	require.NoError(t, sink.Send(ctx, fs...))
	cancel() // Run flushes the queue before it returns
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Alertmanager sink did not flush within 20 s")
	}
}

// oeRank orders severities; inhibition rules have critical and high sources.
var oeRank = map[string]int{"low": 0, "medium": 1, "high": 2, "critical": 3}

// oeInhibition checks the state of every finding alert against the
// example configuration's inhibit rules and returns what does not match,
// and how many alerts are rightly inhibited.
func oeInhibition(alerts []oeAlert) (wrong []string, inhibited int) {
	top := map[string]int{} // account → most severe finding
	for _, a := range alerts {
		if oeFindingAlert(a) && a.Labels["actor"] != "" {
			acc := a.Labels["shop_id"] + "/" + a.Labels["actor"]
			top[acc] = max(top[acc], oeRank[a.Labels["severity"]])
		}
	}
	for _, a := range alerts {
		if !oeFindingAlert(a) {
			continue
		}
		acc, rank := a.Labels["shop_id"]+"/"+a.Labels["actor"], oeRank[a.Labels["severity"]]
		should := a.Labels["actor"] != "" && top[acc] >= oeRank["high"] && rank < top[acc]
		is := a.Status.State == "suppressed" && len(a.Status.InhibitedBy) > 0
		switch {
		case should && is:
			inhibited++
		case should:
			wrong = append(wrong, fmt.Sprintf("%s %s is %s, want inhibited by the account's more severe finding", a.Labels["alertname"], acc, a.Status.State))
		case len(a.Status.InhibitedBy) > 0 || a.Status.State != "active":
			wrong = append(wrong, fmt.Sprintf("%s %s%s is %s (inhibited by %v), want active", a.Labels["alertname"], acc, a.Labels["source"], a.Status.State, a.Status.InhibitedBy))
		}
	}
	return wrong, inhibited
}

// oeFreeAddr returns a loopback address with a port that was free a moment
// ago, for a server the test starts and must name in another's config.
func oeFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// oeBuffer is an io.Writer safe for concurrent use that keeps what a
// process or Main writes, for failure messages.
type oeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *oeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// tail returns the last few KiB written.
func (b *oeBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.b.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return s
}

// oeProc is a server the test started.
type oeProc struct {
	name string
	cmd  *exec.Cmd
	out  *oeBuffer
	exit chan struct{} // closed when it has exited
}

// oeStart starts a server in its own process group and stops the whole
// group when the test ends (SIGTERM, then SIGKILL after 10 s). If the test
// failed, the server's output is logged.
func oeStart(t *testing.T, name, bin string, args ...string) *oeProc {
	t.Helper()
	p := &oeProc{name: name, cmd: exec.Command(bin, args...), out: &oeBuffer{}, exit: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, p.cmd.Start(), "start %s", name)
	go func() { _ = p.cmd.Wait(); close(p.exit) }()
	t.Cleanup(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exit:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exit
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.tail())
		}
	})
	return p
}

// oeWaitReady waits up to 20 s for a server's readiness endpoint.
func oeWaitReady(t *testing.T, p *oeProc, url string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; {
		select {
		case <-p.exit:
			t.Fatalf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, p.out.tail())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s after 20 s (last: %v)\n%s", p.name, url, err, p.out.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// oeYAML reads a YAML file of the repository as a generic document.
func oeYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(data, &doc), path)
	return doc
}

// oeWrite writes doc as YAML to dir/name and returns the path.
func oeWrite(t *testing.T, dir, name string, doc map[string]any) string {
	t.Helper()
	data, err := yaml.Marshal(doc)
	require.NoError(t, err)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

// oeAlertmanagerConfig is deploy/alertmanager.yml with every receiver's
// webhook pointed at hook/<receiver name> and the grouping delays cut to
// a second, so that notifications arrive within the test. Routes and
// inhibitions are unchanged.
func oeAlertmanagerConfig(t *testing.T, dir, hook string) string {
	t.Helper()
	doc := oeYAML(t, "deploy/alertmanager.yml")
	receivers, ok := doc["receivers"].([]any)
	require.True(t, ok, "deploy/alertmanager.yml: receivers")
	for _, r := range receivers {
		r := r.(map[string]any)
		hooks, ok := r["webhook_configs"].([]any)
		require.True(t, ok, "deploy/alertmanager.yml: receiver %v has no webhook_configs", r["name"])
		for _, h := range hooks {
			h.(map[string]any)["url"] = hook + "/" + r["name"].(string)
		}
	}
	var fast func(route map[string]any)
	fast = func(route map[string]any) {
		route["group_wait"], route["group_interval"] = "1s", "1s"
		routes, _ := route["routes"].([]any)
		for _, r := range routes {
			fast(r.(map[string]any))
		}
	}
	route, ok := doc["route"].(map[string]any)
	require.True(t, ok, "deploy/alertmanager.yml: route")
	fast(route)
	return oeWrite(t, dir, "alertmanager.yml", doc)
}

// oePrometheusConfig is deploy/prometheus.yml with the compose addresses
// replaced by the test's, the rules loaded from the repository, and scrape
// and evaluation every second.
func oePrometheusConfig(t *testing.T, dir, shopguardAddr, amAddr, promAddr string) string {
	t.Helper()
	doc := oeYAML(t, "deploy/prometheus.yml")
	rules, err := filepath.Abs(filepath.Join(repoRoot, "dashboards", "prometheus", "shopguard-rules.yml"))
	require.NoError(t, err)
	doc["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	doc["rule_files"] = []any{rules}
	doc["alerting"] = map[string]any{"alertmanagers": []any{
		map[string]any{"static_configs": []any{map[string]any{"targets": []any{amAddr}}}},
	}}
	jobs, ok := doc["scrape_configs"].([]any)
	require.True(t, ok, "deploy/prometheus.yml: scrape_configs")
	seen := map[string]bool{}
	for _, j := range jobs {
		j := j.(map[string]any)
		name := j["job_name"].(string)
		target := map[string]string{"shopguard": shopguardAddr, "prometheus": promAddr}[name]
		require.NotEmpty(t, target, "deploy/prometheus.yml: unexpected job %q", name)
		j["static_configs"] = []any{map[string]any{"targets": []any{target}}}
		seen[name] = true
	}
	require.True(t, seen["shopguard"], `deploy/prometheus.yml: no job "shopguard", which ShopguardDown selects`)
	return oeWrite(t, dir, "prometheus.yml", doc)
}

// oeReceiver is the webhook the Alertmanager's receivers point at; it
// counts notified alerts by receiver (the URL path) and alertname.
type oeReceiver struct {
	mu  sync.Mutex
	got map[string]map[string]int
}

func (r *oeReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var msg struct {
		Receiver string `json:"receiver"`
		Alerts   []struct {
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	}
	if err := json.NewDecoder(req.Body).Decode(&msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := strings.TrimPrefix(req.URL.Path, "/")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got[name] == nil {
		r.got[name] = map[string]int{}
	}
	for _, a := range msg.Alerts {
		r.got[name][a.Labels["alertname"]]++
	}
}

func (r *oeReceiver) count(receiver, alertname string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[receiver][alertname]
}

func (r *oeReceiver) snapshot() map[string]map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]map[string]int{}
	for k, v := range r.got {
		out[k] = maps.Clone(v)
	}
	return out
}

// oeAlert is an alert as `amtool alert query -o json` prints it (the
// Alertmanager v2 API's gettable alert).
type oeAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Status      struct {
		State       string   `json:"state"`
		InhibitedBy []string `json:"inhibitedBy"`
	} `json:"status"`
}

// oeQuery lists every finding and health alert in the Alertmanager with
// amtool, whatever its state (active, inhibited, silenced, unprocessed).
func oeQuery(t *testing.T, amtool, amURL string) []oeAlert {
	t.Helper()
	cmd := exec.Command(amtool, "alert", "query", "--alertmanager.url="+amURL, "-o", "json",
		"--active", "--inhibited", "--silenced", "--unprocessed", "alertname=~Shopguard.*")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "amtool alert query: %s", stderr.String())
	var alerts []oeAlert
	require.NoError(t, json.Unmarshal(out, &alerts), "amtool alert query output: %s", out)
	return alerts
}

// oeFindings reads the findings of a JSONL sink.
func oeFindings(t *testing.T, path string) []shopguard.Finding {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []shopguard.Finding
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var fd shopguard.Finding
		require.NoError(t, json.Unmarshal(sc.Bytes(), &fd), "%s: %s", path, sc.Bytes())
		out = append(out, fd)
	}
	require.NoError(t, sc.Err())
	return out
}

// oeProm asks Prometheus's HTTP API.
type oeProm struct {
	t    *testing.T
	base string
}

func (p *oeProm) get(path string, v any) error {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// query returns the sample values of an instant query.
func (p *oeProm) query(q string) ([]string, error) {
	var data struct {
		Result []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	var vals []string
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		vals = append(vals, s)
	}
	return vals, nil
}

// pending lists what Prometheus has not done yet: scraped shopguard with
// events counted, discovered the Alertmanager, evaluated every rule
// without error since start, and recorded a series for every recording
// rule. A rule that evaluates with an error fails the test at once.
func (p *oeProm) pending(start time.Time, shopguardAddr, amAddr string) []string {
	var todo []string
	up, err := p.query(`up{job="shopguard", instance="` + shopguardAddr + `"} == 1`)
	if err != nil || len(up) == 0 {
		todo = append(todo, fmt.Sprintf("Prometheus scraping shopguard (up == 1; %v)", err))
	}
	ev, err := p.query(`sum(shopguard_events_total{job="shopguard"}) > 0`)
	if err != nil || len(ev) == 0 {
		todo = append(todo, fmt.Sprintf("shopguard_events_total > 0 in Prometheus (%v)", err))
	}

	var ams struct {
		Active []struct {
			URL string `json:"url"`
		} `json:"activeAlertmanagers"`
	}
	err = p.get("/api/v1/alertmanagers", &ams)
	found := false
	for _, a := range ams.Active {
		found = found || strings.HasPrefix(a.URL, "http://"+amAddr+"/")
	}
	if !found {
		todo = append(todo, fmt.Sprintf("Alertmanager %s among Prometheus's active Alertmanagers (%v)", amAddr, err))
	}

	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name           string    `json:"name"`
				Type           string    `json:"type"`
				Health         string    `json:"health"`
				LastError      string    `json:"lastError"`
				LastEvaluation time.Time `json:"lastEvaluation"`
			} `json:"rules"`
			LastEvaluation time.Time `json:"lastEvaluation"`
		} `json:"groups"`
	}
	if err := p.get("/api/v1/rules", &rules); err != nil {
		return append(todo, fmt.Sprintf("rules from Prometheus (%v)", err))
	}
	groups := map[string]bool{}
	for _, g := range rules.Groups {
		groups[g.Name] = true
		if g.LastEvaluation.Before(start) {
			todo = append(todo, "evaluation of rule group "+g.Name)
			continue
		}
		for _, r := range g.Rules {
			require.NotEqual(p.t, "err", r.Health, "rule %s in group %s: %s", r.Name, g.Name, r.LastError)
			if r.Type != "recording" {
				continue
			}
			if vals, err := p.query(r.Name); err != nil || len(vals) == 0 {
				todo = append(todo, fmt.Sprintf("a series of recording rule %s (%v)", r.Name, err))
			}
		}
	}
	for _, g := range []string{"shopguard.recording", "shopguard.alerts"} {
		if !groups[g] {
			todo = append(todo, "rule group "+g+" loaded")
		}
	}
	return todo
}
