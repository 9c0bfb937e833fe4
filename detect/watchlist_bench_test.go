package detect

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func watchlistFile(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "shop-%d\towner-%d@example.com\n", i/3, i)
	}
	return b.Bytes()
}

// TestWatchlist100k pins the size of a 100,000-account list; its load time
// is BenchmarkWatchlistLoad100k's to measure.
func TestWatchlist100k(t *testing.T) {
	data := watchlistFile(100_000)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	w, bad, err := ParseWatchlist(bytes.NewReader(data))
	require.NoError(t, err)
	require.Empty(t, bad)
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.Equal(t, 100_000, w.Len())
	retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("100,000 accounts: %d KiB retained", retained/1024)
	require.Less(t, retained, int64(50<<20))
	runtime.KeepAlive(w)
}

func BenchmarkWatchlistLoad100k(b *testing.B) {
	data := watchlistFile(100_000)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := ParseWatchlist(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
