package detect

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// countSink counts findings by rule.
type countSink map[string]int

func (c countSink) Send(_ context.Context, fs ...shopguard.Finding) error {
	for i := range fs {
		c[fs[i].Rule]++
	}
	return nil
}

// TestSprayCannotGrowMemory: an attacker sprays 1,000,000 failed logins with
// random shop ids, actor names and addresses. Every event names a new
// account, a new address and a new IPv4 /24 or IPv6 /64; a quarter of them
// come from one block with random actors (a stuffing campaign, which grows
// that block's list of accounts), and an eighth hammer one account from
// random addresses (which grows its window). The state must stay within
// max_accounts and max_sources, every entry dropped must be counted as a cap
// eviction, the per-source and per-account lists must stay within their
// limits, and the heap must not grow with the number of keys.
func TestSprayCannotGrowMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000 events")
	}
	const (
		n           = 1_000_000
		maxAccounts = 1000
		maxSources  = 2000
	)
	cfg := classicConfig()
	cfg.MaxAccounts, cfg.MaxSources = maxAccounts, maxSources
	m := NewMetrics(prometheus.NewRegistry())
	e, err := New(cfg, WithMetrics(m), WithLocator(testLocator))
	require.NoError(t, err)

	campaign := netip.MustParsePrefix("45.95.147.0/24")
	rng := rand.New(rand.NewPCG(1, 2))
	randName := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return hex.EncodeToString(b)
	}
	var uniqueAccounts, uniqueSources int // keys created, each exactly once
	next := func(i int) shopguard.Event {
		ev := shopguard.Event{
			Time:   t0.Add(time.Duration(i) * time.Millisecond),
			ShopID: "shop-" + randName(6),
			Actor:  randName(12) + "@example.com",
			Action: shopguard.ActionLoginFailure,
		}
		switch {
		case i%8 == 1: // one account, hammered from random addresses
			ev.ShopID, ev.Actor = "shop-1", "owner@example.jp"
			fallthrough
		case i%2 == 0: // a new IPv4 address in a new /24
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], uint32(i)<<8|uint32(rng.IntN(256)))
			a[0] |= 0x80 // stay clear of the campaign's 45.0.0.0/8
			ev.IP = netip.AddrFrom4(a)
			uniqueSources += 2
		case i%4 == 3: // the campaign: random actors from one /24
			a := campaign.Addr().As4()
			a[3] = byte(rng.IntN(256))
			ev.IP = netip.AddrFrom4(a)
		default: // a new IPv6 address in a new /64
			var a [16]byte
			binary.BigEndian.PutUint64(a[:8], 0x2a00_0000_0000_0000|uint64(i))
			binary.BigEndian.PutUint64(a[8:], rng.Uint64())
			ev.IP = netip.AddrFrom16(a)
			uniqueSources += 2
		}
		if ev.Actor != "owner@example.jp" {
			uniqueAccounts++
		}
		return ev
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	in := make(chan shopguard.Batch, 4)
	go func() {
		defer close(in)
		for i := 0; i < n; {
			b := make([]shopguard.Event, 0, 1000)
			for ; i < n && len(b) < cap(b); i++ {
				b = append(b, next(i))
			}
			in <- shopguard.Batch{Events: b, Received: time.Now(), Done: func() {
				st := e.Stats()
				require.LessOrEqual(t, st.Accounts, maxAccounts)
				require.LessOrEqual(t, st.Sources, maxSources)
			}}
		}
	}()
	sink := countSink{}
	require.NoError(t, e.Run(context.Background(), in, sink))

	st := e.Stats()
	require.LessOrEqual(t, st.Accounts, maxAccounts)
	require.LessOrEqual(t, st.Sources, maxSources)
	require.Equal(t, float64(st.Accounts), testutil.ToFloat64(m.entries.WithLabelValues("account")))
	require.Equal(t, float64(st.Sources), testutil.ToFloat64(m.entries.WithLabelValues("source")))
	require.Equal(t, float64(n), testutil.ToFloat64(m.events))

	// Nothing expired (the stream spans 17 minutes of event time): every
	// key created and no longer held was evicted for the cap, and counted.
	require.Zero(t, testutil.ToFloat64(m.evictions.WithLabelValues("account", "expired")))
	require.Zero(t, testutil.ToFloat64(m.evictions.WithLabelValues("source", "expired")))
	// The campaign's random actors are new accounts as well; its addresses
	// (256 at most, and their block) are the only sources that repeat, and
	// may be evicted and created again.
	accEvicted := testutil.ToFloat64(m.evictions.WithLabelValues("account", "cap"))
	srcEvicted := testutil.ToFloat64(m.evictions.WithLabelValues("source", "cap"))
	require.Greater(t, accEvicted, float64(n/2))
	require.Greater(t, srcEvicted, float64(n))
	require.Equal(t, float64(uniqueAccounts+1), accEvicted+float64(st.Accounts)) // +1: the hammered account
	require.GreaterOrEqual(t, srcEvicted+float64(st.Sources), float64(uniqueSources))

	// The lists inside the entries are bounded too.
	limit := max(2*cfg.CredentialStuffing.Threshold, 64)
	var campaignAccts int
	e.sources.each(func(_ srcKey, s *source) {
		require.LessOrEqual(t, len(s.accts), limit, "source %s", s.prefix)
		require.LessOrEqual(t, len(s.addrs), sampleSize, "source %s", s.prefix)
		if s.prefix == campaign {
			campaignAccts = len(s.accts)
		}
	})
	require.Equal(t, limit, campaignAccts, "the campaign's block is tracked, with a full, capped list")
	failLimit := 8 * max(cfg.BruteForce.Threshold, cfg.AccountTakeover.Failures, 32)
	var owner *account
	e.accounts.each(func(_ bool, a *account) {
		if a.x != nil {
			require.LessOrEqual(t, len(a.x.fails.s), failLimit)
		}
		if a.actor == "owner@example.jp" {
			o := *a // a is valid only during the call
			owner = &o
		}
	})
	require.NotNil(t, owner, "the hammered account is recent, so it survived the cap")
	require.Len(t, owner.x.fails.s, failLimit)

	// The attack was seen despite the spray.
	require.Positive(t, sink[shopguard.RuleCredentialStuffing])
	require.Positive(t, sink[shopguard.RuleBruteForce])

	// And memory stayed flat: a million accounts and two million sources
	// would hold hundreds of MiB.
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d KiB over %d events; %.0f account and %.0f source evictions", grown>>10, n, accEvicted, srcEvicted)
	require.Less(t, grown, int64(32<<20))
	// Nor outside the heap, where the accounts' records are.
	t.Logf("account records and indexes: %d KiB mapped", e.accounts.mapped()>>10)
	require.Less(t, e.accounts.mapped(), 32<<20)
	runtime.KeepAlive(e)
}
