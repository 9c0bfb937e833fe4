package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard/ingest/broker"
)

func start(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	b, err := broker.Start(t.Context(), cfg, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// TestKafkaGoGroupRoundTrip produces with a kafka-go Writer and consumes
// with a kafka-go consumer-group Reader, committing, as shopguard run does.
func TestKafkaGoGroupRoundTrip(t *testing.T) {
	b := start(t, broker.Config{Topics: map[string]int32{"admin-audit": 3}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	w := &kafka.Writer{Addr: kafka.TCP(b.Addrs()...), Topic: "admin-audit", Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	const n = 60
	var msgs []kafka.Message
	for i := range n {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "v%d", i)})
	}
	require.NoError(t, w.WriteMessages(ctx, msgs...))

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Addrs(), GroupID: "g", Topic: "admin-audit", MaxWait: 100 * time.Millisecond})
	defer r.Close()
	seen := map[string]bool{}
	parts := map[int]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err)
		seen[string(m.Value)] = true
		parts[m.Partition] = true
		require.NoError(t, r.CommitMessages(ctx, m))
	}
	require.Len(t, parts, 3, "messages spread over all partitions")

	// The commits are visible to a second client.
	cl := &kafka.Client{Addr: kafka.TCP(b.Addrs()...)}
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: "g", Topics: map[string][]int{"admin-audit": {0, 1, 2}}})
	require.NoError(t, err)
	var committed int64
	for _, p := range resp.Topics["admin-audit"] {
		require.NoError(t, p.Error)
		committed += p.CommittedOffset
	}
	require.EqualValues(t, n, committed)
}

func TestAutoCreateAndAdvertise(t *testing.T) {
	b := start(t, broker.Config{Listen: "0.0.0.0:0", AutoCreateTopics: true, DefaultPartitions: 2})
	addrs := b.Addrs()
	require.Len(t, addrs, 1)
	require.True(t, strings.HasPrefix(addrs[0], "127.0.0.1:"), "unspecified host advertised as loopback, got %s", addrs[0])

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(addrs...), Topic: "new-topic", AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond}
	defer w.Close()
	require.Eventually(t, func() bool {
		return w.WriteMessages(ctx, kafka.Message{Value: []byte("x")}) == nil
	}, 10*time.Second, 50*time.Millisecond)

	conn, err := kafka.DialContext(ctx, "tcp", addrs[0])
	require.NoError(t, err)
	defer conn.Close()
	ps, err := conn.ReadPartitions("new-topic")
	require.NoError(t, err)
	require.Len(t, ps, 2)
}

func TestStartErrors(t *testing.T) {
	b := start(t, broker.Config{})
	_, err := broker.Start(t.Context(), broker.Config{Listen: b.Addrs()[0]}, nil)
	require.ErrorContains(t, err, "address already in use")

	_, err = broker.Start(t.Context(), broker.Config{Listen: "127.0.0.1"}, nil)
	require.ErrorContains(t, err, "listen address")

	_, err = broker.Start(t.Context(), broker.Config{Listen: "127.0.0.1:0", Topics: map[string]int32{"t": 0}}, nil)
	require.ErrorContains(t, err, `topic "t"`)
}

func TestCloseReleasesPortAndCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	b, err := broker.Start(ctx, broker.Config{Listen: "127.0.0.1:0"}, nil)
	require.NoError(t, err)
	addr := b.Addrs()[0]
	cancel() // a cancelled context stops the broker ...
	require.Eventually(t, func() bool {
		b2, err := broker.Start(t.Context(), broker.Config{Listen: addr}, nil)
		if err != nil {
			return false
		}
		b2.Close()
		return true
	}, 5*time.Second, 20*time.Millisecond, "port released after cancel")
	b.Close() // ... and Close stays safe afterwards
	b.Close()
}

// TestKcatInterop checks that librdkafka-based tools talk to the broker:
// kcat produces, kafka-go reads it, and kcat reads it back.
func TestKcatInterop(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (apt-get install -y kcat); skipping the librdkafka interop test")
	}
	b := start(t, broker.Config{Topics: map[string]int32{"admin-audit": 2}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	lines := "a\nb\nc\n"
	prod := exec.CommandContext(ctx, kcat, "-b", b.Addrs()[0], "-t", "admin-audit", "-P")
	prod.Stdin = strings.NewReader(lines)
	out, err := prod.CombinedOutput()
	require.NoError(t, err, "kcat -P: %s", out)

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Addrs(), GroupID: "g", Topic: "admin-audit", MaxWait: 100 * time.Millisecond})
	defer r.Close()
	got := map[string]bool{}
	for len(got) < 3 {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err)
		got[string(m.Value)] = true
	}
	require.Equal(t, map[string]bool{"a": true, "b": true, "c": true}, got)

	cons := exec.CommandContext(ctx, kcat, "-b", b.Addrs()[0], "-t", "admin-audit", "-C", "-e", "-q", "-f", "%s\n")
	var stdout, stderr bytes.Buffer
	cons.Stdout, cons.Stderr = &stdout, &stderr
	require.NoError(t, cons.Run(), "kcat -C: %s", stderr.String())
	vals := strings.Fields(stdout.String())
	require.ElementsMatch(t, []string{"a", "b", "c"}, vals)
}

// TestRetention checks that a demo left running does not keep every record:
// records older than Retention are dropped.
func TestRetention(t *testing.T) {
	b := start(t, broker.Config{Topics: map[string]int32{"t": 1}, Retention: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(b.Addrs()...), Topic: "t", BatchTimeout: time.Millisecond}
	defer w.Close()
	require.NoError(t, w.WriteMessages(ctx, kafka.Message{Value: []byte("old")}, kafka.Message{Value: []byte("older")}))

	conn, err := kafka.DialLeader(ctx, "tcp", b.Addrs()[0], "t", 0)
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool {
		first, last, err := conn.ReadOffsets()
		return err == nil && last == 2 && first == 2
	}, 5*time.Second, 100*time.Millisecond, "expired records dropped")
}
