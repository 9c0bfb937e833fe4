package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

var writeExamples = flag.Bool("write-examples", false, "rewrite the samples of examples/<format>/ from detect/testdata/leaked-list-chain")

// formatWriters write one native event in each format of SPEC §7, the way
// the configs in examples/<format>/ expect it.
var formatWriters = map[string]struct {
	file  string
	write func(ev shopguard.Event) string
}{
	"ecs": {"audit.ndjson", func(ev shopguard.Event) string {
		m := map[string]any{"@timestamp": ev.Time.Format(time.RFC3339Nano),
			"source": map[string]any{"ip": ev.IP.String()}, "user": map[string]any{"name": ev.Actor},
			"organization": map[string]any{"id": ev.ShopID}}
		e := map[string]any{}
		switch ev.Action {
		case shopguard.ActionLoginSuccess, shopguard.ActionLoginFailure:
			e["category"] = []string{"authentication"}
			e["action"] = "user_login"
			e["outcome"] = map[bool]string{true: "success", false: "failure"}[ev.Action == shopguard.ActionLoginSuccess]
		case shopguard.ActionCustomersExport:
			e["action"] = "admin_customers_export"
		default:
			e["action"] = ev.Action.String()
		}
		if ev.Reason != "" {
			e["reason"] = ev.Reason
		}
		m["event"] = e
		if ev.Records > 0 {
			m["labels"] = map[string]any{"records": strconv.FormatInt(ev.Records, 10)}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}},
	"ocsf": {"audit.ndjson", func(ev shopguard.Event) string {
		m := map[string]any{"time": ev.Time.UnixMilli(), "user": map[string]any{"name": ev.Actor, "org": map[string]any{"uid": ev.ShopID}},
			"src_endpoint": map[string]any{"ip": ev.IP.String()}, "metadata": map[string]any{"version": "1.3.0"}}
		switch ev.Action {
		case shopguard.ActionLoginSuccess, shopguard.ActionLoginFailure:
			m["class_uid"], m["activity_id"] = 3002, 1
			m["status_id"] = map[bool]int{true: 1, false: 2}[ev.Action == shopguard.ActionLoginSuccess]
		default:
			m["class_uid"], m["activity_name"] = 6003, "Export Customers"
			m["unmapped"] = map[string]any{"records": ev.Records}
		}
		if ev.Reason != "" {
			m["status_detail"] = ev.Reason
		}
		b, _ := json.Marshal(m)
		return string(b)
	}},
	"mapping": {"audit.jsonl", func(ev shopguard.Event) string {
		m := map[string]any{"occurred_at": ev.Time.UnixMilli(), "tenant": map[string]any{"slug": ev.ShopID},
			"principal": map[string]any{"login": ev.Actor}, "request": map[string]any{"client_ip": ev.IP.String()},
			"type": map[shopguard.Action]string{shopguard.ActionLoginSuccess: "LOGIN_OK", shopguard.ActionLoginFailure: "LOGIN_FAILED",
				shopguard.ActionCustomersExport: "CUSTOMER_EXPORT"}[ev.Action]}
		if ev.Reason != "" {
			m["outcome"] = map[string]any{"reason": ev.Reason}
		}
		if ev.Records > 0 {
			m["payload"] = map[string]any{"rows": ev.Records}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}},
	"nginx": {"access.log", func(ev shopguard.Event) string {
		req, status := "POST /admin/login HTTP/1.1", 302
		switch ev.Action {
		case shopguard.ActionLoginFailure:
			status = 401
		case shopguard.ActionCustomersExport:
			req, status = "GET /admin/customers/export?format=csv HTTP/1.1", 200
		}
		dash := func(s string) string {
			if s == "" {
				return "-"
			}
			return s
		}
		rows := "-"
		if ev.Records > 0 {
			rows = strconv.FormatInt(ev.Records, 10)
		}
		return fmt.Sprintf(`%s - - [%s] "%s" %d 512 "-" "%s" shop=%s admin=%s rows=%s why=%s`,
			ev.IP, ev.Time.In(time.FixedZone("", 9*3600)).Format("02/Jan/2006:15:04:05 -0700"), req, status,
			dash(ev.UserAgent), ev.ShopID, ev.Actor, rows, dash(ev.Reason))
	}},
}

// readNative decodes a native JSONL file.
func readNative(t *testing.T, path string) []shopguard.Event {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var evs []shopguard.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev shopguard.Event
		require.NoError(t, ingest.Decode(bytes.Clone(sc.Bytes()), &ev))
		evs = append(evs, ev)
	}
	return evs
}

// TestFormatsGiveNativeFindings writes the credential stuffing → takeover →
// bulk export chain of detect/testdata/leaked-list-chain in every format
// and replays it with the config of examples/<format>/: the findings must
// be those of the native events, id for id.
func TestFormatsGiveNativeFindings(t *testing.T) {
	native := filepath.Join("..", "..", "detect", "testdata", "leaked-list-chain", "events.jsonl")
	want := e2eReplay(t, native)
	require.NotEmpty(t, want)
	rules := map[string]bool{}
	for _, f := range want {
		rules[f.Rule] = true
	}
	require.True(t, rules[shopguard.RuleCredentialStuffing] && rules[shopguard.RuleAccountTakeover] && rules[shopguard.RuleBulkExport], "%v", rules)
	evs := readNative(t, native)
	for name, w := range formatWriters {
		t.Run(name, func(t *testing.T) {
			var sb strings.Builder
			for _, ev := range evs {
				sb.WriteString(w.write(ev))
				sb.WriteByte('\n')
			}
			// An nginx log also has requests that are no audit event.
			if name == "nginx" {
				sb.WriteString(`10.0.0.9 - - [07/Jan/2026:18:00:00 +0900] "GET /assets/app.css HTTP/1.1" 200 10 "-" "Mozilla/5.0" shop=benign-0 admin=- rows=- why=-` + "\n")
			}
			in := filepath.Join(t.TempDir(), w.file)
			require.NoError(t, os.WriteFile(in, []byte(sb.String()), 0o644))
			if *writeExamples {
				require.NoError(t, os.WriteFile(filepath.Join("..", "..", "examples", name, w.file), []byte(sb.String()), 0o644))
			}
			out := filepath.Join(t.TempDir(), "findings.jsonl")
			code, _, errs := e2eMain(t, "", "replay", "--geoip", "demo", "--format", name,
				"--config", filepath.Join("..", "..", "examples", name, "shopguard.yml"), "--out", out, in)
			require.Equal(t, 0, code, errs)
			require.Contains(t, errs, fmt.Sprintf("%d valid, 0 invalid", len(evs)))
			if name == "nginx" {
				require.Contains(t, errs, "1 unmatched (skipped)")
			}
			got := e2eFindingsFile(t, out)
			require.Equal(t, e2eIDs(want), e2eIDs(got))
			for id, f := range want {
				require.Equal(t, f, got[id])
			}
		})
	}
}

// TestExamplesReplay replays each committed sample with its config.
func TestExamplesReplay(t *testing.T) {
	for name, w := range formatWriters {
		dir := filepath.Join("..", "..", "examples", name)
		code, _, errs := e2eMain(t, "", "replay", "--config", filepath.Join(dir, "shopguard.yml"), "--out", os.DevNull, filepath.Join(dir, w.file))
		require.Equal(t, 0, code, errs)
		require.Contains(t, errs, " 0 invalid", name)
		require.NotContains(t, errs, "findings: 0", name)
	}
}

func TestFormatConfigErrors(t *testing.T) {
	dir := t.TempDir()
	events := filepath.Join(dir, "e.jsonl")
	require.NoError(t, os.WriteFile(events, []byte("\n"), 0o644))
	cfg := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(`input:
  format: nginx
  nginx:
    log_format: '$remote_addr [$time_local] "$request" $status $host $remote_user'
    fields: {ip: $remote_addr, time: $time_local, shop_id: $host, actor: $foo}
    routes:
      - {path: '^/admin/(login', action: login.success}
      - {status: [6xx], action: login.failure}
`), 0o644))
	code, _, errs := e2eMain(t, "", "replay", "--config", cfg, events)
	require.Equal(t, 2, code)
	require.Contains(t, errs, "input.nginx.fields.actor: unknown variable $foo")
	require.Contains(t, errs, "input.nginx.routes[0].path")
	require.Contains(t, errs, `input.nginx.routes[1].status[0]: "6xx"`)
	code, _, errs = e2eMain(t, "", "replay", "--format", "xml", events)
	require.Equal(t, 2, code)
	require.Contains(t, errs, `input.format: "xml"`)
	code, _, errs = e2eMain(t, "", "replay", "--format", "nginx", events)
	require.Equal(t, 2, code)
	require.Contains(t, errs, "input.nginx.log_format: is required")
}

// TestFormatKafkaRange replays the chain from a Kafka topic in the nginx
// and ECS formats: the range source decodes with the configured format,
// counts the unmatched line and gives the native findings.
func TestFormatKafkaRange(t *testing.T) {
	native := filepath.Join("..", "..", "detect", "testdata", "leaked-list-chain", "events.jsonl")
	want := e2eReplay(t, native)
	evs := readNative(t, native)
	for _, name := range []string{"nginx", "ecs"} {
		t.Run(name, func(t *testing.T) {
			topic := "audit-" + name
			c := kafkatest.New(t, map[string]int32{topic: 1})
			var lines []string
			for _, ev := range evs {
				lines = append(lines, formatWriters[name].write(ev))
			}
			if name == "nginx" {
				lines = append(lines[:10:10], append([]string{`10.0.0.9 - - [07/Jan/2026:18:00:00 +0900] "GET /favicon.ico HTTP/1.1" 200 10 "-" "Mozilla/5.0" shop=benign-0 admin=- rows=- why=-`}, lines[10:]...)...)
			}
			c.ProduceLines(t, topic, 1, lines...)
			out := filepath.Join(t.TempDir(), "findings.jsonl")
			code, _, errs := e2eMain(t, "", "replay", "--geoip", "demo", "--format", name,
				"--config", filepath.Join("..", "..", "examples", name, "shopguard.yml"), "--out", out,
				"--brokers", c.Addrs()[0], "--topic", topic, "--since", "2026-01-01T00:00:00Z", "--until", "2027-01-01T00:00:00Z")
			require.Equal(t, 0, code, errs)
			require.Contains(t, errs, fmt.Sprintf("%d valid, 0 invalid", len(evs)))
			if name == "nginx" {
				require.Contains(t, errs, "1 unmatched (skipped)")
			}
			got := e2eFindingsFile(t, out)
			require.Equal(t, e2eIDs(want), e2eIDs(got))
		})
	}
}

// TestFormatRunScaleOut runs the chain in the ECS format through `run` with
// scale_out enabled on three partitions: the repartitioner decodes with
// the configured format and the stages read the events re-encoded in the
// native one, so the findings are the native replay's.
func TestFormatRunScaleOut(t *testing.T) {
	native := filepath.Join("..", "..", "detect", "testdata", "leaked-list-chain", "events.jsonl")
	want := e2eReplay(t, native)
	evs := readNative(t, native)
	c := kafkatest.New(t, map[string]int32{e2eAuditTopic: 3, e2eFindingsTopic: 1, e2eDLQTopic: 1})
	var lines []string
	for _, ev := range evs {
		lines = append(lines, formatWriters["ecs"].write(ev))
	}
	c.ProduceLines(t, e2eAuditTopic, 3, lines...)

	dir := t.TempDir()
	rc := e2eRunConfig{brokers: c.Addrs()[0], listen: e2eFreeAddr(t), geoip: e2eGeoDB(t, dir), findings: filepath.Join(dir, "findings.jsonl")}
	config := rc.write(t)
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("scale_out: {enabled: true, idle_timeout: 200ms, snapshot_interval: 300ms}\ninput:\n  format: ecs\n  actions: {admin_customers_export: customers.export}\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	r := e2eStartRun(t, config, rc.listen)
	require.Eventually(t, func() bool {
		got, _ := e2eTopicFindings(t, c)
		return len(got) >= len(want)
	}, 60*time.Second, 100*time.Millisecond, "findings never complete; stderr:\n%s", r.stderr.tail())
	require.Equal(t, 0, r.stop(), r.stderr.tail())
	got, _ := e2eTopicFindings(t, c)
	require.Equal(t, e2eIDs(want), e2eIDs(got))
	for id, f := range want {
		require.Equal(t, f, got[id])
	}
}
