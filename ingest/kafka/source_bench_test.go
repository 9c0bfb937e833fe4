package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// kafkaBenchEvents is how many events each benchmark iteration consumes.
const kafkaBenchEvents = 50_000

// kafkaBenchCluster starts a cluster whose audit topic (3 partitions)
// holds kafkaBenchEvents generated events keyed by account.
func kafkaBenchCluster(b *testing.B) *kafkatest.Cluster {
	b.Helper()
	c := kafkatest.New(b, map[string]int32{auditTopic: 3})
	evs := kafkaRangeEvents(kafkaBenchEvents)
	for i := range evs {
		evs[i].UserAgent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
		evs[i].SessionID = fmt.Sprintf("sess-%08x", i*2654435761)
	}
	c.ProduceEvents(b, auditTopic, evs...)
	return c
}

// BenchmarkKafkaSource measures the consume rate through the embedded
// broker: a KafkaSource in a fresh consumer group reads the whole topic,
// decodes every event, and commits as each batch is acknowledged.
func BenchmarkKafkaSource(b *testing.B) {
	c := kafkaBenchCluster(b)
	cfg := kafka.DefaultConfig
	cfg.Brokers = c.Addrs()
	b.ReportAllocs()
	total, group := 0, 0
	for b.Loop() {
		group++
		cfg.Group = fmt.Sprintf("bench-%d", group)
		src, err := kafka.NewSource(cfg, kafka.SourceOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan shopguard.Batch, 4)
		done := make(chan error, 1)
		go func() { done <- src.Run(ctx, out) }()
		for n := 0; n < kafkaBenchEvents; {
			select {
			case bt := <-out:
				n += len(bt.Events)
				bt.Done()
			case err := <-done:
				b.Fatalf("Run: %v", err)
			case <-time.After(30 * time.Second):
				b.Fatal("stalled")
			}
		}
		total += kafkaBenchEvents
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if err := src.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkKafkaRawConsume is the baseline for BenchmarkKafkaSource: a
// plain kafka-go consumer-group Reader fetching the same topic in a
// FetchMessage loop, without decoding or committing.
func BenchmarkKafkaRawConsume(b *testing.B) {
	c := kafkaBenchCluster(b)
	b.ReportAllocs()
	total, group := 0, 0
	for b.Loop() {
		group++
		r := kafkago.NewReader(kafkago.ReaderConfig{
			Brokers: c.Addrs(), GroupID: fmt.Sprintf("raw-%d", group), Topic: auditTopic,
			StartOffset: kafkago.FirstOffset, MaxBytes: kafka.DefaultConfig.MaxBytes,
			MaxWait: kafka.DefaultConfig.MaxWait, QueueCapacity: kafka.DefaultConfig.QueueCapacity,
		})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		for range kafkaBenchEvents {
			if _, err := r.FetchMessage(ctx); err != nil {
				b.Fatal(err)
			}
		}
		cancel()
		total += kafkaBenchEvents
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}
