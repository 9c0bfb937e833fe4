package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard/ingest"
)

// DeadLetter writes invalid messages to the dead-letter topic: the
// original value as is, and headers naming the reason, the error and where
// the message was read. It implements DeadLetter.
type DeadLetter struct {
	w     *kafkago.Writer
	tr    *kafkago.Transport
	topic string
	m     *Metrics
	log   *slog.Logger
}

var _ ingest.DeadLetter = (*DeadLetter)(nil)

// NewDeadLetter returns a writer to cfg.DeadLetterTopic; it is an
// error if that is empty. m may be nil (unregistered metrics); a nil logger
// discards. It does not connect until the first message.
func NewDeadLetter(cfg Config, m *Metrics, logger *slog.Logger) (*DeadLetter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DeadLetterTopic == "" {
		return nil, errors.New("kafka.dead_letter_topic: empty, dead-lettering is disabled")
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tr, err := cfg.Transport("kafka")
	if err != nil {
		return nil, err
	}
	info, errl := Loggers(logger.With("topic", cfg.DeadLetterTopic))
	w := &kafkago.Writer{
		Addr:     kafkago.TCP(cfg.Brokers...),
		Topic:    cfg.DeadLetterTopic,
		Balancer: &kafkago.Hash{},
		// Dead-lettering is synchronous on the consume path: a few quick
		// attempts ride out a leader change, and a dead-letter topic that
		// stays down costs each bad message about a second, not the
		// pipeline.
		MaxAttempts:     3,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 500 * time.Millisecond,
		BatchSize:       1, // a synchronous single write must not wait for company
		BatchBytes:      16 << 20,
		RequiredAcks:    kafkago.RequireAll,
		ReadTimeout:     cfg.DialTimeout,
		WriteTimeout:    cfg.DialTimeout,
		Transport:       tr,
		Logger:          info,
		ErrorLogger:     errl,
	}
	return &DeadLetter{w: w, tr: tr, topic: cfg.DeadLetterTopic, m: m, log: logger}, nil
}

// DeadLetter writes raw to the dead-letter topic and returns once it is
// acknowledged by all in-sync replicas. pos is "topic/partition/offset"
// for Kafka input (then the original coordinates become headers too and
// "topic/partition" the key, keeping one partition's rejects in order) or
// "file:line" for files.
func (d *DeadLetter) DeadLetter(ctx context.Context, pos string, raw []byte, derr *ingest.DecodeError) error {
	msg := kafkago.Message{
		Value: raw,
		Headers: []kafkago.Header{
			{Key: HeaderReason, Value: []byte(derr.Reason.String())},
			{Key: HeaderError, Value: []byte(derr.Error())},
			{Key: HeaderPosition, Value: []byte(pos)},
		},
	}
	if topic, part, off, ok := splitPos(pos); ok {
		msg.Key = []byte(topic + "/" + part)
		msg.Headers = append(msg.Headers,
			kafkago.Header{Key: HeaderTopic, Value: []byte(topic)},
			kafkago.Header{Key: HeaderPartition, Value: []byte(part)},
			kafkago.Header{Key: HeaderOffset, Value: []byte(off)})
	} else {
		msg.Key = []byte(pos)
	}
	if err := d.w.WriteMessages(ctx, msg); err != nil {
		d.m.failed.Inc()
		return fmt.Errorf("dead-letter %s to %s: %w", pos, d.topic, err)
	}
	d.m.written.Inc()
	return nil
}

// Close flushes and closes the writer.
func (d *DeadLetter) Close() error {
	err := d.w.Close()
	d.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("close dead-letter writer: %w", err)
	}
	return nil
}

// splitPos splits "topic/partition/offset"; topic names cannot contain '/'.
func splitPos(pos string) (topic, part, off string, ok bool) {
	topic, rest, ok1 := strings.Cut(pos, "/")
	part, off, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || topic == "" {
		return "", "", "", false
	}
	if _, err := strconv.Atoi(part); err != nil {
		return "", "", "", false
	}
	if _, err := strconv.ParseInt(off, 10, 64); err != nil {
		return "", "", "", false
	}
	return topic, part, off, true
}
