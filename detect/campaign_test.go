package detect

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// withUA returns ev with its user agent set.
func withUA(ev shopguard.Event, ua string) shopguard.Event {
	ev.UserAgent = ua
	return ev
}

// ruleOnly returns the findings of one rule.
func ruleOnly(fs []shopguard.Finding, rule string) []shopguard.Finding {
	var out []shopguard.Finding
	for _, f := range fs {
		if f.Rule == rule {
			out = append(out, f)
		}
	}
	return out
}

// routine returns the five logins on three days (ending a day before t0)
// that take an account out of learning with Tokyo, 126.0.0.0/24 and
// Safari on macOS as its profile.
func routine(shop, actor string) []shopguard.Event {
	var evs []shopguard.Event
	for i, d := range []time.Duration{-72, -71, -48, -47, -24} {
		evs = append(evs, withUA(success(at(d*time.Hour), shop, actor, fmt.Sprintf("126.0.0.%d", 10+i)), safari))
	}
	return evs
}

func TestRuleOrder(t *testing.T) {
	e, err := New(DefaultConfig)
	require.NoError(t, err)
	var names []string
	for _, r := range e.rules {
		names = append(names, r.Name())
	}
	require.Equal(t, shopguard.Rules(), names, "shopguard.Rules() is the engine's order")
}

// waveTakeoverEvents is a wave of 100 accounts after a baseline, and
// logins after it of which one (list-3's) is a takeover of the wave.
func waveTakeoverEvents() (evs []shopguard.Event, wave time.Duration) {
	evs = routine("shop-o", "owner")
	evs = append(evs, waveBase(4, 5)...)
	evs = waveAt(evs, 4*time.Hour+30*time.Minute, 100) // list-i/admin from 100+i%100.(i/100).(i%250).7
	wave = 4*time.Hour + 30*time.Minute + 200*time.Second
	evs = append(evs,
		// The owner mistypes once during the wave and logs in from home
		// with their own browser: not a takeover.
		withUA(fail(at(wave+time.Minute), "shop-o", "owner", "126.0.0.10"), safari),
		withUA(success(at(wave+2*time.Minute), "shop-o", "owner", "126.0.0.10"), safari),
		// An account of the list logs in, with a script, from an address
		// of the wave (another account's): a takeover of the wave.
		withUA(success(at(wave+3*time.Minute), "list-3", "admin", "105.0.5.7"), curlUA),
		// ... and from an address that did not fail in the wave: not one.
		withUA(success(at(wave+4*time.Minute), "list-4", "admin", "9.9.9.9"), curlUA),
		// An account that did not fail in the wave, from a wave address.
		withUA(success(at(wave+5*time.Minute), "shop-o", "other", "105.0.5.7"), curlUA),
		// An account of the list logs in for the first time with a
		// browser, from an address of the wave: nothing to compare with,
		// not a takeover.
		withUA(success(at(wave+6*time.Minute), "list-5", "admin", "105.0.5.7"), safari),
		// Two hours after the wave's last failure: over.
		withUA(success(at(wave+2*time.Hour+time.Minute), "list-7", "admin", "107.0.7.7"), curlUA),
	)
	slicesSortByTime(evs)
	return evs, wave
}

func TestWaveTakeover(t *testing.T) {
	evs, wave := waveTakeoverEvents()
	fs := run(t, waveCfg(), testLocator, evs)
	ws := ruleOnly(fs, shopguard.RuleStuffingWave)
	require.Len(t, ws, 1)
	tk := ruleOnly(fs, shopguard.RuleAccountTakeover)
	require.Len(t, tk, 1, "%v", tk)
	f := tk[0]
	require.Equal(t, "list-3", f.ShopID)
	require.Equal(t, shopguard.SeverityCritical, f.Severity)
	require.Equal(t, ws[0].Evidence.WaveID, f.Evidence.WaveID)
	require.Equal(t, ws[0].ID, f.Evidence.CauseID)
	require.Equal(t, shopguard.RuleStuffingWave, f.Evidence.Cause)
	require.Contains(t, f.Summary, "with a script client (curl) on the account's first login")
	require.Empty(t, ruleOnly(fs, shopguard.RuleLeakedCredentialUse))

	// The wave's sets are checkpointed: cut after the wave, before the
	// logins, and the restored engine raises the same takeover.
	cut := 0
	for i := range evs {
		if evs[i].Action == shopguard.ActionLoginSuccess && evs[i].Time.After(at(wave)) {
			cut = i
			break
		}
	}
	require.Equal(t, fs, runCut(t, waveCfg(), testLocator, evs, cut))
}

// runCut runs evs through an engine, snapshots it before evs[cut] and
// finishes on a restored engine.
func runCut(t *testing.T, cfg Config, loc shopguard.Locator, evs []shopguard.Event, cut int) []shopguard.Finding {
	t.Helper()
	e, err := New(cfg, WithLocator(loc))
	require.NoError(t, err)
	var got []shopguard.Finding
	for i := range evs[:cut] {
		got = e.Process(got, &evs[i])
	}
	var buf bytes.Buffer
	require.NoError(t, e.Snapshot(&buf))
	e2, err := New(cfg, WithLocator(loc))
	require.NoError(t, err)
	require.NoError(t, e2.Restore(bytes.NewReader(buf.Bytes())))
	var again bytes.Buffer
	require.NoError(t, e2.Snapshot(&again))
	require.Equal(t, buf.Bytes(), again.Bytes(), "snapshot of restored state differs")
	e2.SetWatchlist(e.wl.list.Load())
	for i := range evs[cut:] {
		got = e2.Process(got, &evs[cut+i])
	}
	return got
}

func TestLeakedCredentialUse(t *testing.T) {
	w, _, err := ParseWatchlist(strings.NewReader("shop-1\towner\nshop-2\tnew\n"))
	require.NoError(t, err)
	// The list is loaded once the profiles are known.
	before := append(routine("shop-1", "owner"), routine("shop-3", "unlisted")...)
	slicesSortByTime(before)
	evs := []shopguard.Event{
		// From the account's own network (another address of its /24).
		withUA(success(at(time.Hour), "shop-1", "owner", "126.0.0.99"), safari),
		// From a network it has not used: leaked_credential_use, once an
		// hour however many networks follow.
		withUA(success(at(2*time.Hour), "shop-1", "owner", "18.184.0.1"), safari),
		withUA(success(at(2*time.Hour+time.Minute), "shop-1", "owner", "61.200.0.1"), safari),
		// A listed account with no profile at all (learning): fires too.
		withUA(success(at(2*time.Hour), "shop-2", "new", "126.0.0.10"), safari),
		// An unlisted account from a new network: not this rule.
		withUA(success(at(2*time.Hour), "shop-3", "unlisted", "18.184.0.1"), safari),
		// The owner changes the password: rotated, nothing after it.
		withUA(event(at(3*time.Hour), "shop-1", "owner", shopguard.ActionPasswordChange, "126.0.0.10"), safari),
		withUA(success(at(5*time.Hour), "shop-1", "owner", "61.201.0.1"), safari),
	}
	slicesSortByTime(evs)
	runW := func(cfg Config) []shopguard.Finding {
		e, err := New(cfg, WithLocator(testLocator))
		require.NoError(t, err)
		for i := range before {
			require.Empty(t, e.Process(nil, &before[i]))
		}
		e.SetWatchlist(w)
		var out []shopguard.Finding
		for i := range evs {
			out = e.Process(out, &evs[i])
		}
		require.Equal(t, WatchCounts{Listed: 2, Rotated: 1, Unrotated: 1}, e.WatchCounts())
		return out
	}
	fs := runW(DefaultConfig)
	lk := ruleOnly(fs, shopguard.RuleLeakedCredentialUse)
	require.Len(t, lk, 2, "%v", lk)
	require.Equal(t, "shop-1", lk[0].ShopID)
	require.Equal(t, "18.184.0.1", lk[0].IP)
	require.Equal(t, shopguard.SeverityCritical, lk[0].Severity)
	require.Contains(t, lk[0].Summary, "18.184.0.0/24")
	require.Equal(t, "shop-2", lk[1].ShopID)

	// Profiles are learnt for this rule even with unfamiliar_login off.
	cfg := DefaultConfig
	cfg.UnfamiliarLogin.Enabled = false
	require.Equal(t, lk, ruleOnly(runW(cfg), shopguard.RuleLeakedCredentialUse))
}

func TestSnapshotFormat3Restored(t *testing.T) {
	// A version 3 snapshot is version 4's without the campaign section,
	// under the fingerprint without the campaign settings.
	evs := routine("shop-1", "owner")
	e, err := New(DefaultConfig, WithLocator(testLocator))
	require.NoError(t, err)
	for i := range evs {
		e.Process(nil, &evs[i])
	}
	var buf bytes.Buffer
	require.NoError(t, e.Snapshot(&buf))
	b := buf.Bytes()
	body := bytes.Clone(b[:len(b)-4-len(e.appendCampaign(nil))])
	binary.BigEndian.PutUint32(body[4:8], 3)
	fp := DefaultConfig.fingerprint(3)
	copy(body[snapshotHeader:], fp[:])
	binary.BigEndian.PutUint64(body[8:16], uint64(len(body)-snapshotHeader))
	v3 := binary.BigEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, castagnoli))

	e2, err := New(DefaultConfig, WithLocator(testLocator))
	require.NoError(t, err)
	require.NoError(t, e2.Restore(bytes.NewReader(v3)))
	require.Equal(t, e.Stats(), e2.Stats())
	var again bytes.Buffer
	require.NoError(t, e2.Snapshot(&again))
	state := func(e *Engine, b []byte) []byte { return b[snapshotHeader : len(b)-4-len(e.appendCampaign(nil))] }
	require.Equal(t, state(e, buf.Bytes()), state(e2, again.Bytes()), "accounts, profiles and sources survive")
	require.Equal(t, newWaveState(DefaultConfig).accts.cap, e2.wave.accts.cap)
	require.Zero(t, e2.wave.hour, "the wave starts afresh")

	// Another version is refused with both readable versions named.
	binary.BigEndian.PutUint32(v3[4:8], 5)
	err = e2.Restore(bytes.NewReader(v3))
	require.ErrorIs(t, err, ErrCheckpoint)
	require.ErrorContains(t, err, "format version 5, this shopguard reads versions 3 and 4")
}

// TestWaveTakeoverOfficeOwner: an owner who so far logged in only from the
// office's private address (no country learned) mistypes during a wave
// from home and logs in there with their own browser: their profile
// trusts no country, so the country is not "new", and the client is
// familiar. Not a takeover.
func TestWaveTakeoverOfficeOwner(t *testing.T) {
	var evs []shopguard.Event
	for i, d := range []time.Duration{-72, -71, -48, -47, -24} {
		evs = append(evs, withUA(success(at(d*time.Hour), "shop-o", "owner", fmt.Sprintf("10.0.0.%d", 10+i)), safari))
	}
	evs = append(evs, waveBase(4, 5)...)
	evs = waveAt(evs, 4*time.Hour+30*time.Minute, 100)
	wave := 4*time.Hour + 30*time.Minute + 200*time.Second
	evs = append(evs,
		withUA(fail(at(wave+time.Minute), "shop-o", "owner", "126.0.0.10"), safari),
		withUA(success(at(wave+2*time.Minute), "shop-o", "owner", "126.0.0.10"), safari),
		// The same from curl: the client is new to a profile that trusts
		// one, so a takeover.
		withUA(fail(at(wave+3*time.Minute), "shop-o", "owner", "126.0.0.11"), curlUA),
		withUA(success(at(wave+4*time.Minute), "shop-o", "owner", "126.0.0.11"), curlUA),
	)
	slicesSortByTime(evs)
	fs := run(t, waveCfg(), testLocator, evs)
	require.Len(t, ruleOnly(fs, shopguard.RuleStuffingWave), 1)
	tk := ruleOnly(fs, shopguard.RuleAccountTakeover)
	require.Len(t, tk, 1, "%v", tk)
	require.Equal(t, at(wave+4*time.Minute), tk[0].Time)
	require.Contains(t, tk[0].Summary, "client (curl) new")
}

// TestTakeoverAfterStuffingNamedByThe48: a campaign across two /64s of one
// /48 crosses at the /48 first (one finding, named by the /48); when one
// /64 later crosses on its own, a success from it is a takeover, and a
// success from another /64 of the /48 that never crossed is not.
func TestTakeoverAfterStuffingNamedByThe48(t *testing.T) {
	var evs []shopguard.Event
	for i := range 40 {
		ip := fmt.Sprintf("2001:db8:1:%d::%x", 1+i%2, 100+i) // alternating /64s
		if i >= 20 {
			ip = fmt.Sprintf("2001:db8:1:1::%x", 100+i) // then only the first
		}
		evs = append(evs, fail(at(time.Duration(i)*5*time.Second), fmt.Sprintf("shop-%d", i), "owner", ip))
	}
	evs = append(evs,
		success(at(4*time.Minute), "shop-1", "owner", "2001:db8:1:1::1"),
		success(at(4*time.Minute+time.Second), "shop-3", "owner", "2001:db8:1:9::1"),
	)
	fs := run(t, DefaultConfig, testLocator, evs)
	st := ruleOnly(fs, shopguard.RuleCredentialStuffing)
	require.Len(t, st, 1)
	require.Equal(t, "2001:db8:1::/48", st[0].IP)
	tk := ruleOnly(fs, shopguard.RuleAccountTakeover)
	require.Len(t, tk, 1, "%v", tk)
	require.Equal(t, "shop-1", tk[0].ShopID)
	require.Equal(t, st[0].ID, tk[0].Evidence.CauseID)
}

// noASN wraps a locator that says it knows no autonomous systems.
type noASN struct{ shopguard.Locator }

func (noASN) HasASN() bool { return false }

// TestStuffingByASN pins the ASN level of credential_stuffing: 99 vs 100
// accounts from one ordinary ASN, 19 vs 20 from a hosting one, each from
// its own /24 so that no narrower level crosses; named "AS<n>"; restored
// from a checkpoint mid-campaign; off without an ASN database.
func TestStuffingByASN(t *testing.T) {
	// n accounts, each failing from its own /24 of block (126.0.0.0/16 is
	// AS17676, 95.216.0.0/16 the hosting AS24940), 5 s apart.
	campaign := func(n int, block string) []shopguard.Event {
		var evs []shopguard.Event
		for i := range n {
			evs = append(evs, fail(at(time.Duration(i)*5*time.Second), fmt.Sprintf("shop-%d", i), "owner", fmt.Sprintf(block, i)))
		}
		return evs
	}
	for _, tt := range []struct {
		name  string
		evs   []shopguard.Event
		fires string
	}{
		{"99 accounts of AS17676", campaign(99, "126.0.%d.1"), ""},
		{"100 accounts of AS17676", campaign(100, "126.0.%d.1"), "AS17676"},
		{"19 accounts of hosting AS24940", campaign(19, "95.216.%d.1"), ""},
		{"20 accounts of hosting AS24940", campaign(20, "95.216.%d.1"), "AS24940"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig
			cfg.CredentialStuffing.ASNThreshold = 100 // SPEC §3.2's; off by default (README)
			fs := run(t, cfg, asnLocator, tt.evs)
			st := ruleOnly(fs, shopguard.RuleCredentialStuffing)
			if tt.fires == "" {
				require.Empty(t, st)
				return
			}
			require.Len(t, st, 1)
			require.Equal(t, tt.fires, st[0].IP)
			require.Equal(t, tt.evs[len(tt.evs)-1].Time, st[0].Time)

			// A checkpoint in the middle of the campaign gives the same.
			require.Equal(t, fs, runCut(t, cfg, asnLocator, tt.evs, len(tt.evs)/2))

			require.Empty(t, ruleOnly(run(t, cfg, noASN{asnLocator}, tt.evs), shopguard.RuleCredentialStuffing),
				"without an ASN database")
		})
	}
}

// TestWaveFollowers: engines that each keep some accounts (Process) and
// follow every other account's failed logins (FollowFailure), one of them
// reporting the wave and the others following it, find together exactly
// what one engine finds, the wave-aware takeover included: the scale-out
// account stage.
func TestWaveFollowers(t *testing.T) {
	evs, _ := waveTakeoverEvents()
	want := run(t, waveCfg(), testLocator, evs)
	require.Len(t, ruleOnly(want, shopguard.RuleStuffingWave), 1)
	require.Len(t, ruleOnly(want, shopguard.RuleAccountTakeover), 1)

	const n = 3
	split := func(follow bool) []shopguard.Finding {
		var engines [n]*Engine
		for i := range engines {
			e, err := New(waveCfg(), WithLocator(testLocator), WithMetrics(NewMetrics(prometheus.NewRegistry())))
			require.NoError(t, err)
			e.FollowWave(i != 0)
			engines[i] = e
		}
		var got []shopguard.Finding
		for i := range evs {
			ev := &evs[i]
			own := int(accountHash(ev.ShopID, ev.Actor) % n)
			for j, e := range engines {
				switch {
				case j == own:
					got = e.Process(got, ev)
				case follow:
					got = e.FollowFailure(got, ev)
				}
			}
		}
		return got
	}
	got := split(true)
	byID := func(fs []shopguard.Finding) []shopguard.Finding {
		fs = slices.Clone(fs)
		slices.SortFunc(fs, func(a, b shopguard.Finding) int { return strings.Compare(a.ID, b.ID) })
		return fs
	}
	require.Equal(t, byID(want), byID(got))

	// Without following, no engine sees the wave.
	require.Empty(t, ruleOnly(split(false), shopguard.RuleStuffingWave))
}
