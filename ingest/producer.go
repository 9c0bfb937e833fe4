package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
)

// AppendFunc appends one event as its JSON wire form (SPEC §1) to dst.
type AppendFunc func(dst []byte, ev *shopguard.Event) []byte

// KafkaProducer writes audit events to the events topic, keyed by account
// (shop_id + actor), the key every account-keyed rule needs to see all of an
// account's events on one partition. The generator uses it to feed the demo
// and docker-compose; shopguard itself never produces audit events.
type KafkaProducer struct {
	w      *kafka.Writer
	encode AppendFunc
	msgs   []kafka.Message
}

// NewKafkaProducer returns a producer writing to cfg.Topic on cfg.Brokers,
// encoding events with encode.
func NewKafkaProducer(cfg KafkaConfig, encode AppendFunc) (*KafkaProducer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("kafka.brokers: at least one broker is required")
	}
	tr, err := cfg.transport()
	if err != nil {
		return nil, err
	}
	return &KafkaProducer{
		w: &kafka.Writer{
			Addr:         kafka.TCP(cfg.Brokers...),
			Topic:        cfg.Topic,
			Balancer:     &kafka.Hash{},
			RequiredAcks: kafka.RequireAll,
			BatchTimeout: 5 * time.Millisecond,
			BatchSize:    1000,
			Transport:    tr,
		},
		encode: encode,
	}, nil
}

// Produce writes evs and returns once the brokers acknowledged them.
func (p *KafkaProducer) Produce(ctx context.Context, evs ...shopguard.Event) error {
	p.msgs = p.msgs[:0]
	for i := range evs {
		ev := &evs[i]
		key := make([]byte, 0, len(ev.ShopID)+1+len(ev.Actor))
		key = append(append(append(key, ev.ShopID...), 0), ev.Actor...)
		p.msgs = append(p.msgs, kafka.Message{Key: key, Value: p.encode(nil, ev), Time: ev.Time})
	}
	if err := p.w.WriteMessages(ctx, p.msgs...); err != nil {
		return fmt.Errorf("produce %d events to %s: %w", len(evs), p.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the writer.
func (p *KafkaProducer) Close() error { return p.w.Close() }
