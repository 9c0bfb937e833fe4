package scaleout

import (
	"cmp"
	"container/heap"
	"math"
)

// scaleKey places an event of the audit topic in the one order every stage
// of a scaled-out shopguard processes events in, whichever instance reads
// them and however the internal topics interleave them.
//
// t is the stream time of the event's input partition at the event: the
// largest event time read from that partition up to and including it (as
// Kafka Streams defines stream time). For a partition whose events are in
// time order it is the event's own time; a late event is placed where it
// arrived. p and off are the input partition and offset, which break ties
// deterministically and keep each input partition's events in offset order.
//
// A flag published by the source stage carries the key of the failed login
// that raised it, so the account stage merges flags into the same order.
type scaleKey struct {
	t   int64 // stream time, unix ns
	p   int32 // input partition
	off int64 // input offset
}

// scaleKeyMin sorts before every key and scaleKeyMax after every key.
var (
	scaleKeyMin = scaleKey{t: math.MinInt64, p: math.MinInt32, off: math.MinInt64}
	scaleKeyMax = scaleKey{t: math.MaxInt64, p: math.MaxInt32, off: math.MaxInt64}
)

func (a scaleKey) cmp(b scaleKey) int {
	if c := cmp.Compare(a.t, b.t); c != 0 {
		return c
	}
	if c := cmp.Compare(a.p, b.p); c != 0 {
		return c
	}
	return cmp.Compare(a.off, b.off)
}

func minKey(a, b scaleKey) scaleKey {
	if a.cmp(b) <= 0 {
		return a
	}
	return b
}

// scaleMark is what the latest heartbeat of one input partition promised
// one internal partition: every later event from that input partition has
// a key at or above bound. idle says the repartitioner had read the input
// partition to its end and found nothing new for the idle timeout.
type scaleMark struct {
	bound scaleKey
	idle  bool
}

// scaleItem is a received event that waits for its turn.
type scaleItem struct {
	k   scaleKey
	raw []byte // the audit event's JSON, as the producer wrote it
}

// scaleHeap is a min-heap of items by key.
type scaleHeap []scaleItem

func (h scaleHeap) Len() int           { return len(h) }
func (h scaleHeap) Less(i, j int) bool { return h[i].k.cmp(h[j].k) < 0 }
func (h scaleHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *scaleHeap) Push(x any)        { *h = append(*h, x.(scaleItem)) }
func (h *scaleHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = scaleItem{}
	*h = old[:len(old)-1]
	return it
}

// scaleOrder re-sorts the events one internal partition receives, from
// many input partitions in arrival order, into key order. An event is
// released once no input partition can still send one with a smaller key:
// the frontier, the smallest heartbeat bound over all input partitions that
// are not idle. It also drops events received twice (a repartitioner that
// restarted from its last commit writes again what it wrote after it),
// since each input partition's events arrive in offset order.
//
// It is the state of one task besides its engine, and is checkpointed with
// it; it is not safe for concurrent use.
type scaleOrder struct {
	inputs int                 // partitions of the audit topic
	seen   map[int32]int64     // highest input offset received, by input partition
	marks  map[int32]scaleMark // latest heartbeat, by input partition
	items  scaleHeap
	done   scaleKey // key of the last event or flag processed
}

func newScaleOrder(inputs int) *scaleOrder {
	return &scaleOrder{inputs: inputs, seen: map[int32]int64{}, marks: map[int32]scaleMark{}, done: scaleKeyMin}
}

// add takes a received event. It reports false for a duplicate, which it
// drops.
func (o *scaleOrder) add(k scaleKey, raw []byte) bool {
	if last, ok := o.seen[k.p]; ok && k.off <= last {
		return false
	}
	o.seen[k.p] = k.off
	heap.Push(&o.items, scaleItem{k: k, raw: raw})
	return true
}

// mark takes a heartbeat of input partition p. Bounds only grow: a
// repartitioner that restarted from an earlier commit announces an earlier
// bound, but what was promised before still holds for what it writes anew
// (its duplicates are dropped). idle is the latest heartbeat's.
func (o *scaleOrder) mark(p int32, bound scaleKey, idle bool) {
	m, ok := o.marks[p]
	if !ok || bound.cmp(m.bound) > 0 {
		m.bound = bound
	}
	m.idle = idle
	o.marks[p] = m
	if int(p) >= o.inputs {
		o.inputs = int(p) + 1 // partitions were added to the audit topic
	}
}

// frontier returns the key below which every event has been received:
// scaleKeyMin while some input partition has not been heard from, and
// scaleKeyMax when every input partition is idle.
func (o *scaleOrder) frontier() scaleKey {
	f := scaleKeyMax
	for p := range o.inputs {
		m, ok := o.marks[int32(p)]
		if !ok {
			return scaleKeyMin
		}
		if !m.idle {
			f = minKey(f, m.bound)
		}
	}
	return f
}

// peek returns the smallest waiting event's key.
func (o *scaleOrder) peek() (scaleKey, bool) {
	if len(o.items) == 0 {
		return scaleKey{}, false
	}
	return o.items[0].k, true
}

// pop removes and returns the smallest waiting event.
func (o *scaleOrder) pop() scaleItem {
	return heap.Pop(&o.items).(scaleItem)
}

// processed records that the item with key k was processed and reports
// whether it was late: after an item with a larger key.
func (o *scaleOrder) processed(k scaleKey) (late bool) {
	if k.cmp(o.done) < 0 {
		return true
	}
	o.done = k
	return false
}
