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
	"math"
	"slices"
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

// queue is the events of one input partition waiting, in key order: a
// list of fixed-size blocks, so that a long queue never grows by copying
// and a drained block is reused.
type queue[V any] struct {
	blocks [][]Item[V] // each of blockLen; the first from head, the last up to tail
	head   int         // index of the oldest item in blocks[0]
	tail   int         // items in the last block
	n      int
	free   [][]Item[V] // drained blocks (their stale values stay until overwritten)
}

// blockLen is the items per block.
const blockLen = 256

func (q *queue[V]) len() int { return q.n }

// next returns the slot the next item goes in, which the caller fills.
func (q *queue[V]) next() *Item[V] {
	if len(q.blocks) == 0 || q.tail == blockLen {
		var b []Item[V]
		if n := len(q.free); n > 0 {
			b, q.free = q.free[n-1], q.free[:n-1]
		} else {
			b = make([]Item[V], blockLen)
		}
		q.blocks = append(q.blocks, b)
		q.tail = 0
	}
	it := &q.blocks[len(q.blocks)-1][q.tail]
	q.tail++
	q.n++
	return it
}

func (q *queue[V]) front() *Item[V] { return &q.blocks[0][q.head] }

// popTo copies the oldest item's value into *dst and returns its key. The
// slot keeps its value until it is overwritten, rather than being cleared:
// a queue holds at most its blocks in use and four free ones, so what the
// stale slots keep alive is bounded, and clearing each one (with the
// collector's write barrier) cost as much as copying it.
func (q *queue[V]) popTo(dst *V) Key {
	b := q.blocks[0]
	it := &b[q.head]
	*dst = it.V
	k := it.K
	q.head++
	q.n--
	if q.head == blockLen || q.n == 0 {
		// The first block is drained (or the queue is empty, and with one
		// block it starts again from its beginning).
		if len(q.blocks) == 1 {
			q.tail = 0
		} else {
			q.blocks[0] = nil
			q.blocks = q.blocks[1:]
			if len(q.free) < 4 {
				q.free = append(q.free, b)
			}
		}
		q.head = 0
	}
	return k
}

// all appends the waiting items to out.
func (q *queue[V]) all(out []Item[V]) []Item[V] {
	for i, b := range q.blocks {
		from, to := 0, blockLen
		if i == 0 {
			from = q.head
		}
		if i == len(q.blocks)-1 {
			to = q.tail
		}
		out = append(out, b[from:to]...)
	}
	return out
}

// Order re-sorts events that arrive from many input partitions, each in
// offset order, into key order. An event is released once no input
// partition can still send one with a smaller key: the frontier, the
// smallest bound over all input partitions that are not idle. It also
// drops events received twice (a producer that restarted from its last
// commit writes again what it wrote after it).
//
// Each input partition's events wait in their own queue, which is in key
// order since they arrive in offset order; a heap of the partitions by
// their oldest event's key merges the queues, so an event costs a few
// comparisons however many wait. It is not safe for concurrent use.
type Order[V any] struct {
	// Inputs is the partition count of the input topic when it is known:
	// the frontier is then Min until every partition below it has been
	// heard from, and a mark of a higher partition raises it. Zero means
	// the marked partitions are all there are (one consumer of a group
	// knows only the partitions it was given).
	Inputs int
	// Seen is the highest input offset received, by input partition.
	Seen map[int32]int64
	// Done is the key of the last event processed.
	Done Key

	marks  []Mark // latest watermark, by input partition
	heard  []bool // marks[p] holds one
	queues []queue[V]
	heads  []int32 // partitions with waiting events, a min-heap by their oldest event's key
	n      int
}

// New returns an empty Order for an input topic of inputs partitions (0:
// unknown, see Order.Inputs).
func New[V any](inputs int) *Order[V] {
	return &Order[V]{Inputs: inputs, Seen: map[int32]int64{}, Done: Min}
}

func (o *Order[V]) grow(p int32) {
	for int(p) >= len(o.queues) {
		o.queues = append(o.queues, queue[V]{})
		o.marks = append(o.marks, Mark{})
		o.heard = append(o.heard, false)
	}
}

// Add takes a received event. It reports false for a duplicate, which it
// drops.
func (o *Order[V]) Add(k Key, v V) bool {
	if last, ok := o.Seen[k.P]; ok && k.Off <= last {
		return false
	}
	o.Seen[k.P] = k.Off
	o.add(Item[V]{K: k, V: v})
	return true
}

// AddFrom is Add that copies *v into the order once: for a large V.
func (o *Order[V]) AddFrom(k Key, v *V) bool {
	if last, ok := o.Seen[k.P]; ok && k.Off <= last {
		return false
	}
	o.Seen[k.P] = k.Off
	o.slot(k).V = *v
	return true
}

func (o *Order[V]) add(it Item[V]) { *o.slot(it.K) = it }

// slot returns the slot for the event with key k, its key set, which the
// caller fills.
func (o *Order[V]) slot(k Key) *Item[V] {
	o.grow(k.P)
	q := &o.queues[k.P]
	it := q.next()
	it.K = k
	o.n++
	if q.len() == 1 {
		o.heads = append(o.heads, k.P)
		o.up(len(o.heads) - 1)
	}
	return it
}

// Load puts back events a checkpoint held (Items), in any order, without
// checking Seen.
func (o *Order[V]) Load(items []Item[V]) {
	slices.SortFunc(items, func(a, b Item[V]) int { return a.K.Cmp(b.K) })
	for _, it := range items {
		o.add(it)
	}
}

// Items returns the waiting events, partition by partition, for a
// checkpoint.
func (o *Order[V]) Items() []Item[V] {
	out := make([]Item[V], 0, o.n)
	for i := range o.queues {
		out = o.queues[i].all(out)
	}
	return out
}

// Mark takes a watermark of input partition p. Bounds only grow: a
// producer that restarted from an earlier commit announces an earlier
// bound, but what was promised before still holds for what it writes anew
// (its duplicates are dropped). idle is the latest watermark's.
func (o *Order[V]) Mark(p int32, bound Key, idle bool) {
	o.grow(p)
	m := &o.marks[p]
	if !o.heard[p] || bound.Cmp(m.Bound) > 0 {
		m.Bound = bound
	}
	m.Idle, o.heard[p] = idle, true
	if o.Inputs > 0 && int(p) >= o.Inputs {
		o.Inputs = int(p) + 1 // partitions were added to the input topic
	}
}

// Marks returns the latest watermark of every partition heard from.
func (o *Order[V]) Marks() map[int32]Mark {
	out := map[int32]Mark{}
	for p, ok := range o.heard {
		if ok {
			out[int32(p)] = o.marks[p]
		}
	}
	return out
}

// Frontier returns the key below which every event has been received: Min
// while some input partition has not been heard from, and Max when every
// input partition is idle.
func (o *Order[V]) Frontier() Key {
	if len(o.heard) < o.Inputs {
		return Min
	}
	f := Max
	for p, ok := range o.heard {
		if !ok {
			if p < o.Inputs {
				return Min
			}
			continue
		}
		if m := &o.marks[p]; !m.Idle && m.Bound.Cmp(f) < 0 {
			f = m.Bound
		}
	}
	return f
}

// Len returns how many events wait.
func (o *Order[V]) Len() int { return o.n }

// Peek returns the smallest waiting event's key.
func (o *Order[V]) Peek() (Key, bool) {
	if len(o.heads) == 0 {
		return Key{}, false
	}
	return o.queues[o.heads[0]].front().K, true
}

// Oldest returns the key of partition p's oldest waiting event.
func (o *Order[V]) Oldest(p int32) (Key, bool) {
	if int(p) >= len(o.queues) || p < 0 || o.queues[p].len() == 0 {
		return Key{}, false
	}
	return o.queues[p].front().K, true
}

// Pop removes and returns the smallest waiting event.
func (o *Order[V]) Pop() Item[V] {
	var it Item[V]
	it.K = o.PopTo(&it.V)
	return it
}

// PopTo is Pop that copies the event into *dst and returns its key: for a
// large V.
func (o *Order[V]) PopTo(dst *V) Key {
	q := &o.queues[o.heads[0]]
	k := q.popTo(dst)
	o.n--
	if q.len() == 0 {
		last := len(o.heads) - 1
		o.heads[0] = o.heads[last]
		o.heads = o.heads[:last]
	}
	if len(o.heads) > 0 {
		o.down(0)
	}
	return k
}

func (o *Order[V]) less(i, j int) bool {
	return o.queues[o.heads[i]].front().K.Cmp(o.queues[o.heads[j]].front().K) < 0
}

func (o *Order[V]) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !o.less(j, i) {
			break
		}
		o.heads[i], o.heads[j] = o.heads[j], o.heads[i]
		j = i
	}
}

func (o *Order[V]) down(i int) {
	n := len(o.heads)
	for {
		j := 2*i + 1
		if j >= n {
			return
		}
		if r := j + 1; r < n && o.less(r, j) {
			j = r
		}
		if !o.less(j, i) {
			return
		}
		o.heads[i], o.heads[j] = o.heads[j], o.heads[i]
		i = j
	}
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
