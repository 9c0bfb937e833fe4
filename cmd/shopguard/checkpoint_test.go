package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/detect"
)

// TestCheckpointFile: a checkpoint restores the engine state and the
// offsets written with it; a missing one is no error; every kind of
// unusable one is refused with errCheckpoint or detect.ErrCheckpoint and
// a reason, leaving the engine empty.
func TestCheckpointFile(t *testing.T) {
	dir := t.TempDir()
	cfg := CheckpointConfig{Path: filepath.Join(dir, "state.ckpt"), Interval: time.Second}
	eng, err := detect.New(detect.DefaultConfig)
	require.NoError(t, err)
	for i := range 30 {
		ev := shopguard.Event{Time: time.Date(2026, 1, 7, 9, 0, i, 0, time.UTC), ShopID: "s", Actor: string(rune('a' + i%26)),
			Action: shopguard.ActionLoginFailure, IP: netip.MustParseAddr("45.95.147.7")}
		eng.Process(nil, &ev)
	}
	reg := prometheus.NewRegistry()
	ck := newCheckpointer(cfg, "admin-audit", "shopguard", reg, nil)
	ck.eng = eng
	offsets := map[int]int64{0: 31, 2: 7}
	require.NoError(t, ck.write(offsets))
	good, err := os.ReadFile(cfg.Path)
	require.NoError(t, err)
	require.Equal(t, 1.0, testutil.ToFloat64(ck.writes.WithLabelValues("success")))
	require.Equal(t, float64(len(good)), testutil.ToFloat64(ck.bytes))
	require.InDelta(t, float64(time.Now().Unix()), testutil.ToFloat64(ck.lastOK), 5)

	fresh := func() *detect.Engine {
		e, err := detect.New(detect.DefaultConfig)
		require.NoError(t, err)
		return e
	}
	e := fresh()
	got, err := restoreCheckpoint(cfg.Path, "admin-audit", "shopguard", e)
	require.NoError(t, err)
	require.Equal(t, offsets, got)
	require.Equal(t, eng.Stats(), e.Stats())

	got, err = restoreCheckpoint(filepath.Join(dir, "absent"), "admin-audit", "shopguard", fresh())
	require.NoError(t, err)
	require.Nil(t, got)

	spoil := func(i int, b byte) []byte {
		out := bytes.Clone(good)
		out[i] ^= b
		return out
	}
	tests := []struct {
		name         string
		data         []byte
		topic, group string
		want         string
		engine       bool // refused by the engine snapshot's own checks
	}{
		{"empty", nil, "admin-audit", "shopguard", "header", false},
		{"not a checkpoint", []byte("hello, this is not a checkpoint file"), "admin-audit", "shopguard", "not a shopguard checkpoint", false},
		{"another version", spoil(7, 3), "admin-audit", "shopguard", "format version 2", false},
		{"a header bit", spoil(20, 1), "admin-audit", "shopguard", "header checksum mismatch", false},
		{"a huge header", spoil(8, 0x80), "admin-audit", "shopguard", "header of", false},
		{"a snapshot bit", spoil(len(good)-20, 1), "admin-audit", "shopguard", "checksum mismatch", true},
		{"truncated snapshot", good[:len(good)-1], "admin-audit", "shopguard", "truncated", true},
		{"another topic", good, "orders-audit", "shopguard", `written for topic "admin-audit"`, false},
		{"another group", good, "admin-audit", "other", `and group "shopguard"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.ckpt")
			require.NoError(t, os.WriteFile(path, tt.data, 0o600))
			e := fresh()
			got, err := restoreCheckpoint(path, tt.topic, tt.group, e)
			require.Nil(t, got)
			require.ErrorContains(t, err, tt.want)
			require.ErrorContains(t, err, path, "the error names the file")
			require.True(t, errors.Is(err, errCheckpoint) || errors.Is(err, detect.ErrCheckpoint))
			require.Equal(t, tt.engine, errors.Is(err, detect.ErrCheckpoint))
			require.Zero(t, e.Stats().Accounts)
		})
	}
}

// TestCheckpointWriteIsAtomic: a write that cannot finish leaves the last
// checkpoint as it was, counts the failure, and leaves no temporary file;
// temporary files of killed writes are removed at start, and a directory
// that cannot take a checkpoint stops the start.
func TestCheckpointWriteIsAtomic(t *testing.T) {
	dir := t.TempDir()
	cfg := CheckpointConfig{Path: filepath.Join(dir, "state.ckpt"), Interval: time.Second}
	eng, err := detect.New(detect.DefaultConfig)
	require.NoError(t, err)
	ck := newCheckpointer(cfg, "admin-audit", "shopguard", prometheus.NewRegistry(), nil)
	ck.eng = eng
	require.NoError(t, ck.write(map[int]int64{0: 1}))
	before, err := os.ReadFile(cfg.Path)
	require.NoError(t, err)

	// The directory becomes read-only: no temporary file can be created.
	if os.Geteuid() != 0 { // root writes anyway
		require.NoError(t, os.Chmod(dir, 0o500))
		err = ck.write(map[int]int64{0: 2})
		require.NoError(t, os.Chmod(dir, 0o700))
		require.Error(t, err)
		require.Equal(t, 1.0, testutil.ToFloat64(ck.writes.WithLabelValues("failure")))
		after, err := os.ReadFile(cfg.Path)
		require.NoError(t, err)
		require.Equal(t, before, after)
	}
	// The target is a directory: the rename fails after the data was
	// written and synced, and the temporary file goes.
	other := newCheckpointer(CheckpointConfig{Path: filepath.Join(dir, "sub"), Interval: time.Second}, "admin-audit", "shopguard", prometheus.NewRegistry(), nil)
	other.eng = eng
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "x"), nil, 0o600))
	require.Error(t, other.write(map[int]int64{0: 2}))
	left, err := filepath.Glob(filepath.Join(dir, ".*"))
	require.NoError(t, err)
	require.Empty(t, left)

	// A killed write's leftovers, and someone else's file that only looks
	// alike.
	for _, name := range []string{".state.ckpt.tmp-123", ".state.ckpt.tmp-456", ".other.ckpt.tmp-1"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("half"), 0o600))
	}
	require.NoError(t, ck.prepare())
	left, err = filepath.Glob(filepath.Join(dir, ".*"))
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(dir, ".other.ckpt.tmp-1")}, left)

	// A checkpoint that cannot be written is a configuration error at
	// start, naming the key.
	missing := newCheckpointer(CheckpointConfig{Path: filepath.Join(dir, "absent", "state.ckpt"), Interval: time.Second},
		"admin-audit", "shopguard", prometheus.NewRegistry(), nil)
	require.ErrorContains(t, missing.prepare(), "checkpoint.path: cannot write beside")
}

// TestRunCheckpointDirMissing: run refuses to start when its checkpoint
// cannot be written, with exit status 2 and the key named, before it
// touches Kafka.
func TestRunCheckpointDirMissing(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "shopguard.yml")
	require.NoError(t, os.WriteFile(config, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
kafka: {brokers: ["127.0.0.1:1"]}
checkpoint: {path: %q}
`, filepath.Join(dir, "absent", "state.ckpt"))), 0o644))
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"run", "--config", config}, nil, io.Discard, &stderr)
	require.Equal(t, exitUsage, code, stderr.String())
	require.Contains(t, stderr.String(), "checkpoint.path: cannot write beside")
}
