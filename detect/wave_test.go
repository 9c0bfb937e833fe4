package detect

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// waveBase returns failures of perHour distinct accounts in each of the
// hours [0, hours) after t0, each in the first minutes of its hour, from
// addresses spread over many /16s. t0 is on the hour, so hour 0 is the
// partial start hour that warm-up skips.
func waveBase(hours, perHour int) []shopguard.Event {
	var evs []shopguard.Event
	for h := range hours {
		for i := range perHour {
			evs = append(evs, fail(at(time.Duration(h)*time.Hour+time.Duration(i)*time.Second),
				fmt.Sprintf("base-%d-%d", h, i), "owner", fmt.Sprintf("%d.%d.0.1", 1+i%200, h%250)))
		}
	}
	return evs
}

// waveAt appends n failures of distinct accounts from distinct addresses,
// starting at d after t0, one every 2 seconds.
func waveAt(evs []shopguard.Event, d time.Duration, n int) []shopguard.Event {
	for i := range n {
		ev := fail(at(d+time.Duration(i)*2*time.Second), fmt.Sprintf("list-%d", i), "admin", fmt.Sprintf("%d.%d.%d.7", 100+i%100, i/100, i%250))
		ev.Reason = "unknown_user"
		evs = append(evs, ev)
	}
	return evs
}

// waveCfg is the default with a 3-hour warm-up, so that the boundary
// tests need only a few hours of baseline.
func waveCfg() Config {
	c := DefaultConfig
	c.StuffingWave.WarmUp = 3
	return c
}

func waves(fs []shopguard.Finding) []shopguard.Finding {
	var out []shopguard.Finding
	for _, f := range fs {
		if f.Rule == shopguard.RuleStuffingWave {
			out = append(out, f)
		}
	}
	return out
}

func TestStuffingWaveFloor(t *testing.T) {
	// Baseline 5 accounts an hour: only the floor of 50 matters. The
	// count must exceed it: 50 is not a wave, 51 is.
	for _, tt := range []struct {
		n    int
		want int
	}{{49, 0}, {50, 0}, {51, 1}} {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			evs := waveAt(waveBase(4, 5), 4*time.Hour+30*time.Minute, tt.n)
			ws := waves(run(t, waveCfg(), testLocator, evs))
			require.Len(t, ws, tt.want)
			if tt.want == 1 {
				f := ws[0]
				require.Equal(t, int64(51), f.Evidence.Count)
				require.Empty(t, f.ShopID+f.Actor+f.IP)
				require.NotEmpty(t, f.Evidence.WaveID)
				require.InDelta(t, 5, f.Evidence.Baseline, 1e-9)
				require.InDelta(t, 1.0, f.Evidence.UnknownUserShare, 1e-9)
				require.Equal(t, int64(51), f.Evidence.Sources)
				require.Len(t, f.Evidence.Accounts, sampleSize)
				require.NotEmpty(t, f.Evidence.TopBlocks)
			}
		})
	}
}

func TestStuffingWaveFactor(t *testing.T) {
	// Baseline exactly 20 (three complete hours of 20): 2.9× is 58
	// accounts, 3.1× is 62; both are above the floor.
	for _, tt := range []struct {
		n    int
		want int
	}{{58, 0}, {60, 0}, {62, 1}} {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			evs := waveAt(waveBase(4, 20), 4*time.Hour+30*time.Minute, tt.n)
			ws := waves(run(t, waveCfg(), nil, evs))
			require.Len(t, ws, tt.want)
			if tt.want == 1 {
				require.InDelta(t, 20, ws[0].Evidence.Baseline, 1e-9)
			}
		})
	}
}

func TestStuffingWaveWarmUp(t *testing.T) {
	// A replay that starts busy: 300 accounts failing in its first hours
	// is no wave while the baseline has not seen WarmUp complete hours.
	evs := waveAt(nil, 10*time.Minute, 300)
	require.Empty(t, waves(run(t, waveCfg(), nil, evs)))
	evs = waveAt(waveBase(3, 0), 2*time.Hour+10*time.Minute, 300)
	require.Empty(t, waves(run(t, waveCfg(), nil, evs)), "two complete hours are not enough")
}

func TestStuffingWaveOncePerHourOneID(t *testing.T) {
	evs := waveBase(4, 5)
	// 3 hours of 200 distinct accounts an hour.
	for h := range 3 {
		for i := range 200 {
			evs = append(evs, fail(at(4*time.Hour+time.Duration(h)*time.Hour+time.Duration(i)*15*time.Second),
				fmt.Sprintf("list-%d-%d", h, i), "admin", fmt.Sprintf("10%d.%d.%d.1", h, i/250, i%250)))
		}
	}
	ws := waves(run(t, waveCfg(), nil, evs))
	require.Len(t, ws, 3)
	for _, f := range ws[1:] {
		require.Equal(t, ws[0].Evidence.WaveID, f.Evidence.WaveID)
		require.GreaterOrEqual(t, f.Time.Sub(ws[0].Time), time.Hour)
	}
}

func TestStuffingWaveNormalTraffic(t *testing.T) {
	// A simulated week of a platform whose failures follow a daily rhythm
	// (up to ~60 accounts an hour by day, ~15 at night, with noise), plus
	// one noisy office address failing for 30 staff accounts all day.
	rng := rand.New(rand.NewPCG(7, 7))
	var evs []shopguard.Event
	for h := range 7 * 24 {
		hour := h % 24
		level := 15 + 45*math.Max(0, math.Sin(float64(hour-6)*math.Pi/14))
		n := int(level * (0.8 + 0.4*rng.Float64()))
		for i := range n {
			evs = append(evs, fail(at(time.Duration(h)*time.Hour+time.Duration(rng.IntN(3600))*time.Second),
				fmt.Sprintf("shop-%d", rng.IntN(5000)), "owner", fmt.Sprintf("%d.%d.%d.1", 1+rng.IntN(200), rng.IntN(250), i%250)))
		}
		for i := range 30 {
			if hour >= 8 && hour < 18 {
				evs = append(evs, fail(at(time.Duration(h)*time.Hour+time.Duration(i)*time.Minute), "office", fmt.Sprintf("staff-%d", i), "203.0.113.5"))
			}
		}
	}
	slicesSortByTime(evs)
	require.Empty(t, waves(run(t, DefaultConfig, nil, evs)))
	// The same week with a list attack on day 5: 400 accounts in an hour.
	evs = waveAt(evs, 4*24*time.Hour+3*time.Hour, 400)
	slicesSortByTime(evs)
	ws := waves(run(t, DefaultConfig, nil, evs))
	require.NotEmpty(t, ws)
	for _, f := range ws {
		require.Equal(t, ws[0].Evidence.WaveID, f.Evidence.WaveID, "one wave, one id")
		require.Equal(t, at(4*24*time.Hour+3*time.Hour).Day(), f.Time.Day())
	}
}

func TestStuffingWaveCheckpoint(t *testing.T) {
	// Snapshot in the middle of a wave: the restored engine gives the same
	// findings as the uninterrupted one.
	evs := waveBase(4, 5)
	for i := range 400 {
		evs = append(evs, fail(at(4*time.Hour+time.Duration(i)*20*time.Second), fmt.Sprintf("list-%d", i), "admin", fmt.Sprintf("10.%d.%d.1", i/250, i%250)))
	}
	want := run(t, waveCfg(), nil, evs)
	require.Len(t, waves(want), 2)

	e, err := New(waveCfg(), WithMetrics(NewMetrics(prometheus.NewRegistry())))
	require.NoError(t, err)
	var got []shopguard.Finding
	cut := len(evs) - 100
	for i := range evs[:cut] {
		got = e.Process(got, &evs[i])
	}
	var buf bytes.Buffer
	require.NoError(t, e.Snapshot(&buf))
	e2, err := New(waveCfg())
	require.NoError(t, err)
	require.NoError(t, e2.Restore(bytes.NewReader(buf.Bytes())))
	var again bytes.Buffer
	require.NoError(t, e2.Snapshot(&again))
	require.Equal(t, buf.Bytes(), again.Bytes(), "snapshot of restored state differs")
	for i := range evs[cut:] {
		got = e2.Process(got, &evs[cut+i])
	}
	require.Equal(t, want, got)
}

func TestStuffingIPv6Wide(t *testing.T) {
	// Accounts tried from distinct /64s of one /48: 19 is below the
	// threshold, 20 crosses it and names the /48.
	for _, n := range []int{19, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var evs []shopguard.Event
			for i := range n {
				evs = append(evs, fail(at(time.Duration(i)*10*time.Second), fmt.Sprintf("shop-%d", i), "admin", fmt.Sprintf("2001:db8:1:%x::9", i)))
			}
			fs := run(t, DefaultConfig, nil, evs)
			if n == 19 {
				require.Empty(t, fs)
				return
			}
			require.Len(t, fs, 1)
			require.Equal(t, "2001:db8:1::/48", fs[0].IP)
			require.Equal(t, int64(20), fs[0].Evidence.Count)
		})
	}
}

func TestWatchlistParse(t *testing.T) {
	in := "# leaked 2026-01\nshop-1\towner@example.jp\n\nno tab here\nshop-2\tstaff\r\n\tempty-shop\nshop-1\towner@example.jp\n"
	w, bad, err := ParseWatchlist(strings.NewReader(in))
	require.NoError(t, err)
	require.Equal(t, 2, w.Len())
	require.True(t, w.Has("shop-1", "owner@example.jp"))
	require.True(t, w.Has("shop-2", "staff"))
	require.False(t, w.Has("shop-1", "staff"))
	require.Len(t, bad, 2)
	require.Equal(t, 4, bad[0].Line)
	require.Equal(t, 6, bad[1].Line)
}

func TestWatchlistBruteForce(t *testing.T) {
	w, _, err := ParseWatchlist(strings.NewReader("shop-1\towner\n"))
	require.NoError(t, err)
	runW := func(evs []shopguard.Event) []shopguard.Finding {
		e, err := New(DefaultConfig)
		require.NoError(t, err)
		e.SetWatchlist(w)
		var out []shopguard.Finding
		for i := range evs {
			out = e.Process(out, &evs[i])
		}
		return out
	}
	fails := func(actor string, n int, from time.Duration) []shopguard.Event {
		var evs []shopguard.Event
		for i := range n {
			evs = append(evs, fail(at(from+time.Duration(i)*time.Minute), "shop-1", actor, "45.95.147.9"))
		}
		return evs
	}
	require.Empty(t, runW(fails("owner", 2, 0)), "2 failures of a listed account")
	fs := runW(fails("owner", 3, 0))
	require.Equal(t, []string{shopguard.RuleBruteForce}, rules(fs))
	require.Equal(t, int64(3), fs[0].Evidence.Threshold)
	require.Empty(t, runW(fails("other", 3, 0)), "an unlisted account still needs 10")

	// Rotated: the password was changed, the normal threshold applies
	// again.
	evs := append([]shopguard.Event{event(at(-time.Hour), "shop-1", "owner", shopguard.ActionPasswordChange, "126.0.0.1")}, fails("owner", 3, 0)...)
	require.Empty(t, runW(evs))

	e, err := New(DefaultConfig)
	require.NoError(t, err)
	e.SetWatchlist(w)
	require.Equal(t, WatchCounts{Listed: 1, Unrotated: 1}, e.WatchCounts())
	e.Process(nil, &evs[0])
	require.Equal(t, WatchCounts{Listed: 1, Rotated: 1}, e.WatchCounts())

	// The rotation is part of the checkpoint.
	var buf bytes.Buffer
	require.NoError(t, e.Snapshot(&buf))
	e2, err := New(DefaultConfig)
	require.NoError(t, err)
	require.NoError(t, e2.Restore(&buf))
	e2.SetWatchlist(w)
	require.Equal(t, WatchCounts{Listed: 1, Rotated: 1}, e2.WatchCounts())
}

// TestWavelessSnapshot: an engine that now runs stuffing_wave restores the
// snapshot of one that did not (a scaled-out account stage before it
// followed the wave), with its other state and a wave warming up anew;
// any other change of settings is still refused, and so is the reverse.
func TestWavelessSnapshot(t *testing.T) {
	off := waveCfg()
	off.StuffingWave.Enabled = false
	e, err := New(off)
	require.NoError(t, err)
	for _, ev := range waveBase(4, 5) {
		e.Process(nil, &ev)
	}
	var buf bytes.Buffer
	require.NoError(t, e.Snapshot(&buf))

	on, err := New(waveCfg())
	require.NoError(t, err)
	require.NoError(t, on.Restore(bytes.NewReader(buf.Bytes())))
	require.Equal(t, e.Stats(), on.Stats())
	require.False(t, on.WaveStats().WarmedUp)

	other := waveCfg()
	other.StuffingWave.Min = 51
	o, err := New(other)
	require.NoError(t, err)
	require.ErrorIs(t, o.Restore(bytes.NewReader(buf.Bytes())), ErrCheckpoint)

	back, err := New(off)
	require.NoError(t, err)
	buf.Reset()
	require.NoError(t, on.Snapshot(&buf))
	require.ErrorIs(t, back.Restore(bytes.NewReader(buf.Bytes())), ErrCheckpoint)
}
