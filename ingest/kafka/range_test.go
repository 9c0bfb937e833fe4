package kafka_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// kafkaRangeEvents are n events one minute apart from kafkaT0, over several
// accounts, with ids e000, e001, ….
func kafkaRangeEvents(n int) []shopguard.Event {
	evs := make([]shopguard.Event, n)
	for i := range evs {
		evs[i] = shopguard.Event{
			Time:   kafkaT0.Add(time.Duration(i) * time.Minute),
			ShopID: fmt.Sprintf("shop-%d", i%4), Actor: fmt.Sprintf("user%d@example.jp", i%7),
			Action: shopguard.ActionLoginSuccess, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
			ID: fmt.Sprintf("e%03d", i),
		}
	}
	return evs
}

// replayKafkaRange runs a KafkaRangeSource to its end and returns the ids it
// delivered, in order, and Run's result.
func replayKafkaRange(t *testing.T, cfg kafka.Config, rng kafka.Range, m *ingest.Metrics) ([]string, error) {
	t.Helper()
	src, err := kafka.NewRangeSource(cfg, rng, kafka.SourceOptions{Metrics: m, Logger: kafkaTestLogger})
	require.NoError(t, err)
	out := make(chan shopguard.Batch, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	go func() { done <- src.Run(ctx, out) }()
	var got []string
	for {
		select {
		case b := <-out:
			require.Nil(t, b.Done, "a replay commits nothing")
			require.LessOrEqual(t, len(b.Events), cfg.BatchSize)
			got = append(got, batchIDs(b)...)
		case err := <-done:
			for len(out) > 0 {
				got = append(got, batchIDs(<-out)...)
			}
			require.NoError(t, ctx.Err(), "the range ends by itself")
			return got, err
		}
	}
}

// kafkaIDsBetween returns the ids of events i..j of kafkaRangeEvents.
func kafkaIDsBetween(i, j int) []string {
	var out []string
	for k := i; k <= j; k++ {
		out = append(out, fmt.Sprintf("e%03d", k))
	}
	return out
}

// TestKafkaRangeSource replays a time range of a topic keyed by account:
// exactly the events in [since, until], in event-time order, equal to a
// file replay of the same events, with nothing committed.
func TestKafkaRangeSource(t *testing.T) {
	c := newKafkaCluster(t, 3)
	cfg := kafkaTestConfig(c)
	cfg.BatchSize = 16
	evs := kafkaRangeEvents(200)
	// Invalid messages inside and after the window are skipped; the one
	// after it is not even read.
	c.ProduceEvents(t, auditTopic, evs[:100]...)
	c.Produce(t, auditTopic, kafkatest.ToPartition(1, kafkago.Message{Value: []byte("not json"), Time: kafkaT0.Add(100 * time.Minute)}))
	c.ProduceEvents(t, auditTopic, evs[100:]...)
	c.Produce(t, auditTopic, kafkatest.ToPartition(2, kafkago.Message{Value: []byte("{}"), Time: kafkaT0.Add(500 * time.Minute)}))

	since, until := kafkaT0.Add(50*time.Minute), kafkaT0.Add(150*time.Minute)
	m := ingest.NewMetrics(prometheus.NewRegistry())
	got, err := replayKafkaRange(t, cfg, kafka.Range{Since: since, Until: until, Slack: -1}, m)
	require.NoError(t, err)
	require.Equal(t, kafkaIDsBetween(50, 150), got, "both ends included, in time order across partitions")
	require.EqualValues(t, 101, m.Stats().Events)
	require.Equal(t, map[string]int64{"not_json": 1}, m.Stats().Invalid, "only what was read counts")
	require.Empty(t, c.Committed(t, cfg.Group, auditTopic), "no group, no commits")

	// A file replay of the same events, cut to the same window, hands the
	// engine the same sequence.
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var body []byte
	for i := range evs {
		body = append(append(body, kafkatest.EncodeEvent(&evs[i])...), '\n')
	}
	require.NoError(t, os.WriteFile(path, body, 0o600))
	fout := make(chan shopguard.Batch, 300)
	require.NoError(t, (&ingest.FileSource{Paths: []string{path}}).Run(t.Context(), fout))
	close(fout)
	var fromFile []string
	for b := range fout {
		for _, ev := range b.Events {
			if !ev.Time.Before(since) && !ev.Time.After(until) {
				fromFile = append(fromFile, ev.ID)
			}
		}
	}
	require.Equal(t, fromFile, got)

	// A window before everything and one after everything are empty.
	got, err = replayKafkaRange(t, cfg, kafka.Range{Since: kafkaT0.Add(-time.Hour), Until: kafkaT0.Add(-time.Minute), Slack: -1}, nil)
	require.NoError(t, err)
	require.Empty(t, got)
	got, err = replayKafkaRange(t, cfg, kafka.Range{Since: kafkaT0.Add(1000 * time.Minute), Until: kafkaT0.Add(2000 * time.Minute)}, nil)
	require.NoError(t, err)
	require.Empty(t, got)
}

// TestKafkaRangeTiesAndSlack checks the merge order of events with equal
// times (partition, then offset) and that Slack finds events written to
// Kafka later than their event time.
func TestKafkaRangeTiesAndSlack(t *testing.T) {
	c := newKafkaCluster(t, 2)
	cfg := kafkaTestConfig(c)
	at := kafkaT0.Add(10 * time.Minute)
	ev := func(id string, tm time.Time) []byte {
		e := shopguard.Event{Time: tm, ShopID: "s", Actor: "a", Action: shopguard.ActionLogout, IP: netip.MustParseAddr("192.0.2.1"), ID: id}
		return kafkatest.EncodeEvent(&e)
	}
	c.Produce(t, auditTopic,
		kafkatest.ToPartition(1, kafkago.Message{Value: ev("p1-a", at), Time: at}),
		kafkatest.ToPartition(1, kafkago.Message{Value: ev("p1-b", at), Time: at}),
		kafkatest.ToPartition(0, kafkago.Message{Value: ev("p0-a", at), Time: at}),
		kafkatest.ToPartition(0, kafkago.Message{Value: ev("p0-early", at.Add(-time.Minute)), Time: at}),
		// Written three minutes after its event time, past the window's end.
		kafkatest.ToPartition(0, kafkago.Message{Value: ev("p0-late", at.Add(time.Minute)), Time: at.Add(4 * time.Minute)}),
	)
	rng := kafka.Range{Since: at.Add(-time.Minute), Until: at.Add(time.Minute)}
	got, err := replayKafkaRange(t, cfg, rng, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"p0-a", "p0-early", "p1-a", "p1-b", "p0-late"}, got,
		"partition 0 is merged as it is (not re-sorted); ties go to the lower partition")

	rng.Slack = -1
	got, err = replayKafkaRange(t, cfg, rng, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"p0-a", "p0-early", "p1-a", "p1-b"}, got, "without slack the late record is past the end")
}

func TestKafkaRangeStrict(t *testing.T) {
	c := newKafkaCluster(t, 1)
	cfg := kafkaTestConfig(c)
	evs := kafkaRangeEvents(10)
	msgs := kafkatest.EventMessages(evs...)
	msgs[6] = kafkago.Message{Value: []byte(`{"time":"yesterday"}`), Time: evs[6].Time}
	c.Produce(t, auditTopic, msgs...)

	m := ingest.NewMetrics(prometheus.NewRegistry())
	got, err := replayKafkaRange(t, cfg, kafka.Range{Since: kafkaT0, Until: kafkaT0.Add(time.Hour), Strict: true}, m)
	require.ErrorContains(t, err, "admin-audit/0/6: invalid message: ")
	require.ErrorIs(t, err, ingest.ErrMalformed)
	require.Equal(t, kafkaIDsBetween(0, 5), got, "the events before it are delivered")
	require.Equal(t, int64(1), m.Stats().InvalidTotal())
}

func TestKafkaRangeErrors(t *testing.T) {
	cfg := kafka.DefaultConfig
	cfg.Brokers = []string{"127.0.0.1:1"}
	_, err := kafka.NewRangeSource(cfg, kafka.Range{Since: kafkaT0, Until: kafkaT0.Add(-time.Second)}, kafka.SourceOptions{})
	require.ErrorContains(t, err, "until: 2026-01-07T08:59:59Z is before since")
	_, err = kafka.NewRangeSource(cfg, kafka.Range{}, kafka.SourceOptions{})
	require.ErrorContains(t, err, "since: a start time is required")
	require.ErrorContains(t, err, "until: an end time is required")

	c := newKafkaCluster(t, 1)
	cfg = kafkaTestConfig(c)
	cfg.Topic = "no-such-topic"
	cfg.MaxRetries = 1
	_, err = replayKafkaRange(t, cfg, kafka.Range{Since: kafkaT0, Until: kafkaT0.Add(time.Hour)}, nil)
	require.ErrorContains(t, err, "topic no-such-topic")
}
