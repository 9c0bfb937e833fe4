package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/internal/kafkaconf"
)

// SASLConfig is SASL authentication to Kafka, as for every Kafka connection
// of shopguard's. An empty Mechanism means none.
type SASLConfig = kafkaconf.SASL

// KafkaConfig configures the Kafka findings topic sink (`sinks.kafka`).
type KafkaConfig struct {
	// Brokers are the bootstrap brokers, host:port. Config.Validate lets
	// them be empty so that the program can fill in the brokers it consumes
	// from (shopguard run does); NewKafka requires them.
	Brokers []string `yaml:"brokers"`
	// Topic is the findings topic. It must exist (or the cluster must
	// create topics automatically).
	Topic string     `yaml:"topic"`
	TLS   TLSConfig  `yaml:"tls,omitempty"`
	SASL  SASLConfig `yaml:"sasl,omitempty"`
	// Timeout bounds one produce attempt, including its connection set-up.
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultKafkaConfig is the Kafka sink unless configured.
var DefaultKafkaConfig = KafkaConfig{Topic: "shopguard-findings", Timeout: 10 * time.Second}

// UnmarshalYAML fills the fields the YAML leaves out from
// DefaultKafkaConfig, keeping the decoder strict.
func (c *KafkaConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultKafkaConfig
	type plain KafkaConfig
	return unmarshal((*plain)(c))
}

// Validate reports every problem of the config, naming its key. The
// brokers are required here.
func (c KafkaConfig) Validate() error { return c.validate(configKey+".kafka", true).err() }

func (c KafkaConfig) validate(key string, needBrokers bool) problems {
	p := problems(c.client().Validate(key, needBrokers))
	if c.Topic == "" {
		p.addf(key+".topic", "required")
	}
	if c.Timeout <= 0 {
		p.addf(key+".timeout", "%s is not positive", c.Timeout)
	}
	return p
}

// client is the connection part of c: one produce attempt's Timeout bounds
// connecting, too.
func (c KafkaConfig) client() kafkaconf.Client {
	return kafkaconf.Client{Brokers: c.Brokers, ClientID: "shopguard", DialTimeout: c.Timeout, TLS: c.TLS, SASL: c.SASL}
}

// Kafka is a record sink that produces findings to the findings topic: key
// the finding id (so a compacted topic keeps one copy, and every copy of a
// finding lands on the same partition), value the finding's JSON, headers
// rule and severity. Send returns once every broker in the in-sync replica
// set has the findings (acks=all), retrying with backoff until its context
// is done.
type Kafka struct {
	w         *kafka.Writer
	transport *kafka.Transport
	topic     string
	backoff   backoff
	m         sinkMetrics
	log       *slog.Logger
	health    health
}

var _ shopguard.Sink = (*Kafka)(nil)

// NewKafka validates cfg, reads the SASL password and TLS files it names,
// and returns the sink. It does not connect until the first Send. m may be
// shared with other sinks; nil means unregistered metrics. A nil logger
// discards.
func NewKafka(cfg KafkaConfig, m *Metrics, logger *slog.Logger) (*Kafka, error) {
	const key = configKey + ".kafka"
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = orDiscard(logger)
	tr, err := cfg.client().Transport(key)
	if err != nil {
		return nil, err
	}
	kl := logger.With("sink", sinkKafka)
	w := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Murmur2Balancer{}, // the Java client's partitioner
		RequiredAcks: kafka.RequireAll,
		// Send retries itself (with metrics and logs); the writer's own
		// retries only ride out a leader change.
		MaxAttempts:     3,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 500 * time.Millisecond,
		// A synchronous write of fewer than BatchSize messages waits this
		// long for more; the commit path must not.
		BatchSize:    1000,
		BatchTimeout: 2 * time.Millisecond,
		ReadTimeout:  cfg.Timeout,
		WriteTimeout: cfg.Timeout,
		Transport:    tr,
		Logger: kafka.LoggerFunc(func(msg string, args ...any) {
			if kl.Enabled(context.Background(), slog.LevelDebug) {
				kl.Debug(fmt.Sprintf(msg, args...))
			}
		}),
		// Errors come back from WriteMessages and are logged there.
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			if kl.Enabled(context.Background(), slog.LevelDebug) {
				kl.Debug(fmt.Sprintf(msg, args...))
			}
		}),
	}
	return &Kafka{w: w, transport: tr, topic: cfg.Topic, backoff: recordBackoff, m: m.forSink(sinkKafka), log: logger}, nil
}

// Send produces one message per finding and returns once all are
// acknowledged, or the last error once ctx is done. After a partial failure
// only the messages that failed are produced again.
func (k *Kafka) Send(ctx context.Context, fs ...shopguard.Finding) error {
	if len(fs) == 0 {
		return nil
	}
	pending := make([]kafka.Message, len(fs))
	for i := range fs {
		f := &fs[i]
		v, err := marshalFinding(f)
		if err != nil {
			return fmt.Errorf("kafka sink: %w", err)
		}
		pending[i] = kafka.Message{
			Key:   []byte(f.ID),
			Value: v,
			Headers: []kafka.Header{
				{Key: "rule", Value: []byte(f.Rule)},
				{Key: "severity", Value: []byte(f.Severity)},
			},
		}
	}
	for attempt := 0; ; attempt++ {
		err := k.w.WriteMessages(ctx, pending...)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("kafka sink: produce %d findings to %s: %w", len(pending), k.topic, errors.Join(ctx.Err(), err))
		}
		k.m.delivered(err)
		k.health.set(err)
		if err == nil {
			if attempt > 0 {
				k.log.Info("kafka sink delivered after retries", "topic", k.topic, "attempts", attempt+1)
			}
			return nil
		}
		var werrs kafka.WriteErrors
		if errors.As(err, &werrs) && len(werrs) == len(pending) {
			failed := pending[:0:0]
			for i, e := range werrs {
				if e != nil {
					failed = append(failed, pending[i])
				}
			}
			pending = failed
		}
		wait := k.backoff.delay(attempt)
		k.log.Warn("kafka sink produce did not succeed; will retry, holding back the pipeline", "topic", k.topic,
			"findings", len(pending), "attempt", attempt+1, "retry_in", wait, "class", ClassifyError(err), "err", err)
		if sleepCtx(ctx, wait) != nil {
			return fmt.Errorf("kafka sink: produce %d findings to %s: %w", len(pending), k.topic, errors.Join(ctx.Err(), err))
		}
		k.m.retries.Inc()
	}
}

// Ready returns nil unless the last produce attempt failed, and then its
// error.
func (k *Kafka) Ready() error {
	if err := k.health.get(); err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	return nil
}

// Close flushes and closes the writer and its connections.
func (k *Kafka) Close() error {
	err := k.w.Close()
	k.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("close kafka writer: %w", err)
	}
	return nil
}
