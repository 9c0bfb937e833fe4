package kafka

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
)

// DefaultRangeSlack is how far record timestamps may stray from event
// times unless Range.Slack says otherwise.
const DefaultRangeSlack = 5 * time.Minute

// Range selects what a RangeSource replays: the events whose
// event time lies in [Since, Until], both ends included.
type Range struct {
	Since, Until time.Time
	// Slack widens the window of record timestamps that is read, so that
	// events written to Kafka a little before or after their event time
	// (producer clocks, batching, late delivery) are still found: reading
	// starts at the first record stamped Since-Slack or later and stops
	// at the first stamped after Until+Slack. Events are then selected by
	// their own time exactly. Zero means DefaultRangeSlack; negative
	// means none.
	Slack time.Duration
	// Strict stops at the first invalid message read: Run delivers the
	// events before it, counts it, and returns an error that names it as
	// topic/partition/offset and wraps its *DecodeError.
	Strict bool
}

// RangeSource replays a time range of the audit topic (`shopguard
// replay --brokers B --topic T --since T1 --until T2`). It reads every
// partition with a partition reader, from the offset ListOffsets gives for
// Since-Slack to the end offset captured when Run starts (or the first
// record stamped after Until+Slack), without joining a consumer group or
// committing anything.
//
// Every offset below the end is expected to be readable: kafka-go hands
// out transaction markers as messages (they are rejected as invalid), but
// a partition whose range ends in a gap left by log compaction waits for
// the next record to arrive. The audit topic is not meant to be compacted.
//
// The partitions are merged by event time, ties broken by partition and
// then offset, so the engine sees one deterministic sequence: when each
// partition holds its events in time order (as a producer keying by
// account and writing a time-ordered log does), that is the time order of
// a file replay of the same events, and the findings are the same.
// Partitions that are not in time order are merged as they are; the
// result is still deterministic.
type RangeSource struct {
	cfg    Config
	rng    Range
	opts   SourceOptions
	tr     *kafkago.Transport
	dialer *kafkago.Dialer
	log    *slog.Logger
}

var _ shopguard.Source = (*RangeSource)(nil)

// NewRangeSource validates cfg and rng, reads the TLS files and SASL
// password cfg names, and returns the source. It does not connect until
// Run. cfg's group, dead-letter and commit settings are not used.
func NewRangeSource(cfg Config, rng Range, opts SourceOptions) (*RangeSource, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if rng.Since.IsZero() {
		errs = append(errs, errors.New("since: a start time is required"))
	}
	if rng.Until.IsZero() {
		errs = append(errs, errors.New("until: an end time is required"))
	}
	if !rng.Since.IsZero() && !rng.Until.IsZero() && rng.Until.Before(rng.Since) {
		errs = append(errs, fmt.Errorf("until: %s is before since (%s)", rng.Until.Format(time.RFC3339), rng.Since.Format(time.RFC3339)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	switch {
	case rng.Slack == 0:
		rng.Slack = DefaultRangeSlack
	case rng.Slack < 0:
		rng.Slack = 0
	}
	tr, err := cfg.Transport("kafka")
	if err != nil {
		return nil, err
	}
	dialer, err := cfg.Dialer("kafka")
	if err != nil {
		return nil, err
	}
	opts.fill()
	return &RangeSource{cfg: cfg, rng: rng, opts: opts, tr: tr, dialer: dialer,
		log: opts.Logger.With("topic", cfg.Topic)}, nil
}

// rangeItem is one entry of a partition's stream: an event in range, or
// (Strict mode) an invalid message, placed right after the event before
// it in the same partition.
type rangeItem struct {
	ev   shopguard.Event
	off  int64
	derr *ingest.DecodeError
}

// rangeChunk is how many items a partition reader hands to the merger at
// once.
const rangeChunk = 256

// rangeStream is one partition being read.
type rangeStream struct {
	part  int
	start int64 // first offset to read
	end   int64 // offset after the last one to read
	ch    chan []rangeItem
	err   error // set before ch is closed
	cur   []rangeItem
}

// Run reads the range and sends its events to out in merged order. It
// returns nil at the end of the range or when ctx is done, and an error
// when the topic cannot be read (after MaxRetries attempts) or, in Strict
// mode, at the first invalid message.
func (s *RangeSource) Run(ctx context.Context, out chan<- shopguard.Batch) error {
	defer s.tr.CloseIdleConnections()
	defer s.opts.Rejects.Flush()
	streams, err := s.plan(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var total int64
	for _, st := range streams {
		total += st.end - st.start
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.read(ctx, st)
		}()
	}
	s.log.Info("replaying Kafka range", "since", s.rng.Since, "until", s.rng.Until,
		"partitions", len(streams), "records_to_scan", total)
	err = s.merge(ctx, streams, out)
	if ctx.Err() != nil && !errors.Is(err, errStrict) {
		return nil
	}
	return err
}

// plan finds each partition's offsets: the end captured now, and the start
// from the first record stamped Since-Slack or later.
func (s *RangeSource) plan(ctx context.Context) ([]*rangeStream, error) {
	cl := &kafkago.Client{Addr: kafkago.TCP(s.cfg.Brokers...), Transport: s.tr, Timeout: s.cfg.DialTimeout + s.cfg.MaxWait}
	var md *kafkago.MetadataResponse
	err := s.retry(ctx, "read metadata", func() error {
		var err error
		md, err = cl.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{s.cfg.Topic}})
		if err == nil && (len(md.Topics) != 1 || md.Topics[0].Error != nil) {
			if len(md.Topics) == 1 {
				err = md.Topics[0].Error
			} else {
				err = kafkago.UnknownTopicOrPartition
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kafka range: topic %s: %w", s.cfg.Topic, err)
	}
	var parts []int
	for _, p := range md.Topics[0].Partitions {
		parts = append(parts, p.ID)
	}
	sort.Ints(parts)

	// The ends first: whatever arrives after this is not part of the
	// replay, even if its time is in range.
	ends, err := s.listOffsets(ctx, cl, parts, func(p int) kafkago.OffsetRequest { return kafkago.LastOffsetOf(p) },
		func(po kafkago.PartitionOffsets) int64 { return po.LastOffset })
	if err != nil {
		return nil, err
	}
	from := s.rng.Since.Add(-s.rng.Slack)
	starts, err := s.listOffsets(ctx, cl, parts, func(p int) kafkago.OffsetRequest { return kafkago.TimeOffsetOf(p, from) },
		func(po kafkago.PartitionOffsets) int64 {
			for off := range po.Offsets { // at most one: the first record stamped from or later
				return off
			}
			return -1 // none: the partition has nothing that recent
		})
	if err != nil {
		return nil, err
	}
	var streams []*rangeStream
	for _, p := range parts {
		start, end := starts[p], ends[p]
		if start < 0 || start >= end {
			continue
		}
		streams = append(streams, &rangeStream{part: p, start: start, end: end, ch: make(chan []rangeItem, 4)})
	}
	return streams, nil
}

// listOffsets asks for one offset per partition and picks it from the
// answer with get.
func (s *RangeSource) listOffsets(ctx context.Context, cl *kafkago.Client, parts []int,
	req func(int) kafkago.OffsetRequest, get func(kafkago.PartitionOffsets) int64,
) (map[int]int64, error) {
	out := make(map[int]int64, len(parts))
	err := s.retry(ctx, "list offsets", func() error {
		rs := make([]kafkago.OffsetRequest, len(parts))
		for i, p := range parts {
			rs[i] = req(p)
		}
		resp, err := cl.ListOffsets(ctx, &kafkago.ListOffsetsRequest{
			Topics:         map[string][]kafkago.OffsetRequest{s.cfg.Topic: rs},
			IsolationLevel: kafkago.ReadCommitted,
		})
		if err != nil {
			return err
		}
		for _, po := range resp.Topics[s.cfg.Topic] {
			if po.Error != nil {
				return fmt.Errorf("partition %d: %w", po.Partition, po.Error)
			}
			out[po.Partition] = get(po)
		}
		if len(out) != len(parts) {
			return fmt.Errorf("answer covers %d of %d partitions", len(out), len(parts))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kafka range: list offsets of %s: %w", s.cfg.Topic, err)
	}
	return out, nil
}

// retry runs f until it succeeds, ctx is done, or it failed MaxRetries+1
// times, backing off in between.
func (s *RangeSource) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil || attempt > s.cfg.MaxRetries {
			return err
		}
		s.opts.Kafka.fetchErrors.Add(1)
		wait := s.cfg.Backoff(attempt)
		s.log.Warn("kafka range: "+what+" did not succeed; retrying", "attempt", attempt, "retry_in", wait, "err", err)
		if Sleep(ctx, wait) != nil {
			return err
		}
	}
}

// Sleep waits for d or until ctx is done, returning ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// read reads one partition's range into st.ch and closes it.
func (s *RangeSource) read(ctx context.Context, st *rangeStream) {
	defer close(st.ch)
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:        s.cfg.Brokers,
		Topic:          s.cfg.Topic,
		Partition:      st.part,
		Dialer:         s.dialer,
		QueueCapacity:  s.cfg.QueueCapacity,
		MinBytes:       s.cfg.MinBytes,
		MaxBytes:       s.cfg.MaxBytes,
		MaxWait:        s.cfg.MaxWait,
		ReadBackoffMin: s.cfg.RetryBackoff,
		ReadBackoffMax: s.cfg.RetryBackoffMax,
		IsolationLevel: kafkago.ReadCommitted,
		MaxAttempts:    max(s.cfg.MaxRetries, 1),
	})
	defer r.Close()
	if err := r.SetOffset(st.start); err != nil {
		st.err = fmt.Errorf("kafka range: seek %s/%d to %d: %w", s.cfg.Topic, st.part, st.start, err)
		return
	}

	stopAfter := s.rng.Until.Add(s.rng.Slack)
	chunk := make([]rangeItem, 0, rangeChunk)
	last := s.rng.Since // time of the last event in range, for placing a strict error
	fails := 0
	send := func() bool {
		if len(chunk) == 0 {
			return true
		}
		select {
		case st.ch <- chunk:
			chunk = make([]rangeItem, 0, rangeChunk)
			return true
		case <-ctx.Done():
			return false
		}
	}
	defer send()
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			s.opts.Kafka.fetchErrors.Add(1)
			if fails > s.cfg.MaxRetries {
				st.err = fmt.Errorf("kafka range: read %s/%d (%d attempts): %w", s.cfg.Topic, st.part, fails, err)
				return
			}
			if Sleep(ctx, s.cfg.Backoff(fails)) != nil {
				return
			}
			continue
		}
		fails = 0
		s.opts.Kafka.messages.Inc()
		if m.Offset >= st.end || (!m.Time.IsZero() && m.Time.After(stopAfter)) {
			return
		}
		chunk = append(chunk, rangeItem{off: m.Offset})
		it := &chunk[len(chunk)-1]
		if err := ingest.Decode(m.Value, &it.ev); err != nil {
			if !errors.As(err, &it.derr) {
				it.derr = &ingest.DecodeError{Reason: ingest.ReasonNotJSON, Msg: err.Error()}
			}
			if s.rng.Strict {
				it.ev = shopguard.Event{Time: last}
				send()
				return
			}
			chunk = chunk[:len(chunk)-1]
			pos := m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
			if rerr := s.opts.Rejects.Reject(ctx, pos, m.Value, it.derr); rerr != nil && ctx.Err() == nil {
				s.log.Warn("kafka range: invalid message not dead-lettered", "pos", pos, "err", rerr)
			}
		} else if it.ev.Time.Before(s.rng.Since) || it.ev.Time.After(s.rng.Until) {
			chunk = chunk[:len(chunk)-1]
		} else {
			last = it.ev.Time
		}
		if len(chunk) == rangeChunk && !send() {
			return
		}
		if m.Offset+1 >= st.end {
			return
		}
	}
}

// errStrict marks the error Run returns for an invalid message in Strict
// mode.
var errStrict = errors.New("invalid message")

// merge k-way merges the streams by (event time, partition, offset) into
// batches.
func (s *RangeSource) merge(ctx context.Context, streams []*rangeStream, out chan<- shopguard.Batch) error {
	// next makes st.cur non-empty; false means st is finished.
	next := func(st *rangeStream) (bool, error) {
		for len(st.cur) == 0 {
			select {
			case c, ok := <-st.ch:
				if !ok {
					return false, st.err
				}
				st.cur = c
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		return true, nil
	}
	h := make(streamHeap, 0, len(streams))
	for _, st := range streams {
		ok, err := next(st)
		if err != nil {
			return err
		}
		if ok {
			h = append(h, st)
		}
	}
	heap.Init(&h)

	var b shopguard.Batch
	flush := func() error {
		if len(b.Events) == 0 {
			return nil
		}
		s.opts.Metrics.ReadEvents(b.Events)
		select {
		case out <- b:
			b = shopguard.Batch{}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for h.Len() > 0 {
		st := h[0]
		it := &st.cur[0]
		if it.derr != nil { // Strict: stop here, after the events before it
			s.opts.Metrics.Invalid(it.derr.Reason)
			pos := s.cfg.Topic + "/" + strconv.Itoa(st.part) + "/" + strconv.FormatInt(it.off, 10)
			if err := flush(); err != nil {
				return err
			}
			return fmt.Errorf("%s: %w: %w", pos, errStrict, it.derr)
		}
		if b.Events == nil {
			b.Received = time.Now()
			b.Events = make([]shopguard.Event, 0, s.cfg.BatchSize)
		}
		b.Events = append(b.Events, it.ev)
		st.cur = st.cur[1:]
		ok, err := next(st)
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
		if len(b.Events) >= s.cfg.BatchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// streamHeap orders streams by their current item: event time, then
// partition (offsets within a partition are already in order).
type streamHeap []*rangeStream

func (h streamHeap) Len() int { return len(h) }
func (h streamHeap) Less(i, j int) bool {
	a, b := &h[i].cur[0], &h[j].cur[0]
	if c := a.ev.Time.Compare(b.ev.Time); c != 0 {
		return c < 0
	}
	return h[i].part < h[j].part
}
func (h streamHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *streamHeap) Push(x any)   { *h = append(*h, x.(*rangeStream)) }
func (h *streamHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
