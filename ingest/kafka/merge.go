package kafka

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/order"
)

// merger puts the events of the partitions one Source reads into event
// order (SPEC §4) with the merge the scale-out runtime uses (ingest/order):
// the watermark of a partition is its stream time after its last fetched
// message. A partition read to its end (its last message was at the high
// water mark) is idle and holds nothing back; one that is behind and
// delivers nothing for Config.Lateness stops being waited for until it
// delivers again. Until every partition of the topic has been heard from,
// or for at most Lateness after the first message, nothing is released, so
// that every assigned partition is heard from first.
//
// Only Run touches it.
type merger struct {
	lateness time.Duration
	grace    time.Duration // the start-up wait: the lateness
	max      int
	o        *order.Order[shopguard.Event]
	parts    map[int]*mergePart
	start    time.Time // first message; zero before it
	topic    int       // partitions of the topic, 0 if not known
	m        *Metrics
}

// mergePart is what the merge knows of one partition.
type mergePart struct {
	st      int64     // stream time: the newest event time fetched, unix ns
	next    int64     // offset after the last message fetched
	hwm     int64     // high water mark with the last message
	last    time.Time // when the last message was fetched
	pushed  int64     // offset after what acks were last given
	stalled bool
	gauge   prometheus.Gauge
}

func newMerger(cfg Config, m *Metrics) *merger {
	return &merger{lateness: cfg.Lateness, grace: cfg.Lateness, max: cfg.MaxBuffered, o: order.New[shopguard.Event](0),
		parts: map[int]*mergePart{}, m: m}
}

func (g *merger) part(p int) *mergePart {
	mp := g.parts[p]
	if mp == nil {
		mp = &mergePart{next: -1, pushed: -1, gauge: g.m.Lag(p)}
		g.parts[p] = mp
	}
	return mp
}

// fetched records message m of the partition and, if it is an event (ev
// not nil), adds it to the order.
func (g *merger) fetched(now time.Time, m *kafkago.Message, ev *shopguard.Event) {
	if g.start.IsZero() {
		g.start = now
	}
	mp := g.part(m.Partition)
	mp.next, mp.hwm, mp.last, mp.stalled = m.Offset+1, m.HighWaterMark, now, false
	if ev != nil {
		mp.st = max(mp.st, ev.Time.UnixNano())
		g.o.AddFrom(order.Key{T: mp.st, P: int32(m.Partition), Off: m.Offset}, ev)
	}
	g.o.Mark(int32(m.Partition), order.Key{T: mp.st, P: int32(m.Partition), Off: mp.next}, mp.next >= mp.hwm)
}

// stall stops waiting for the partitions that are behind and have
// delivered nothing for the lateness.
func (g *merger) stall(now time.Time) {
	for p, mp := range g.parts {
		if !mp.stalled && mp.next < mp.hwm && now.Sub(mp.last) >= g.lateness {
			mp.stalled = true
			g.m.stalls.Inc()
			g.o.Mark(int32(p), order.Key{T: mp.st, P: int32(p), Off: mp.next}, true)
		}
	}
}

// paused tells the merge that no message was fetched for d because the
// engine was busy: that time does not count towards a partition's stall.
func (g *merger) paused(d time.Duration) {
	if d < time.Millisecond {
		return
	}
	for _, mp := range g.parts {
		mp.last = mp.last.Add(d)
	}
}

// wake returns when the merge must be looked at again with no new
// message: the end of the start-up wait or the next partition to stall,
// while events wait; zero if never.
// starting reports whether the start-up wait is on at now.
func (g *merger) starting(now time.Time) bool {
	return g.start.IsZero() || now.Sub(g.start) < g.grace && (g.topic == 0 || len(g.parts) < g.topic)
}

func (g *merger) wake(now time.Time) time.Time {
	if g.o.Len() == 0 {
		return time.Time{}
	}
	if g.starting(now) {
		return g.start.Add(g.grace)
	}
	var w time.Time
	for _, mp := range g.parts {
		if !mp.stalled && mp.next < mp.hwm {
			if t := mp.last.Add(g.lateness); w.IsZero() || t.Before(w) {
				w = t
			}
		}
	}
	return w
}

// release appends to evs the events that may go on, in order, up to limit
// events in all.
func (g *merger) release(now time.Time, evs []shopguard.Event, limit int) []shopguard.Event {
	front := order.Min
	if !g.starting(now) {
		front = g.o.Frontier()
	}
	for len(evs) < limit {
		k, ok := g.o.Peek()
		if !ok {
			break
		}
		forced := g.o.Len() > g.max
		if k.Cmp(front) >= 0 && !forced {
			break
		}
		if forced {
			g.m.forced.Inc()
		}
		n := len(evs)
		if n == cap(evs) {
			evs = append(evs, shopguard.Event{})
		} else {
			evs = evs[:n+1]
		}
		if g.o.Processed(g.o.PopTo(&evs[n])) {
			g.m.late.Inc()
		}
	}
	g.m.buffered.Set(float64(g.o.Len()))
	return evs
}

// progress returns the partitions whose committable position moved since
// it last said: every message before the partition's oldest waiting event
// (or, with none waiting, every message fetched) is processed or was not
// an event.
func (g *merger) progress() []partPos {
	var parts []partPos
	for p, mp := range g.parts {
		upTo := mp.next
		if k, ok := g.o.Oldest(int32(p)); ok {
			upTo = k.Off
		}
		if upTo > mp.pushed && upTo > 0 {
			mp.pushed = upTo
			parts = append(parts, partPos{partition: p, offset: upTo - 1, hwm: mp.hwm})
			mp.gauge.Set(float64(max(mp.hwm-mp.next, 0)))
		}
	}
	return parts
}

// runMerged is Run with the partitions merged by event time.
func (s *Source) runMerged(ctx context.Context, out chan<- shopguard.Batch, stopped func() error) error {
	g := s.merge
	if g.topic == 0 && s.dialer != nil {
		// How many partitions to hear from before the start-up wait is
		// over; without the answer, the wait is the lateness.
		lctx, cancel := context.WithTimeout(ctx, min(s.cfg.DialTimeout, s.cfg.Lateness))
		ps, err := s.dialer.LookupPartitions(lctx, "tcp", s.cfg.Brokers[0], s.cfg.Topic)
		cancel()
		if err == nil {
			g.topic = len(ps)
		} else {
			s.log.Debug("partitions of the topic not known; the merge waits the lateness at start", "err", err)
		}
	}
	var (
		evs     []shopguard.Event
		first   time.Time // when the first event of evs was released
		wait    deadlineCtx
		stalls  time.Time // when partitions were last checked for stalls
		wake    time.Time // the merge's next wake-up as of then
		scratch shopguard.Event
		fails   int
		sent    = true    // a batch may have been sent since the clock was read (and Run may be new)
		last    time.Time // the latest time read
	)
	clock := s.clock
	if clock == nil {
		clock = time.Now
	}
	// batch makes evs one batch with the progress made.
	batch := func() shopguard.Batch {
		a := s.acks.push(g.progress())
		var once atomic.Bool
		arr := evs
		b := shopguard.Batch{Events: evs, Received: first, Done: func() {
			if once.CompareAndSwap(false, true) {
				s.acks.done(a)
				s.recycle(arr)
			}
		}}
		evs = nil
		s.opts.Metrics.ReadEvents(b.Events)
		return b
	}
	defer func() {
		wait.set(ctx, time.Time{})
		// Released but not sent: the next Run delivers them first.
		if len(evs) > 0 {
			b := batch()
			s.held = &b
		}
	}()
	for {
		// The fetch's clock, unless this loop may have waited to send.
		now := clock()
		if sent {
			now, sent = time.Now(), false
		}
		if now.Before(last) {
			now = last // the fetch's clock is older than a send's
		}
		last = now
		if now.Sub(stalls) >= 10*time.Millisecond || wake.IsZero() && g.o.Len() > 0 {
			g.stall(now)
			stalls, wake = now, g.wake(now)
		}
		n := len(evs)
		if evs == nil {
			evs = s.events()
		}
		if evs = g.release(now, evs, s.cfg.BatchSize); len(evs) > 0 && n == 0 {
			first = now
		}
		if len(evs) >= s.cfg.BatchSize || len(evs) > 0 && now.Sub(first) >= s.cfg.BatchLinger {
			b := batch()
			t0 := time.Now()
			select {
			case out <- b:
			case <-ctx.Done():
				s.held = &b
				return stopped()
			}
			g.paused(time.Since(t0))
			sent = true
			continue
		}
		// Wait for the next message, the batch's linger or the merge's
		// next wake-up, whichever comes first.
		var want time.Time
		if len(evs) > 0 {
			want = first.Add(s.cfg.BatchLinger)
		}
		if !wake.IsZero() && (want.IsZero() || wake.Before(want)) {
			want = wake
		}
		wait.set(ctx, want)
		msg, err := s.fetch(wait.ctx)
		if err == nil {
			fails = 0
			s.fetchOK.Store(true)
			s.fetched.Store(true)
			ev := &scratch
			if !s.admit(ctx, &msg, ev) {
				ev = nil
			}
			at := clock() // later than now if the fetch waited
			if s.rejected {
				// Dead-lettering may have taken a while.
				at, sent, s.rejected = time.Now(), true, false
			}
			if at.Before(now) {
				at = now
			}
			g.fetched(at, &msg, ev)
			if ev == nil && len(evs) == 0 {
				// Not an event: commit past it once nothing waits before it.
				if parts := g.progress(); len(parts) > 0 {
					s.acks.done(s.acks.push(parts))
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return stopped()
		}
		if wait.ctx.Err() != nil { // the deadline: look at the merge again
			wait.set(ctx, time.Time{})
			stalls = time.Time{}
			continue
		}
		if done, ferr := s.fetchFailed(ctx, err, &fails); ferr != nil {
			return ferr
		} else if done {
			return stopped()
		}
	}
}

// admit counts m and decodes it into ev: it reports false for a message
// this source already processed (acknowledged again), one the format does
// not match (counted, skipped) or an invalid one (rejected).
func (s *Source) admit(ctx context.Context, m *kafkago.Message, ev *shopguard.Event) bool {
	s.opts.Kafka.messages.Inc()
	// A message this source already handed to the engine comes again
	// after a rebalance or a fetch retry resumes from the committed
	// offset. The engine's state already holds it: processing it twice
	// would count it twice (and could raise a finding a single pass
	// would not), so it is only acknowledged again.
	if last, ok := s.delivered[m.Partition]; ok && m.Offset <= last {
		s.opts.Kafka.redelivered.Inc()
		return false
	}
	if s.delivered == nil {
		s.delivered = map[int]int64{}
	}
	s.delivered[m.Partition] = m.Offset
	*ev = shopguard.Event{}
	if err := s.opts.decode(m.Value, ev); err != nil {
		if errors.Is(err, ingest.ErrUnmatched) {
			s.opts.Metrics.Unmatched(1)
			return false
		}
		s.reject(ctx, m, err)
		return false
	}
	return true
}

// deadlineCtx is a context with a deadline that changes, cancelled when it
// is replaced.
type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
	at     time.Time
}

// set makes ctx parent with the deadline at (none if zero).
func (d *deadlineCtx) set(parent context.Context, at time.Time) {
	if d.ctx != nil && at.Equal(d.at) {
		return
	}
	if d.cancel != nil {
		d.cancel()
	}
	d.at, d.ctx, d.cancel = at, parent, nil
	if !at.IsZero() {
		d.ctx, d.cancel = context.WithDeadline(parent, at)
	}
}
