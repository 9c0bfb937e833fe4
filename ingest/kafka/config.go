package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard/internal/kafkaconf"
)

// The values of Config.StartOffset.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// The headers a dead-lettered message carries besides its original value.
const (
	HeaderReason    = "shopguard-reason"    // the DecodeError's Reason label, e.g. "bad_time"
	HeaderError     = "shopguard-error"     // the DecodeError's message
	HeaderPosition  = "shopguard-position"  // where it was read: topic/partition/offset or file:line
	HeaderTopic     = "shopguard-topic"     // original topic, when read from Kafka
	HeaderPartition = "shopguard-partition" // original partition, decimal
	HeaderOffset    = "shopguard-offset"    // original offset, decimal
)

// Config configures the Kafka source (YAML key "kafka") and, through
// its connection settings, the dead-letter writer and the range source.
//
// Decoding YAML into a Config starts from DefaultConfig, so keys
// left out keep their defaults, and stays strict when the decoder is.
type Config struct {
	// Client is how to reach the brokers: brokers, client_id,
	// dial_timeout, tls and sasl, the same keys as every Kafka
	// connection of shopguard's.
	kafkaconf.Client `yaml:",inline"`

	// Topic is the audit event topic.
	Topic string `yaml:"topic"`
	// Group is the consumer group. Instances sharing it split the
	// topic's partitions between them.
	Group string `yaml:"group"`
	// DeadLetterTopic receives messages that are not valid events, with
	// the reason in headers. Empty disables dead-lettering; bad messages
	// are still counted, logged and skipped.
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// StartOffset is where a group with no committed offset starts:
	// "earliest" (nothing already in the topic is skipped) or "latest".
	StartOffset string `yaml:"start_offset"`

	// MinBytes, MaxBytes and MaxWait shape each fetch request: the broker
	// answers once MinBytes are available or MaxWait has passed, with at
	// most MaxBytes per partition.
	MinBytes int           `yaml:"min_bytes"`
	MaxBytes int           `yaml:"max_bytes"`
	MaxWait  time.Duration `yaml:"max_wait"`
	// QueueCapacity bounds what the partition readers fetch ahead of the
	// source: QueueCapacity/64 chunks (at least 16) of 128 KiB each, a
	// chunk holding a few hundred messages (docs/operations.md).
	QueueCapacity int `yaml:"queue_capacity"`
	// BatchSize is the most events handed to the engine in one batch.
	BatchSize int `yaml:"batch_size"`
	// BatchLinger is how long a batch waits for more messages after its
	// first; it bounds the latency batching adds.
	BatchLinger time.Duration `yaml:"batch_linger"`
	// Lateness is how long the source waits for a partition that is
	// behind (its last fetch did not reach its end) and delivers nothing,
	// before it processes the other partitions' later events without it.
	// Partitions are merged by event time (stream time, SPEC §4); one
	// that was read to its end is idle and never waited for. Zero turns
	// the merge off: partitions are processed as they are fetched.
	Lateness time.Duration `yaml:"lateness"`
	// MaxBuffered bounds the events the merge holds while waiting; beyond
	// it the oldest go on regardless (counted as forced).
	MaxBuffered int `yaml:"max_buffered"`
	// CommitInterval coalesces offset commits: acknowledged offsets are
	// committed at most this often (and always on Close). Zero commits
	// after every acknowledged batch.
	CommitInterval time.Duration `yaml:"commit_interval"`

	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the
	// consumer group's timings.
	SessionTimeout    time.Duration `yaml:"session_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout"`
	// RetryBackoff and RetryBackoffMax bound the exponential backoff
	// between attempts after a fetch or commit error.
	RetryBackoff    time.Duration `yaml:"retry_backoff"`
	RetryBackoffMax time.Duration `yaml:"retry_backoff_max"`
	// MaxRetries is how many consecutive fetch or commit errors are
	// ridden out with backoff before Run returns the error to its
	// supervisor.
	MaxRetries int `yaml:"max_retries"`
}

// DefaultConfig is the Kafka configuration unless configured. It has
// no brokers: those must always be given.
var DefaultConfig = Config{
	Client:            kafkaconf.Client{ClientID: "shopguard", DialTimeout: 10 * time.Second},
	Topic:             "admin-audit",
	Group:             "shopguard",
	DeadLetterTopic:   "admin-audit-dlq",
	StartOffset:       StartEarliest,
	MinBytes:          1,
	MaxBytes:          4 << 20,
	MaxWait:           500 * time.Millisecond,
	QueueCapacity:     1000,
	BatchSize:         500,
	BatchLinger:       5 * time.Millisecond,
	Lateness:          2 * time.Second,
	MaxBuffered:       200_000,
	CommitInterval:    time.Second,
	SessionTimeout:    30 * time.Second,
	HeartbeatInterval: 3 * time.Second,
	RebalanceTimeout:  30 * time.Second,
	RetryBackoff:      100 * time.Millisecond,
	RetryBackoffMax:   5 * time.Second,
	MaxRetries:        10,
}

// UnmarshalYAML fills the keys the YAML leaves out from DefaultConfig.
// It uses the decoder's own unmarshal, so a strict decoder stays strict.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate returns every problem of c at once, each naming its key below
// "kafka." as it is spelled in the YAML file.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("kafka.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, c.Client.Validate("kafka", true)...)
	if msg := TopicProblem(c.Topic); msg != "" {
		bad("topic", "%s", msg)
	}
	if c.Group == "" {
		bad("group", "required")
	}
	if c.DeadLetterTopic != "" {
		if msg := TopicProblem(c.DeadLetterTopic); msg != "" {
			bad("dead_letter_topic", "%s", msg)
		} else if c.DeadLetterTopic == c.Topic {
			bad("dead_letter_topic", "must differ from kafka.topic, or bad messages would be read again")
		}
	}
	if c.StartOffset != StartEarliest && c.StartOffset != StartLatest {
		bad("start_offset", "%q is not %q or %q", c.StartOffset, StartEarliest, StartLatest)
	}
	if c.MinBytes < 1 {
		bad("min_bytes", "%d is below 1", c.MinBytes)
	}
	if c.MaxBytes < c.MinBytes || c.MaxBytes < 1 {
		bad("max_bytes", "%d is below min_bytes (%d)", c.MaxBytes, c.MinBytes)
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "%s is not positive", d)
		}
	}
	positive("max_wait", c.MaxWait)
	positive("session_timeout", c.SessionTimeout)
	positive("heartbeat_interval", c.HeartbeatInterval)
	positive("rebalance_timeout", c.RebalanceTimeout)
	positive("dial_timeout", c.DialTimeout)
	positive("retry_backoff", c.RetryBackoff)
	if c.HeartbeatInterval >= c.SessionTimeout && c.SessionTimeout > 0 {
		bad("heartbeat_interval", "%s must be below session_timeout (%s)", c.HeartbeatInterval, c.SessionTimeout)
	}
	if c.RetryBackoffMax < c.RetryBackoff {
		bad("retry_backoff_max", "%s is below retry_backoff (%s)", c.RetryBackoffMax, c.RetryBackoff)
	}
	if c.QueueCapacity < 1 {
		bad("queue_capacity", "%d is below 1", c.QueueCapacity)
	}
	if c.BatchSize < 1 || c.BatchSize > 100_000 {
		bad("batch_size", "%d is not between 1 and 100000", c.BatchSize)
	}
	if c.BatchLinger < 0 || c.BatchLinger > time.Second {
		bad("batch_linger", "%s is not between 0 and 1s", c.BatchLinger)
	}
	if c.Lateness < 0 || c.Lateness > time.Hour {
		bad("lateness", "%s is not between 0 (no merge) and 1h", c.Lateness)
	}
	if c.MaxBuffered < 1 {
		bad("max_buffered", "%d is below 1", c.MaxBuffered)
	}
	if c.CommitInterval < 0 {
		bad("commit_interval", "%s is negative", c.CommitInterval)
	}
	if c.MaxRetries < 0 {
		bad("max_retries", "%d is negative", c.MaxRetries)
	}
	return errors.Join(errs...)
}

// TopicProblem says what is wrong with a topic name, or "" if nothing.
func TopicProblem(t string) string {
	if t == "" {
		return "required"
	}
	if len(t) > 249 || t == "." || t == ".." {
		return fmt.Sprintf("%q is not a valid topic name", t)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Sprintf("%q is not a valid topic name (letters, digits, '.', '_' and '-' only)", t)
		}
	}
	return ""
}

// Backoff returns the delay before retry attempt n (1-based): RetryBackoff
// doubling up to RetryBackoffMax.
func (c Config) Backoff(n int) time.Duration {
	d := c.RetryBackoff
	for i := 1; i < n && d < c.RetryBackoffMax; i++ {
		d *= 2
	}
	return min(d, c.RetryBackoffMax)
}

// Loggers routes kafka-go's printf logs to slog: its chatter at Debug,
// its errors (which it retries itself, with backoff) at Warn.
func Loggers(l *slog.Logger) (info, errl kafkago.Logger) {
	logf := func(level slog.Level) kafkago.Logger {
		return kafkago.LoggerFunc(func(msg string, args ...any) {
			if l.Enabled(context.Background(), level) {
				l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(msg, args...)), "component", "kafka-go")
			}
		})
	}
	return logf(slog.LevelDebug), logf(slog.LevelWarn)
}
