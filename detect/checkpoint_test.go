package detect

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// TestSnapshotRestoreContinues: for every golden scenario (the leaked-list
// chain among them) and at every split point, an engine restored from a
// snapshot taken mid-stream finds exactly what one uninterrupted engine
// finds after that point, ids and evidence included, and the restored
// state encodes to the very bytes it was restored from.
func TestSnapshotRestoreContinues(t *testing.T) {
	paths, err := filepath.Glob("testdata/*/events.jsonl")
	require.NoError(t, err)
	require.Contains(t, paths, filepath.Join("testdata", "leaked-list-chain", "events.jsonl"))
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
			var again bytes.Buffer
			require.NoError(t, b.Snapshot(&again))
			require.Equal(t, snap.Bytes(), again.Bytes(), "%s split at %d: restored state encodes differently", path, split)

			for i := split; i < len(evs); i++ {
				got = b.Process(got, &evs[i])
			}
			require.Equal(t, want, got, "%s split at %d", path, split)
		}
	}
}

// TestSnapshotDeterministic: engines fed the same events write the same
// bytes, whatever order their maps iterate in.
func TestSnapshotDeterministic(t *testing.T) {
	evs := readEvents(t, "testdata/leaked-list-chain/events.jsonl")
	var snaps [3][]byte
	for i := range snaps {
		e := newTestEngine(t, DefaultConfig)
		var fs []shopguard.Finding
		for j := range evs {
			fs = e.Process(fs, &evs[j])
		}
		require.NotEmpty(t, fs)
		var b bytes.Buffer
		require.NoError(t, e.Snapshot(&b))
		snaps[i] = b.Bytes()
	}
	require.Equal(t, snaps[0], snaps[1])
	require.Equal(t, snaps[0], snaps[2])
}

// TestSnapshotKeepsGenerations: after a restore, entries of the older
// generation expire when event time moves on and those of the newer one
// do not, exactly as without the restore.
func TestSnapshotKeepsGenerations(t *testing.T) {
	a := newTestEngine(t, DefaultConfig)
	b := newTestEngine(t, DefaultConfig)
	gen := a.accounts.gen
	g0 := floorGen(t0.UnixNano(), gen) + gen // a generation boundary
	ts := func(gens int64, d time.Duration) time.Time { return time.Unix(0, g0+gens*gen+int64(d)).UTC() }
	evs := []shopguard.Event{
		fail(ts(0, time.Minute), "s", "old", "45.95.147.1"),
		fail(ts(1, time.Minute), "s", "new", "45.95.147.2"),
	}
	for i := range evs {
		a.Process(nil, &evs[i])
		b.Process(nil, &evs[i])
	}
	require.Equal(t, 1, a.accounts.prev.idx.len())
	require.Equal(t, 1, a.accounts.cur.idx.len())
	var snap bytes.Buffer
	require.NoError(t, a.Snapshot(&snap))
	r := newTestEngine(t, DefaultConfig)
	require.NoError(t, r.Restore(&snap))
	later := success(ts(2, 2*time.Minute), "s", "new", "126.0.0.1")
	b.Process(nil, &later)
	r.Process(nil, &later)
	require.Equal(t, b.Stats(), r.Stats())
	require.Equal(t, 1, r.Stats().Accounts, "the old account expired after the restore too")
}

func newTestEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg, WithLocator(testLocator), WithMetrics(NewMetrics(prometheus.NewRegistry())))
	require.NoError(t, err)
	return e
}

// chainSnapshot is the state after the leaked-list chain, and the engine.
func chainSnapshot(t *testing.T) ([]byte, *Engine) {
	t.Helper()
	evs := readEvents(t, "testdata/leaked-list-chain/events.jsonl")
	e := newTestEngine(t, DefaultConfig)
	var fs []shopguard.Finding
	for i := range evs {
		fs = e.Process(fs, &evs[i])
	}
	var snap bytes.Buffer
	require.NoError(t, e.Snapshot(&snap))
	return snap.Bytes(), e
}

func TestRestoreRejectsUnusableSnapshots(t *testing.T) {
	good, e := chainSnapshot(t)

	flip := bytes.Clone(good)
	flip[len(flip)/2] ^= 0x40
	version := bytes.Clone(good)
	version[7] = 99
	length := bytes.Clone(good)
	length[15]++ // the payload seems one byte longer: the checksum is read from the wrong place
	other := DefaultConfig
	other.BruteForce.Threshold = 11
	allow := DefaultConfig
	allow.Allowlist = []Network{{netip.MustParsePrefix("10.0.0.0/8")}}
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
		{"a wrong length", length, DefaultConfig, "truncated"},
		{"another version", version, DefaultConfig, "format version 99"},
		{"other thresholds", good, other, "other detect settings"},
		{"another allowlist", good, allow, "other detect settings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fresh := newTestEngine(t, tt.cfg)
			err := fresh.Restore(bytes.NewReader(tt.data))
			require.ErrorIs(t, err, ErrCheckpoint)
			require.ErrorContains(t, err, tt.want)
			require.Zero(t, fresh.Stats().Accounts, "a failed restore leaves the state alone")
		})
	}
	fresh := newTestEngine(t, DefaultConfig)
	require.NoError(t, fresh.Restore(bytes.NewReader(good)))
	require.Equal(t, e.Stats(), fresh.Stats())
}

// TestRestoreEveryFlippedByte: a snapshot with any one byte changed is
// refused, and never panics.
func TestRestoreEveryFlippedByte(t *testing.T) {
	good, _ := chainSnapshot(t)
	e := newTestEngine(t, DefaultConfig)
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x01
		require.ErrorIs(t, e.Restore(bytes.NewReader(bad)), ErrCheckpoint, "byte %d flipped", i)
	}
	require.Zero(t, e.Stats().Accounts)
}

// TestRestoreKeepsStateOnError: a refused snapshot leaves a running
// engine's state as it was, so that it goes on finding what it would have.
func TestRestoreKeepsStateOnError(t *testing.T) {
	evs := readEvents(t, "testdata/leaked-list-chain/events.jsonl")
	want := run(t, DefaultConfig, testLocator, evs)
	e := newTestEngine(t, DefaultConfig)
	var got []shopguard.Finding
	half := len(evs) / 2
	for i := range evs[:half] {
		got = e.Process(got, &evs[i])
	}
	good, _ := chainSnapshot(t)
	require.Error(t, e.Restore(bytes.NewReader(good[:len(good)/2])))
	for i := half; i < len(evs); i++ {
		got = e.Process(got, &evs[i])
	}
	require.Equal(t, want, got)
}

// TestRestoreIgnoresLabelsAndCaps: severities and state caps do not change
// what the state means, so a snapshot stays usable across them.
func TestRestoreIgnoresLabelsAndCaps(t *testing.T) {
	good, e := chainSnapshot(t)
	cfg := DefaultConfig
	cfg.BruteForce.Severity = shopguard.SeverityHigh
	cfg.MaxAccounts = 1_000
	fresh := newTestEngine(t, cfg)
	require.NoError(t, fresh.Restore(bytes.NewReader(good)))
	require.Equal(t, e.Stats(), fresh.Stats())
}

// TestRestoreReadsOnlyItsBytes: Restore stops at the end of the snapshot,
// so a file may carry more after it.
func TestRestoreReadsOnlyItsBytes(t *testing.T) {
	good, _ := chainSnapshot(t)
	r := bytes.NewReader(append(bytes.Clone(good), "after"...))
	require.NoError(t, newTestEngine(t, DefaultConfig).Restore(r))
	require.Equal(t, 5, r.Len())
}

// resealed returns data with its length field and checksum recomputed, so
// that fuzzing reaches the payload decoder instead of stopping at the
// checksum.
func resealed(data []byte) []byte {
	if len(data) < snapshotHeader+4 {
		return data
	}
	out := bytes.Clone(data)
	body := out[:len(out)-4]
	binary.BigEndian.PutUint64(body[8:16], uint64(len(body)-snapshotHeader))
	binary.BigEndian.PutUint32(out[len(out)-4:], crc32.Checksum(body, castagnoli))
	return out
}

// FuzzRestore: any input either restores or is refused with ErrCheckpoint,
// never panics; a restored engine keeps working, and its state encodes
// canonically (snapshot, restore, snapshot gives the same bytes).
func FuzzRestore(f *testing.F) {
	e, err := New(DefaultConfig, WithLocator(testLocator))
	require.NoError(f, err)
	var snap bytes.Buffer
	require.NoError(f, e.Snapshot(&snap))
	f.Add(snap.Bytes(), false)
	evs := []shopguard.Event{
		fail(at(0), "s", "a", "45.95.147.1"), fail(at(1), "s", "b", "2001:db8::1"),
		success(at(2), "s", "a", "126.0.0.1"), success(at(3), "s", "a", "18.184.0.1"),
		export(at(4), "s", "a", "18.184.0.1", 500),
	}
	var fs []shopguard.Finding
	for i := range evs {
		fs = e.Process(fs, &evs[i])
	}
	snap.Reset()
	require.NoError(f, e.Snapshot(&snap))
	f.Add(snap.Bytes(), false)
	f.Add(snap.Bytes(), true)
	f.Add([]byte("SGCK"), false)
	f.Fuzz(func(t *testing.T, data []byte, reseal bool) {
		if reseal {
			data = resealed(data)
		}
		fresh, err := New(DefaultConfig, WithLocator(testLocator))
		require.NoError(t, err)
		if err := fresh.Restore(bytes.NewReader(data)); err != nil {
			require.ErrorIs(t, err, ErrCheckpoint)
			return
		}
		var once, twice bytes.Buffer
		require.NoError(t, fresh.Snapshot(&once))
		again, err := New(DefaultConfig, WithLocator(testLocator))
		require.NoError(t, err)
		require.NoError(t, again.Restore(bytes.NewReader(once.Bytes())))
		require.NoError(t, again.Snapshot(&twice))
		require.Equal(t, once.Bytes(), twice.Bytes())
		// A restored engine keeps working.
		for i := range evs {
			fs = fresh.Process(fs[:0], &evs[i])
		}
	})
}

// TestSnapshotSessionsWithoutExtra: an account whose only state beyond
// its logins is a session holds no extra state, before and after a
// restore, and its snapshot is the one a session kept in the extra state
// gave (format 4): the session is judged the same after the restore.
func TestSnapshotSessionsWithoutExtra(t *testing.T) {
	cfg := DefaultConfig
	e := newTestEngine(t, cfg)
	ev := success(at(0), "shop-s", "owner", "126.0.0.10")
	ev.SessionID, ev.UserAgent = "s1", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
	e.Process(nil, &ev)
	a := e.accounts.get(accountHash("shop-s", "owner"))
	require.NotNil(t, a)
	require.Nil(t, a.x, "a session needs no extra state")
	require.Len(t, a.sessions, 1)

	var snap bytes.Buffer
	require.NoError(t, e.Snapshot(&snap))
	b := newTestEngine(t, cfg)
	require.NoError(t, b.Restore(bytes.NewReader(snap.Bytes())))
	ra := b.accounts.get(accountHash("shop-s", "owner"))
	require.Nil(t, ra.x)
	require.Equal(t, a.sessions, ra.sessions)
	var again bytes.Buffer
	require.NoError(t, b.Snapshot(&again))
	require.Equal(t, snap.Bytes(), again.Bytes())

	// A failed login gives the account extra state; the session stays.
	f := fail(at(time.Minute), "shop-s", "owner", "126.0.0.10")
	b.Process(nil, &f)
	require.NotNil(t, ra.x)
	require.Len(t, ra.sessions, 1)
}
