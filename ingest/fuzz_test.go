package ingest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shopguard/shopguard"
)

// FuzzDecode checks Decode on arbitrary input: it never panics, returns
// either a *DecodeError or an event within the limits of SPEC §1, and agrees
// with refDecode, the encoding/json reference. Seeds are the lines of
// testdata/*.jsonl and the corpus in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files: %v", err)
	}
	for _, file := range files {
		for _, line := range readLines(f, file) {
			f.Add(line)
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		orig := string(line)
		var ev shopguard.Event
		err := Decode(line, &ev)
		if string(line) != orig {
			t.Fatal("Decode modified its input")
		}
		if err != nil {
			var derr *DecodeError
			if !errors.As(err, &derr) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v (%T) is not a *DecodeError wrapping ErrMalformed", err, err)
			}
			if derr.Reason == 0 || derr.Reason.String() == "unknown" {
				t.Fatalf("error %v has no valid reason", err)
			}
			if ev != (shopguard.Event{}) {
				t.Fatal("ev not zeroed on error")
			}
		} else {
			switch {
			case ev.Time.IsZero():
				t.Fatal("zero time")
			case ev.Time.Location() != ev.Time.UTC().Location():
				t.Fatal("time not in UTC")
			case !ev.IP.IsValid() || ev.IP.Zone() != "" || ev.IP.Is4In6():
				t.Fatalf("bad IP %v", ev.IP)
			case len(ev.ShopID) < 1 || len(ev.ShopID) > 128:
				t.Fatalf("shop_id of %d bytes", len(ev.ShopID))
			case len(ev.Actor) < 1 || len(ev.Actor) > 256:
				t.Fatalf("actor of %d bytes", len(ev.Actor))
			case ev.Records < 0:
				t.Fatalf("records %d", ev.Records)
			case len(line) > MaxEventSize:
				t.Fatalf("accepted %d bytes", len(line))
			}
		}
		checkAgainstReference(t, line)
	})
}

// TestFuzzCorpusPresent keeps the stored corpus from silently vanishing.
func TestFuzzCorpusPresent(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzDecode"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("testdata/fuzz/FuzzDecode is empty or missing: %v", err)
	}
}
