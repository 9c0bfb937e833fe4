package scaleout

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
)

// scaleTask is one partition of a stage: its engine, its order buffer and
// where it reads.
type scaleTask struct {
	s     *Runtime
	gen   *kafkago.Generation
	stage string
	topic string
	part  int
	log   *slog.Logger

	eng     Engine
	flagger Flagger      // account stage
	waver   WaveFollower // account stage with Options.FollowFailures
	rotator Rotator      // account stage, if the engine is one
	key     []byte       // scratch: the event's by-account key
	order   *scaleOrder
	next    int64  // next offset of the internal partition to read
	seq     uint64 // number of the last snapshot written or restored
	dirty   bool   // changed since the last snapshot
	broken  bool   // a delivery failed: the state is ahead of the sinks

	// Account stage: flags not yet applied, by key.
	inbox   *flagInbox
	pending []scaleFlag
	// Source stage: progress published last.
	published    scaleKey
	hasPublished bool

	ev       shopguard.Event
	fs       []shopguard.Finding
	flagMsgs []kafkago.Message

	buffered prometheus.Gauge
	lateC    prometheus.Counter
	eventsC  prometheus.Counter
}

// runTask runs one partition of a stage until ctx is done: it restores the
// partition's state from the changelog, processes, snapshots periodically,
// and snapshots once more at the end.
func (s *Runtime) runTask(ctx context.Context, gen *kafkago.Generation, stage string, part int) {
	topic := s.names.ByAccount
	if stage == StageSource {
		topic = s.names.BySource
	}
	t := &scaleTask{s: s, gen: gen, stage: stage, topic: topic, part: part,
		log:      s.log.With("stage", stage, "topic", topic, "partition", part),
		buffered: s.opts.Scale.buffered.WithLabelValues(stage),
		lateC:    s.opts.Scale.late.WithLabelValues(stage),
		eventsC:  s.opts.Scale.events.WithLabelValues(stage),
	}
	if err := t.restore(ctx); err != nil {
		if ctx.Err() == nil {
			t.log.Error("task not restored; giving the partition up", "err", err)
		}
		return
	}
	t.buffered.Add(float64(t.order.Len()))
	defer func() { t.buffered.Sub(float64(t.order.Len())) }()
	if stage == StageAccount {
		t.inbox = s.flags.subscribe(t.order.Done)
		defer s.flags.unsubscribe(t.inbox)
	}
	r := s.partitionReader(topic, part)
	defer r.Close()
	if err := r.SetOffset(t.next); err != nil {
		t.log.Error("seek", "offset", t.next, "err", err)
		return
	}

	// The reader runs in its own goroutine so that the task can also act
	// on flags, progress and the snapshot timer while no message comes.
	fetched := make(chan []kafkago.Message, 1)
	fctx, stopFetch := context.WithCancel(ctx)
	fetchDone := make(chan struct{})
	go func() {
		defer close(fetchDone)
		for {
			msgs, err := s.fetchBatch(fctx, r, 0, nil)
			if fctx.Err() != nil {
				return
			}
			if err != nil {
				s.opts.Kafka.FetchError()
				t.log.Warn("fetch did not succeed; retrying", "err", err)
				if kafka.Sleep(fctx, s.kc.RetryBackoff) != nil {
					return
				}
				continue
			}
			select {
			case fetched <- msgs:
			case <-fctx.Done():
				return
			}
		}
	}()
	defer func() {
		stopFetch()
		<-fetchDone
	}()

	// Deliveries keep their context a shutdown budget past ctx, so that
	// what was processed is delivered and snapshotted at a rebalance.
	sinkCtx, cancelSink := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSink()
	stopSink := context.AfterFunc(ctx, func() { time.AfterFunc(s.opts.ShutdownBudget, cancelSink) })
	defer stopSink()

	tick := time.NewTicker(s.sc.SnapshotInterval)
	defer tick.Stop()
	var wake <-chan struct{}
	if t.inbox != nil {
		wake = t.inbox.wake
	}
	defer func() {
		if t.broken {
			return // the last snapshot stays the one to resume from
		}
		fctx, cancel := s.finalContext()
		defer cancel()
		t.snapshot(fctx)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case msgs := <-fetched:
			t.receive(msgs)
		case <-wake:
		case <-tick.C:
			t.snapshot(ctx)
			if t.order.Len() > 0 && t.log.Enabled(ctx, slog.LevelDebug) {
				t.log.Debug("task waiting", "buffered", t.order.Len(), "frontier", t.order.Frontier(),
					"flags_frontier", t.s.flags.frontier(), "marks", t.order.Marks(), "next", t.next)
			}
			continue
		}
		if err := t.process(sinkCtx); err != nil {
			t.broken = true
			if ctx.Err() == nil {
				t.log.Error("findings not delivered; giving the partition up", "err", err)
			}
			return
		}
	}
}

// restore loads the task's newest snapshot and a fresh engine.
func (t *scaleTask) restore(ctx context.Context) error {
	s := t.s
	eng, err := s.opts.NewEngine(t.stage)
	if err != nil {
		return err
	}
	t.eng = eng
	if t.stage == StageAccount {
		f, ok := eng.(Flagger)
		if !ok {
			return errors.New("the account stage's engine cannot take source flags")
		}
		t.flagger = f
		if err := t.follow(); err != nil {
			return err
		}
		t.recordRotations()
	}
	if _, ok := eng.(Snapshotter); !ok {
		s.warned.Do(func() {
			s.log.Warn("the engine cannot snapshot its state: a partition that moves to another instance starts with empty state")
		})
	}
	st, seq, unusable, err := s.loadSnapshot(ctx, t.stage, t.part)
	if err != nil {
		return err
	}
	result := restoreSnapshot
	switch {
	case st != nil:
		t.next, t.order, t.seq = st.next, st.order, seq
		// Partitions added to the audit topic since count from now on.
		t.order.Inputs = max(t.order.Inputs, s.nInput)
		if st.engine != nil {
			if err := restoreEngine(eng, st.engine); err != nil {
				// Resume where the snapshot says, with empty detection
				// state, rather than not at all.
				t.log.Error("engine state in the snapshot unusable; resuming from its position with empty state", "seq", seq, "err", err)
				if t.eng, err = s.opts.NewEngine(t.stage); err != nil {
					return err
				}
				if t.stage == StageAccount {
					t.flagger = t.eng.(Flagger)
					if err := t.follow(); err != nil {
						return err
					}
					t.recordRotations()
				}
				result = restoreUnusable
			}
		}
	default:
		// No snapshot: a fresh task reads its partition from the start
		// (the committed offset only if the changelog lost its snapshot).
		off, _, err := s.committed(ctx, t.gen.GroupID, t.topic, t.part)
		if err != nil {
			return err
		}
		result = restoreEmpty
		if unusable || off >= 0 {
			result = restoreUnusable
			t.log.Error("no usable snapshot; resuming from the committed offset with empty state", "offset", off)
		}
		if off < 0 {
			if off, err = s.listOffset(ctx, t.topic, t.part, false); err != nil {
				return err
			}
		}
		t.next, t.order = off, newScaleOrder(s.nInput)
	}
	s.opts.Scale.restores.WithLabelValues(t.stage, result).Inc()
	t.log.Debug("task restored", "result", result, "seq", t.seq, "offset", t.next, "buffered", t.order.Len())
	return nil
}

// follow sets up an account task's engine to follow the platform's failed
// logins (Options.FollowFailures): partition 0's reports the waves.
func (t *scaleTask) follow() error {
	if !t.s.opts.FollowFailures {
		return nil
	}
	w, ok := t.eng.(WaveFollower)
	if !ok {
		return errors.New("the account stage's engine cannot follow failed logins")
	}
	w.FollowWave(t.part != 0)
	t.waver = w
	return nil
}

// recordRotations starts an account task's engine's record of rotations,
// if it keeps one.
func (t *scaleTask) recordRotations() {
	t.rotator = nil
	if r, ok := t.eng.(Rotator); ok {
		r.TakeRotations(func(uint64, int64) {})
		t.rotator = r
	}
}

// owns reports whether ev's account is this task's; only failed logins of
// other accounts reach it (Options.FollowFailures).
func (t *scaleTask) owns(ev *shopguard.Event) bool {
	if t.waver == nil || ev.Action != shopguard.ActionLoginFailure {
		return true
	}
	t.key = append(append(append(t.key[:0], ev.ShopID...), 0), ev.Actor...)
	return partitionOf(t.key, t.s.nAccount) == t.part
}

// receive takes a batch of messages of the partition into the order
// buffer.
func (t *scaleTask) receive(msgs []kafkago.Message) {
	before := t.order.Len()
	for i := range msgs {
		m := &msgs[i]
		if m.Offset < t.next {
			continue // already received (the reader was re-positioned)
		}
		t.next = m.Offset + 1
		t.dirty = true
		kind, k, idle, err := parseInternal(m)
		switch {
		case err != nil:
			t.log.Warn("unreadable internal message skipped", "offset", m.Offset, "err", err)
		case kind == wireEvent:
			t.order.Add(k, m.Value)
		case kind == wireHeartbeat:
			t.order.Mark(k.P, k, idle)
		}
	}
	t.buffered.Add(float64(t.order.Len() - before))
}

// process hands every event (and, in the account stage, every flag) that
// may be processed to the engine, in key order, delivers the findings,
// and (source stage) publishes the flags and progress.
func (t *scaleTask) process(sinkCtx context.Context) error {
	limit := t.order.Frontier()
	if t.inbox != nil {
		limit = minKey(limit, t.s.flags.frontier())
		if n := len(t.pending); t.inbox.take(&t.pending) > n {
			slices.SortStableFunc(t.pending, func(a, b scaleFlag) int { return a.k.Cmp(b.k) })
		}
	}
	t.fs, t.flagMsgs = t.fs[:0], t.flagMsgs[:0]
	before := t.order.Len()
	n, popped := 0, 0 // events of the task's own keys; all
	for {
		ek, hasEv := t.order.Peek()
		// Beyond max_buffered the oldest events go on regardless.
		forced := hasEv && t.order.Len() > t.s.sc.MaxBuffered
		if len(t.pending) > 0 && (!hasEv || t.pending[0].k.Cmp(ek) <= 0) {
			// A flag comes first, even on a tie with the failed login
			// that raised it: in one process it is set while that login
			// is evaluated.
			f := t.pending[0]
			if f.k.Cmp(limit) >= 0 && !forced {
				break
			}
			t.pending = t.pending[1:]
			if t.order.Processed(f.k) {
				t.lateC.Inc()
			}
			t.flagger.FlagSource(f.prefix, time.Unix(0, f.t), f.id)
			t.dirty = true
			continue
		}
		if !hasEv || (ek.Cmp(limit) >= 0 && !forced) {
			break
		}
		it := t.order.Pop()
		if t.order.Processed(it.K) {
			t.lateC.Inc()
		}
		popped++
		if err := ingest.Decode(it.V, &t.ev); err != nil {
			n++
			t.log.Warn("internal event unreadable; skipped", "err", err)
			continue
		}
		if !t.owns(&t.ev) {
			t.fs = t.waver.FollowFailure(t.fs, &t.ev)
			continue
		}
		n++
		from := len(t.fs)
		t.fs = t.eng.Process(t.fs, &t.ev)
		if t.stage == StageSource {
			for i := from; i < len(t.fs); i++ {
				t.flag(it.K, &t.fs[i])
			}
		}
	}
	if popped > 0 {
		t.dirty = true
		t.eventsC.Add(float64(n))
		if o, ok := t.eng.(Observer); ok && t.stage == StageAccount {
			o.Observe(n)
		}
		t.buffered.Sub(float64(before - t.order.Len()))
	}
	if len(t.fs) > 0 {
		if err := t.s.opts.Sink.Send(sinkCtx, t.fs...); err != nil {
			return err
		}
	}
	if t.rotator != nil {
		t.rotator.TakeRotations(func(acct uint64, at int64) {
			m := rotationMessage(acct, at)
			m.Topic, m.WriterData = t.s.names.Flags, partitionOf(m.Key, t.s.nFlags)
			t.flagMsgs = append(t.flagMsgs, m)
		})
		if len(t.flagMsgs) > 0 {
			// Before the snapshot that holds them: a task that fails
			// here is redone from the last snapshot, and publishes again.
			if err := t.s.write(sinkCtx, t.flagMsgs); err != nil {
				return err
			}
		}
	}
	if t.stage == StageSource && (len(t.flagMsgs) > 0 || !t.hasPublished || limit != t.published) {
		// The flags first, then the progress that covers them, to every
		// flags partition.
		for fp := range t.s.nFlags {
			m := watermarkMessage(t.part, limit)
			m.Topic, m.WriterData = t.s.names.Flags, fp
			t.flagMsgs = append(t.flagMsgs, m)
		}
		if err := t.s.write(sinkCtx, t.flagMsgs); err != nil {
			return err
		}
		t.published, t.hasPublished = limit, true
	}
	return nil
}

// flag turns a credential_stuffing finding raised by the event with key k
// into a flags-topic message.
func (t *scaleTask) flag(k scaleKey, f *shopguard.Finding) {
	if f.Rule != shopguard.RuleCredentialStuffing {
		return
	}
	p, err := parseSourcePrefix(f.IP)
	if err != nil {
		t.log.Warn("credential_stuffing finding names no source; not flagged", "id", f.ID, "ip", f.IP)
		return
	}
	m := flagMessage(scaleFlag{k: k, prefix: p, t: f.Time.UnixNano(), id: f.ID})
	m.Topic, m.WriterData = t.s.names.Flags, partitionOf(m.Key, t.s.nFlags)
	t.flagMsgs = append(t.flagMsgs, m)
}

// snapshot writes the task's state to the changelog if it changed, and
// then commits the position to the group, where it shows as lag.
func (t *scaleTask) snapshot(ctx context.Context) {
	if !t.dirty {
		return
	}
	st := &taskState{next: t.next, order: t.order}
	if sn, ok := t.eng.(Snapshotter); ok {
		var buf bytesBuffer
		if err := sn.Snapshot(&buf); err != nil {
			t.log.Error("engine snapshot not taken", "err", err)
			return
		}
		st.engine = buf.b
	}
	if err := t.s.saveSnapshot(ctx, t.stage, t.part, t.seq+1, st); err != nil {
		if ctx.Err() == nil {
			t.log.Warn("snapshot not written; retrying at the next interval", "err", err)
		}
		return
	}
	t.seq++
	t.dirty = false
	t.s.opts.Scale.snapshots.WithLabelValues(t.stage).Inc()
	if err := t.s.commit(ctx, t.gen, t.topic, t.part, t.next, ""); err != nil {
		t.log.Debug("position not committed (informational only)", "err", err)
	}
}

// bytesBuffer is a minimal io.Writer into a byte slice.
type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
