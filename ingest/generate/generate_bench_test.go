package generate

import (
	"io"
	"testing"

	"github.com/shopguard/shopguard"
)

// BenchmarkGenerate measures Next on the default configuration.
func BenchmarkGenerate(b *testing.B) {
	g, err := New(DefaultConfig)
	if err != nil {
		b.Fatal(err)
	}
	var ev shopguard.Event
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		g.Next(&ev)
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkWriteJSONL measures generating and encoding as `shopguard
// generate` does, to a discarding writer.
func BenchmarkWriteJSONL(b *testing.B) {
	const events = 100_000
	b.ReportAllocs()
	var total int64
	for b.Loop() {
		cfg := DefaultConfig
		cfg.Events = events
		g, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		n, err := WriteJSONL(io.Discard, g)
		if err != nil {
			b.Fatal(err)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}
