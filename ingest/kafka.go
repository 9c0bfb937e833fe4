package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/shopguard/shopguard"
)

// The SASL mechanisms the Kafka source supports. Matching is
// case-insensitive, so scram-sha-512 works as well.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// The values of KafkaConfig.StartOffset.
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

// KafkaConfig configures the Kafka source (YAML key "kafka") and, through
// its connection settings, the dead-letter writer and the range source.
//
// Decoding YAML into a KafkaConfig starts from DefaultKafkaConfig, so keys
// left out keep their defaults, and stays strict when the decoder is.
type KafkaConfig struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
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
	// ClientID names shopguard in the brokers' logs and quotas.
	ClientID string `yaml:"client_id"`

	// MinBytes, MaxBytes and MaxWait shape each fetch request: the broker
	// answers once MinBytes are available or MaxWait has passed, with at
	// most MaxBytes per partition.
	MinBytes int           `yaml:"min_bytes"`
	MaxBytes int           `yaml:"max_bytes"`
	MaxWait  time.Duration `yaml:"max_wait"`
	// QueueCapacity is how many fetched messages kafka-go buffers ahead
	// of the source.
	QueueCapacity int `yaml:"queue_capacity"`
	// BatchSize is the most events handed to the engine in one batch.
	BatchSize int `yaml:"batch_size"`
	// BatchLinger is how long a batch waits for more messages after its
	// first; it bounds the latency batching adds.
	BatchLinger time.Duration `yaml:"batch_linger"`
	// CommitInterval coalesces offset commits: acknowledged offsets are
	// committed at most this often (and always on Close). Zero commits
	// after every acknowledged batch.
	CommitInterval time.Duration `yaml:"commit_interval"`

	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the
	// consumer group's timings.
	SessionTimeout    time.Duration `yaml:"session_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout"`
	// DialTimeout bounds connecting to a broker, TLS and SASL included.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RetryBackoff and RetryBackoffMax bound the exponential backoff
	// between attempts after a fetch or commit error.
	RetryBackoff    time.Duration `yaml:"retry_backoff"`
	RetryBackoffMax time.Duration `yaml:"retry_backoff_max"`
	// MaxRetries is how many consecutive fetch or commit errors are
	// ridden out with backoff before Run returns the error to its
	// supervisor.
	MaxRetries int `yaml:"max_retries"`

	TLS  KafkaTLSConfig  `yaml:"tls"`
	SASL KafkaSASLConfig `yaml:"sasl"`
}

// KafkaTLSConfig is TLS for Kafka connections.
type KafkaTLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// clusters that authenticate clients by certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name the broker certificates are checked
	// for.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off certificate verification. Only for
	// tests.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// KafkaSASLConfig is SASL authentication to Kafka. An empty Mechanism means
// none. The password is read from PasswordFile or the environment variable
// PasswordEnv when the source is built; it is never logged.
type KafkaSASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN only
	// together with TLS, since it sends the password as is).
	Mechanism    string `yaml:"mechanism"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

// DefaultKafkaConfig is the Kafka configuration unless configured. It has
// no brokers: those must always be given.
var DefaultKafkaConfig = KafkaConfig{
	Topic:             "admin-audit",
	Group:             "shopguard",
	DeadLetterTopic:   "admin-audit-dlq",
	StartOffset:       StartEarliest,
	ClientID:          "shopguard",
	MinBytes:          1,
	MaxBytes:          4 << 20,
	MaxWait:           500 * time.Millisecond,
	QueueCapacity:     1000,
	BatchSize:         500,
	BatchLinger:       5 * time.Millisecond,
	CommitInterval:    time.Second,
	SessionTimeout:    30 * time.Second,
	HeartbeatInterval: 3 * time.Second,
	RebalanceTimeout:  30 * time.Second,
	DialTimeout:       10 * time.Second,
	RetryBackoff:      100 * time.Millisecond,
	RetryBackoffMax:   5 * time.Second,
	MaxRetries:        10,
}

// UnmarshalYAML fills the keys the YAML leaves out from DefaultKafkaConfig.
// It uses the decoder's own unmarshal, so a strict decoder stays strict.
func (c *KafkaConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultKafkaConfig
	type plain KafkaConfig
	return unmarshal((*plain)(c))
}

// Validate returns every problem of c at once, each naming its key below
// "kafka." as it is spelled in the YAML file.
func (c KafkaConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("kafka.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if len(c.Brokers) == 0 {
		bad("brokers", "at least one broker (host:port) is required")
	}
	for i, b := range c.Brokers {
		if host, port, err := net.SplitHostPort(b); err != nil || host == "" || port == "" {
			bad(fmt.Sprintf("brokers[%d]", i), "%q is not host:port", b)
		}
	}
	if msg := topicProblem(c.Topic); msg != "" {
		bad("topic", "%s", msg)
	}
	if c.Group == "" {
		bad("group", "required")
	}
	if c.DeadLetterTopic != "" {
		if msg := topicProblem(c.DeadLetterTopic); msg != "" {
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
	if c.CommitInterval < 0 {
		bad("commit_interval", "%s is negative", c.CommitInterval)
	}
	if c.MaxRetries < 0 {
		bad("max_retries", "%d is negative", c.MaxRetries)
	}
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("tls.cert_file", "cert_file and key_file go together")
	}
	if !t.Enabled && t != (KafkaTLSConfig{}) {
		bad("tls.enabled", "TLS options are set but enabled is false")
	}
	if s := c.SASL; s != (KafkaSASLConfig{}) {
		switch strings.ToUpper(s.Mechanism) {
		case SASLPlain:
			if !t.Enabled {
				bad("sasl.mechanism", "PLAIN sends the password in clear text; enable kafka.tls or use SCRAM-SHA-512")
			}
		case SASLScramSHA256, SASLScramSHA512:
		default:
			bad("sasl.mechanism", "%q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
		}
		if s.Username == "" {
			bad("sasl.username", "required")
		}
		switch {
		case s.PasswordFile == "" && s.PasswordEnv == "":
			bad("sasl.password_file", "one of password_file and password_env is required")
		case s.PasswordFile != "" && s.PasswordEnv != "":
			bad("sasl.password_file", "password_file and password_env are exclusive")
		}
	}
	return errors.Join(errs...)
}

// topicProblem says what is wrong with a topic name, or "" if nothing.
func topicProblem(t string) string {
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

// security loads the TLS files and the SASL password the config names.
func (c KafkaConfig) security() (*tls.Config, sasl.Mechanism, error) {
	var tc *tls.Config
	if c.TLS.Enabled {
		tc = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			ServerName:         c.TLS.ServerName,
			InsecureSkipVerify: c.TLS.InsecureSkipVerify, //nolint:gosec // explicit opt-in, for tests
		}
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("kafka.tls.ca_file: no PEM certificates in %s", c.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		if c.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
			if err != nil {
				return nil, nil, fmt.Errorf("kafka.tls.cert_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	s := c.SASL
	if s == (KafkaSASLConfig{}) {
		return tc, nil, nil
	}
	var password string
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("kafka.sasl.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
		if password == "" {
			return nil, nil, fmt.Errorf("kafka.sasl.password_file: %s is empty", s.PasswordFile)
		}
	} else {
		password = strings.TrimSpace(os.Getenv(s.PasswordEnv))
		if password == "" {
			return nil, nil, fmt.Errorf("kafka.sasl.password_env: environment variable %s is empty or unset", s.PasswordEnv)
		}
	}
	var (
		m   sasl.Mechanism
		err error
	)
	switch strings.ToUpper(s.Mechanism) {
	case SASLPlain:
		m = plain.Mechanism{Username: s.Username, Password: password}
	case SASLScramSHA256:
		m, err = scram.Mechanism(scram.SHA256, s.Username, password)
	case SASLScramSHA512:
		m, err = scram.Mechanism(scram.SHA512, s.Username, password)
	default:
		err = fmt.Errorf("unknown mechanism %q", s.Mechanism)
	}
	if err != nil { // scram's errors name the user name at most, never the password
		return nil, nil, fmt.Errorf("kafka.sasl.mechanism: %w", err)
	}
	return tc, m, nil
}

// transport returns a kafka-go transport for Writers and Clients.
func (c KafkaConfig) transport() (*kafka.Transport, error) {
	tc, mech, err := c.security()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{ClientID: c.ClientID, DialTimeout: c.DialTimeout, TLS: tc, SASL: mech}, nil
}

// dialer returns a kafka-go dialer for Readers.
func (c KafkaConfig) dialer() (*kafka.Dialer, error) {
	tc, mech, err := c.security()
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{ClientID: c.ClientID, Timeout: c.DialTimeout, DualStack: true, TLS: tc, SASLMechanism: mech}, nil
}

// backoff returns the delay before retry attempt n (1-based): RetryBackoff
// doubling up to RetryBackoffMax.
func (c KafkaConfig) backoff(n int) time.Duration {
	d := c.RetryBackoff
	for i := 1; i < n && d < c.RetryBackoffMax; i++ {
		d *= 2
	}
	return min(d, c.RetryBackoffMax)
}

// kafkaLoggers routes kafka-go's printf logs to slog: its chatter at Debug,
// its errors (which it retries itself, with backoff) at Warn.
func kafkaLoggers(l *slog.Logger) (info, errl kafka.Logger) {
	logf := func(level slog.Level) kafka.Logger {
		return kafka.LoggerFunc(func(msg string, args ...any) {
			if l.Enabled(context.Background(), level) {
				l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(msg, args...)), "component", "kafka-go")
			}
		})
	}
	return logf(slog.LevelDebug), logf(slog.LevelWarn)
}

// KafkaMetrics are the metrics of the Kafka source and dead-letter writer.
// One KafkaMetrics may serve several sources.
type KafkaMetrics struct {
	messages     prometheus.Counter
	lag          *prometheus.GaugeVec
	commits      prometheus.Counter
	commitErrors prometheus.Counter
	redelivered  prometheus.Counter
	written      prometheus.Counter
	failed       prometheus.Counter

	// fetch_errors_total is errors FetchMessage returned plus those
	// kafka-go retried internally, which only Reader.Stats reveals; it is
	// read at scrape time.
	fetchErrors atomic.Uint64
	mu          sync.Mutex
	sources     map[*KafkaSource]struct{}
	retired     uint64 // internal errors of closed sources
}

// NewKafkaMetrics registers the Kafka metrics on reg (nil: unregistered).
func NewKafkaMetrics(reg prometheus.Registerer) *KafkaMetrics {
	f := promauto.With(reg)
	m := &KafkaMetrics{
		messages: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_messages_total",
			Help: "Messages fetched from the audit topic, valid or not.",
		}),
		lag: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopguard_kafka_consumer_lag",
			Help: "Messages in the partition after the last one fetched, as of that fetch.",
		}, []string{"partition"}),
		commits: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_commits_total",
			Help: "Successful offset commits.",
		}),
		commitErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_commit_errors_total",
			Help: "Offset commits that did not succeed (they are retried).",
		}),
		redelivered: f.NewCounter(prometheus.CounterOpts{
			Name: "shopguard_kafka_redelivered_total",
			Help: "Messages fetched again after a rebalance or retry that this process had already processed; acknowledged, not processed twice.",
		}),
		sources: map[*KafkaSource]struct{}{},
	}
	dl := f.NewCounterVec(prometheus.CounterOpts{
		Name: "shopguard_dead_letters_total",
		Help: "Invalid messages written to the dead-letter topic, by result.",
	}, []string{"result"})
	m.written, m.failed = dl.WithLabelValues("written"), dl.WithLabelValues("failed")
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "shopguard_kafka_fetch_errors_total",
		Help: "Errors fetching from Kafka, including those the client retried on its own.",
	}, m.fetchErrorsTotal)
	return m
}

func (m *KafkaMetrics) fetchErrorsTotal() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.fetchErrors.Load() + m.retired
	for s := range m.sources {
		n += s.readerStats().errors
	}
	return float64(n)
}

func (m *KafkaMetrics) attach(s *KafkaSource) {
	m.mu.Lock()
	m.sources[s] = struct{}{}
	m.mu.Unlock()
}

func (m *KafkaMetrics) detach(s *KafkaSource) {
	m.mu.Lock()
	if _, ok := m.sources[s]; ok {
		delete(m.sources, s)
		m.retired += s.readerStats().errors
	}
	m.mu.Unlock()
}

// KafkaSourceOptions are the collaborators of a KafkaSource or
// KafkaRangeSource. Every field may be nil.
type KafkaSourceOptions struct {
	// Metrics counts valid events by action (nil: not counted).
	Metrics *Metrics
	// Kafka holds the Kafka metrics (nil: unregistered ones).
	Kafka *KafkaMetrics
	// Rejects handles messages that are not valid events: counts them,
	// logs them rate-limited and dead-letters them. Nil means a Rejects
	// with Metrics and Logger and no dead-letter sink.
	Rejects *Rejects
	// Logger receives the source's logs (nil: discarded).
	Logger *slog.Logger
	// CommitOnFlush turns off the background commits: offsets are
	// committed only by Flush and Close. Checkpoints use it, so that the
	// group's offsets never run ahead of the last saved engine state.
	CommitOnFlush bool
	// Processed gives, by partition, the next offset after the events the
	// engine's state already holds (a restored checkpoint's offsets).
	// Messages before it that the group delivers again are acknowledged
	// without being processed a second time.
	Processed map[int]int64
}

func (o *KafkaSourceOptions) fill() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Kafka == nil {
		o.Kafka = NewKafkaMetrics(nil)
	}
	if o.Rejects == nil {
		o.Rejects = &Rejects{Metrics: o.Metrics, Logger: o.Logger}
	}
}

// KafkaSource is the always-on consumer: a kafka-go consumer-group Reader
// on the audit topic, decoding each message into an event and handing them
// to the engine in batches.
//
// Delivery is at least once. A batch's offsets are committed only after
// its Done has been called and the Done of every batch fetched before it,
// so a batch that is never Done is never committed, nor is anything after
// it; invalid messages are committed with the batch they were fetched in.
// Commits are coalesced (KafkaConfig.CommitInterval) and asynchronous;
// Flush and Close commit what was acknowledged. After a crash or a
// rebalance, messages fetched but not committed are delivered again, which
// finding ids make harmless.
type KafkaSource struct {
	// delivered is the offset of the last message of each partition put
	// in a batch. Only Run touches it.
	delivered map[int]int64
	cfg       KafkaConfig
	r         *kafka.Reader
	opts      KafkaSourceOptions
	log       *slog.Logger

	running atomic.Bool
	fetchOK atomic.Bool
	fetched atomic.Bool
	// Only Run touches these.
	held      *shopguard.Batch // delivered by the next Run
	lagGauges map[int]prometheus.Gauge
	dlqLogged time.Time // last log of a dead-letter failure
	dlqFailed int       // dead-letter failures since

	acks       acks
	bg         context.Context // cancelled by Close: ends background commits
	stopBG     context.CancelFunc
	commitDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	statsMu sync.Mutex
	stats   readerTotals
}

var _ shopguard.Source = (*KafkaSource)(nil)

// readerTotals accumulates kafka-go's Reader.Stats, which resets its
// counters on every call.
type readerTotals struct {
	errors, rebalances uint64
}

// NewKafkaSource validates cfg, reads the TLS files and SASL password it
// names, and returns a source whose consumer-group reader starts joining
// the group at once. Call Close when done with it.
func NewKafkaSource(cfg KafkaConfig, opts KafkaSourceOptions) (*KafkaSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dialer, err := cfg.dialer()
	if err != nil {
		return nil, err
	}
	opts.fill()
	log := opts.Logger.With("topic", cfg.Topic, "group", cfg.Group)
	info, errl := kafkaLoggers(log)
	start := kafka.FirstOffset
	if cfg.StartOffset == StartLatest {
		start = kafka.LastOffset
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           cfg.Brokers,
		GroupID:           cfg.Group,
		Topic:             cfg.Topic,
		Dialer:            dialer,
		QueueCapacity:     cfg.QueueCapacity,
		MinBytes:          cfg.MinBytes,
		MaxBytes:          cfg.MaxBytes,
		MaxWait:           cfg.MaxWait,
		ReadBatchTimeout:  cfg.MaxWait + cfg.DialTimeout,
		HeartbeatInterval: cfg.HeartbeatInterval,
		// Commits are synchronous inside kafka-go; the source coalesces
		// them itself so that it sees (and counts) every failure.
		CommitInterval:        0,
		WatchPartitionChanges: true,
		SessionTimeout:        cfg.SessionTimeout,
		RebalanceTimeout:      cfg.RebalanceTimeout,
		JoinGroupBackoff:      cfg.RetryBackoffMax,
		StartOffset:           start,
		ReadBackoffMin:        cfg.RetryBackoff,
		ReadBackoffMax:        cfg.RetryBackoffMax,
		Logger:                info,
		ErrorLogger:           errl,
		// Only what transactional producers committed counts as input.
		IsolationLevel: kafka.ReadCommitted,
		MaxAttempts:    max(cfg.MaxRetries, 1),
	})
	s := &KafkaSource{
		cfg:        cfg,
		r:          r,
		opts:       opts,
		log:        log,
		lagGauges:  map[int]prometheus.Gauge{},
		commitDone: make(chan struct{}),
	}
	s.bg, s.stopBG = context.WithCancel(context.Background())
	s.fetchOK.Store(true)
	s.acks.init(cfg.Topic)
	opts.Kafka.attach(s)
	for p, next := range opts.Processed {
		if s.delivered == nil {
			s.delivered = map[int]int64{}
		}
		s.delivered[p] = next - 1
	}
	if opts.CommitOnFlush {
		close(s.commitDone)
	} else {
		go s.commitLoop()
	}
	return s, nil
}

// readerStats folds the reader's latest stats into the totals and returns
// them.
func (s *KafkaSource) readerStats() readerTotals {
	st := s.r.Stats()
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats.errors += uint64(max(st.Errors, 0))
	s.stats.rebalances += uint64(max(st.Rebalances, 0))
	return s.stats
}

// Ready reports whether the source is consuming: Run is active, the reader
// has joined the group (or fetched a message) and the last fetch did not
// fail. It backs /readyz.
func (s *KafkaSource) Ready() bool {
	if !s.running.Load() || !s.fetchOK.Load() {
		return false
	}
	return s.fetched.Load() || s.readerStats().rebalances > 0
}

// Run fetches messages and sends them to out as batches until ctx is done
// (it then returns nil) or a Kafka error persists for MaxRetries attempts
// (it returns the error; the caller decides whether to call Run again).
// Only one Run may be active at a time. Run never commits by itself; the
// batches' Done functions do.
func (s *KafkaSource) Run(ctx context.Context, out chan<- shopguard.Batch) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kafka source: Run is already active")
	}
	defer s.running.Store(false)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopOnFatal := s.acks.onFatal(cancel)
	defer stopOnFatal()
	stopped := func() error {
		if err := context.Cause(ctx); errors.Is(err, errCommitsFailing) {
			return err
		}
		return nil
	}

	if s.held != nil {
		select {
		case out <- *s.held:
			s.held = nil
		case <-ctx.Done():
			return stopped()
		}
	}
	fails := 0
	for {
		msg, err := s.r.FetchMessage(ctx)
		var b shopguard.Batch
		var ok bool
		if err == nil {
			fails = 0
			s.fetchOK.Store(true)
			s.fetched.Store(true)
			b, ok, err = s.collect(ctx, msg)
			if ok {
				// Counted before the engine may touch the events, once.
				s.opts.Metrics.ReadEvents(b.Events)
				select {
				case out <- b:
				case <-ctx.Done():
					s.held = &b
					return stopped()
				}
			}
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return stopped()
		}
		if errors.Is(err, io.EOF) {
			return errors.New("kafka source: the reader was closed while Run was active")
		}
		s.fetchOK.Store(false)
		s.opts.Kafka.fetchErrors.Add(1)
		fails++
		if fails > s.cfg.MaxRetries {
			return fmt.Errorf("kafka source: fetch from %s (%d attempts): %w", s.cfg.Topic, fails, err)
		}
		wait := s.cfg.backoff(fails)
		s.log.Warn("kafka fetch did not succeed; retrying", "attempt", fails, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return stopped()
		}
	}
}

// partPos is the last message of one partition in a batch.
type partPos struct {
	partition int
	offset    int64
	hwm       int64
}

// collect builds a batch starting with first: it keeps fetching until the
// batch is full or BatchLinger has passed since first. ok is false when
// every message was invalid: there is nothing for the engine, and the
// offsets are acknowledged in order directly. A non-nil error is a fetch
// error after the messages collected so far, which are still in b.
func (s *KafkaSource) collect(ctx context.Context, first kafka.Message) (b shopguard.Batch, ok bool, err error) {
	b.Received = time.Now()
	// Full capacity up front: growing by append would copy the events again
	// and again, which showed as the top cost (memmove) in the live profile.
	b.Events = make([]shopguard.Event, 0, s.cfg.BatchSize)
	var parts []partPos
	add := func(m *kafka.Message) {
		s.opts.Kafka.messages.Inc()
		found := false
		for i := range parts {
			if parts[i].partition == m.Partition {
				parts[i].offset, parts[i].hwm = m.Offset, m.HighWaterMark
				found = true
				break
			}
		}
		if !found {
			parts = append(parts, partPos{m.Partition, m.Offset, m.HighWaterMark})
		}
		// A message this source already handed to the engine comes again
		// after a rebalance or a fetch retry resumes from the committed
		// offset. The engine's state already holds it: processing it twice
		// would count it twice (and could raise a finding a single pass
		// would not), so it is only acknowledged again.
		if last, ok := s.delivered[m.Partition]; ok && m.Offset <= last {
			s.opts.Kafka.redelivered.Inc()
			return
		}
		if s.delivered == nil {
			s.delivered = map[int]int64{}
		}
		s.delivered[m.Partition] = m.Offset
		b.Events = append(b.Events, shopguard.Event{})
		ev := &b.Events[len(b.Events)-1]
		if err := Decode(m.Value, ev); err != nil {
			b.Events = b.Events[:len(b.Events)-1]
			s.reject(ctx, m, err)
		}
	}
	add(&first)
	if s.cfg.BatchSize > 1 && s.cfg.BatchLinger > 0 {
		lctx, cancel := context.WithTimeout(ctx, s.cfg.BatchLinger)
		for len(b.Events) < s.cfg.BatchSize {
			m, ferr := s.r.FetchMessage(lctx)
			if ferr != nil {
				if ctx.Err() == nil && !errors.Is(ferr, context.DeadlineExceeded) {
					err = ferr
				}
				break
			}
			add(&m)
		}
		cancel()
	}
	for _, p := range parts {
		g := s.lagGauges[p.partition]
		if g == nil {
			g = s.opts.Kafka.lag.WithLabelValues(strconv.Itoa(p.partition))
			s.lagGauges[p.partition] = g
		}
		g.Set(float64(max(p.hwm-p.offset-1, 0)))
	}
	a := s.acks.push(parts)
	if len(b.Events) == 0 {
		s.acks.done(a)
		return b, false, err
	}
	var once atomic.Bool
	b.Done = func() {
		if once.CompareAndSwap(false, true) {
			s.acks.done(a)
		}
	}
	return b, true, err
}

// reject hands an invalid message to Rejects, naming it
// topic/partition/offset. Dead-lettering is best effort: a failure is
// counted (shopguard_dead_letters_total{result="failed"}) and logged, and
// the message is skipped like any other invalid one, so that a broken
// dead-letter topic cannot stop detection.
func (s *KafkaSource) reject(ctx context.Context, m *kafka.Message, err error) {
	var derr *DecodeError
	if !errors.As(err, &derr) { // Decode returns only *DecodeError
		derr = &DecodeError{Reason: ReasonNotJSON, Msg: err.Error()}
	}
	pos := m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
	// Not cancelled with Run: the message may be committed with its batch,
	// so its dead letter must not be cut short by shutdown. The writer's
	// own timeouts bound it.
	rerr := s.opts.Rejects.Reject(context.WithoutCancel(ctx), pos, m.Value, derr)
	if rerr == nil {
		return
	}
	s.dlqFailed++
	if now := time.Now(); now.Sub(s.dlqLogged) >= 10*time.Second {
		s.log.Error("invalid message not dead-lettered; skipped anyway", "pos", pos,
			"not_dead_lettered_since_last_log", s.dlqFailed, "err", rerr)
		s.dlqLogged, s.dlqFailed = now, 0
	}
}

// Acknowledged returns, by partition, the next offset to read after every
// batch acknowledged so far in order: what the group has committed or is
// about to commit. Checkpoints record it with the engine state.
func (s *KafkaSource) Acknowledged() map[int]int64 {
	return s.acks.acknowledged()
}

// Flush commits the offsets acknowledged so far and waits for the commit.
func (s *KafkaSource) Flush(ctx context.Context) error {
	return s.commit(ctx)
}

// FlushTo is Flush that commits no further than upTo (by partition, the
// next offset to read) and nothing for partitions not in it: the offsets a
// checkpoint recorded, when batches of invalid messages only (which the
// source acknowledges itself) may have been acknowledged since.
func (s *KafkaSource) FlushTo(ctx context.Context, upTo map[int]int64) error {
	return s.commitTo(ctx, upTo)
}

// RewindGroup makes cfg.Group resume cfg.Topic at offsets (by partition,
// the next offset to read; a restored checkpoint's) wherever the group's
// committed offset is ahead of them or missing, so that the events between
// are read again and processed with the restored state instead of being
// skipped. Partitions committed at or before offsets are left alone: the
// source's KafkaSourceOptions.Processed skips what the state already holds.
// It returns the partitions it set back, with the offsets committed before.
//
// Call it before NewKafkaSource. It commits outside any group generation,
// which Kafka accepts only while the group has no members, so it waits
// (at most SessionTimeout plus RebalanceTimeout) for the members of a
// killed process to time out. With live members elsewhere (another
// instance in the same group) it gives up with an error after that wait;
// the group then resumes from its committed offsets.
func RewindGroup(ctx context.Context, cfg KafkaConfig, offsets map[int]int64, log *slog.Logger) (map[int]int64, error) {
	if len(offsets) == 0 {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr, err := cfg.transport()
	if err != nil {
		return nil, err
	}
	cl := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr, Timeout: cfg.DialTimeout + cfg.MaxWait}
	parts := slices.Sorted(maps.Keys(offsets))
	var waitUntil time.Time // set at the first answer that the group has members
	for attempt := 1; ; attempt++ {
		ahead, err := groupAhead(ctx, cl, cfg, parts, offsets)
		if err == nil && len(ahead) == 0 {
			return nil, nil
		}
		if err == nil {
			err = commitOutsideGroup(ctx, cl, cfg, offsets, ahead)
			if err == nil {
				log.Info("committed offsets set back to the checkpoint's; the events between are processed again with the restored state",
					"topic", cfg.Topic, "group", cfg.Group, "committed_before", ahead, "checkpoint", offsets)
				return ahead, nil
			}
		}
		members := errors.Is(err, kafka.UnknownMemberId) || errors.Is(err, kafka.IllegalGeneration) || errors.Is(err, kafka.RebalanceInProgress)
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("rewind group %s on %s: %w", cfg.Group, cfg.Topic, ctx.Err())
		case members && waitUntil.IsZero():
			waitUntil = time.Now().Add(cfg.SessionTimeout + cfg.RebalanceTimeout)
			log.Warn("committed offsets are ahead of the checkpoint but the group still has members (a killed process's session has not timed out yet); waiting to set them back",
				"topic", cfg.Topic, "group", cfg.Group, "wait_at_most", cfg.SessionTimeout+cfg.RebalanceTimeout)
		case members && time.Now().After(waitUntil):
			return nil, fmt.Errorf("rewind group %s on %s: the group kept members for %s: %w", cfg.Group, cfg.Topic, cfg.SessionTimeout+cfg.RebalanceTimeout, err)
		case !members && attempt > cfg.MaxRetries:
			return nil, fmt.Errorf("rewind group %s on %s (%d attempts): %w", cfg.Group, cfg.Topic, attempt, err)
		}
		t := time.NewTimer(cfg.backoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// groupAhead returns the partitions of parts whose committed offset is
// ahead of offsets, or missing (-1), with that committed offset.
func groupAhead(ctx context.Context, cl *kafka.Client, cfg KafkaConfig, parts []int, offsets map[int]int64) (map[int]int64, error) {
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: cfg.Group, Topics: map[string][]int{cfg.Topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets: %w", err)
	}
	committed := map[int]int64{}
	if resp.Error != nil && !errors.Is(resp.Error, kafka.GroupIdNotFound) {
		return nil, fmt.Errorf("fetch committed offsets: %w", resp.Error)
	}
	for _, p := range resp.Topics[cfg.Topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("fetch committed offset of partition %d: %w", p.Partition, p.Error)
		}
		committed[p.Partition] = p.CommittedOffset
	}
	ahead := map[int]int64{}
	for _, p := range parts {
		c, ok := committed[p]
		if !ok {
			c = -1
		}
		if c < 0 || c > offsets[p] {
			ahead[p] = c
		}
	}
	return ahead, nil
}

// commitOutsideGroup commits offsets for the partitions in ahead as a
// simple consumer (generation -1, no member).
func commitOutsideGroup(ctx context.Context, cl *kafka.Client, cfg KafkaConfig, offsets, ahead map[int]int64) error {
	var commits []kafka.OffsetCommit
	for _, p := range slices.Sorted(maps.Keys(ahead)) {
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: offsets[p]})
	}
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: cfg.Group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{cfg.Topic: commits}})
	if err != nil {
		return fmt.Errorf("commit offsets outside the group: %w", err)
	}
	for _, p := range resp.Topics[cfg.Topic] {
		if p.Error != nil {
			return fmt.Errorf("commit offset of partition %d outside the group: %w", p.Partition, p.Error)
		}
	}
	return nil
}

// Close commits the offsets acknowledged so far, retrying (at most
// MaxRetries times, and not after ctx is done), then leaves the group and
// closes the reader. Call it after Run
// has returned; batches delivered but not yet Done stay uncommitted and
// are delivered again to whoever consumes the partitions next. Close is
// idempotent and returns the first call's result.
func (s *KafkaSource) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.stopBG()
		<-s.commitDone
		var err error
		for attempt := 1; ; attempt++ {
			if err = s.commit(ctx); err == nil || ctx.Err() != nil || attempt > s.cfg.MaxRetries {
				break
			}
			t := time.NewTimer(s.cfg.backoff(attempt))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		if err != nil {
			s.log.Error("offsets acknowledged but not committed at close; they will be delivered again", "offsets", s.acks.pendingString(), "err", err)
			err = fmt.Errorf("kafka source: commit on close: %w", err)
		}
		if cerr := s.r.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("kafka source: close reader: %w", cerr)
		}
		s.opts.Kafka.detach(s)
		s.closeErr = err
	})
	return s.closeErr
}

// errCommitsFailing marks a Run stopped because commits kept failing.
var errCommitsFailing = errors.New("kafka source: offset commits keep failing")

// commitLoop commits acknowledged offsets in the background, at most once
// per CommitInterval, backing off after errors, until Close.
func (s *KafkaSource) commitLoop() {
	defer close(s.commitDone)
	fails := 0
	for {
		select {
		case <-s.bg.Done():
			return
		case <-s.acks.wake:
		}
		// A commit can wait for a rebalance to finish; bound it, and let
		// Close cut it short (Close commits again itself).
		ctx, cancel := context.WithTimeout(s.bg, s.cfg.SessionTimeout)
		err := s.commit(ctx)
		cancel()
		if s.bg.Err() != nil {
			return
		}
		wait := s.cfg.CommitInterval
		if err != nil {
			fails++
			if fails > s.cfg.MaxRetries {
				s.acks.fatal(fmt.Errorf("%w: %d attempts: %w", errCommitsFailing, fails, err))
			}
			wait = max(wait, s.cfg.backoff(fails))
			s.log.Warn("kafka offset commit did not succeed; retrying", "attempt", fails, "retry_in", wait, "err", err)
			s.acks.poke()
		} else {
			fails = 0
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.bg.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// commit commits the acknowledged offsets not yet committed.
func (s *KafkaSource) commit(ctx context.Context) error { return s.commitTo(ctx, nil) }

// commitTo commits the acknowledged offsets not yet committed, capped by
// upTo unless it is nil.
func (s *KafkaSource) commitTo(ctx context.Context, upTo map[int]int64) error {
	s.acks.commitMu.Lock() // one commit at a time keeps them in order
	defer s.acks.commitMu.Unlock()
	msgs := s.acks.toCommit(upTo)
	if len(msgs) == 0 {
		return nil
	}
	if err := s.r.CommitMessages(ctx, msgs...); err != nil {
		s.opts.Kafka.commitErrors.Inc()
		return fmt.Errorf("commit offsets of %s: %w", s.cfg.Topic, err)
	}
	s.opts.Kafka.commits.Inc()
	s.acks.committed(msgs)
	return nil
}

// acks tracks batches from fetch to commit. Batches are acknowledged (made
// committable) strictly in fetch order: a batch whose Done came early
// waits for the batches before it.
type acks struct {
	commitMu sync.Mutex // serialises commits

	mu     sync.Mutex
	topic  string
	queue  []*ack                // fetched, not yet acknowledged, in fetch order
	ready  map[int]kafka.Message // acknowledged, not committed: last message by partition
	next   map[int]int64         // committed: next offset by partition
	onFail func(error)           // stops the active Run
	wake   chan struct{}         // poked when there may be something to commit
}

// ack is one batch's commit range.
type ack struct {
	parts []partPos
	done  bool
}

func (a *acks) init(topic string) {
	a.topic = topic
	a.ready = map[int]kafka.Message{}
	a.next = map[int]int64{}
	a.wake = make(chan struct{}, 1)
}

func (a *acks) push(parts []partPos) *ack {
	x := &ack{parts: parts}
	a.mu.Lock()
	a.queue = append(a.queue, x)
	a.mu.Unlock()
	return x
}

// done marks x acknowledged and moves every acknowledged batch at the head
// of the queue into ready.
func (a *acks) done(x *ack) {
	a.mu.Lock()
	x.done = true
	n := 0
	for n < len(a.queue) && a.queue[n].done {
		for _, p := range a.queue[n].parts {
			if prev, ok := a.ready[p.partition]; !ok || p.offset > prev.Offset {
				a.ready[p.partition] = kafka.Message{Topic: a.topic, Partition: p.partition, Offset: p.offset}
			}
		}
		a.queue[n] = nil
		n++
	}
	a.queue = a.queue[n:]
	a.mu.Unlock()
	if n > 0 {
		a.poke()
	}
}

func (a *acks) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// toCommit returns the ready offsets that move a partition forward, capped
// by upTo (the next offset, by partition) unless it is nil.
func (a *acks) toCommit(upTo map[int]int64) []kafka.Message {
	a.mu.Lock()
	defer a.mu.Unlock()
	var msgs []kafka.Message
	for p, m := range a.ready {
		next, done := a.next[p]
		if done && m.Offset+1 <= next {
			delete(a.ready, p) // already covered, e.g. redelivered after a rebalance
			continue
		}
		if upTo != nil {
			limit, ok := upTo[p]
			if !ok {
				continue
			}
			// Beyond the cap stays ready for a later commit.
			if m.Offset = min(m.Offset, limit-1); m.Offset < 0 || (done && m.Offset+1 <= next) {
				continue
			}
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// committed records msgs as committed, keeping newer ready offsets.
func (a *acks) committed(msgs []kafka.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range msgs {
		a.next[m.Partition] = max(a.next[m.Partition], m.Offset+1)
		if r, ok := a.ready[m.Partition]; ok && r.Offset <= m.Offset {
			delete(a.ready, m.Partition)
		}
	}
}

func (a *acks) acknowledged() map[int]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[int]int64, len(a.next)+len(a.ready))
	for p, next := range a.next {
		out[p] = next
	}
	for p, m := range a.ready {
		out[p] = max(out[p], m.Offset+1)
	}
	return out
}

func (a *acks) pendingString() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var b strings.Builder
	for p, m := range a.ready {
		fmt.Fprintf(&b, "%d:%d ", p, m.Offset+1)
	}
	return strings.TrimSpace(b.String())
}

// onFatal routes a persistent commit failure to cancel while Run is active.
func (a *acks) onFatal(cancel context.CancelCauseFunc) (stop func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onFail = func(err error) { cancel(err) }
	return func() {
		a.mu.Lock()
		a.onFail = nil
		a.mu.Unlock()
	}
}

func (a *acks) fatal(err error) {
	a.mu.Lock()
	f := a.onFail
	a.mu.Unlock()
	if f != nil {
		f(err)
	}
}

// KafkaDeadLetter writes invalid messages to the dead-letter topic: the
// original value as is, and headers naming the reason, the error and where
// the message was read. It implements DeadLetter.
type KafkaDeadLetter struct {
	w     *kafka.Writer
	tr    *kafka.Transport
	topic string
	m     *KafkaMetrics
	log   *slog.Logger
}

var _ DeadLetter = (*KafkaDeadLetter)(nil)

// NewKafkaDeadLetter returns a writer to cfg.DeadLetterTopic; it is an
// error if that is empty. m may be nil (unregistered metrics); a nil logger
// discards. It does not connect until the first message.
func NewKafkaDeadLetter(cfg KafkaConfig, m *KafkaMetrics, logger *slog.Logger) (*KafkaDeadLetter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DeadLetterTopic == "" {
		return nil, errors.New("kafka.dead_letter_topic: empty, dead-lettering is disabled")
	}
	if m == nil {
		m = NewKafkaMetrics(nil)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tr, err := cfg.transport()
	if err != nil {
		return nil, err
	}
	info, errl := kafkaLoggers(logger.With("topic", cfg.DeadLetterTopic))
	w := &kafka.Writer{
		Addr:     kafka.TCP(cfg.Brokers...),
		Topic:    cfg.DeadLetterTopic,
		Balancer: &kafka.Hash{},
		// Dead-lettering is synchronous on the consume path: a few quick
		// attempts ride out a leader change, and a dead-letter topic that
		// stays down costs each bad message about a second, not the
		// pipeline.
		MaxAttempts:     3,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 500 * time.Millisecond,
		BatchSize:       1, // a synchronous single write must not wait for company
		BatchBytes:      16 << 20,
		RequiredAcks:    kafka.RequireAll,
		ReadTimeout:     cfg.DialTimeout,
		WriteTimeout:    cfg.DialTimeout,
		Transport:       tr,
		Logger:          info,
		ErrorLogger:     errl,
	}
	return &KafkaDeadLetter{w: w, tr: tr, topic: cfg.DeadLetterTopic, m: m, log: logger}, nil
}

// DeadLetter writes raw to the dead-letter topic and returns once it is
// acknowledged by all in-sync replicas. pos is "topic/partition/offset"
// for Kafka input (then the original coordinates become headers too and
// "topic/partition" the key, keeping one partition's rejects in order) or
// "file:line" for files.
func (d *KafkaDeadLetter) DeadLetter(ctx context.Context, pos string, raw []byte, derr *DecodeError) error {
	msg := kafka.Message{
		Value: raw,
		Headers: []kafka.Header{
			{Key: HeaderReason, Value: []byte(derr.Reason.String())},
			{Key: HeaderError, Value: []byte(derr.Error())},
			{Key: HeaderPosition, Value: []byte(pos)},
		},
	}
	if topic, part, off, ok := splitPos(pos); ok {
		msg.Key = []byte(topic + "/" + part)
		msg.Headers = append(msg.Headers,
			kafka.Header{Key: HeaderTopic, Value: []byte(topic)},
			kafka.Header{Key: HeaderPartition, Value: []byte(part)},
			kafka.Header{Key: HeaderOffset, Value: []byte(off)})
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
func (d *KafkaDeadLetter) Close() error {
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
