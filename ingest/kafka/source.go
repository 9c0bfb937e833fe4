package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
)

// SourceOptions are the collaborators of a Source or
// RangeSource. Every field may be nil.
type SourceOptions struct {
	// Metrics counts valid events by action (nil: not counted).
	Metrics *ingest.Metrics
	// Kafka holds the Kafka metrics (nil: unregistered ones).
	Kafka *Metrics
	// Rejects handles messages that are not valid events: counts them,
	// logs them rate-limited and dead-letters them. Nil means a Rejects
	// with Metrics and Logger and no dead-letter sink.
	Rejects *ingest.Rejects
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
	// Decode decodes each message value (ingest.NewDecoder, SPEC §7); nil
	// is the native format. Messages it reports as ingest.ErrUnmatched are
	// counted in Metrics, skipped and committed with their batch.
	Decode ingest.DecodeFunc
}

// decode decodes v with the configured decoder, calling the native one
// directly when none is set.
func (o *SourceOptions) decode(v []byte, ev *shopguard.Event) error {
	if o.Decode == nil {
		return ingest.Decode(v, ev)
	}
	return o.Decode(v, ev)
}

func (o *SourceOptions) fill() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Kafka == nil {
		o.Kafka = NewMetrics(nil)
	}
	if o.Rejects == nil {
		o.Rejects = &ingest.Rejects{Metrics: o.Metrics, Logger: o.Logger}
	}
}

// Source is the always-on consumer: a member of the consumer group on the
// audit topic (groupReader), decoding each message into an event and
// handing them to the engine in batches.
//
// Delivery is at least once. A batch's offsets are committed only after
// its Done has been called and the Done of every batch fetched before it,
// so a batch that is never Done is never committed, nor is anything after
// it; invalid messages are committed with the batch they were fetched in.
// Commits are coalesced (Config.CommitInterval) and asynchronous;
// Flush and Close commit what was acknowledged. After a crash or a
// rebalance, messages fetched but not committed are delivered again, which
// finding ids make harmless.
type Source struct {
	// delivered is the offset of the last message of each partition put
	// in a batch. Only Run touches it.
	delivered map[int]int64
	cfg       Config
	r         *groupReader
	fetch     func(context.Context) (kafkago.Message, error) // r.FetchMessage, but for tests
	clock     func() time.Time                               // r.now, but for tests
	dialer    *kafkago.Dialer
	merge     *merger // nil: partitions as fetched
	opts      SourceOptions
	log       *slog.Logger

	running atomic.Bool
	fetchOK atomic.Bool
	fetched atomic.Bool
	// Only Run touches these.
	held      *shopguard.Batch // delivered by the next Run
	lagGauges map[int]prometheus.Gauge
	dlqLogged time.Time // last log of a dead-letter failure
	dlqFailed int       // dead-letter failures since
	// rejected: reject ran since Run last looked. A dead letter is
	// written synchronously and may take long, so the fetch's clock
	// (groupReader.now) and a linger's context, checked only every 256
	// messages of a chunk, are behind.
	rejected bool

	acks       acks
	bg         context.Context // cancelled by Close: ends background commits
	stopBG     context.CancelFunc
	commitDone chan struct{}
	free       chan []shopguard.Event // arrays of Done batches (events, recycle)
	closeOnce  sync.Once
	closeErr   error
}

var _ shopguard.Source = (*Source)(nil)

// freeBatches is how many arrays of Done batches a Source keeps for later
// batches: more than can be in flight between it and the engine.
const freeBatches = 16

// readerTotals are the group reader's counts.
type readerTotals struct {
	errors, rebalances uint64
}

// NewSource validates cfg, reads the TLS files and SASL password it
// names, and returns a source whose consumer-group reader starts joining
// the group at once. Call Close when done with it.
func NewSource(cfg Config, opts SourceOptions) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dialer, err := cfg.Dialer("kafka")
	if err != nil {
		return nil, err
	}
	opts.fill()
	log := opts.Logger.With("topic", cfg.Topic, "group", cfg.Group)
	r, err := newGroupReader(cfg, dialer, log)
	if err != nil {
		return nil, err
	}
	s := &Source{
		cfg:        cfg,
		r:          r,
		opts:       opts,
		log:        log,
		lagGauges:  map[int]prometheus.Gauge{},
		commitDone: make(chan struct{}),
		free:       make(chan []shopguard.Event, freeBatches),
	}
	s.fetch, s.clock, s.dialer = r.FetchMessage, r.now, dialer
	if cfg.Lateness > 0 {
		s.merge = newMerger(cfg, opts.Kafka)
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

// readerStats returns the reader's errors and generations joined.
func (s *Source) readerStats() readerTotals {
	return readerTotals{errors: s.r.errors.Load(), rebalances: s.r.rebalances.Load()}
}

// Ready reports whether the source is consuming: Run is active, the reader
// has joined the group (or fetched a message) and the last fetch did not
// fail. It backs /readyz.
func (s *Source) Ready() bool {
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
func (s *Source) Run(ctx context.Context, out chan<- shopguard.Batch) error {
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
	if s.merge != nil {
		return s.runMerged(ctx, out, stopped)
	}
	fails := 0
	for {
		msg, err := s.fetch(ctx)
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
		if done, ferr := s.fetchFailed(ctx, err, &fails); ferr != nil {
			return ferr
		} else if done {
			return stopped()
		}
	}
}

// fetchFailed handles a fetch error while ctx is live: it counts it and
// backs off, and returns an error once the reader is closed or
// MaxRetries consecutive fetches failed. done reports that ctx ended
// during the backoff.
func (s *Source) fetchFailed(ctx context.Context, err error, fails *int) (done bool, fatal error) {
	if errors.Is(err, io.EOF) {
		return false, errors.New("kafka source: the reader was closed while Run was active")
	}
	s.fetchOK.Store(false)
	s.opts.Kafka.fetchErrors.Add(1)
	*fails++
	if *fails > s.cfg.MaxRetries {
		return false, fmt.Errorf("kafka source: fetch from %s (%d attempts): %w", s.cfg.Topic, *fails, err)
	}
	wait := s.cfg.Backoff(*fails)
	s.log.Warn("kafka fetch did not succeed; retrying", "attempt", *fails, "retry_in", wait, "err", err)
	return Sleep(ctx, wait) != nil, nil
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
func (s *Source) collect(ctx context.Context, first kafkago.Message) (b shopguard.Batch, ok bool, err error) {
	b.Received = time.Now()
	// Full capacity up front: growing by append would copy the events again
	// and again, which showed as the top cost (memmove) in the live profile.
	b.Events = s.events()
	var parts []partPos
	add := func(m *kafkago.Message) {
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
		b.Events = append(b.Events, shopguard.Event{})
		if !s.admit(ctx, m, &b.Events[len(b.Events)-1]) {
			b.Events = b.Events[:len(b.Events)-1]
		}
	}
	add(&first)
	if s.cfg.BatchSize > 1 && s.cfg.BatchLinger > 0 {
		lctx, cancel := context.WithTimeout(ctx, s.cfg.BatchLinger)
		for len(b.Events) < s.cfg.BatchSize {
			m, ferr := s.fetch(lctx)
			if ferr != nil {
				if ctx.Err() == nil && !errors.Is(ferr, context.DeadlineExceeded) {
					err = ferr
				}
				break
			}
			add(&m)
			if s.rejected {
				if s.rejected = false; lctx.Err() != nil {
					break // the linger ended while dead-lettering
				}
			}
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
		s.recycle(b.Events)
		return b, false, err
	}
	var once atomic.Bool
	evs := b.Events
	b.Done = func() {
		if once.CompareAndSwap(false, true) {
			s.acks.done(a)
			s.recycle(evs)
		}
	}
	return b, true, err
}

// events returns an empty array of BatchSize events for a batch: one a
// batch gave back with its Done when there is one. Writing the events of
// a batch into memory it had just allocated, and collecting that memory,
// were a tenth of the live consumer's CPU.
func (s *Source) events() []shopguard.Event {
	select {
	case evs := <-s.free:
		return evs[:0]
	default:
		return make([]shopguard.Event, 0, s.cfg.BatchSize)
	}
}

// recycle takes back the array of a batch that is Done (shopguard.Batch:
// nothing reads it after Done), for a later batch.
func (s *Source) recycle(evs []shopguard.Event) {
	if cap(evs) != s.cfg.BatchSize {
		return
	}
	select {
	case s.free <- evs:
	default:
	}
}

// reject hands an invalid message to Rejects, naming it
// topic/partition/offset. Dead-lettering is best effort: a failure is
// counted (shopguard_dead_letters_total{result="failed"}) and logged, and
// the message is skipped like any other invalid one, so that a broken
// dead-letter topic cannot stop detection.
func (s *Source) reject(ctx context.Context, m *kafkago.Message, err error) {
	var derr *ingest.DecodeError
	if !errors.As(err, &derr) { // Decode returns only *ingest.DecodeError
		derr = &ingest.DecodeError{Reason: ingest.ReasonNotJSON, Msg: err.Error()}
	}
	s.rejected = true
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
func (s *Source) Acknowledged() map[int]int64 {
	return s.acks.acknowledged()
}

// Flush commits the offsets acknowledged so far and waits for the commit.
func (s *Source) Flush(ctx context.Context) error {
	return s.commit(ctx)
}

// FlushTo is Flush that commits no further than upTo (by partition, the
// next offset to read) and nothing for partitions not in it: the offsets a
// checkpoint recorded, when batches of invalid messages only (which the
// source acknowledges itself) may have been acknowledged since.
func (s *Source) FlushTo(ctx context.Context, upTo map[int]int64) error {
	return s.commitTo(ctx, upTo)
}

// Close commits the offsets acknowledged so far, retrying (at most
// MaxRetries times, and not after ctx is done), then leaves the group and
// closes the reader. Call it after Run
// has returned; batches delivered but not yet Done stay uncommitted and
// are delivered again to whoever consumes the partitions next. Close is
// idempotent and returns the first call's result.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.stopBG()
		<-s.commitDone
		var err error
		for attempt := 1; ; attempt++ {
			if err = s.commit(ctx); err == nil || ctx.Err() != nil || attempt > s.cfg.MaxRetries {
				break
			}
			t := time.NewTimer(s.cfg.Backoff(attempt))
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
