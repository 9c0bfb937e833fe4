package detect

import (
	"net/netip"
	"slices"
)

// table is a map whose entries expire by event time in two generations:
// every entry touched while the current generation lasts lives in cur; when
// event time has advanced by gen since cur began, prev (entries untouched for
// at least gen) is dropped and cur becomes prev. An entry therefore lives at
// least gen and at most 2×gen of event time after its last use, at the cost
// of one map swap per generation instead of a sweep per event.
//
// A cap bounds the total: reaching it drops prev, the oldest generation,
// first. Evictions are reported through onEvict with their reason.
type table[K comparable, V any] struct {
	cur, prev map[K]*V
	start     int64 // event time (unix ns) at which cur began
	gen       int64 // generation length, ns
	cap       int
	onEvict   func(reason string, n int)
}

func newTable[K comparable, V any](gen int64, cap int, onEvict func(string, int)) *table[K, V] {
	return &table[K, V]{cur: make(map[K]*V), prev: make(map[K]*V), gen: gen, cap: cap, onEvict: onEvict}
}

// get returns the entry for k, promoting it to the current generation, or
// nil.
func (t *table[K, V]) get(k K) *V {
	if v, ok := t.cur[k]; ok {
		return v
	}
	if v, ok := t.prev[k]; ok {
		delete(t.prev, k)
		t.cur[k] = v
		return v
	}
	return nil
}

// put stores v under k. The cap is kept by generations too: once the
// current generation holds half the cap (or the table is full), the
// previous one, entries not used since it began, is evicted, and the
// current one becomes the previous. So an entry used at least once every
// cap/2 new keys survives any number of new keys: an attacker spraying
// random keys cannot flush the state of the account under attack, as
// evicting everything whenever the cap is reached would.
func (t *table[K, V]) put(k K, v *V) {
	if len(t.cur) >= (t.cap+1)/2 || len(t.cur)+len(t.prev) >= t.cap {
		t.evict("cap")
		t.prev, t.cur = t.cur, t.prev
		if len(t.prev) >= t.cap {
			t.evict("cap") // everything was in use; nothing is older
		}
	}
	t.cur[k] = v
}

// advance expires generations up to event time now.
//
// Generations begin at multiples of gen in event time, not at whichever
// event happened to come first: then which entries are expired depends only
// on when each key was last used, never on the other keys' traffic, so an
// engine that sees only some keys (one partition of a scaled-out shopguard,
// or a replay that starts later) keeps exactly the state one engine that
// sees everything keeps for those keys.
func (t *table[K, V]) advance(now int64) {
	if t.start == 0 {
		t.start = t.floor(now)
		return
	}
	if now-t.start < t.gen {
		return
	}
	if now-t.start >= 2*t.gen {
		// Nothing touched during the last two generations is recent.
		t.evict("expired")
		t.prev, t.cur = t.cur, t.prev
		t.evict("expired")
	} else {
		t.evict("expired")
		t.prev, t.cur = t.cur, t.prev
	}
	t.start = t.floor(now)
}

// floor returns the start of the generation that contains now.
func (t *table[K, V]) floor(now int64) int64 {
	r := now % t.gen
	if r < 0 {
		r += t.gen
	}
	return now - r
}

func (t *table[K, V]) evict(reason string) {
	if n := len(t.prev); n > 0 {
		clear(t.prev)
		if t.onEvict != nil {
			t.onEvict(reason, n)
		}
	}
}

func (t *table[K, V]) len() int { return len(t.cur) + len(t.prev) }

// each calls fn for every entry, for checkpoints and tests.
func (t *table[K, V]) each(fn func(K, *V)) {
	for k, v := range t.prev {
		fn(k, v)
	}
	for k, v := range t.cur {
		fn(k, v)
	}
}

// stamp is one timed observation in a window: a failed login (n = 1, addr
// the address) or an export (n = records).
type stamp struct {
	t    int64 // event time, unix ns
	n    int64
	addr netip.Addr
}

// window keeps the stamps of one key sorted by time, pruned to a horizon and
// capped in length (oldest dropped first), so that an attacker hammering one
// key cannot grow it without bound. Events that arrive out of order are
// inserted in place.
type window struct {
	s []stamp
}

// add inserts st in time order and drops stamps older than keepFrom, and the
// oldest beyond limit.
func (w *window) add(st stamp, keepFrom int64, limit int) {
	i := len(w.s)
	for i > 0 && w.s[i-1].t > st.t {
		i--
	}
	w.s = slices.Insert(w.s, i, st)
	w.prune(keepFrom)
	if over := len(w.s) - limit; over > 0 {
		w.s = slices.Delete(w.s, 0, over)
	}
}

// prune drops stamps older than keepFrom.
func (w *window) prune(keepFrom int64) {
	i := 0
	for i < len(w.s) && w.s[i].t < keepFrom {
		i++
	}
	if i > 0 {
		w.s = slices.Delete(w.s, 0, i)
	}
}

// densest returns, among all windows [a, a+span] that contain t, the one
// with the largest sum of n for stamps matching keep (nil keeps all), and
// the index range [lo, hi) of its stamps. With events in order t is the
// newest stamp and this is simply the sum over [t-span, t]; out of order, a
// late event completes a window that ends after it.
func (w *window) densest(t, span int64, keep func(*stamp) bool) (sum int64, lo, hi int) {
	s := w.s
	j := 0
	var run int64 // sum over the matching stamps of s[i:j]
	for i := 0; i < len(s) && s[i].t <= t; i++ {
		for j < len(s) && s[j].t <= s[i].t+span {
			if keep0(keep, &s[j]) {
				run += s[j].n
			}
			j++
		}
		if s[i].t >= t-span && run > sum {
			sum, lo, hi = run, i, j
		}
		if keep0(keep, &s[i]) {
			run -= s[i].n
		}
	}
	return sum, lo, hi
}

func keep0(keep func(*stamp) bool, s *stamp) bool { return keep == nil || keep(s) }
