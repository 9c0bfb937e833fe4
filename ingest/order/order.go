// Package order puts the events of several input partitions into one
// order by event time, so that a detector reading many partitions judges
// them as a replay of the same events would (SPEC §4).
//
// It is the merge both consumers share: the single-process Kafka source
// (ingest/kafka) merges the partitions one instance is assigned, and the
// scale-out runtime (scaleout) re-sorts what each internal partition
// receives from every input partition. The watermarks are Flink's idea:
// each input partition promises a bound below which it will send nothing
// more, and an event goes on once every partition that is not idle has
// promised past it.
package order

import (
	"cmp"
	"container/heap"
	"math"
)

// Key places an event in the order.
//
// T is the stream time of the event's input partition at the event: the
// largest event time read from that partition up to and including it (as
// Kafka Streams defines stream time). For a partition whose events are in
// time order it is the event's own time; a late event is placed where it
// arrived. P and Off are the input partition and offset, which break ties
// deterministically and keep each input partition's events in offset order.
type Key struct {
	T   int64 // stream time, unix ns
	P   int32 // input partition
	Off int64 // input offset
}

// Min sorts before every key and Max after every key.
var (
	Min = Key{T: math.MinInt64, P: math.MinInt32, Off: math.MinInt64}
	Max = Key{T: math.MaxInt64, P: math.MaxInt32, Off: math.MaxInt64}
)

// Cmp compares a and b: -1, 0 or +1.
func (a Key) Cmp(b Key) int {
	if c := cmp.Compare(a.T, b.T); c != 0 {
		return c
	}
	if c := cmp.Compare(a.P, b.P); c != 0 {
		return c
	}
	return cmp.Compare(a.Off, b.Off)
}

// MinKey returns the smaller of a and b.
func MinKey(a, b Key) Key {
	if a.Cmp(b) <= 0 {
		return a
	}
	return b
}

// Mark is what the latest watermark of one input partition promised:
// every later event from that partition has a key at or above Bound. Idle
// says the partition has nothing more to send for now, so it holds
// nothing back.
type Mark struct {
	Bound Key
	Idle  bool
}

// Item is an event that waits for its turn.
type Item[V any] struct {
	K Key
	V V
}

// Heap is a min-heap of items by key (container/heap).
type Heap[V any] []Item[V]

func (h Heap[V]) Len() int           { return len(h) }
func (h Heap[V]) Less(i, j int) bool { return h[i].K.Cmp(h[j].K) < 0 }
func (h Heap[V]) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *Heap[V]) Push(x any)        { *h = append(*h, x.(Item[V])) }
func (h *Heap[V]) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = Item[V]{}
	*h = old[:len(old)-1]
	return it
}

// Order re-sorts events that arrive from many input partitions, each in
// offset order, into key order. An event is released once no input
// partition can still send one with a smaller key: the frontier, the
// smallest bound over all input partitions that are not idle. It also
// drops events received twice (a producer that restarted from its last
// commit writes again what it wrote after it).
//
// Its fields are exported for the checkpoints of its users; it is not safe
// for concurrent use.
type Order[V any] struct {
	// Inputs is the partition count of the input topic when it is known:
	// the frontier is then Min until every partition below it has been
	// heard from, and a mark of a higher partition raises it. Zero means
	// the marked partitions are all there are (one consumer of a group
	// knows only the partitions it was given).
	Inputs int
	Seen   map[int32]int64 // highest input offset received, by input partition
	Marks  map[int32]Mark  // latest watermark, by input partition
	Items  Heap[V]
	Done   Key // key of the last event processed
}

// New returns an empty Order for an input topic of inputs partitions (0:
// unknown, see Order.Inputs).
func New[V any](inputs int) *Order[V] {
	return &Order[V]{Inputs: inputs, Seen: map[int32]int64{}, Marks: map[int32]Mark{}, Done: Min}
}

// Add takes a received event. It reports false for a duplicate, which it
// drops.
func (o *Order[V]) Add(k Key, v V) bool {
	if last, ok := o.Seen[k.P]; ok && k.Off <= last {
		return false
	}
	o.Seen[k.P] = k.Off
	heap.Push(&o.Items, Item[V]{K: k, V: v})
	return true
}

// Mark takes a watermark of input partition p. Bounds only grow: a
// producer that restarted from an earlier commit announces an earlier
// bound, but what was promised before still holds for what it writes anew
// (its duplicates are dropped). idle is the latest watermark's.
func (o *Order[V]) Mark(p int32, bound Key, idle bool) {
	m, ok := o.Marks[p]
	if !ok || bound.Cmp(m.Bound) > 0 {
		m.Bound = bound
	}
	m.Idle = idle
	o.Marks[p] = m
	if o.Inputs > 0 && int(p) >= o.Inputs {
		o.Inputs = int(p) + 1 // partitions were added to the input topic
	}
}

// Frontier returns the key below which every event has been received: Min
// while some input partition has not been heard from, and Max when every
// input partition is idle.
func (o *Order[V]) Frontier() Key {
	f := Max
	if o.Inputs == 0 {
		for _, m := range o.Marks {
			if !m.Idle {
				f = MinKey(f, m.Bound)
			}
		}
		return f
	}
	for p := range o.Inputs {
		m, ok := o.Marks[int32(p)]
		if !ok {
			return Min
		}
		if !m.Idle {
			f = MinKey(f, m.Bound)
		}
	}
	return f
}

// Len returns how many events wait.
func (o *Order[V]) Len() int { return len(o.Items) }

// Peek returns the smallest waiting event's key.
func (o *Order[V]) Peek() (Key, bool) {
	if len(o.Items) == 0 {
		return Key{}, false
	}
	return o.Items[0].K, true
}

// Pop removes and returns the smallest waiting event.
func (o *Order[V]) Pop() Item[V] {
	return heap.Pop(&o.Items).(Item[V])
}

// Processed records that the event with key k was processed and reports
// whether it was late: after an event with a larger key.
func (o *Order[V]) Processed(k Key) (late bool) {
	if k.Cmp(o.Done) < 0 {
		return true
	}
	o.Done = k
	return false
}
