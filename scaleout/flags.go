package scaleout

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/shopguard/shopguard/ingest/kafka"
)

// flagsKeep is how long, in event time behind the newest flag, the table
// keeps a flag for tasks that are restored later: longer than any
// account_takeover window can be.
const flagsKeep = 8 * 24 * time.Hour

// scaleFlags is the global table of source flags every instance builds
// from the whole flags topic, and hands to its account tasks. It also
// tracks each source partition's progress (watermark), which bounds what
// the account tasks may process.
type scaleFlags struct {
	mu     sync.Mutex
	all    []scaleFlag         // by key
	wm     map[[2]int]scaleKey // (flags partition, source partition) → progress
	subs   map[*flagInbox]struct{}
	nFlags int      // partitions of the flags topic
	nSrc   int      // partitions of the by-source topic
	front  scaleKey // cached frontier
	newest int64    // newest flag time, for pruning

	// Watchlist rotations of every account task (Rotator): account key →
	// earliest event time. Never pruned: one entry per listed account that
	// rotated.
	rotations map[uint64]int64
}

// flagInbox is where the table leaves new flags for one account task.
type flagInbox struct {
	mu    sync.Mutex
	flags []scaleFlag
	wake  chan struct{} // poked when a flag or progress arrives
}

func (b *flagInbox) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take appends the flags left so far to *dst, clears them, and returns
// the new length of *dst.
func (b *flagInbox) take(dst *[]scaleFlag) int {
	b.mu.Lock()
	*dst = append(*dst, b.flags...)
	b.flags = b.flags[:0]
	b.mu.Unlock()
	return len(*dst)
}

func newScaleFlags(nFlags, nSrc int) *scaleFlags {
	return &scaleFlags{wm: map[[2]int]scaleKey{}, subs: map[*flagInbox]struct{}{}, nFlags: nFlags, nSrc: nSrc, front: scaleKeyMin,
		rotations: map[uint64]int64{}}
}

func (t *scaleFlags) addRotation(acct uint64, at int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.rotations[acct]; !ok || at < old {
		t.rotations[acct] = at
	}
}

// Rotations returns how many accounts, of those listed reports listed,
// the account tasks of all instances have seen rotate (Rotator), as far as
// this instance has read the flags topic; 0 before Run has set it up.
func (s *Runtime) Rotations(listed func(acct uint64) bool) int {
	t := s.flags
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k := range t.rotations {
		if listed(k) {
			n++
		}
	}
	return n
}

// subscribe registers a task whose state covers everything up to done: it
// gets the flags above done at once, and every flag that arrives later,
// late ones included.
func (t *scaleFlags) subscribe(done scaleKey) *flagInbox {
	b := &flagInbox{wake: make(chan struct{}, 1)}
	t.mu.Lock()
	defer t.mu.Unlock()
	i, _ := slices.BinarySearchFunc(t.all, done, func(f scaleFlag, k scaleKey) int {
		if f.k.Cmp(k) <= 0 {
			return -1
		}
		return 1
	})
	b.flags = append(b.flags, t.all[i:]...)
	t.subs[b] = struct{}{}
	return b
}

func (t *scaleFlags) unsubscribe(b *flagInbox) {
	t.mu.Lock()
	delete(t.subs, b)
	t.mu.Unlock()
}

// frontier returns the key below which every source partition has
// published its flags: scaleKeyMin until all have been heard from.
func (t *scaleFlags) frontier() scaleKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.front
}

func (t *scaleFlags) recompute() {
	f := scaleKeyMax
	for fp := range t.nFlags {
		for q := range t.nSrc {
			k, ok := t.wm[[2]int{fp, q}]
			if !ok {
				t.front = scaleKeyMin
				return
			}
			f = minKey(f, k)
		}
	}
	t.front = f
}

func (t *scaleFlags) addFlag(f scaleFlag) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, _ := slices.BinarySearchFunc(t.all, f.k, func(x scaleFlag, k scaleKey) int { return x.k.Cmp(k) })
	for j := i; j < len(t.all) && t.all[j].k == f.k; j++ {
		if t.all[j] == f {
			return // published again by a source task that redid its work
		}
	}
	t.all = slices.Insert(t.all, i, f)
	if f.t > t.newest {
		t.newest = f.t
		// Drop what no task can need any more; rare, as flags are.
		cut := t.newest - int64(flagsKeep)
		t.all = slices.DeleteFunc(t.all, func(x scaleFlag) bool { return x.t < cut })
	}
	for b := range t.subs {
		b.mu.Lock()
		b.flags = append(b.flags, f)
		b.mu.Unlock()
		b.poke()
	}
}

// setWatermark records source partition q's progress as read from flags
// partition fp. Progress is taken as published, not only growing: a source
// partition whose input woke up from idle goes back from the maximum.
func (t *scaleFlags) setWatermark(fp, q int, bound scaleKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if q >= t.nSrc {
		return // from a by-source topic with more partitions than ours
	}
	t.wm[[2]int{fp, q}] = bound
	old := t.front
	t.recompute()
	if t.front != old {
		for b := range t.subs {
			b.poke()
		}
	}
}

// readFlags reads flags partition fp from its beginning into the table
// until ctx is done.
func (s *Runtime) readFlags(ctx context.Context, fp int) {
	log := s.log.With("topic", s.names.Flags, "partition", fp)
	r := s.partitionReader(s.names.Flags, fp)
	defer r.Close()
	if err := r.SetOffset(-2); err != nil { // kafkago.FirstOffset
		log.Error("seek to the beginning", "err", err)
		return
	}
	for {
		m, err := r.FetchMessage(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				s.opts.Kafka.FetchError()
				log.Warn("fetch did not succeed; retrying", "err", err)
			}
			if kafka.Sleep(ctx, s.kc.RetryBackoff) != nil {
				return
			}
			continue
		}
		if len(m.Value) > 0 && m.Value[0] == wireRotation {
			acct, at, err := parseRotation(m.Value)
			if err != nil {
				log.Warn("unreadable flags record skipped", "offset", m.Offset, "err", err)
				continue
			}
			s.flags.addRotation(acct, at)
			continue
		}
		kind, f, q, bound, err := parseFlagsRecord(m.Key, m.Value)
		switch {
		case err != nil:
			log.Warn("unreadable flags record skipped", "offset", m.Offset, "err", err)
		case kind == wireFlag:
			s.flags.addFlag(f)
		case kind == wireWatermark:
			s.flags.setWatermark(fp, q, bound)
		}
	}
}
