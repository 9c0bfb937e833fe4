package alert

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/internal/kafkaconf"
)

const testTopic = "shopguard-findings"

func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, testTopic)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// readTopic reads n messages from the start of the topic's only partition.
func readTopic(t *testing.T, brokers []string, n int, dialer *kafka.Dialer) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: testTopic, Partition: 0, MaxWait: 50 * time.Millisecond, Dialer: dialer,
	})
	defer r.Close()
	require.NoError(t, r.SetOffset(kafka.FirstOffset))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestKafkaRoundTrip(t *testing.T) {
	c := newCluster(t)
	cfg := DefaultKafkaConfig
	cfg.Brokers = c.ListenAddrs()
	reg, m := newTestMetrics()
	k, err := NewKafka(cfg, m, nil)
	require.NoError(t, err)
	defer k.Close()

	want := []shopguard.Finding{travelFinding("t1"), stuffingFinding("s1"), numbered(1)[0]}
	start := time.Now()
	require.NoError(t, k.Send(t.Context(), want...))
	require.Less(t, time.Since(start), time.Second, "a synchronous write does not wait for a fuller batch")

	msgs := readTopic(t, cfg.Brokers, len(want), nil)
	for i, msg := range msgs {
		require.Equal(t, want[i].ID, string(msg.Key))
		var got shopguard.Finding
		require.NoError(t, json.Unmarshal(msg.Value, &got))
		require.Equal(t, want[i], got)
		require.Equal(t, want[i].Rule, header(msg, "rule"))
		require.Equal(t, string(want[i].Severity), header(msg, "severity"))
	}
	require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_deliveries_total", "kafka", "success"))
	require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "kafka"))
}

func TestKafkaHoldsOnWhileDownThenDelivers(t *testing.T) {
	c := newCluster(t)
	fault := c.Fault(kfake.Fault{
		Keys:  []kmsg.Key{kmsg.Produce},
		Err:   kerr.NotEnoughReplicas,
		Count: -1,
	})
	cfg := DefaultKafkaConfig
	cfg.Brokers = c.ListenAddrs()
	reg, m := newTestMetrics()
	k, err := NewKafka(cfg, m, nil)
	require.NoError(t, err)
	defer k.Close()
	k.backoff = backoff{min: 10 * time.Millisecond, max: 50 * time.Millisecond}

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	err = k.Send(ctx, travelFinding("held"))
	require.ErrorIs(t, err, context.DeadlineExceeded, "Send holds on until its context ends, then says so")
	require.Greater(t, fault.Hits(), 1)
	require.GreaterOrEqual(t, metric(t, reg, "shopguard_sink_retries_total", "kafka"), 1.0)
	require.GreaterOrEqual(t, metric(t, reg, "shopguard_sink_deliveries_total", "kafka", "failure"), 1.0)
	require.Equal(t, 0.0, metric(t, reg, "shopguard_sink_up", "kafka"))

	// The broker recovers while a Send is waiting: it gets through.
	done := make(chan error, 1)
	go func() { done <- k.Send(t.Context(), travelFinding("held")) }()
	require.NoError(t, fault.Wait(t.Context(), fault.Hits()+1))
	fault.Remove()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not finish after the broker recovered")
	}
	msgs := readTopic(t, cfg.Brokers, 1, nil)
	require.Equal(t, "held", string(msgs[0].Key))
	require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "kafka"))
}

func TestKafkaSASLSCRAM(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(kafkaconf.SASLScramSHA512, "shopguard", "scram-pw"))
	t.Setenv("SHOPGUARD_TEST_KAFKA_PASSWORD", "scram-pw")
	cfg := DefaultKafkaConfig
	cfg.Brokers = c.ListenAddrs()
	cfg.SASL = SASLConfig{Mechanism: kafkaconf.SASLScramSHA512, Username: "shopguard", PasswordEnv: "SHOPGUARD_TEST_KAFKA_PASSWORD"}
	k, err := NewKafka(cfg, nil, nil)
	require.NoError(t, err)
	defer k.Close()
	require.NoError(t, k.Send(t.Context(), travelFinding("sasl")))

	mech, err := cfg.SASL.Build("k")
	require.NoError(t, err)
	msgs := readTopic(t, cfg.Brokers, 1, &kafka.Dialer{SASLMechanism: mech, Timeout: 5 * time.Second})
	require.Equal(t, "sasl", string(msgs[0].Key))

	// A wrong password is retried (it might be rotated back), not accepted.
	t.Setenv("SHOPGUARD_TEST_KAFKA_PASSWORD", "wrong")
	logger, logs := captureLogs()
	bad, err := NewKafka(cfg, nil, logger)
	require.NoError(t, err)
	defer bad.Close()
	bad.backoff = backoff{min: 10 * time.Millisecond, max: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	require.Error(t, bad.Send(ctx, travelFinding("x")))
	require.Contains(t, logs.String(), "kafka sink produce did not succeed")
	require.NotContains(t, logs.String(), "wrong", "the password is not logged")
	require.NotContains(t, logs.String(), "scram-pw")
}
