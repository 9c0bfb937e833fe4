package detect

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

func TestStateExpiresByEventTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	cfg := classicConfig()
	cfg.ImpossibleTravel.Enabled = false // its horizon (20 h) would dominate
	e, err := New(cfg, WithMetrics(m))
	require.NoError(t, err)

	var fs []shopguard.Finding
	for i := range 100 {
		ev := fail(at(time.Duration(i)*time.Second), fmt.Sprintf("shop-%d", i), "owner", fmt.Sprintf("126.0.%d.1", i))
		fs = e.Process(fs, &ev)
	}
	require.Equal(t, 100, e.Stats().Accounts)
	require.Equal(t, 200, e.Stats().Sources) // an address and its /24 each

	// One hour (the longest window) later the idle state is still there: it
	// lives at least one horizon.
	ev := success(at(time.Hour), "shop-x", "owner", "126.1.0.1")
	fs = e.Process(fs, &ev)
	require.Equal(t, 101, e.Stats().Accounts)
	// Two horizons later it is gone, counted as expired.
	ev = success(at(2*time.Hour+time.Minute), "shop-y", "owner", "126.1.0.1")
	fs = e.Process(fs, &ev)
	require.Empty(t, fs)
	require.LessOrEqual(t, e.Stats().Accounts, 2)
	require.Zero(t, e.Stats().Sources)
	require.Equal(t, 100.0, testutil.ToFloat64(m.evictions.WithLabelValues("account", "expired")))
	require.Equal(t, 200.0, testutil.ToFloat64(m.evictions.WithLabelValues("source", "expired")))
}

func TestStateCapEvictsOldestFirst(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	cfg := classicConfig()
	cfg.MaxAccounts = 1000
	e, err := New(cfg, WithMetrics(m))
	require.NoError(t, err)
	var fs []shopguard.Finding
	// An attacker sprays 10,000 random actor names within a minute.
	for i := range 10_000 {
		ev := event(at(time.Duration(i)*time.Millisecond), "shop-1", fmt.Sprintf("random-%d", i), shopguard.ActionLoginSuccess, "45.95.147.9")
		fs = e.Process(fs, &ev)
		require.LessOrEqual(t, e.Stats().Accounts, 1000)
	}
	require.Equal(t, 9000.0, testutil.ToFloat64(m.evictions.WithLabelValues("account", "cap")))

	// The newest entries survived: brute force on the newest account still
	// counts its earlier failures.
	for i := range 10 {
		ev := fail(at(time.Minute+time.Duration(i)*time.Second), "shop-1", "random-9999", "45.95.147.9")
		fs = e.Process(fs, &ev)
	}
	require.Contains(t, rules(fs), shopguard.RuleBruteForce)
}

func TestWindowIsBounded(t *testing.T) {
	e, err := New(classicConfig())
	require.NoError(t, err)
	var fs []shopguard.Finding
	for i := range 100_000 {
		ev := fail(at(time.Duration(i)*time.Millisecond), "shop-1", "owner", "45.95.147.9")
		fs = e.Process(fs[:0], &ev)
	}
	ev := fail(at(time.Minute), "shop-1", "owner", "45.95.147.9")
	a := e.account(&ev)
	require.LessOrEqual(t, len(a.x.fails.s), 8*32)
}

type recordingSink struct {
	got  []shopguard.Finding
	err  error
	done *int // how many batches were Done when Send was called
	seen []int
}

func (s *recordingSink) Send(_ context.Context, fs ...shopguard.Finding) error {
	if s.err != nil {
		return s.err
	}
	s.got = append(s.got, fs...)
	s.seen = append(s.seen, *s.done)
	return nil
}

func TestRunAcknowledgesAfterTheSink(t *testing.T) {
	var evs []shopguard.Event
	for i := range 10 {
		evs = append(evs, fail(at(time.Duration(i)*time.Second), "shop-1", "owner", "45.95.147.9"))
	}
	done := 0
	in := make(chan shopguard.Batch, 2)
	in <- shopguard.Batch{Events: evs[:5], Done: func() { done++ }, Received: time.Now()}
	in <- shopguard.Batch{Events: evs[5:], Done: func() { done++ }, Received: time.Now()}
	close(in)

	sink := &recordingSink{done: &done}
	reg := prometheus.NewRegistry()
	e, err := New(classicConfig(), WithMetrics(NewMetrics(reg)))
	require.NoError(t, err)
	require.NoError(t, e.Run(context.Background(), in, sink))
	require.Equal(t, 2, done)
	require.Len(t, sink.got, 1)
	require.Equal(t, []int{1}, sink.seen, "the second batch's findings were sent before it was acknowledged")
	require.Equal(t, 1, testutil.CollectAndCount(reg, "shopguard_processing_latency_seconds"))

	// A sink that fails leaves the batch unacknowledged.
	done = 0
	in = make(chan shopguard.Batch, 1)
	in <- shopguard.Batch{Events: evs, Done: func() { done++ }}
	close(in)
	e, err = New(classicConfig())
	require.NoError(t, err)
	boom := errors.New("kafka down")
	err = e.Run(context.Background(), in, &recordingSink{err: boom, done: &done})
	require.ErrorIs(t, err, boom)
	require.Zero(t, done)
}

func TestConfigValidateNamesKeys(t *testing.T) {
	cfg := classicConfig()
	cfg.BruteForce.Threshold = 0
	cfg.CredentialStuffing.IPv6Prefix = 130
	cfg.BulkExport.Severity = "urgent"
	cfg.AccountTakeover.Window = -time.Second
	err := cfg.Validate()
	require.Error(t, err)
	for _, key := range []string{"detect.brute_force.threshold", "detect.credential_stuffing.ipv6_prefix",
		"detect.bulk_export.severity", "detect.account_takeover.window"} {
		require.ErrorContains(t, err, key)
	}
	require.NoError(t, classicConfig().Validate())
	_, err = New(cfg)
	require.Error(t, err)
}

func TestFindingIDsAreDeterministic(t *testing.T) {
	evs := readEvents(t, "testdata/leaked-list-chain/events.jsonl")
	a := run(t, classicConfig(), testLocator, evs)
	b := run(t, classicConfig(), testLocator, evs)
	require.NotEmpty(t, a)
	ids := map[string]bool{}
	for i := range a {
		require.Equal(t, a[i].ID, b[i].ID)
		require.Len(t, a[i].ID, 32)
		require.False(t, ids[a[i].ID], "duplicate id")
		ids[a[i].ID] = true
	}
}

func TestHorizonWithTinySpeed(t *testing.T) {
	cfg := classicConfig()
	cfg.ImpossibleTravel.MaxSpeedKMH = 1e-300
	e, err := New(cfg)
	require.NoError(t, err)
	require.Equal(t, maxWindow, e.accountHorizon())
	cfg.ImpossibleTravel.MaxSpeedKMH = 1000
	e, err = New(cfg)
	require.NoError(t, err)
	require.Equal(t, time.Duration(20037*float64(time.Hour)/1000), e.accountHorizon())
}
