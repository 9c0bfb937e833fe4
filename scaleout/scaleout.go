// Package scaleout runs shopguard on several instances over Kafka, in the
// style of Kafka Streams: a repartition stage re-keys every valid event of
// the audit topic by source and by account, two partitioned stages run one
// detection engine per partition in event-time order (heartbeats and
// watermarks order what arrives from many producers), a compacted flags
// table tells account tasks which sources were flagged, and each task's
// state is changelogged so that it moves with its partition.
//
// It imports ingest (decoding, rejects) and ingest/kafka (configuration,
// metrics), never detect: the engines are handed in through Engine and its
// one-method companions, which *detect.Engine implements. It does not
// deliver findings (the caller's shopguard.Sink does) or retry forever.
package scaleout

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
)

// Engine is the detection state of one task (one partition of a
// stage) of a scaled-out shopguard. *detect.Engine implements it.
type Engine interface {
	// Process appends the findings for ev to dst and returns it. It must
	// not retain ev.
	Process(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding
}

// Snapshotter is an engine whose state can move between instances:
// Snapshot writes it, and Restore replaces the state of an engine fresh
// from Options.NewEngine with what Snapshot wrote (an error means the
// snapshot cannot be used). Engines that do not implement it start empty
// on every rebalance.
type Snapshotter interface {
	Snapshot(w io.Writer) error
	Restore(r io.Reader) error
}

// Observer is an engine that counts the events it processed and
// reports its event-time lag (shopguard_engine_events_total and
// shopguard_event_lag_seconds); the account stage, which every event
// passes once, calls it after each round.
type Observer interface {
	Observe(events int)
}

// Flagger is what the account stage's engines implement besides
// Engine: learning that a source (an address as a full-length prefix,
// or a block) was named at t by the credential_stuffing finding id, which
// another instance's source stage raised.
type Flagger interface {
	FlagSource(p netip.Prefix, t time.Time, id string)
}

// WaveFollower is what the account stage's engines implement when
// Options.FollowFailures is set: every account task follows every failed
// login of the platform, so that each keeps the platform-wide
// stuffing_wave state its wave-aware account_takeover needs. The task of
// by-account partition 0 reports the waves; the others follow them.
type WaveFollower interface {
	// FollowFailure feeds a failed login of an account the task does not
	// own to the wave only, and appends the findings it raises.
	FollowFailure(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding
	// FollowWave makes the engine keep the wave without reporting it.
	FollowWave(follow bool)
}

// Rotator is an account-stage engine that records the rotations of a
// watchlist (a listed account's password change or reset): the task
// publishes each to the flags topic, so that every instance can count all
// of them (Runtime.Rotations), which no one task holds.
type Rotator interface {
	// TakeRotations calls f for each rotation recorded since the last
	// call; the first call starts the record.
	TakeRotations(f func(acct uint64, at int64))
}

// Options are the collaborators of a Runtime.
type Options struct {
	// NewEngine returns an engine with empty state for a task of stage
	// (StageSource: only credential_stuffing enabled; StageAccount: the
	// rules keyed by account, whose engines must implement Flagger).
	// Required.
	NewEngine func(stage string) (Engine, error)
	// FollowFailures writes every failed login to every by-account
	// partition, not only to its account's, and makes the account tasks
	// follow the other accounts' (WaveFollower): for stuffing_wave, which
	// counts the whole platform.
	FollowFailures bool
	// Sink takes the findings of both stages (a record sink returns once
	// they are durable). Required.
	Sink shopguard.Sink
	// IPv4Prefix and IPv6Prefix are the widest source blocks of
	// credential_stuffing (detect.credential_stuffing.ipv4_prefix, and
	// ipv6_wide_prefix when set, else ipv6_prefix): failed logins are
	// keyed by them, so every level of a source meets in one task.
	IPv4Prefix, IPv6Prefix int
	// Metrics counts the valid events read from the audit topic, Kafka the
	// Kafka client metrics, Scale the scale-out metrics (nil: unregistered
	// ones).
	Metrics *ingest.Metrics
	Kafka   *kafka.Metrics
	Scale   *Metrics
	// Decode decodes the audit topic's messages (ingest.NewDecoder, SPEC
	// §7; nil: the native format). Events of another format travel the
	// internal topics re-encoded in the native one.
	Decode ingest.DecodeFunc
	// Rejects handles audit messages that are not valid events (nil: a
	// Rejects with Metrics and Logger).
	Rejects *ingest.Rejects
	// Logger receives the logs (nil: discarded).
	Logger *slog.Logger
	// ShutdownBudget bounds the final snapshots, commits and deliveries
	// after Run's context is done (0: 5s).
	ShutdownBudget time.Duration
}

// Runtime is one instance of a scaled-out shopguard. Instances sharing
// kafka.group split the work between them through three consumer groups,
// the way a Kafka Streams application does:
//
//   - Repartition (group kafka.group, on the audit topic): every valid event
//     is written, as is, to <prefix>-by-account keyed by shop_id and actor,
//     and every failed login also to <prefix>-by-source keyed by its source
//     block (IPv4 /24, IPv6 /64). After each batch it writes a heartbeat to
//     every partition of both topics: this input partition has sent
//     everything below key (stream time, partition, offset). Offsets are
//     committed (with the stream time as metadata) only after the writes
//     are acknowledged.
//   - Source (group kafka.group-source, on by-source): one engine per
//     partition with only credential_stuffing; it publishes each source it
//     flags, and its progress, to the compacted <prefix>-source-flags.
//   - Account (group kafka.group-account, on by-account): one engine per
//     partition with the account rules; every instance reads the flags
//     topic in full (a global table) and feeds the flags into its engines.
//     With FollowFailures every failed login goes to every by-account
//     partition: each task keeps the platform-wide stuffing_wave state
//     from all of them, and partition 0's reports the waves.
//
// Each task re-sorts what it receives into the key order of scaleKey and
// processes an event only once every input partition's heartbeat (and, in
// the account stage, every source partition's progress) has passed it, so
// the findings are those of one engine fed the events in that order: for
// input partitions in event-time order, those of a replay of the events
// sorted by time. Each task writes its state to the compacted
// <prefix>-changelog periodically and whenever it loses its partition;
// whoever gets the partition next restores it from there first.
//
// Delivery is at least once: after a crash, what followed the last snapshot
// is processed again, and its findings, with the same ids, are delivered
// again.
type Runtime struct {
	kc    kafka.Config
	sc    Config
	opts  Options
	names Topics
	log   *slog.Logger

	dialer *kafkago.Dialer
	tr     *kafkago.Transport
	client *kafkago.Client
	w      *kafkago.Writer

	// Partition counts, known once Run has set up the topics.
	nInput, nAccount, nSource, nFlags, nChangelog int

	flags  *scaleFlags
	joined [3]atomic.Bool // repartition, source, account
	warned sync.Once
}

// New validates the configurations, reads the TLS files and SASL
// password kc names, and returns an instance. It does not connect until
// Run.
func New(kc kafka.Config, sc Config, opts Options) (*Runtime, error) {
	var errs []error
	if err := kc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := sc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if opts.NewEngine == nil {
		errs = append(errs, errors.New("scale-out: no engine constructor"))
	}
	if opts.Sink == nil {
		errs = append(errs, errors.New("scale-out: no sink"))
	}
	if opts.IPv4Prefix < 8 || opts.IPv4Prefix > 32 || opts.IPv6Prefix < 16 || opts.IPv6Prefix > 128 {
		errs = append(errs, fmt.Errorf("scale-out: source blocks /%d and /%d are out of range", opts.IPv4Prefix, opts.IPv6Prefix))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Kafka == nil {
		opts.Kafka = kafka.NewMetrics(nil)
	}
	if opts.Scale == nil {
		opts.Scale = NewMetrics(nil)
	}
	if opts.Rejects == nil {
		opts.Rejects = &ingest.Rejects{Metrics: opts.Metrics, Logger: opts.Logger}
	}
	if opts.ShutdownBudget <= 0 {
		opts.ShutdownBudget = 5 * time.Second
	}
	dialer, err := kc.Dialer("kafka")
	if err != nil {
		return nil, err
	}
	tr, err := kc.Transport("kafka")
	if err != nil {
		return nil, err
	}
	s := &Runtime{kc: kc, sc: sc, opts: opts, names: sc.Topics(kc.Group), dialer: dialer, tr: tr,
		log: opts.Logger.With("component", "scale-out")}
	s.client = &kafkago.Client{Addr: kafkago.TCP(kc.Brokers...), Transport: tr, Timeout: kc.DialTimeout + kc.MaxWait}
	info, errl := kafka.Loggers(s.log)
	s.w = &kafkago.Writer{
		Addr:     kafkago.TCP(kc.Brokers...),
		Balancer: toWriterPartition,
		// kafka-go allocates BatchSize messages for every partition's
		// batch, and each write touches every partition (heartbeats):
		// keep it near what one write puts in one partition.
		BatchSize:    256,
		BatchBytes:   1_000_000, // under the brokers' default message.max.bytes
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafkago.RequireAll,
		MaxAttempts:  max(kc.MaxRetries, 1),
		// Retried writes are harmless: receivers drop duplicate events,
		// and heartbeats, flags and snapshot chunks are idempotent.
		WriteBackoffMin: kc.RetryBackoff,
		WriteBackoffMax: kc.RetryBackoffMax,
		ReadTimeout:     kc.DialTimeout,
		WriteTimeout:    kc.DialTimeout,
		Transport:       tr,
		Logger:          info,
		ErrorLogger:     errl,
	}
	return s, nil
}

// toWriterPartition sends every message to the partition its WriterData
// names: shopguard chooses partitions itself (by key hash, or all of them
// for heartbeats).
var toWriterPartition = kafkago.BalancerFunc(func(m kafkago.Message, _ ...int) int { return m.WriterData.(int) })

// partitionOf maps a key to one of n partitions (FNV-1a).
func partitionOf(key []byte, n int) int {
	h := fnv.New32a()
	_, _ = h.Write(key)
	return int(h.Sum32() % uint32(n))
}

// Partitions returns how many partitions, and so tasks, stage has: known
// once Run has set up the topics (its tasks' engines are made after), 0
// before.
func (s *Runtime) Partitions(stage string) int {
	switch stage {
	case StageAccount:
		return s.nAccount
	case StageSource:
		return s.nSource
	}
	return 0
}

// Names returns the internal topics and groups.
func (s *Runtime) Names() Topics { return s.names }

// Ready reports whether the instance has joined all three groups once. It
// backs /readyz.
func (s *Runtime) Ready() bool {
	return s.joined[0].Load() && s.joined[1].Load() && s.joined[2].Load()
}

// Run sets up the internal topics, then takes part in the three consumer
// groups until ctx is done; it then snapshots its tasks, commits, leaves
// the groups and returns nil. It returns an error if the topics cannot be
// set up.
func (s *Runtime) Run(ctx context.Context) error {
	defer s.tr.CloseIdleConnections()
	defer s.opts.Rejects.Flush()
	if err := s.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.flags = newScaleFlags(s.nFlags, s.nSource)
	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(context.Background())
	for f := range s.nFlags {
		wg.Go(func() { s.readFlags(bg, f) })
	}
	var groups sync.WaitGroup
	groups.Go(func() {
		s.runGroup(ctx, 0, StageRepartition, s.names.RepartitionGroup, s.kc.Topic, s.repartition)
	})
	groups.Go(func() {
		s.runGroup(ctx, 1, StageSource, s.names.SourceGroup, s.names.BySource, func(ctx context.Context, gen *kafkago.Generation, part int) {
			s.runTask(ctx, gen, StageSource, part)
		})
	})
	groups.Go(func() {
		s.runGroup(ctx, 2, StageAccount, s.names.AccountGroup, s.names.ByAccount, func(ctx context.Context, gen *kafkago.Generation, part int) {
			s.runTask(ctx, gen, StageAccount, part)
		})
	})
	groups.Wait()
	stopBG()
	wg.Wait()
	if err := s.w.Close(); err != nil {
		s.log.Warn("closing the internal topics' writer", "err", err)
	}
	return nil
}

// setup finds the audit topic's partitions and creates the internal topics
// that are missing.
func (s *Runtime) setup(ctx context.Context) error {
	parts, err := s.partitions(ctx, s.kc.Topic)
	if err != nil {
		return fmt.Errorf("scale-out: audit topic %s: %w", s.kc.Topic, err)
	}
	s.nInput = parts
	n := s.sc.Partitions
	if n == 0 {
		n = parts
	}
	cl := s.sc.ChangelogPartitions
	if cl == 0 {
		cl = n
	}
	compact := []kafkago.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}
	want := []kafkago.TopicConfig{
		{Topic: s.names.ByAccount, NumPartitions: n},
		{Topic: s.names.BySource, NumPartitions: n},
		{Topic: s.names.Flags, NumPartitions: s.sc.FlagsPartitions, ConfigEntries: append(compact[:1:1],
			kafkago.ConfigEntry{ConfigName: "min.compaction.lag.ms", ConfigValue: strconv.FormatInt(s.sc.FlagsCompactionLag.Milliseconds(), 10)})},
		{Topic: s.names.Changelog, NumPartitions: cl, ConfigEntries: compact},
	}
	counts := make([]int, len(want))
	for i, t := range want {
		counts[i], err = s.partitions(ctx, t.Topic)
		if errors.Is(err, kafkago.UnknownTopicOrPartition) && s.sc.CreateTopics {
			t.ReplicationFactor = s.sc.ReplicationFactor
			if err = s.createTopic(ctx, t); err == nil {
				counts[i], err = s.partitions(ctx, t.Topic)
			}
		}
		if err != nil {
			return fmt.Errorf("scale-out: internal topic %s: %w", t.Topic, err)
		}
	}
	s.nAccount, s.nSource, s.nFlags, s.nChangelog = counts[0], counts[1], counts[2], counts[3]
	s.log.Info("scale-out topics ready", "audit_partitions", s.nInput,
		s.names.ByAccount, s.nAccount, s.names.BySource, s.nSource, s.names.Flags, s.nFlags, s.names.Changelog, s.nChangelog)
	return nil
}

// partitions returns how many partitions topic has, retrying transient
// errors; kafkago.UnknownTopicOrPartition comes back at once.
func (s *Runtime) partitions(ctx context.Context, topic string) (int, error) {
	var n int
	err := s.retry(ctx, "read metadata of "+topic, func() error {
		md, err := s.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return err
		}
		if len(md.Topics) != 1 {
			return kafkago.UnknownTopicOrPartition
		}
		if md.Topics[0].Error != nil {
			return md.Topics[0].Error
		}
		n = len(md.Topics[0].Partitions)
		if n == 0 {
			return kafkago.UnknownTopicOrPartition
		}
		return nil
	}, kafkago.UnknownTopicOrPartition)
	return n, err
}

func (s *Runtime) createTopic(ctx context.Context, t kafkago.TopicConfig) error {
	return s.retry(ctx, "create topic "+t.Topic, func() error {
		resp, err := s.client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{t}})
		if err != nil {
			return err
		}
		if err := resp.Errors[t.Topic]; err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
			return err
		}
		s.log.Info("created internal topic", "topic", t.Topic, "partitions", t.NumPartitions)
		return nil
	})
}

// retry runs f until it succeeds, ctx is done, it returns one of the final
// errors, or it failed MaxRetries+1 times, backing off in between.
func (s *Runtime) retry(ctx context.Context, what string, f func() error, final ...error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil || attempt > s.kc.MaxRetries {
			return err
		}
		for _, e := range final {
			if errors.Is(err, e) {
				return err
			}
		}
		wait := s.kc.Backoff(attempt)
		s.log.Warn(what+" did not succeed; retrying", "attempt", attempt, "retry_in", wait, "err", err)
		if kafka.Sleep(ctx, wait) != nil {
			return err
		}
	}
}

// write writes msgs, retrying with backoff until it succeeds or ctx is
// done. Whatever a failed attempt wrote is written again, which every
// receiver tolerates.
func (s *Runtime) write(ctx context.Context, msgs []kafkago.Message) error {
	for attempt := 1; ; attempt++ {
		err := s.w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := s.kc.Backoff(attempt)
		s.log.Warn("write to internal topics did not succeed; retrying", "messages", len(msgs), "attempt", attempt, "retry_in", wait, "err", err)
		if err := kafka.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// listOffset returns the first or last offset of a partition.
func (s *Runtime) listOffset(ctx context.Context, topic string, part int, last bool) (int64, error) {
	var off int64
	err := s.retry(ctx, "list offsets of "+topic, func() error {
		req := kafkago.FirstOffsetOf(part)
		if last {
			req = kafkago.LastOffsetOf(part)
		}
		resp, err := s.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{
			Topics: map[string][]kafkago.OffsetRequest{topic: {req}},
		})
		if err != nil {
			return err
		}
		for _, po := range resp.Topics[topic] {
			if po.Partition != part {
				continue
			}
			if po.Error != nil {
				return po.Error
			}
			if last {
				off = po.LastOffset
			} else {
				off = po.FirstOffset
			}
			return nil
		}
		return fmt.Errorf("no answer for partition %d", part)
	})
	return off, err
}

// committed returns the offset group committed for topic/part and its
// metadata, or offset -1 if there is none.
func (s *Runtime) committed(ctx context.Context, group, topic string, part int) (int64, string, error) {
	off, meta := int64(-1), ""
	err := s.retry(ctx, "fetch committed offset of "+topic, func() error {
		resp, err := s.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {part}}})
		if err != nil {
			return err
		}
		if resp.Error != nil {
			if errors.Is(resp.Error, kafkago.GroupIdNotFound) {
				return nil
			}
			return resp.Error
		}
		for _, p := range resp.Topics[topic] {
			if p.Partition == part {
				if p.Error != nil {
					return p.Error
				}
				off, meta = p.CommittedOffset, p.Metadata
			}
		}
		return nil
	})
	return off, meta, err
}

// commit commits next for topic/part in generation gen, with metadata.
func (s *Runtime) commit(ctx context.Context, gen *kafkago.Generation, topic string, part int, next int64, meta string) error {
	resp, err := s.client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{
		GroupID:      gen.GroupID,
		GenerationID: int(gen.ID),
		MemberID:     gen.MemberID,
		Topics:       map[string][]kafkago.OffsetCommit{topic: {{Partition: part, Offset: next, Metadata: meta}}},
	})
	if err == nil {
		for _, p := range resp.Topics[topic] {
			if p.Error != nil {
				err = p.Error
			}
		}
	}
	if err != nil {
		s.opts.Kafka.Commit(err)
		return fmt.Errorf("commit %s/%d at %d for group %s: %w", topic, part, next, gen.GroupID, err)
	}
	s.opts.Kafka.Commit(nil)
	return nil
}

// partitionReader returns a reader of one partition, outside any group.
func (s *Runtime) partitionReader(topic string, part int) *kafkago.Reader {
	info, errl := kafka.Loggers(s.log.With("topic", topic, "partition", part))
	return kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:        s.kc.Brokers,
		Topic:          topic,
		Partition:      part,
		Dialer:         s.dialer,
		QueueCapacity:  s.kc.QueueCapacity,
		MinBytes:       s.kc.MinBytes,
		MaxBytes:       s.kc.MaxBytes,
		MaxWait:        s.kc.MaxWait,
		ReadBackoffMin: s.kc.RetryBackoff,
		ReadBackoffMax: s.kc.RetryBackoffMax,
		IsolationLevel: kafkago.ReadCommitted,
		MaxAttempts:    max(s.kc.MaxRetries, 1),
		Logger:         info,
		ErrorLogger:    errl,
	})
}

// fetchBatch waits for a first message (at most wait when wait > 0), then
// collects more for BatchLinger, up to BatchSize.
func (s *Runtime) fetchBatch(ctx context.Context, r *kafkago.Reader, wait time.Duration, dst []kafkago.Message) ([]kafkago.Message, error) {
	fctx := ctx
	if wait > 0 {
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	m, err := r.FetchMessage(fctx)
	if err != nil {
		return dst, err
	}
	dst = append(dst, m)
	if s.kc.BatchSize > 1 && s.kc.BatchLinger > 0 {
		lctx, cancel := context.WithTimeout(ctx, s.kc.BatchLinger)
		defer cancel()
		for len(dst) < s.kc.BatchSize {
			m, err := r.FetchMessage(lctx)
			if err != nil {
				break
			}
			dst = append(dst, m)
		}
	}
	return dst, nil
}

// finalContext is the context for what a task does after ctx is done: its
// last snapshot and commit, bounded by the shutdown budget.
func (s *Runtime) finalContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opts.ShutdownBudget)
}

// sourceKey returns the key of ip's source block.
func (s *Runtime) sourceKey(ip netip.Addr) []byte {
	bits := s.opts.IPv6Prefix
	if ip.Is4() {
		bits = s.opts.IPv4Prefix
	}
	p, _ := ip.Prefix(bits)
	return []byte(p.String())
}
