package detect

import (
	"math/bits"
	"unsafe"
)

// index maps the keys of one generation's accounts to their slots, outside
// the Go heap like the records (arena.go): an open-addressing table with
// linear probing, 12 bytes a slot (the key, and a ref of 4 bytes), kept
// between three eighths and three quarters full. A Go map of the same keys
// takes about twice that, and the garbage collector's headroom doubles it
// again.
//
// A value is a ref, or inHot for an account in the hot set; a slot whose
// value is 0 is empty, so every key, 0 included, can be held.
type index struct {
	mem   []byte   // the mapping keys and vals live in
	keys  []uint64 // len is a power of two
	vals  []ref
	n     int
	shift uint // 64 - log2(len(keys))
}

// inHot marks an entry whose account is in the hot set.
const inHot ref = 1<<32 - 1

// indexMin is the number of slots of a new index: a page's worth.
const indexMin = 512

func (x *index) len() int { return x.n }

// home is the slot where a search for h starts.
func (x *index) home(h uint64) int {
	return int((h * 0x9e3779b97f4a7c15) >> x.shift) // Fibonacci hashing: h need not be mixed
}

// get returns the value of h, or 0.
func (x *index) get(h uint64) ref {
	if x.n == 0 {
		return 0
	}
	mask := len(x.keys) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		switch v := x.vals[i]; {
		case v == 0:
			return 0
		case x.keys[i] == h:
			return v
		}
	}
}

// put sets the value of h to v, which is not 0.
func (x *index) put(h uint64, v ref) {
	if (x.n+1)*4 > len(x.keys)*3 {
		x.grow()
	}
	mask := len(x.keys) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		switch {
		case x.vals[i] == 0:
			x.keys[i], x.vals[i] = h, v
			x.n++
			return
		case x.keys[i] == h:
			x.vals[i] = v
			return
		}
	}
}

// del removes h, if held, shifting the entries after it back so that no
// search needs a tombstone.
func (x *index) del(h uint64) {
	if x.n == 0 {
		return
	}
	mask := len(x.keys) - 1
	i := x.home(h)
	for ; x.keys[i] != h || x.vals[i] == 0; i = (i + 1) & mask {
		if x.vals[i] == 0 {
			return
		}
	}
	// Move back each later entry of the run that may sit at i: one whose
	// home is not in (i, j].
	for j := (i + 1) & mask; x.vals[j] != 0; j = (j + 1) & mask {
		if k := x.home(x.keys[j]); (j-k)&mask >= (j-i)&mask {
			x.keys[i], x.vals[i] = x.keys[j], x.vals[j]
			i = j
		}
	}
	x.keys[i], x.vals[i] = 0, 0
	x.n--
}

// each calls fn for every entry, in no order; fn must not change x.
func (x *index) each(fn func(h uint64, v ref)) {
	for i, v := range x.vals {
		if v != 0 {
			fn(x.keys[i], v)
		}
	}
}

// update replaces the value of every entry by fn's, which is not 0.
func (x *index) update(fn func(h uint64, v ref) ref) {
	for i, v := range x.vals {
		if v != 0 {
			x.vals[i] = fn(x.keys[i], v)
		}
	}
}

// grow doubles the table (or makes the first one) and moves the entries.
func (x *index) grow() {
	old, oldKeys, oldVals := x.mem, x.keys, x.vals
	x.alloc(max(2*len(x.keys), indexMin))
	mask := len(x.keys) - 1
	for j, v := range oldVals {
		if v == 0 {
			continue
		}
		h := oldKeys[j]
		i := x.home(h)
		for x.vals[i] != 0 {
			i = (i + 1) & mask
		}
		x.keys[i], x.vals[i] = h, v
	}
	if old != nil {
		freeChunk(old)
	}
}

// alloc makes an empty table of n slots, n a power of two.
func (x *index) alloc(n int) {
	x.mem = allocChunk(n * 12)
	x.keys = unsafe.Slice((*uint64)(unsafe.Pointer(&x.mem[0])), n)
	x.vals = unsafe.Slice((*ref)(unsafe.Pointer(&x.mem[n*8])), n)
	x.shift = uint(64 - bits.TrailingZeros(uint(n)))
}

// reset empties x and returns its memory.
func (x *index) reset() {
	if x.mem != nil {
		freeChunk(x.mem)
	}
	*x = index{}
}
