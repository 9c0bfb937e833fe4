package detect

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// TestSnapshotRestoreContinues: for every golden scenario and at every
// split point, an engine restored from a snapshot taken mid-stream finds
// exactly what one uninterrupted engine finds after that point.
func TestSnapshotRestoreContinues(t *testing.T) {
	paths, err := filepath.Glob("testdata/*/events.jsonl")
	require.NoError(t, err)
	for _, path := range paths {
		evs := readEvents(t, path)
		want := run(t, DefaultConfig, testLocator, evs)
		for split := 0; split <= len(evs); split += max(1, len(evs)/7) {
			a := newTestEngine(t, DefaultConfig)
			var got []shopguard.Finding
			for i := range evs[:split] {
				got = a.Process(got, &evs[i])
			}
			var snap bytes.Buffer
			require.NoError(t, a.Snapshot(&snap))
			b := newTestEngine(t, DefaultConfig)
			require.NoError(t, b.Restore(bytes.NewReader(snap.Bytes())))
			require.Equal(t, a.Stats(), b.Stats())
			for i := split; i < len(evs); i++ {
				got = b.Process(got, &evs[i])
			}
			require.Equal(t, want, got, "%s split at %d", path, split)

			// Snapshots of equal state restore to equal state.
			var again bytes.Buffer
			require.NoError(t, b.Snapshot(&again))
		}
	}
}

func newTestEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg, WithLocator(testLocator), WithMetrics(NewMetrics(prometheus.NewRegistry())))
	require.NoError(t, err)
	return e
}

func TestRestoreRejectsUnusableSnapshots(t *testing.T) {
	evs := readEvents(t, "testdata/leaked-list-chain/events.jsonl")
	e := newTestEngine(t, DefaultConfig)
	var fs []shopguard.Finding
	for i := range evs {
		fs = e.Process(fs, &evs[i])
	}
	var snap bytes.Buffer
	require.NoError(t, e.Snapshot(&snap))
	good := snap.Bytes()

	flip := bytes.Clone(good)
	flip[len(flip)/2] ^= 0x40
	version := bytes.Clone(good)
	version[7] = 99
	other := DefaultConfig
	other.BruteForce.Threshold = 11
	tests := []struct {
		name string
		data []byte
		cfg  Config
		want string
	}{
		{"empty", nil, DefaultConfig, "header"},
		{"not a snapshot", []byte("{\"json\": true}\n and more bytes"), DefaultConfig, "not a shopguard engine snapshot"},
		{"a flipped bit", flip, DefaultConfig, "checksum mismatch"},
		{"truncated", good[:len(good)-10], DefaultConfig, "truncated"},
		{"another version", version, DefaultConfig, "format version 99"},
		{"other thresholds", good, other, "other detect settings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fresh := newTestEngine(t, tt.cfg)
			err := fresh.Restore(bytes.NewReader(tt.data))
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrCheckpoint))
			require.ErrorContains(t, err, tt.want)
			require.Zero(t, fresh.Stats().Accounts, "a failed restore leaves the state alone")
		})
	}
	fresh := newTestEngine(t, DefaultConfig)
	require.NoError(t, fresh.Restore(bytes.NewReader(good)))
	require.Equal(t, e.Stats(), fresh.Stats())
}

func FuzzRestore(f *testing.F) {
	e, err := New(DefaultConfig, WithLocator(testLocator))
	require.NoError(f, err)
	var snap bytes.Buffer
	require.NoError(f, e.Snapshot(&snap))
	f.Add(snap.Bytes())
	evs := []shopguard.Event{fail(at(0), "s", "a", "45.95.147.1"), success(at(1), "s", "a", "126.0.0.1")}
	var fs []shopguard.Finding
	for i := range evs {
		fs = e.Process(fs, &evs[i])
	}
	snap.Reset()
	require.NoError(f, e.Snapshot(&snap))
	f.Add(snap.Bytes())
	f.Add([]byte("SGCK"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fresh, err := New(DefaultConfig, WithLocator(testLocator))
		require.NoError(t, err)
		if err := fresh.Restore(bytes.NewReader(data)); err != nil {
			require.ErrorIs(t, err, ErrCheckpoint)
			return
		}
		// A restored engine keeps working.
		ev := fail(at(2), "s", "b", "45.95.147.2")
		_ = fresh.Process(nil, &ev)
	})
}
