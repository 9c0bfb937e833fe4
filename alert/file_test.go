package alert

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// readJSONL decodes every line of the file at path; a line that is not a
// finding fails the test.
func readJSONL(t *testing.T, path string) []shopguard.Finding {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	if len(b) > 0 {
		require.Equal(t, byte('\n'), b[len(b)-1], "the last line is complete")
	}
	var out []shopguard.Finding
	sc := bufio.NewScanner(bytesReader(b))
	for sc.Scan() {
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal(sc.Bytes(), &f), "line %q", sc.Text())
		out = append(out, f)
	}
	require.NoError(t, sc.Err())
	return out
}

func TestFileWritesJSONL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "findings.jsonl")
	reg, m := newTestMetrics()
	fl, err := NewFile(FileConfig{Path: path, Fsync: true}, m, nil)
	require.NoError(t, err)
	a, b := travelFinding("a"), stuffingFinding("b")
	b.Actor = "line\nbreak\x00" // hostile input cannot split a line
	require.NoError(t, fl.Send(t.Context(), a, b))
	require.NoError(t, fl.Send(t.Context()))
	// Visible to another reader as soon as Send returns.
	require.Equal(t, []shopguard.Finding{a, b}, readJSONL(t, path))
	require.NoError(t, fl.Close())

	// Reopening appends.
	fl, err = NewFile(FileConfig{Path: path}, nil, nil)
	require.NoError(t, err)
	c := numbered(1)[0]
	require.NoError(t, fl.Send(t.Context(), c))
	require.NoError(t, fl.Close())
	require.Equal(t, []shopguard.Finding{a, b, c}, readJSONL(t, path))
	require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_deliveries_total", "file", "success"))
	require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "file"))
}

func TestFileStdout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "stdout")
	f, err := os.Create(out)
	require.NoError(t, err)
	defer f.Close()
	saved := os.Stdout
	os.Stdout = f
	fl, err := NewFile(DefaultFileConfig, nil, nil)
	os.Stdout = saved
	require.NoError(t, err)
	require.NoError(t, fl.Send(t.Context(), travelFinding("a")))
	require.NoError(t, fl.Close(), "closing the sink leaves standard output open")
	_, err = f.WriteString("")
	require.NoError(t, err, "standard output still open")
	require.Equal(t, []shopguard.Finding{travelFinding("a")}, readJSONL(t, out))
}

// flakyFile writes half of what it is given and then fails, fails times.
type flakyFile struct {
	*os.File
	mu    sync.Mutex
	fails int
}

func (f *flakyFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails != 0 {
		f.fails--
		n, _ := f.File.Write(p[:len(p)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

func (f *flakyFile) setFails(n int) {
	f.mu.Lock()
	f.fails = n
	f.mu.Unlock()
}

func TestFileRetriesAndRollsBackPartialWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "findings.jsonl")
		reg, m := newTestMetrics()
		logger, logs := captureLogs()
		fl, err := NewFile(FileConfig{Path: path, Fsync: true}, m, logger)
		require.NoError(t, err)
		require.NoError(t, fl.Send(t.Context(), travelFinding("before")))
		flaky := &flakyFile{File: fl.out.(*os.File), fails: 2}
		fl.out = flaky

		start := time.Now()
		require.NoError(t, fl.Send(t.Context(), numbered(3)...))
		require.Greater(t, time.Since(start), time.Duration(0), "it backed off between attempts")
		require.NoError(t, fl.Close())

		want := append([]shopguard.Finding{travelFinding("before")}, numbered(3)...)
		require.Equal(t, want, readJSONL(t, path), "no partial line, nothing twice")
		require.Equal(t, 2.0, metric(t, reg, "shopguard_sink_deliveries_total", "file", "failure"))
		require.Equal(t, 2.0, metric(t, reg, "shopguard_sink_retries_total", "file"))
		require.Equal(t, 2.0, metric(t, reg, "shopguard_sink_deliveries_total", "file", "success"))
		require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "file"))
		require.Contains(t, logs.String(), "class=io")
	})
}

func TestFileWaitsWhileDownUntilContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "findings.jsonl")
		reg, m := newTestMetrics()
		fl, err := NewFile(FileConfig{Path: path}, m, nil)
		require.NoError(t, err)
		flaky := &flakyFile{File: fl.out.(*os.File), fails: -1} // down for good
		fl.out = flaky

		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		start := time.Now()
		err = fl.Send(ctx, numbered(2)...)
		require.Error(t, err)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, syscall.ENOSPC)
		require.Equal(t, time.Minute, time.Since(start), "Send held on until its context ended")
		require.Equal(t, 0.0, metric(t, reg, "shopguard_sink_up", "file"))
		require.Greater(t, metric(t, reg, "shopguard_sink_retries_total", "file"), 10.0)
		require.Empty(t, readJSONL(t, path), "nothing half-written")
		fan := NewFanout([]shopguard.Sink{fl}, nil)
		require.ErrorIs(t, fan.Ready(), syscall.ENOSPC, "not ready while a record sink is down")

		// Back up: the same findings go through.
		flaky.setFails(0)
		require.NoError(t, fl.Send(t.Context(), numbered(2)...))
		require.NoError(t, fan.Ready())
		require.Equal(t, numbered(2), readJSONL(t, path))
		require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "file"))
		require.NoError(t, fl.Close())
	})
}

func TestFileEncodesNonFiniteEvidence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "findings.jsonl")
	fl, err := NewFile(FileConfig{Path: path}, nil, nil)
	require.NoError(t, err)
	f := travelFinding("inf")
	f.Evidence.SpeedKMH = math.Inf(1) // two logins in the same second
	f.Evidence.DistanceKM = math.NaN()
	require.NoError(t, fl.Send(t.Context(), f))
	require.NoError(t, fl.Close())
	got := readJSONL(t, path)
	require.Len(t, got, 1)
	require.Equal(t, math.MaxFloat64, got[0].Evidence.SpeedKMH)
	require.Zero(t, got[0].Evidence.DistanceKM)
	require.True(t, math.IsInf(f.Evidence.SpeedKMH, 1), "the caller's finding is left alone")
}

func TestFileOpenErrorNamesKey(t *testing.T) {
	_, err := NewFile(FileConfig{Path: filepath.Join(t.TempDir(), "missing", "dir", "f.jsonl")}, nil, nil)
	require.ErrorContains(t, err, "sinks.file.path")
	require.True(t, errors.Is(err, os.ErrNotExist))
}

func TestFileToDevNull(t *testing.T) {
	fl, err := NewFile(FileConfig{Path: os.DevNull, Fsync: true}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, fl.Send(context.Background(), shopguard.Finding{ID: "x", Rule: shopguard.RuleBruteForce}))
	require.NoError(t, fl.Close(), "a device cannot be synced; closing it is still fine")
}
