package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// TestRewindGroup: RewindGroup sets back exactly the partitions committed
// past (or never committed) the given offsets, leaves the others alone,
// waits for a group with members and gives up when they stay, and
// succeeds once they have left.
func TestRewindGroup(t *testing.T) {
	c := kafkatest.New(t, map[string]int32{auditTopic: 2, dlqTopic: 1}, kfake.GroupMinSessionTimeout(500*time.Millisecond))
	var lines []string
	for i := range 20 {
		lines = append(lines, kafkaEventLine(fmt.Sprint(i), kafkaT0.Add(time.Duration(i)*time.Second)))
	}
	c.ProduceLines(t, auditTopic, 2, lines...)
	// RewindGroup waits SessionTimeout plus RebalanceTimeout for members
	// to go; the member below keeps a longer session of its own, so that
	// a slow machine cannot expire it while RewindGroup waits.
	cfg := kafkaTestConfig(c)
	cfg.SessionTimeout, cfg.RebalanceTimeout = 500*time.Millisecond, 500*time.Millisecond
	cfg.HeartbeatInterval = 100 * time.Millisecond
	memberCfg := kafkaTestConfig(c)
	ctx := context.Background()
	committed := func() map[int]int64 { return c.Committed(t, cfg.Group, cfg.Topic) }

	// Never committed: every partition is set.
	before, err := kafka.RewindGroup(ctx, cfg, map[int]int64{0: 10, 1: 10}, nil)
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: -1, 1: -1}, before)
	require.Equal(t, map[int]int64{0: 10, 1: 10}, committed())

	// Only the partition committed past the checkpoint moves.
	before, err = kafka.RewindGroup(ctx, cfg, map[int]int64{0: 4, 1: 10}, nil)
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 10}, before)
	require.Equal(t, map[int]int64{0: 4, 1: 10}, committed())

	// Committed behind the checkpoint: nothing to do (the source skips
	// what the state already holds).
	before, err = kafka.RewindGroup(ctx, cfg, map[int]int64{0: 8, 1: 10}, nil)
	require.NoError(t, err)
	require.Empty(t, before)
	require.Equal(t, map[int]int64{0: 4, 1: 10}, committed())

	// A live member keeps the group from taking a commit from outside.
	h := startKafkaSource(t, memberCfg, nil)
	h.next()
	began := time.Now()
	_, err = kafka.RewindGroup(ctx, cfg, map[int]int64{0: 2, 1: 10}, nil)
	require.ErrorContains(t, err, "the group kept members")
	require.GreaterOrEqual(t, time.Since(began), cfg.SessionTimeout+cfg.RebalanceTimeout)
	require.Equal(t, map[int]int64{0: 4, 1: 10}, committed())

	// Once it has left, the rewind goes through.
	require.NoError(t, h.stop())
	require.NoError(t, h.src.Close(ctx))
	before, err = kafka.RewindGroup(ctx, cfg, map[int]int64{0: 2, 1: 10}, nil)
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 4}, before)
	require.Equal(t, map[int]int64{0: 2, 1: 10}, committed())

	// A cancelled wait returns at once.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = kafka.RewindGroup(cctx, cfg, map[int]int64{0: 1}, nil)
	require.ErrorIs(t, err, context.Canceled)
}

// TestFlushToCommitsNoFurther: with commits on flush only, FlushTo commits
// the acknowledged offsets up to its limit and no further, nothing for
// partitions it does not name, and a later Flush commits the rest.
func TestFlushToCommitsNoFurther(t *testing.T) {
	c := newKafkaCluster(t, 1)
	var lines []string
	for i := range 10 {
		lines = append(lines, kafkaEventLine(fmt.Sprint(i), kafkaT0.Add(time.Duration(i)*time.Second)))
	}
	c.ProduceLines(t, auditTopic, 1, lines...)
	cfg := kafkaTestConfig(c)
	reg := prometheus.NewRegistry()
	src, err := kafka.NewSource(cfg, kafka.SourceOptions{Metrics: ingest.NewMetrics(reg),
		Kafka: kafka.NewMetrics(reg), Logger: kafkaTestLogger, CommitOnFlush: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan shopguard.Batch, 4)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	for n := 0; n < 10; {
		select {
		case b := <-out:
			n += len(b.Events)
			b.Done()
		case <-time.After(15 * time.Second):
			t.Fatal("no batch within 15 s")
		}
	}
	require.Equal(t, map[int]int64{0: 10}, src.Acknowledged())
	committed := func() map[int]int64 { return c.Committed(t, cfg.Group, cfg.Topic) }

	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	require.NoError(t, src.FlushTo(fctx, map[int]int64{1: 5}))
	require.Empty(t, committed(), "a partition not named is not committed")
	require.NoError(t, src.FlushTo(fctx, map[int]int64{0: 6}))
	require.Equal(t, map[int]int64{0: 6}, committed())
	require.NoError(t, src.FlushTo(fctx, map[int]int64{0: 6}))
	require.Equal(t, map[int]int64{0: 6}, committed())
	require.NoError(t, src.FlushTo(fctx, map[int]int64{0: 20}))
	require.Equal(t, map[int]int64{0: 10}, committed(), "never past what was acknowledged")

	cancel()
	require.NoError(t, <-done)
	require.NoError(t, src.Close(context.Background()))
}
