package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.yaml.in/yaml/v3"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/ingest/kafkatest"
	"github.com/shopguard/shopguard/internal/kafkaconf"
)

const (
	auditTopic = "admin-audit"
	dlqTopic   = "admin-audit-dlq"
)

var kafkaT0 = time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)

// kafkaEventLine is a valid audit event whose id is id.
func kafkaEventLine(id string, at time.Time) string {
	return fmt.Sprintf(`{"time":%q,"shop_id":"shop-1","actor":"owner@example.jp","action":"login.failure","ip":"192.0.2.7","reason":"bad_password","id":%q}`,
		at.Format(time.RFC3339Nano), id)
}

// newKafkaCluster starts a cluster with the audit topic (parts partitions) and
// the dead-letter topic.
func newKafkaCluster(t *testing.T, parts int32) *kafkatest.Cluster {
	return kafkatest.New(t, map[string]int32{auditTopic: parts, dlqTopic: 1})
}

// kafkaTestConfig is the default config with timings fit for tests.
func kafkaTestConfig(c *kafkatest.Cluster) kafka.Config {
	cfg := kafka.DefaultConfig
	cfg.Brokers = c.Addrs()
	cfg.MaxWait = 50 * time.Millisecond
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.SessionTimeout = 6 * time.Second // kfake's minimum
	cfg.RetryBackoff = 10 * time.Millisecond
	cfg.RetryBackoffMax = 100 * time.Millisecond
	cfg.DialTimeout = 2 * time.Second
	cfg.CommitInterval = 0
	cfg.BatchSize = 50
	return cfg
}

// kafkaHarness runs a KafkaSource and records what it delivers.
type kafkaHarness struct {
	t   *testing.T
	src *kafka.Source
	out chan shopguard.Batch
	m   *ingest.Metrics
	km  *kafka.Metrics
	reg *prometheus.Registry

	cancel context.CancelFunc
	runErr chan error
}

func startKafkaSource(t *testing.T, cfg kafka.Config, dl ingest.DeadLetter) *kafkaHarness {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := &kafkaHarness{t: t, out: make(chan shopguard.Batch, 4), reg: reg,
		m: ingest.NewMetrics(reg), km: kafka.NewMetrics(reg), runErr: make(chan error, 1)}
	src, err := kafka.NewSource(cfg, kafka.SourceOptions{
		Metrics: h.m, Kafka: h.km, Logger: kafkaTestLogger,
		Rejects: &ingest.Rejects{Metrics: h.m, DeadLetter: dl},
	})
	require.NoError(t, err)
	h.src = src
	h.run()
	t.Cleanup(func() { h.stop(); _ = src.Close(context.Background()) })
	return h
}

// run starts Run in the background; its result goes to runErr.
func (h *kafkaHarness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- h.src.Run(ctx, h.out) }()
}

// stop cancels Run and waits for it, returning its result.
func (h *kafkaHarness) stop() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.runErr:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after cancel")
		return nil
	}
}

// runDone waits for Run to return on its own and returns its result.
func (h *kafkaHarness) runDone(what string) error {
	h.t.Helper()
	select {
	case err := <-h.runErr:
		h.cancel()
		h.cancel = nil
		return err
	case b := <-h.out:
		h.t.Fatalf("unexpected batch %v while waiting for Run to stop: %s", batchIDs(b), what)
	case <-time.After(15 * time.Second):
		h.t.Fatalf("Run did not stop: %s", what)
	}
	return nil
}

// next returns the next batch, failing the test after a while.
func (h *kafkaHarness) next() shopguard.Batch {
	h.t.Helper()
	select {
	case b := <-h.out:
		return b
	case err := <-h.runErr:
		h.t.Fatalf("Run returned %v while a batch was expected", err)
	case <-time.After(15 * time.Second):
		h.t.Fatal("no batch within 15s")
	}
	return shopguard.Batch{}
}

// batchIDs returns the ids of a batch's events.
func batchIDs(b shopguard.Batch) []string {
	var out []string
	for _, ev := range b.Events {
		out = append(out, ev.ID)
	}
	return out
}

// TestKafkaSourceDeliversAndRejects produces valid and invalid messages over
// three partitions: the valid ones arrive in per-partition order, the bad
// ones are counted and in the dead-letter topic with their reason, and
// acknowledging everything commits every partition to its end.
func TestKafkaSourceDeliversAndRejects(t *testing.T) {
	c := newKafkaCluster(t, 3)
	cfg := kafkaTestConfig(c)
	bad := map[int]string{ // line index → reason
		7:   "not_json",
		50:  "missing_field",
		51:  "bad_time",
		122: "bad_ip",
		200: "too_large",
		299: "not_json",
	}
	var lines []string
	want := 0
	for i := range 300 {
		switch bad[i] {
		case "not_json":
			lines = append(lines, `{"time": oops`)
		case "missing_field":
			lines = append(lines, `{"time":"2026-01-07T09:00:00Z","shop_id":"s","action":"logout","ip":"192.0.2.1"}`)
		case "bad_time":
			lines = append(lines, strings.Replace(kafkaEventLine("x", kafkaT0), "2026-01-07T09", "2026-13-07T09", 1))
		case "bad_ip":
			lines = append(lines, strings.Replace(kafkaEventLine("x", kafkaT0), "192.0.2.7", "999.0.2.7", 1))
		case "too_large":
			lines = append(lines, kafkaEventLine(strings.Repeat("x", ingest.MaxEventSize), kafkaT0))
		default:
			// Line i goes to partition i%3; the id says where and in
			// which order.
			lines = append(lines, kafkaEventLine(fmt.Sprintf("p%d-%03d", i%3, i), kafkaT0.Add(time.Duration(i)*time.Second)))
			want++
		}
	}
	c.ProduceLines(t, auditTopic, 3, lines...)

	dlReg := prometheus.NewRegistry()
	dl, err := kafka.NewDeadLetter(cfg, kafka.NewMetrics(dlReg), nil)
	require.NoError(t, err)
	defer dl.Close()
	h := startKafkaSource(t, cfg, dl)

	got := 0
	last := map[string]int{} // partition → last line index seen
	for got < want {
		b := h.next()
		require.NotEmpty(t, b.Events)
		require.LessOrEqual(t, len(b.Events), cfg.BatchSize)
		require.False(t, b.Received.IsZero())
		require.NotNil(t, b.Done)
		for _, id := range batchIDs(b) {
			p, n, _ := strings.Cut(id, "-")
			i, err := strconv.Atoi(n)
			require.NoError(t, err)
			if prev, ok := last[p]; ok {
				require.Greater(t, i, prev, "partition %s out of order", p)
			}
			last[p] = i
			got++
		}
		b.Done()
	}
	require.Equal(t, want, got)
	require.True(t, h.src.Ready())

	st := h.m.Stats()
	require.EqualValues(t, want, st.Events)
	require.Equal(t, map[string]int64{"not_json": 2, "missing_field": 1, "bad_time": 1, "bad_ip": 1, "too_large": 1}, st.Invalid)
	require.InDelta(t, 300, gatherValue(t, h.reg, "shopguard_kafka_messages_total", ""), 0)

	// Everything was acknowledged in order, so Flush commits the ends.
	require.NoError(t, h.src.Flush(t.Context()))
	require.Equal(t, map[int]int64{0: 100, 1: 100, 2: 100}, c.Committed(t, cfg.Group, auditTopic))
	require.Equal(t, map[int]int64{0: 100, 1: 100, 2: 100}, h.src.Acknowledged())

	dead := c.ReadAll(t, dlqTopic)
	require.Len(t, dead, len(bad))
	for _, m := range dead {
		part, _ := kafkatest.Header(m, kafka.HeaderPartition)
		off, _ := kafkatest.Header(m, kafka.HeaderOffset)
		tp, _ := kafkatest.Header(m, kafka.HeaderTopic)
		require.Equal(t, auditTopic, tp)
		p, _ := strconv.Atoi(part)
		o, _ := strconv.Atoi(off)
		i := o*3 + p // the line index, from ProduceLines' round-robin
		reason, _ := kafkatest.Header(m, kafka.HeaderReason)
		require.Equal(t, bad[i], reason, "line %d", i)
		require.Equal(t, lines[i], string(m.Value), "raw value kept")
		errText, _ := kafkatest.Header(m, kafka.HeaderError)
		require.True(t, strings.HasPrefix(errText, reason+":"), errText)
		pos, _ := kafkatest.Header(m, kafka.HeaderPosition)
		require.Equal(t, fmt.Sprintf("%s/%d/%d", auditTopic, p, o), pos)
	}
	require.InDelta(t, 6, gatherValue(t, dlReg, "shopguard_dead_letters_total", "written"), 0)

	require.NoError(t, h.stop(), "cancel is not an error")
	require.False(t, h.src.Ready(), "not ready once Run has returned")
}

// TestKafkaSourceCommitsOnlyDone checks at-least-once: only batches that
// are Done, and only up to the first that is not, are committed, and a new
// consumer resumes right after the last commit.
func TestKafkaSourceCommitsOnlyDone(t *testing.T) {
	c := newKafkaCluster(t, 1)
	cfg := kafkaTestConfig(c)
	cfg.BatchSize = 10
	cfg.BatchLinger = 100 * time.Millisecond // full batches: all 100 are there
	var lines []string
	for i := range 100 {
		lines = append(lines, kafkaEventLine(fmt.Sprintf("e%03d", i), kafkaT0))
	}
	c.ProduceLines(t, auditTopic, 1, lines...)

	h := startKafkaSource(t, cfg, nil)
	var bs []shopguard.Batch
	for range 5 {
		b := h.next()
		require.Len(t, b.Events, 10)
		bs = append(bs, b)
	}
	require.Equal(t, "e030", bs[3].Events[0].ID)
	bs[0].Done()
	bs[1].Done()
	bs[2].Done()
	bs[4].Done() // out of order: must wait for bs[3]
	bs[4].Done() // a second call is ignored
	require.NoError(t, h.src.Flush(t.Context()))
	require.Equal(t, map[int]int64{0: 30}, c.Committed(t, cfg.Group, auditTopic))

	// Stop without acknowledging bs[3]: Close commits nothing more.
	require.NoError(t, h.stop())
	require.NoError(t, h.src.Close(t.Context()))
	require.Equal(t, map[int]int64{0: 30}, c.Committed(t, cfg.Group, auditTopic))

	// A new consumer in the group starts after the last commit: bs[3] and
	// bs[4] come again, then the rest.
	h2 := startKafkaSource(t, cfg, nil)
	next := 30
	for next < 100 {
		b := h2.next()
		for _, id := range batchIDs(b) {
			require.Equal(t, fmt.Sprintf("e%03d", next), id)
			next++
		}
		b.Done()
	}
	require.NoError(t, h2.stop())
	require.NoError(t, h2.src.Close(t.Context()))
	require.Equal(t, map[int]int64{0: 100}, c.Committed(t, cfg.Group, auditTopic))
}

// TestKafkaSourceSurvivesFaults fails fetches and commits and cuts the
// coordinator connection while consuming, restarting Run whenever it
// gives up, as the supervisor in cmd does: every event arrives at least
// once and in the end everything is committed.
func TestKafkaSourceSurvivesFaults(t *testing.T) {
	c := newKafkaCluster(t, 3)
	cfg := kafkaTestConfig(c)
	cfg.MaxRetries = 2
	cfg.CommitInterval = 20 * time.Millisecond
	const n = 600
	var lines []string
	for i := range n {
		lines = append(lines, kafkaEventLine(fmt.Sprintf("e%03d", i), kafkaT0))
	}
	c.ProduceLines(t, auditTopic, 3, lines[:n/2]...)

	h := startKafkaSource(t, cfg, nil)
	fetchFaults := c.Fail(kmsg.Fetch, auditTopic, 8, kerr.UnknownServerError)
	commitFaults := c.Fail(kmsg.OffsetCommit, auditTopic, 4, kerr.CoordinatorLoadInProgress)
	cut := c.Disconnect(kmsg.OffsetCommit, 1)

	// The engine side: acknowledge every batch as it comes, redeliveries
	// included.
	eng := drainKafka(h)

	// The supervisor: run again whenever Run gives up, until everything
	// is delivered and committed.
	restarts := 0
	ends := map[int]int64{0: n / 3, 1: n / 3, 2: n / 3}
	deadline := time.Now().Add(30 * time.Second)
	produced := false
	for {
		select {
		case err := <-h.runErr:
			require.Error(t, err, "Run returns only on errors here")
			restarts++
			h.cancel()
			h.run()
		case <-time.After(50 * time.Millisecond):
		}
		delivered := len(eng.seen())
		if !produced && delivered >= n/4 {
			c.ProduceLines(t, auditTopic, 3, lines[n/2:]...)
			produced = true
		}
		if delivered == n && fmt.Sprint(c.Committed(t, cfg.Group, auditTopic)) == fmt.Sprint(ends) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %d of %d events, committed %v (fetch faults hit %d, commit faults %d, cuts %d)",
				delivered, n, c.Committed(t, cfg.Group, auditTopic), fetchFaults.Hits(), commitFaults.Hits(), cut.N())
		}
	}
	seen := eng.stop()
	require.NoError(t, h.stop())
	require.NoError(t, h.src.Close(t.Context()))

	require.Len(t, seen, n, "every event at least once")
	require.Equal(t, 8, fetchFaults.Hits())
	require.Equal(t, 4, commitFaults.Hits())
	require.Equal(t, 1, cut.N())
	require.Positive(t, gatherValue(t, h.reg, "shopguard_kafka_fetch_errors_total", ""))
	require.Positive(t, gatherValue(t, h.reg, "shopguard_kafka_commit_errors_total", ""))
	redelivered := 0
	for _, k := range seen {
		redelivered += k - 1
	}
	t.Logf("Run restarts %d, events delivered again %d", restarts, redelivered)
	require.Equal(t, ends, c.Committed(t, cfg.Group, auditTopic))
}

// kafkaEngine stands in for the engine: it acknowledges every batch a
// source delivers as it comes, redeliveries included, and counts the ids.
type kafkaEngine struct {
	mu    sync.Mutex
	ids   map[string]int
	quit  chan struct{}
	ended chan struct{}
}

func drainKafka(h *kafkaHarness) *kafkaEngine {
	e := &kafkaEngine{ids: map[string]int{}, quit: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(e.ended)
		for {
			select {
			case b := <-h.out:
				e.mu.Lock()
				for _, id := range batchIDs(b) {
					e.ids[id]++
				}
				e.mu.Unlock()
				b.Done()
			case <-e.quit:
				return
			}
		}
	}()
	return e
}

// seen returns a copy of the ids delivered so far and how often.
func (e *kafkaEngine) seen() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.ids))
	for k, v := range e.ids {
		out[k] = v
	}
	return out
}

// stop ends the draining and returns what was seen.
func (e *kafkaEngine) stop() map[string]int {
	close(e.quit)
	<-e.ended
	return e.seen()
}

// TestKafkaSourceRebalance runs two sources in one group: the partitions
// are split between them, and when one leaves, the other takes over its
// partitions from their last commit, so every event arrives at least once.
func TestKafkaSourceRebalance(t *testing.T) {
	c := newKafkaCluster(t, 3)
	cfg := kafkaTestConfig(c)
	cfg.CommitInterval = 10 * time.Millisecond
	batch := 0
	produce := func(n int) {
		var lines []string
		for i := range n {
			lines = append(lines, kafkaEventLine(fmt.Sprintf("p%d-b%d-%03d", i%3, batch, i), kafkaT0))
		}
		c.ProduceLines(t, auditTopic, 3, lines...)
		batch++
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		require.Eventually(t, cond, 20*time.Second, 20*time.Millisecond, what)
	}
	union := func(es ...*kafkaEngine) map[string]bool {
		u := map[string]bool{}
		for _, e := range es {
			for id := range e.seen() {
				u[id] = true
			}
		}
		return u
	}

	produce(300)
	a := startKafkaSource(t, cfg, nil)
	ea := drainKafka(a)
	waitFor("a consumes alone", func() bool { return len(ea.seen()) == 300 })

	b := startKafkaSource(t, cfg, nil)
	eb := drainKafka(b)
	_, err := c.WaitGroupStable(t.Context(), cfg.Group, 2)
	require.NoError(t, err)
	produce(300)
	waitFor("both consume", func() bool { return len(union(ea, eb)) == 600 })
	info := c.GroupInfo(cfg.Group)
	require.Len(t, info.Members, 2)
	for _, m := range info.Members {
		require.Positive(t, m.NumAssigned(), "each member has partitions")
	}

	// a leaves: b gets every partition and all that follows.
	ea.stop()
	require.NoError(t, a.stop())
	require.NoError(t, a.src.Close(t.Context()))
	before := eb.seen()
	produce(300)
	waitFor("b takes over", func() bool { return len(union(ea, eb)) == 900 })
	fromB := map[string]bool{}
	for id := range eb.seen() {
		if before[id] == 0 && strings.Contains(id, "-b2-") {
			fromB[id[:2]] = true
		}
	}
	require.Equal(t, map[string]bool{"p0": true, "p1": true, "p2": true}, fromB, "b reads all partitions after a left")
	waitFor("everything committed", func() bool {
		return fmt.Sprint(c.Committed(t, cfg.Group, auditTopic)) == fmt.Sprint(map[int]int64{0: 300, 1: 300, 2: 300})
	})
	eb.stop()
}

// TestKafkaSourcePersistentErrors checks that errors that do not go away
// end Run with an error instead of a retry loop, and that the same source
// resumes once they are gone.
func TestKafkaSourcePersistentErrors(t *testing.T) {
	c := newKafkaCluster(t, 1)
	cfg := kafkaTestConfig(c)
	cfg.MaxRetries = 2
	cfg.BatchSize = 1
	c.ProduceLines(t, auditTopic, 1, kafkaEventLine("e0", kafkaT0), kafkaEventLine("e1", kafkaT0))
	h := startKafkaSource(t, cfg, nil)
	b0 := h.next()
	require.Equal(t, []string{"e0"}, batchIDs(b0))
	b0.Done()
	b := h.next()
	require.Equal(t, []string{"e1"}, batchIDs(b))

	fetch := c.Fail(kmsg.Fetch, auditTopic, -1, kerr.UnknownServerError)
	c.ProduceLines(t, auditTopic, 1, kafkaEventLine("e2", kafkaT0))
	err := h.runDone("a fetch error that persists")
	require.ErrorContains(t, err, "fetch from admin-audit (3 attempts)")
	require.False(t, h.src.Ready())
	fetch.Remove()
	h.run()
	require.Equal(t, []string{"e2"}, batchIDs(h.next()))
	require.True(t, h.src.Ready())

	// Commits that keep failing stop Run too.
	commits := c.Fail(kmsg.OffsetCommit, auditTopic, -1, kerr.UnknownServerError)
	b.Done()
	err = h.runDone("commits that keep failing")
	require.ErrorContains(t, err, "offset commits keep failing")
	commits.Remove()
	require.NoError(t, h.src.Close(t.Context()))
	require.Equal(t, map[int]int64{0: 2}, c.Committed(t, cfg.Group, auditTopic), "Close commits what was acknowledged")
}

func TestKafkaDeadLetterFilePosition(t *testing.T) {
	c := newKafkaCluster(t, 1)
	reg := prometheus.NewRegistry()
	km := kafka.NewMetrics(reg)
	dl, err := kafka.NewDeadLetter(kafkaTestConfig(c), km, nil)
	require.NoError(t, err)
	defer dl.Close()
	derr := &ingest.DecodeError{Reason: ingest.ReasonBadIP, Field: "ip", Msg: `"x" is not an IPv4 or IPv6 address`}
	require.NoError(t, dl.DeadLetter(t.Context(), "events.jsonl:17", []byte(`{"ip":"x"}`), derr))
	msgs := c.ReadAll(t, dlqTopic)
	require.Len(t, msgs, 1)
	require.Equal(t, `{"ip":"x"}`, string(msgs[0].Value))
	pos, _ := kafkatest.Header(msgs[0], kafka.HeaderPosition)
	require.Equal(t, "events.jsonl:17", pos)
	_, ok := kafkatest.Header(msgs[0], kafka.HeaderOffset)
	require.False(t, ok, "no Kafka coordinates for a file position")

	// A dead-letter topic that refuses writes is counted as failed.
	c.Fail(kmsg.Produce, dlqTopic, -1, kerr.TopicAuthorizationFailed)
	require.Error(t, dl.DeadLetter(t.Context(), "admin-audit/0/5", []byte("{"), derr))
	require.InDelta(t, 1, gatherValue(t, reg, "shopguard_dead_letters_total", "failed"), 0)
	require.InDelta(t, 1, gatherValue(t, reg, "shopguard_dead_letters_total", "written"), 0)

	cfg := kafkaTestConfig(c)
	cfg.DeadLetterTopic = ""
	_, err = kafka.NewDeadLetter(cfg, nil, nil)
	require.ErrorContains(t, err, "kafka.dead_letter_topic")
}

func TestKafkaConfigValidate(t *testing.T) {
	require.ErrorContains(t, kafka.DefaultConfig.Validate(), "kafka.brokers: at least one broker")

	cfg := kafka.DefaultConfig
	cfg.Brokers = []string{"kafka:9092", "nohost"}
	cfg.Topic = "bad topic"
	cfg.Group = ""
	cfg.DeadLetterTopic = "bad topic"
	cfg.StartOffset = "middle"
	cfg.BatchSize = 0
	cfg.MaxWait = 0
	cfg.HeartbeatInterval = time.Minute
	cfg.TLS = kafkaconf.TLS{CertFile: "c.pem"}
	cfg.SASL = kafkaconf.SASL{Mechanism: "GSSAPI", PasswordFile: "f", PasswordEnv: "E"}
	err := cfg.Validate()
	require.Error(t, err)
	for _, key := range []string{
		`kafka.brokers[1]: "nohost" is not host:port`,
		`kafka.topic: "bad topic" is not a valid topic name`,
		"kafka.group: required",
		"kafka.dead_letter_topic:",
		`kafka.start_offset: "middle"`,
		"kafka.batch_size:",
		"kafka.max_wait:",
		"kafka.heartbeat_interval:",
		"kafka.tls.cert_file: cert_file and key_file go together",
		"kafka.tls.enabled: TLS options are set but enabled is false",
		`kafka.sasl.mechanism: "GSSAPI"`,
		"kafka.sasl.username: required",
		"kafka.sasl.password_file: password_file and password_env are exclusive",
	} {
		require.ErrorContains(t, err, key)
	}
	require.NotContains(t, err.Error(), "kafka.brokers[0]")

	cfg = kafka.DefaultConfig
	cfg.Brokers = []string{"kafka:9092"}
	cfg.SASL = kafkaconf.SASL{Mechanism: "plain", Username: "u", PasswordEnv: "X"}
	require.ErrorContains(t, cfg.Validate(), "kafka.sasl.mechanism: PLAIN sends the password in clear text")
	cfg.DeadLetterTopic = cfg.Topic
	require.ErrorContains(t, cfg.Validate(), "kafka.dead_letter_topic: must differ from kafka.topic")
}

func TestKafkaConfigYAML(t *testing.T) {
	var cfg kafka.Config
	dec := yaml.NewDecoder(strings.NewReader("brokers: [k1:9092]\ngroup: g2\nbatch_linger: 2ms\nsasl: {mechanism: scram-sha-512, username: u, password_env: PW}\n"))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg))
	want := kafka.DefaultConfig
	want.Brokers = []string{"k1:9092"}
	want.Group = "g2"
	want.BatchLinger = 2 * time.Millisecond
	want.SASL = kafkaconf.SASL{Mechanism: "scram-sha-512", Username: "u", PasswordEnv: "PW"}
	require.Equal(t, want, cfg, "keys left out keep their defaults")
	require.NoError(t, cfg.Validate())

	dec = yaml.NewDecoder(strings.NewReader("brokers: [k1:9092]\ntopik: x\n"))
	dec.KnownFields(true)
	require.ErrorContains(t, dec.Decode(&cfg), "field topik not found")
}

// TestKafkaSecrets checks that the password comes from the file or the
// environment, that problems name the key, and that the password never
// appears in an error.
func TestKafkaSecrets(t *testing.T) {
	cfg := kafka.DefaultConfig
	cfg.Brokers = []string{"127.0.0.1:1"}
	cfg.SASL = kafkaconf.SASL{Mechanism: kafkaconf.SASLScramSHA256, Username: "u", PasswordEnv: "SHOPGUARD_TEST_KAFKA_PW"}
	_, err := kafka.NewSource(cfg, kafka.SourceOptions{})
	require.ErrorContains(t, err, "kafka.sasl.password_env: environment variable SHOPGUARD_TEST_KAFKA_PW is empty or unset")

	t.Setenv("SHOPGUARD_TEST_KAFKA_PW", "hunter2-secret")
	src, err := kafka.NewSource(cfg, kafka.SourceOptions{})
	require.NoError(t, err)
	require.NoError(t, src.Close(t.Context()))

	dir := t.TempDir()
	cfg.SASL = kafkaconf.SASL{Mechanism: kafkaconf.SASLScramSHA512, Username: "u", PasswordFile: filepath.Join(dir, "missing")}
	_, err = kafka.NewSource(cfg, kafka.SourceOptions{})
	require.ErrorContains(t, err, "kafka.sasl.password_file:")
	require.ErrorIs(t, err, os.ErrNotExist)

	cfg.SASL.PasswordFile = filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(cfg.SASL.PasswordFile, []byte("hunter2-secret\n"), 0o600))
	src, err = kafka.NewSource(cfg, kafka.SourceOptions{})
	require.NoError(t, err)
	require.NoError(t, src.Close(t.Context()))

	cfg.SASL = kafkaconf.SASL{}
	cfg.TLS = kafkaconf.TLS{Enabled: true, CAFile: filepath.Join(dir, "ca.pem")}
	_, err = kafka.NewSource(cfg, kafka.SourceOptions{})
	require.ErrorContains(t, err, "kafka.tls.ca_file:")
	require.NotContains(t, fmt.Sprint(err), "hunter2")
}

// TestKafkaSourceSASL consumes and dead-letters through a cluster that
// requires SCRAM-SHA-512.
func TestKafkaSourceSASL(t *testing.T) {
	c := kafkatest.New(t, map[string]int32{auditTopic: 1, dlqTopic: 1},
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "shopguard", "hunter2-secret"))
	mech, err := scram.Mechanism(scram.SHA512, "shopguard", "hunter2-secret")
	require.NoError(t, err)
	c.UseSASL(mech)
	c.ProduceLines(t, auditTopic, 1, kafkaEventLine("e0", kafkaT0), "not json")

	t.Setenv("SHOPGUARD_TEST_KAFKA_PW", "hunter2-secret")
	cfg := kafkaTestConfig(c)
	cfg.SASL = kafkaconf.SASL{Mechanism: "scram-sha-512", Username: "shopguard", PasswordEnv: "SHOPGUARD_TEST_KAFKA_PW"}
	dl, err := kafka.NewDeadLetter(cfg, nil, nil)
	require.NoError(t, err)
	defer dl.Close()
	h := startKafkaSource(t, cfg, dl)
	b := h.next()
	require.Equal(t, []string{"e0"}, batchIDs(b))
	b.Done()
	require.Eventually(t, func() bool { return len(c.ReadAll(t, dlqTopic)) == 1 }, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, h.src.Flush(t.Context()))
	require.Equal(t, map[int]int64{0: 2}, c.Committed(t, cfg.Group, auditTopic))

	// A wrong password is refused by the broker.
	t.Setenv("SHOPGUARD_TEST_KAFKA_PW", "wrong")
	bad := startKafkaSource(t, cfg, nil)
	select {
	case b := <-bad.out:
		t.Fatalf("consumed %v with a wrong password", batchIDs(b))
	case <-time.After(500 * time.Millisecond):
	}
	require.False(t, bad.src.Ready())
}

// gatherValue returns the value of the series of the counter or gauge name
// whose first label has the value label ("" for an unlabelled metric).
func gatherValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%s} not registered", name, label)
	return 0
}

// kafkaTestLogger shows the sources' warnings when SHOPGUARD_TEST_LOG is set
// (e.g. to "debug" for kafka-go's chatter too), and discards them otherwise.
var kafkaTestLogger = func() *slog.Logger {
	lv, ok := os.LookupEnv("SHOPGUARD_TEST_LOG")
	if !ok {
		return nil
	}
	level := slog.LevelWarn
	if lv == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}()

// TestKafkaSourceReusesDoneBatches: the array of a batch that is Done
// carries a later batch (shopguard.Batch: nothing reads it after Done),
// and the array of one that is not Done is never handed out again; every
// event arrives once, in order, whichever array carries it.
func TestKafkaSourceReusesDoneBatches(t *testing.T) {
	c := newKafkaCluster(t, 1)
	cfg := kafkaTestConfig(c)
	cfg.BatchSize = 10
	cfg.BatchLinger = 100 * time.Millisecond
	var lines []string
	for i := range 200 {
		lines = append(lines, kafkaEventLine(fmt.Sprintf("e%03d", i), kafkaT0))
	}
	c.ProduceLines(t, auditTopic, 1, lines...)
	h := startKafkaSource(t, cfg, nil)
	array := func(b shopguard.Batch) *shopguard.Event { return &b.Events[:1][0] }

	kept := h.next() // never Done
	require.Equal(t, "e000", kept.Events[0].ID)
	keptArray := array(kept)
	seen := map[*shopguard.Event]int{}
	next, reused := 10, 0
	for next < 200 {
		b := h.next()
		require.NotSame(t, keptArray, array(b), "the array of a batch not Done was handed out again")
		for _, id := range batchIDs(b) {
			require.Equal(t, fmt.Sprintf("e%03d", next), id)
			next++
		}
		if seen[array(b)]++; seen[array(b)] > 1 {
			reused++
		}
		b.Done()
	}
	require.Equal(t, "e000", kept.Events[0].ID, "a batch not Done keeps its events")
	require.Positive(t, reused, "no array of a Done batch carried a later one")
}
