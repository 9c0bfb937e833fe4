package report

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// srcIndex finds the tracked source (an address or a block) containing an
// address with one map lookup per prefix length in use, the longest first.
// Every replayed event asks it, so IPv4 keys are a single integer.
type srcIndex struct {
	v4     map[uint64]*node // bits<<32 | masked address
	v6     map[v6key]*node
	count4 map[int]int // prefix lengths in use and how many sources have each
	count6 map[int]int
	lens4  []int // the keys of count4, longest first
	lens6  []int
}

type v6key struct {
	hi, lo uint64
	bits   int
}

func newSrcIndex() srcIndex {
	return srcIndex{v4: map[uint64]*node{}, v6: map[v6key]*node{}, count4: map[int]int{}, count6: map[int]int{}}
}

func key4(a uint32, bits int) uint64 {
	if bits < 32 {
		a &^= 1<<(32-bits) - 1
	}
	return uint64(bits)<<32 | uint64(a)
}

func key6(ip [16]byte, bits int) v6key {
	hi, lo := binary.BigEndian.Uint64(ip[:8]), binary.BigEndian.Uint64(ip[8:])
	switch {
	case bits <= 0:
		hi, lo = 0, 0
	case bits < 64:
		hi &^= 1<<(64-bits) - 1
		lo = 0
	case bits < 128:
		lo &^= 1<<(128-bits) - 1
	}
	return v6key{hi, lo, bits}
}

// set adds (n != nil) or removes (n == nil) the source p, which must be
// masked and unmapped.
func (x *srcIndex) set(p netip.Prefix, n *node) {
	a, bits := p.Addr(), p.Bits()
	counts, lens := x.count6, &x.lens6
	if a.Is4() {
		counts, lens = x.count4, &x.lens4
		k := key4(binary.BigEndian.Uint32(a.AsSlice()), bits)
		if n == nil {
			delete(x.v4, k)
		} else {
			x.v4[k] = n
		}
	} else {
		k := key6(a.As16(), bits)
		if n == nil {
			delete(x.v6, k)
		} else {
			x.v6[k] = n
		}
	}
	if n == nil {
		if counts[bits]--; counts[bits] <= 0 {
			delete(counts, bits)
		}
	} else {
		counts[bits]++
	}
	*lens = (*lens)[:0]
	for l := range counts {
		*lens = append(*lens, l)
	}
	slices.Sort(*lens)
	slices.Reverse(*lens)
}

// get returns the most specific tracked source containing the address ip
// (an IPv4 one if is4, as 16 bytes either way), or nil.
func (x *srcIndex) get(ip [16]byte, is4 bool) *node {
	if is4 {
		a := binary.BigEndian.Uint32(ip[12:])
		for _, l := range x.lens4 {
			if n := x.v4[key4(a, l)]; n != nil {
				return n
			}
		}
		return nil
	}
	for _, l := range x.lens6 {
		if n := x.v6[key6(ip, l)]; n != nil {
			return n
		}
	}
	return nil
}
