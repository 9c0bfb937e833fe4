package kafka

import (
	"context"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// RawConsume reads n messages of cfg.Topic in consumer group cfg.Group with
// a bare kafka-go Reader (FetchMessage, no decoding, no commits) and returns
// how long that took. It is the baseline `shopguard bench --live` measures
// the Source against; shopguard itself never consumes this way.
func RawConsume(ctx context.Context, cfg Config, n int) (time.Duration, error) {
	dialer, err := cfg.Dialer("kafka")
	if err != nil {
		return 0, err
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, GroupID: cfg.Group, Dialer: dialer,
		MinBytes: cfg.MinBytes, MaxBytes: cfg.MaxBytes, MaxWait: cfg.MaxWait,
		QueueCapacity: cfg.QueueCapacity, StartOffset: kafkago.FirstOffset,
	})
	defer r.Close()
	start := time.Now()
	for i := range n {
		if _, err := r.FetchMessage(ctx); err != nil {
			return time.Since(start), fmt.Errorf("raw consume, message %d of %d: %w", i+1, n, err)
		}
	}
	return time.Since(start), nil
}
