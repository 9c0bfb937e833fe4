package order

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOrderMergesQueues: events of several partitions, each in offset order
// but with stream times that jump, added in a random interleaving across
// block boundaries, come out in key order once every partition is idle;
// Items and Load carry what waits into a new Order unchanged.
func TestOrderMergesQueues(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const parts, per = 5, 3*blockLen + 17
	var want []Key
	next := make([]int, parts)
	st := make([]int64, parts)
	o := New[int](parts)
	for p := range parts {
		o.Mark(int32(p), Key{T: 0, P: int32(p)}, false)
	}
	for added := 0; added < parts*per; {
		p := rng.IntN(parts)
		if next[p] == per {
			continue
		}
		st[p] += int64(rng.IntN(3)) // ties in stream time too
		k := Key{T: st[p], P: int32(p), Off: int64(next[p])}
		require.True(t, o.Add(k, int(k.Off)))
		require.False(t, o.Add(k, 0), "a duplicate is dropped")
		want = append(want, k)
		next[p]++
		added++
		if added == parts*per/2 { // a checkpoint halfway
			c := New[int](parts)
			for p, m := range o.Marks() {
				c.Mark(p, m.Bound, m.Idle)
			}
			maps := o.Seen
			c.Seen = maps
			c.Load(o.Items())
			require.Equal(t, o.Len(), c.Len())
			o = c
		}
	}
	require.Equal(t, Key{T: 0, P: 0}, o.Frontier(), "no partition promised more than stream time 0")
	for p := range parts {
		o.Mark(int32(p), Max, true)
	}
	require.Equal(t, Max, o.Frontier())
	slices.SortFunc(want, Key.Cmp)
	var got []Key
	for o.Len() > 0 {
		k, _ := o.Peek()
		oldest, ok := o.Oldest(k.P)
		require.True(t, ok)
		require.Equal(t, k, oldest, "the smallest waiting event is its partition's oldest")
		it := o.Pop()
		require.Equal(t, k, it.K)
		require.Equal(t, int(it.K.Off), it.V)
		require.False(t, o.Processed(it.K))
		got = append(got, it.K)
	}
	require.Equal(t, want, got)
	_, ok := o.Peek()
	require.False(t, ok)
	_, ok = o.Oldest(0)
	require.False(t, ok)
	require.True(t, o.Processed(Key{T: -1}), "late")
}

// TestOrderFrontierUnknownInputs: with Inputs 0 the marked partitions are
// all there are; with Inputs set, every partition below it must be heard
// from.
func TestOrderFrontierUnknownInputs(t *testing.T) {
	o := New[int](0)
	require.Equal(t, Max, o.Frontier())
	o.Mark(4, Key{T: 9, P: 4}, false)
	o.Mark(2, Key{T: 7, P: 2}, false)
	require.Equal(t, Key{T: 7, P: 2}, o.Frontier())
	o.Mark(2, Key{T: 5, P: 2}, true)
	require.Equal(t, Key{T: 9, P: 4}, o.Frontier(), "idle holds nothing back; bounds never go back")
	require.Equal(t, Key{T: 7, P: 2}, o.Marks()[2].Bound)

	k := New[int](3)
	k.Mark(0, Key{T: 1}, false)
	k.Mark(2, Key{T: 1, P: 2}, false)
	require.Equal(t, Min, k.Frontier(), "partition 1 not heard from")
	k.Mark(1, Key{T: 3, P: 1}, false)
	require.Equal(t, Key{T: 1}, k.Frontier())
	k.Mark(3, Key{T: 0, P: 3}, false)
	require.Equal(t, 4, k.Inputs, "a partition was added")
}

// TestOrderAddFromPopTo: AddFrom and PopTo, the copy-once forms for large
// values, keep the order and drop duplicates as Add and Pop do, and a value
// popped is a copy that later events reusing its slot do not change.
func TestOrderAddFromPopTo(t *testing.T) {
	type big struct {
		id  string
		pad [24]int64
	}
	rng := rand.New(rand.NewPCG(3, 4))
	a, b := New[big](3), New[big](3)
	var popped []big
	var keys []Key
	off := make([]int64, 3)
	for round := range 4 * blockLen {
		p := int32(rng.IntN(3))
		k := Key{T: int64(round / 3), P: p, Off: off[p]}
		off[p]++
		v := big{id: fmt.Sprint(k), pad: [24]int64{k.T, int64(k.P), k.Off}}
		require.True(t, a.Add(k, v))
		require.True(t, b.AddFrom(k, &v))
		require.False(t, b.AddFrom(k, &v), "a duplicate is dropped")
		v.id = "changed after it was added"
		if rng.IntN(3) == 0 { // drain some as we go, across block boundaries
			for a.Len() > 0 && rng.IntN(4) != 0 {
				it := a.Pop()
				var got big
				k := b.PopTo(&got)
				require.Equal(t, it.K, k)
				require.Equal(t, it.V, got)
				popped, keys = append(popped, got), append(keys, k)
			}
		}
	}
	for a.Len() > 0 {
		it := a.Pop()
		var got big
		require.Equal(t, it.K, b.PopTo(&got))
		require.Equal(t, it.V, got)
		popped, keys = append(popped, got), append(keys, it.K)
	}
	require.Zero(t, b.Len())
	require.Len(t, popped, 4*blockLen)
	for i, v := range popped {
		require.Equal(t, fmt.Sprint(keys[i]), v.id, "popped value %d changed when its slot was reused", i)
		require.Equal(t, keys[i].Off, v.pad[2])
	}
}
