package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard/detect"
)

func TestWatchlistReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leaked.tsv")
	require.NoError(t, os.WriteFile(path, []byte("shop-1\towner\n"), 0o600))
	var cur atomic.Pointer[detect.Watchlist]
	mu := &e2eBuffer{}
	log := slog.New(slog.NewTextHandler(mu, nil))
	reg := prometheus.NewRegistry()
	cfg := WatchlistConfig{Path: path, CheckInterval: 10 * time.Millisecond}
	r, err := startWatchlist(cfg, func(w *detect.Watchlist) { cur.Store(w) }, reg, log)
	require.NoError(t, err)
	require.Equal(t, 1, cur.Load().Len())
	hup := make(chan os.Signal, 1)
	r.hup = hup
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	// A changed file is re-read; its bad line is reported with its number.
	require.NoError(t, os.WriteFile(path, []byte("shop-1\towner\nshop-2\tstaff\nno tab\n"), 0o600))
	require.Eventually(t, func() bool { return cur.Load().Len() == 2 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(mu.String(), "line=3") }, time.Second, 5*time.Millisecond)

	// An unreadable file keeps the previous list, says so once in the log
	// and in the metric.
	require.NoError(t, os.Remove(path))
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(r.m.lastSuccess) == 0
	}, 5*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 2, cur.Load().Len(), "previous list kept")
	require.Equal(t, 1, strings.Count(mu.String(), "watchlist not re-read"), mu.String())
	require.Equal(t, 1.0, testutil.ToFloat64(r.m.reloads.WithLabelValues("failure")))

	// Back, and SIGHUP re-reads even an unchanged file.
	require.NoError(t, os.WriteFile(path, []byte("shop-3\tx\n"), 0o600))
	require.Eventually(t, func() bool { return cur.Load().Len() == 1 && cur.Load().Has("shop-3", "x") }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(r.m.lastSuccess))
	n := testutil.ToFloat64(r.m.reloads.WithLabelValues("success"))
	hup <- syscall.SIGHUP
	require.Eventually(t, func() bool { return testutil.ToFloat64(r.m.reloads.WithLabelValues("success")) == n+1 }, 5*time.Second, 5*time.Millisecond)
	require.Contains(t, mu.String(), "SIGHUP: re-reading the watchlist")
}

func TestWatchlistStartErrors(t *testing.T) {
	_, err := startWatchlist(WatchlistConfig{Path: filepath.Join(t.TempDir(), "absent"), CheckInterval: time.Second},
		func(*detect.Watchlist) {}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "watchlist.path")
	var u usageErr
	require.ErrorAs(t, err, &u)
	require.ErrorContains(t, WatchlistConfig{CheckInterval: time.Millisecond}.Validate(), "watchlist.check_interval")
}

func TestWatchlistReplaySummary(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "leaked.tsv")
	require.NoError(t, os.WriteFile(list, []byte("# leaked\nshop-1\towner\nshop-2\tstaff\n"), 0o600))
	events := filepath.Join(dir, "events.jsonl")
	require.NoError(t, os.WriteFile(events, []byte(
		`{"time":"2026-01-05T09:00:00Z","shop_id":"shop-1","actor":"owner","action":"login.success","ip":"126.0.0.1"}`+"\n"+
			`{"time":"2026-01-05T09:10:00Z","shop_id":"shop-2","actor":"staff","action":"password.change","ip":"126.0.0.2"}`+"\n"), 0o600))
	code, out, errs := e2eMain(t, "", "replay", "--watchlist", list, events)
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "watchlist: 2 listed, 1 rotated, 1 unrotated\n")
	require.Contains(t, errs, "waves: 0 (baseline still warming up")
	require.Contains(t, out, `"rule":"leaked_credential_use"`)
	require.Contains(t, out, `"shop_id":"shop-1"`)

	code, _, errs = e2eMain(t, "", "replay", "--watchlist", filepath.Join(dir, "absent"), events)
	require.Equal(t, exitUsage, code)
	require.Contains(t, errs, "--watchlist")
}

func TestWatchlistRunMissingFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "shopguard.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nkafka:\n  brokers: [\"127.0.0.1:1\"]\n"), 0o600))
	code, _, errs := e2eMain(t, "", "run", "--config", cfg, "--watchlist", filepath.Join(dir, "absent.tsv"))
	require.Equal(t, exitUsage, code, errs)
	require.Contains(t, errs, "watchlist.path")
	require.Contains(t, errs, "absent.tsv")
}
