package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shopguard/shopguard"
)

// benchLines returns the sample events without escapes (typical input;
// an escaped string costs one allocation) and their average size.
func benchLines(b *testing.B) ([][]byte, int64) {
	var lines [][]byte
	var n int
	for _, l := range readLines(b, filepath.Join("testdata", "events.jsonl")) {
		if bytes.IndexByte(l, '\\') < 0 {
			lines = append(lines, l)
			n += len(l)
		}
	}
	return lines, int64(n / len(lines))
}

// BenchmarkDecode decodes the sample events in turn; one op is one event.
func BenchmarkDecode(b *testing.B) {
	lines, avg := benchLines(b)
	b.SetBytes(avg)
	b.ReportAllocs()
	var ev shopguard.Event
	i := 0
	for b.Loop() {
		if err := Decode(lines[i%len(lines)], &ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// jsonEvent is what a naive encoding/json decoder would use. It validates
// far less than Decode does.
type jsonEvent struct {
	Time      time.Time  `json:"time"`
	ShopID    string     `json:"shop_id"`
	Actor     string     `json:"actor"`
	Action    string     `json:"action"`
	IP        netip.Addr `json:"ip"`
	UserAgent string     `json:"user_agent"`
	SessionID string     `json:"session_id"`
	Reason    string     `json:"reason"`
	Records   int64      `json:"records"`
	Resource  string     `json:"resource"`
	ID        string     `json:"id"`
}

// BenchmarkDecodeEncodingJSON is BenchmarkDecode with encoding/json, for
// comparison.
func BenchmarkDecodeEncodingJSON(b *testing.B) {
	lines, avg := benchLines(b)
	b.SetBytes(avg)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var je jsonEvent
		if err := json.Unmarshal(lines[i%len(lines)], &je); err != nil {
			b.Fatal(err)
		}
		_ = shopguard.Event{Time: je.Time, ShopID: je.ShopID, Actor: je.Actor, Action: shopguard.ParseAction(je.Action),
			IP: je.IP.Unmap(), UserAgent: je.UserAgent, SessionID: je.SessionID, Reason: je.Reason, Records: je.Records,
			Resource: je.Resource, ID: je.ID}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkFileSource replays a file of 100,000 events with the default
// workers; one op is the whole file.
func BenchmarkFileSource(b *testing.B) {
	lines, _ := benchLines(b)
	var buf bytes.Buffer
	const n = 100_000
	for i := range n {
		buf.Write(lines[i%len(lines)])
		buf.WriteByte('\n')
	}
	path := filepath.Join(b.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	events := 0
	for b.Loop() {
		out := make(chan shopguard.Batch, 16)
		src := &FileSource{Paths: []string{path}}
		errc := make(chan error, 1)
		go func() { errc <- src.Run(context.Background(), out) }()
		got := 0
	loop:
		for {
			select {
			case bt := <-out:
				got += len(bt.Events)
			case err := <-errc:
				if err != nil {
					b.Fatal(err)
				}
				for len(out) > 0 {
					got += len((<-out).Events)
				}
				break loop
			}
		}
		if got != n {
			b.Fatalf("got %d events, want %d", got, n)
		}
		events += got
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}
