package detect

// arena is append-only memory for pointer-free bytes, outside the Go heap
// where the platform allows (arena_mmap.go): the compact records of the
// accounts that are not in use (accounts.go). Memory the garbage collector
// never sees is neither scanned nor counted in its heap goal, so a process
// holding millions of accounts does not also carry the collector's headroom
// for them, as it would for Go objects.
//
// Offsets are stable until free, which returns every chunk at once: the
// arena of one generation of accounts is dropped with that generation.
type arena struct {
	chunks [][]byte
	used   int // bytes used of the last chunk
	size   int // bytes mapped, for the gauge
}

// arenaChunk is the size of one chunk: large enough that mapping is rare,
// small enough that a nearly empty generation costs little.
const arenaChunk = 4 << 20

// arenaShift splits an offset into chunk index and position.
const arenaShift = 32

// alloc returns n bytes of zeroed memory and their offset.
func (a *arena) alloc(n int) (uint64, []byte) {
	if len(a.chunks) == 0 || a.used+n > len(a.chunks[len(a.chunks)-1]) {
		c := allocChunk(max(n, arenaChunk))
		a.chunks = append(a.chunks, c)
		a.used = 0
		a.size += len(c)
	}
	i := len(a.chunks) - 1
	off := uint64(i)<<arenaShift | uint64(a.used)
	b := a.chunks[i][a.used : a.used+n : a.used+n]
	a.used += n
	return off, b
}

// at returns the bytes from off to the end of its chunk.
func (a *arena) at(off uint64) []byte {
	return a.chunks[off>>arenaShift][uint32(off):]
}

// free returns all the arena's memory; its offsets are invalid after it.
func (a *arena) free() {
	for _, c := range a.chunks {
		freeChunk(c)
	}
	clear(a.chunks)
	a.chunks, a.used, a.size = a.chunks[:0], 0, 0
}
