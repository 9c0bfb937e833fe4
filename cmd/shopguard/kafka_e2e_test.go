package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// The audit topics of these tests have six partitions, keyed by account:
// the single-process pipeline merges them by event time (kafka.lateness),
// so it judges the events in the file's order and gives exactly the file
// replay's findings (read as fetched, it missed takeovers that follow
// credential stuffing of other accounts, and stuffing fired at other
// events).
const e2ePartitions = 6

// e2eCluster starts a kfake cluster with the audit topic (e2ePartitions
// partitions), the findings and the dead-letter topics (one each).
func e2eCluster(t *testing.T) *kafkatest.Cluster {
	return kafkatest.New(t, map[string]int32{e2eAuditTopic: e2ePartitions, e2eFindingsTopic: 1, e2eDLQTopic: 1})
}

// e2eWaitReady waits until /readyz answers 200.
func e2eWaitReady(t *testing.T, r *e2eRunning) {
	t.Helper()
	require.Eventually(t, func() bool {
		code, _ := r.get("/readyz")
		return code == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "never ready; stderr:\n%s", r.stderr.tail())
}

// TestE2ERunMatchesReplay produces generated traffic with attacks, keyed by
// account, into the audit topic, runs `shopguard run` on it until the
// findings topic holds as many findings as a file replay of the same events
// gives, and checks that the findings are the replay's to the last evidence
// field, on the findings topic and in the JSONL file, that every message
// was committed, and what the HTTP endpoints say along the way.
func TestE2ERunMatchesReplay(t *testing.T) {
	dir := t.TempDir()
	evs := e2eEvents(t, 5, 60_000)
	want := e2eReplay(t, e2eWriteEvents(t, dir, "events.jsonl", evs))
	require.NotEmpty(t, want)

	c := e2eCluster(t)
	c.ProduceEvents(t, e2eAuditTopic, evs[:30_000]...)
	c.ProduceLines(t, e2eAuditTopic, 1, `{"time":"2026-01-05T00:08:00Z","shop_id":"s","actor":"a","ip":"192.0.2.1"}`, `<html>`)
	c.ProduceEvents(t, e2eAuditTopic, evs[30_000:]...)
	total := int64(len(evs) + 2)

	rc := e2eRunConfig{brokers: c.Addrs()[0], listen: e2eFreeAddr(t), geoip: e2eGeoDB(t, dir), findings: filepath.Join(dir, "findings.jsonl")}
	r := e2eStartRun(t, rc.write(t), rc.listen)
	require.Eventually(t, func() bool { code, _ := r.get("/healthz"); return code == http.StatusOK },
		10*time.Second, 10*time.Millisecond, "healthz; stderr:\n%s", r.stderr.tail())
	e2eWaitReady(t, r)

	require.Eventually(t, func() bool { return len(c.ReadAll(t, e2eFindingsTopic)) >= len(want) },
		30*time.Second, 50*time.Millisecond, "the findings topic never held %d findings; stderr:\n%s", len(want), r.stderr.tail())
	e2eWaitCommitted(t, c, total, r.stderr)

	_, metrics := r.get("/metrics")
	var findings float64
	for _, rule := range shopguard.Rules() {
		for _, sev := range []string{"low", "medium", "high", "critical"} {
			findings += e2eMetricValue(t, metrics, `shopguard_findings_total{rule="`+rule+`",severity="`+sev+`"}`)
		}
	}
	require.Equal(t, float64(len(want)), findings)
	require.Equal(t, float64(total), e2eMetricValue(t, metrics, "shopguard_kafka_messages_total"))
	require.Equal(t, 1.0, e2eMetricValue(t, metrics, `shopguard_events_invalid_total{reason="missing_field"}`))
	require.Equal(t, 1.0, e2eMetricValue(t, metrics, `shopguard_events_invalid_total{reason="not_json"}`))
	require.Equal(t, 0.0, e2eMetricValue(t, metrics, `shopguard_kafka_consumer_lag{partition="0"}`))
	require.Equal(t, 1.0, e2eMetricValue(t, metrics, `shopguard_sink_up{sink="kafka"}`))
	require.Equal(t, 1.0, e2eMetricValue(t, metrics, `shopguard_sink_up{sink="file"}`))
	require.Equal(t, 2.0, e2eMetricValue(t, metrics, `shopguard_dead_letters_total{result="written"}`))
	require.Contains(t, metrics, "shopguard_build_info{")

	require.Equal(t, 0, r.stop(), r.stderr.tail())
	got, n := e2eTopicFindings(t, c)
	require.Equal(t, len(want), n, "no finding was sent twice")
	e2eRequireSameFindings(t, want, got)
	e2eRequireSameFindings(t, want, e2eFindingsFile(t, rc.findings))
	dead := c.ReadAll(t, e2eDLQTopic)
	require.Len(t, dead, 2)
	for _, m := range dead {
		reason, ok := kafkatest.Header(m, kafka.HeaderReason)
		require.True(t, ok, "dead letter headers: %v", m.Headers)
		require.Contains(t, []string{"missing_field", "not_json"}, reason)
	}
}

// e2eRequireSameFindings fails unless got holds exactly the findings of
// want, with the same JSON form (ids, times, summaries and evidence).
func e2eRequireSameFindings(t *testing.T, want, got map[string]shopguard.Finding) {
	t.Helper()
	require.Equal(t, e2eIDs(want), e2eIDs(got))
	for id, w := range want {
		wb, err := json.Marshal(w)
		require.NoError(t, err)
		gb, err := json.Marshal(got[id])
		require.NoError(t, err)
		require.JSONEq(t, string(wb), string(gb))
	}
}

// TestE2ERunFaultsAndRestart runs the consumer through failing fetches,
// commits and produces and connections cut under them, stops it as soon as
// the first findings are out and something is committed, and starts a
// second run in the same group once the rest of the stream has arrived.
//
// With checkpoints the two runs together give exactly the findings of the
// fault-free file replay (de-duplicated by id: a restart may send some
// again). Without checkpoints the second run starts with empty state, so
// an attack straddling the restart may be missed; what must still hold is
// at least once: the first run wrote every finding of the events below the
// offsets it committed, and the second run read every event from there.
func TestE2ERunFaultsAndRestart(t *testing.T) {
	dir := t.TempDir()
	evs := e2eEvents(t, 9, 60_000)
	want := e2eReplay(t, e2eWriteEvents(t, dir, "events.jsonl", evs))
	geo := e2eGeoDB(t, dir)
	const firstPart = 30_000

	for _, checkpoint := range []bool{true, false} {
		name := "without checkpoint"
		if checkpoint {
			name = "with checkpoint"
		}
		t.Run(name, func(t *testing.T) {
			c := e2eCluster(t)
			c.ProduceEvents(t, e2eAuditTopic, evs[:firstPart]...)
			fetches := c.Fail(kmsg.Fetch, e2eAuditTopic, 4, nil)
			commits := c.Fail(kmsg.OffsetCommit, e2eAuditTopic, 4, nil)
			produces := c.Fail(kmsg.Produce, e2eFindingsTopic, 3, nil)
			// And connections cut under a fetch, a commit and a produce.
			cutFetches := e2eCut(c, kmsg.Fetch, 2)
			cutCommits := e2eCut(c, kmsg.OffsetCommit, 2)
			cutProduces := e2eCut(c, kmsg.Produce, 2)

			rc := e2eRunConfig{brokers: c.Addrs()[0], listen: e2eFreeAddr(t), geoip: geo,
				findings: filepath.Join(t.TempDir(), "findings.jsonl"), shortSession: true}
			if checkpoint {
				rc.checkpoint = filepath.Join(t.TempDir(), "state.ckpt")
			}
			config := rc.write(t)

			first := e2eStartRun(t, config, rc.listen)
			require.Eventually(t, func() bool { return len(c.ReadAll(t, e2eFindingsTopic)) > 0 && e2eCommitted(t, c) > 0 },
				30*time.Second, 5*time.Millisecond, "no finding or no commit from the first run; stderr:\n%s", first.stderr.tail())
			require.Equal(t, 0, first.stop(), first.stderr.tail())
			committed1 := e2eCommitted(t, c)
			t.Logf("first run stopped with %d of %d events committed", committed1, firstPart)
			require.Positive(t, committed1, first.stderr.tail())
			require.LessOrEqual(t, committed1, int64(firstPart))
			fromFirst := e2eFindingsFile(t, rc.findings)
			// Every finding of the events up to the committed offset was
			// written before the commit (one partition: offset i is event i).
			prefix := e2eReplay(t, e2eWriteEvents(t, t.TempDir(), "prefix.jsonl", evs[:committed1]))
			for id, f := range prefix {
				require.Contains(t, fromFirst, id, "committed past the %s finding at %s", f.Rule, f.Time)
			}
			for id := range fromFirst {
				require.Contains(t, want, id, "the first run invented a finding")
			}

			c.ProduceEvents(t, e2eAuditTopic, evs[firstPart:]...)
			second := e2eStartRun(t, config, rc.listen)
			e2eWaitCommitted(t, c, int64(len(evs)), second.stderr)
			read2 := second.metric("shopguard_kafka_messages_total")
			require.Equal(t, 0, second.stop(), second.stderr.tail())
			require.GreaterOrEqual(t, read2, float64(int64(len(evs))-committed1),
				"the second run read every event after the first run's commits")

			t.Logf("failed: %d fetches, %d commits, %d produces; connections cut: %d fetches, %d commits, %d produces",
				fetches.Hits(), commits.Hits(), produces.Hits(), cutFetches.Load(), cutCommits.Load(), cutProduces.Load())
			require.Equal(t, 4, fetches.Hits())
			require.Equal(t, 4, commits.Hits())
			require.Equal(t, 3, produces.Hits())
			for _, cut := range []*atomic.Int32{cutFetches, cutCommits, cutProduces} {
				require.Equal(t, int32(2), cut.Load())
			}
			got, n := e2eTopicFindings(t, c)
			t.Logf("%d findings expected, %d distinct on the topic in %d messages", len(want), len(got), n)
			if checkpoint {
				require.Equal(t, e2eIDs(want), e2eIDs(got))
				require.Equal(t, e2eIDs(want), e2eIDs(e2eFindingsFile(t, rc.findings)))
				require.Contains(t, second.stderr.String(), "checkpoint restored")
			} else {
				require.Subset(t, e2eIDs(want), e2eIDs(fromFirst))
				require.Equal(t, e2eIDs(got), e2eIDs(e2eFindingsFile(t, rc.findings)), "topic and file hold the same")
			}
		})
	}
}

// TestE2ERunFindingsTopicDown: while the findings topic refuses every
// produce, the consumer retries, reports the sink down, and commits nothing
// past the first finding it cannot write (backpressure, not loss); once the
// topic takes writes again, everything is delivered and committed.
func TestE2ERunFindingsTopicDown(t *testing.T) {
	dir := t.TempDir()
	evs := e2eEvents(t, 5, 60_000)
	want := e2eReplay(t, e2eWriteEvents(t, dir, "events.jsonl", evs))
	// The last event with the earliest finding's time: the finding's
	// trigger is at or before it, and the commits must stop there.
	var earliest time.Time
	for _, f := range want {
		if earliest.IsZero() || f.Time.Before(earliest) {
			earliest = f.Time
		}
	}
	limit := 0
	for i := range evs {
		if !evs[i].Time.After(earliest) {
			limit = i
		}
	}

	c := e2eCluster(t)
	c.ProduceEvents(t, e2eAuditTopic, evs...)
	down := c.Fail(kmsg.Produce, e2eFindingsTopic, -1, nil)
	rc := e2eRunConfig{brokers: c.Addrs()[0], listen: e2eFreeAddr(t), geoip: e2eGeoDB(t, dir), findings: filepath.Join(dir, "findings.jsonl")}
	r := e2eStartRun(t, rc.write(t), rc.listen)

	require.Eventually(t, func() bool { return down.Hits() >= 5 }, 20*time.Second, 20*time.Millisecond,
		"the sink never tried; stderr:\n%s", r.stderr.tail())
	time.Sleep(time.Second)
	stalled := e2eCommitted(t, c)
	require.LessOrEqual(t, stalled, int64(limit), "committed past the finding that could not be written")
	require.Equal(t, 0.0, r.metric(`shopguard_sink_up{sink="kafka"}`))
	require.Positive(t, r.metric(`shopguard_sink_retries_total{sink="kafka"}`))
	code, body := r.get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Equal(t, stalled, e2eCommitted(t, c), "still stalled")
	t.Logf("stalled at %d committed (first finding's trigger at or before %d); readyz: %s", stalled, limit, strings.TrimSpace(body))

	down.Remove()
	e2eWaitCommitted(t, c, int64(len(evs)), r.stderr)
	e2eWaitReady(t, r)
	require.Equal(t, 0, r.stop(), r.stderr.tail())
	got, _ := e2eTopicFindings(t, c)
	require.Equal(t, e2eIDs(want), e2eIDs(got))
}

// TestE2ERunBrokerUnreachable: with no broker to join, /healthz answers
// (the process is alive), /readyz does not, and SIGTERM still ends the run
// with status 0 within 10 s.
func TestE2ERunBrokerUnreachable(t *testing.T) {
	dir := t.TempDir()
	rc := e2eRunConfig{brokers: e2eFreeAddr(t), listen: e2eFreeAddr(t), geoip: e2eGeoDB(t, dir), findings: filepath.Join(dir, "findings.jsonl")}
	r := e2eStartRun(t, rc.write(t), rc.listen)
	require.Eventually(t, func() bool { code, _ := r.get("/healthz"); return code == http.StatusOK },
		10*time.Second, 10*time.Millisecond, "healthz; stderr:\n%s", r.stderr.tail())
	for range 5 {
		code, body := r.get("/readyz")
		require.Equal(t, http.StatusServiceUnavailable, code, body)
		time.Sleep(200 * time.Millisecond)
	}
	start := time.Now()
	require.Equal(t, 0, r.stop(), r.stderr.tail())
	t.Logf("stopped %s after the signal", time.Since(start).Round(time.Millisecond))
}

// TestE2EReplayKafkaRange replays a time range of a three-partition topic
// keyed by account: the findings are the file replay's of the events in
// that range (both ends included) to the last evidence field, and the
// replay neither joins nor commits for any group. An unreachable broker is
// a runtime failure that names it.
func TestE2EReplayKafkaRange(t *testing.T) {
	dir := t.TempDir()
	evs := e2eEvents(t, 17, 60_000)
	c := kafkatest.New(t, map[string]int32{e2eAuditTopic: 3})
	c.ProduceEvents(t, e2eAuditTopic, evs...)

	since, until := evs[15_000].Time, evs[45_000].Time
	var part []shopguard.Event
	for _, ev := range evs {
		if !ev.Time.Before(since) && !ev.Time.After(until) {
			part = append(part, ev)
		}
	}
	want := e2eReplay(t, e2eWriteEvents(t, dir, "range.jsonl", part))
	require.NotEmpty(t, want)

	out := filepath.Join(dir, "findings.jsonl")
	code, _, errs := e2eMain(t, "", "replay", "--geoip", "demo", "--out", out, "--brokers", c.Addrs()[0], "--topic", e2eAuditTopic,
		"--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano))
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, fmt.Sprintf("events: %d read, %d valid, 0 invalid", len(part), len(part)))
	e2eRequireSameFindings(t, want, e2eFindingsFile(t, out))
	for _, group := range []string{kafka.DefaultConfig.Group, e2eGroup} {
		require.Empty(t, c.Committed(t, group, e2eAuditTopic), "group %s", group)
	}

	// (Retried with backoff first: kafka.max_retries, 10 by default over
	// about 26 s; one quick retry here.)
	dead := e2eFreeAddr(t)
	quick := filepath.Join(dir, "quick-retries.yml")
	require.NoError(t, os.WriteFile(quick, []byte("kafka: {max_retries: 1, retry_backoff: 10ms, retry_backoff_max: 10ms}\n"), 0o644))
	code, _, errs = e2eMain(t, "", "replay", "--config", quick, "--brokers", dead, "--topic", e2eAuditTopic,
		"--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano))
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, dead)
}
