package kafka

import (
	"context"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
)

// AppendFunc appends one event as its JSON wire form (SPEC §1) to dst.
type AppendFunc func(dst []byte, ev *shopguard.Event) []byte

// Producer writes audit events to the events topic, keyed by account
// (shop_id + actor), the key every account-keyed rule needs to see all of an
// account's events on one partition. The generator uses it to feed the demo
// and docker-compose; shopguard itself never produces audit events.
type Producer struct {
	w      *kafkago.Writer
	encode AppendFunc
	msgs   []kafkago.Message
}

// NewProducer returns a producer writing to cfg.Topic on cfg.Brokers,
// encoding events with encode.
func NewProducer(cfg Config, encode AppendFunc) (*Producer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("kafka.brokers: at least one broker is required")
	}
	tr, err := cfg.Transport("kafka")
	if err != nil {
		return nil, err
	}
	return &Producer{
		w: &kafkago.Writer{
			Addr:         kafkago.TCP(cfg.Brokers...),
			Topic:        cfg.Topic,
			Balancer:     &kafkago.Hash{},
			RequiredAcks: kafkago.RequireAll,
			BatchTimeout: 5 * time.Millisecond,
			BatchSize:    1000,
			Transport:    tr,
		},
		encode: encode,
	}, nil
}

// Produce writes evs and returns once the brokers acknowledged them.
func (p *Producer) Produce(ctx context.Context, evs ...shopguard.Event) error {
	p.msgs = p.msgs[:0]
	for i := range evs {
		ev := &evs[i]
		key := make([]byte, 0, len(ev.ShopID)+1+len(ev.Actor))
		key = append(append(append(key, ev.ShopID...), 0), ev.Actor...)
		p.msgs = append(p.msgs, kafkago.Message{Key: key, Value: p.encode(nil, ev), Time: ev.Time})
	}
	if err := p.w.WriteMessages(ctx, p.msgs...); err != nil {
		return fmt.Errorf("produce %d events to %s: %w", len(evs), p.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the writer.
func (p *Producer) Close() error { return p.w.Close() }
