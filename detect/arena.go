package detect

import (
	"encoding/binary"
	"slices"
)

// arena is memory for pointer-free records, outside the Go heap where the
// platform allows (arena_mmap.go): the compact records of the accounts that
// are not in use (accounts.go). Memory the garbage collector never sees is
// neither scanned nor counted in its heap goal, so a process holding
// millions of accounts does not also carry the collector's headroom for
// them, as it would for Go objects.
//
// Records live in slots of a few size classes, carved from 4 MiB chunks. A
// slot given back (its account grew out of it, or moved to the newer
// generation) goes on its class's free list (4 bytes of Go heap) and is the
// next one of its class handed out, so that an account rewritten a
// thousand times uses one slot, not a thousand. A chunk left at least half
// free is emptied (accountStore.free, with others) and returned. A slot starts with the
// number of its class: the record knows its capacity. reset returns every
// chunk at once: the arena of one generation of accounts is dropped with
// that generation.
type arena struct {
	chunks [][]byte // nil for a chunk given back
	free   []int    // bytes in free slots, per chunk
	sparse []bool   // per chunk: at least half free, to be emptied
	// nSparse is the bytes of the sparse chunks.
	nSparse int
	cur     int                   // the chunk slots are carved from
	used    int                   // bytes carved of chunk cur
	size    int                   // bytes mapped
	slots   [len(slotSizes)][]ref // free slots per class
}

// ref names a slot: its chunk plus one, and its position in 16-byte units.
// The zero ref is no slot.
type ref uint32

const (
	arenaChunk = 4 << 20 // bytes of one chunk, whose positions fit 18 bits
	slotAlign  = 16
	posBits    = 18
	maxChunks  = 1<<(32-posBits) - 2 // and inHot is not a ref
	// bigSlot is the class byte of a slot larger than every class, made
	// for its record and reused only by it; its capacity follows in 4
	// bytes.
	bigSlot = 0xff
)

// slotSizes are the sizes of the classes, header included: every 16 bytes
// up to 256, where most accounts are, then an eighth larger each, so that a
// record wastes about 6% of its slot on average.
var slotSizes = func() [48]uint32 {
	var s [48]uint32
	for i := range s {
		switch {
		case i < 16:
			s[i] = uint32(i+1) * slotAlign
		default:
			s[i] = (s[i-1] + s[i-1]/8 + slotAlign - 1) &^ (slotAlign - 1)
		}
	}
	return s
}()

// classFor returns the smallest class that holds n bytes of record after
// its header, or bigSlot.
func classFor(n int) int {
	for c, sz := range slotSizes {
		if n+1 <= int(sz) {
			return c
		}
	}
	return bigSlot
}

// alloc returns a slot that holds n bytes of record, and those bytes.
func (a *arena) alloc(n int) (ref, []byte) {
	c := classFor(n)
	if c != bigSlot {
		if k := len(a.slots[c]); k > 0 {
			r := a.slots[c][k-1]
			a.slots[c] = a.slots[c][:k-1]
			a.free[r.chunk()] -= int(slotSizes[c])
			return r, a.slot(r)[1:slotSizes[c]]
		}
		r, p := a.carve(int(slotSizes[c]))
		p[0] = byte(c)
		return r, p[1:]
	}
	return a.big(n + n/8) // a little room, as the record may grow
}

// big carves a big slot of capacity room.
func (a *arena) big(room int) (ref, []byte) {
	r, p := a.carve(5 + room)
	p[0] = bigSlot
	binary.LittleEndian.PutUint32(p[1:], uint32(room))
	return r, p[5:]
}

func (r ref) chunk() int { return int(r>>posBits) - 1 }

// carve takes n bytes from the end of the chunk cur, or of a new one.
func (a *arena) carve(n int) (ref, []byte) {
	n = (n + slotAlign - 1) &^ (slotAlign - 1)
	if len(a.chunks) == 0 || a.used+n > len(a.chunks[a.cur]) {
		// The rest of the old chunk is free; a new chunk takes the place
		// of one given back.
		if len(a.chunks) > 0 {
			a.free[a.cur] += len(a.chunks[a.cur]) - a.used
		}
		c := allocChunk(max(n, arenaChunk))
		a.size += len(c)
		a.cur = slices.IndexFunc(a.chunks, func(c []byte) bool { return c == nil })
		if a.cur < 0 {
			if len(a.chunks) >= maxChunks {
				panic("detect: account state holds more than 64 GiB in one generation")
			}
			a.cur = len(a.chunks)
			a.chunks, a.free, a.sparse = append(a.chunks, nil), append(a.free, 0), append(a.sparse, false)
		}
		a.chunks[a.cur], a.free[a.cur], a.used = c, 0, 0
	}
	r := ref((a.cur+1)<<posBits | a.used/slotAlign)
	p := a.chunks[a.cur][a.used : a.used+n : a.used+n]
	a.used += n
	return r, p
}

// slot returns the bytes from r's slot to the end of its chunk.
func (a *arena) slot(r ref) []byte {
	return a.chunks[r.chunk()][int(r&(1<<posBits-1))*slotAlign:]
}

// record returns the record bytes of the slot r (its whole capacity).
func (a *arena) record(r ref) []byte {
	p := a.slot(r)
	if p[0] == bigSlot {
		return p[5 : 5+binary.LittleEndian.Uint32(p[1:])]
	}
	return p[1:slotSizes[p[0]]]
}

// release gives the slot r back for reuse. A chunk left at least half free
// (not the one being carved) becomes sparse: worth emptying, as its free
// slots may not be wanted again. release reports whether the sparse chunks
// are now worth emptying together (accountStore.free): a 32nd of the arena
// or one chunk, whichever is more, so that the index is read once for many
// chunks, not once for each.
func (a *arena) release(r ref) bool {
	p := a.slot(r)
	c := p[0]
	i := r.chunk()
	if c == bigSlot {
		a.free[i] += 5 + int(binary.LittleEndian.Uint32(p[1:]))
	} else {
		a.slots[c] = append(a.slots[c], r)
		a.free[i] += int(slotSizes[c])
	}
	if i != a.cur && !a.sparse[i] && a.free[i] >= len(a.chunks[i])/2 {
		a.sparse[i] = true
		a.nSparse += len(a.chunks[i])
	}
	return a.nSparse > 0 && a.nSparse >= max(arenaChunk, a.size/32)
}

// isSparse reports whether r is in a sparse chunk.
func (a *arena) isSparse(r ref) bool { return a.sparse[r.chunk()] }

// move copies the record in slot r into a new slot of the same capacity
// (a big slot gains no room, however often it moves) and returns it.
func (a *arena) move(r ref) ref {
	rec := a.record(r)
	alloc := a.alloc
	if a.slot(r)[0] == bigSlot {
		alloc = a.big
	}
	n, p := alloc(len(rec))
	copy(p, rec)
	return n
}

// seal takes the sparse chunks' free slots off the free lists, so that no
// slot of theirs is handed out again: the first step of emptying them.
func (a *arena) seal() {
	for c := range a.slots {
		a.slots[c] = slices.DeleteFunc(a.slots[c], a.isSparse)
	}
}

// drop gives the sealed sparse chunks back; they must hold no record.
func (a *arena) drop() {
	for i, sp := range a.sparse {
		if sp {
			a.size -= len(a.chunks[i])
			freeChunk(a.chunks[i])
			a.chunks[i], a.free[i], a.sparse[i] = nil, 0, false
		}
	}
	a.nSparse = 0
}

// reset returns all the arena's memory; its refs are invalid after it.
func (a *arena) reset() {
	for _, c := range a.chunks {
		if c != nil {
			freeChunk(c)
		}
	}
	clear(a.chunks)
	a.chunks, a.free, a.sparse, a.cur, a.used, a.size, a.nSparse = a.chunks[:0], a.free[:0], a.sparse[:0], 0, 0, 0, 0
	for c := range a.slots {
		a.slots[c] = a.slots[c][:0]
	}
}
