package detect

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// splitRun feeds evs, in order, to engines the way a scaled-out shopguard
// does: failed logins to one of nSrc source engines (only
// credential_stuffing) by their block, every event to one of nAcct account
// engines (every other rule) by account, and each credential_stuffing
// finding to every account engine through FlagSource, right after the
// failed login that raised it. It returns every finding.
func splitRun(t *testing.T, cfg Config, loc shopguard.Locator, evs []shopguard.Event, nSrc, nAcct int) []shopguard.Finding {
	t.Helper()
	srcCfg, acctCfg := cfg, cfg
	srcCfg.ImpossibleTravel.Enabled = false
	srcCfg.BruteForce.Enabled = false
	srcCfg.AccountTakeover.Enabled = false
	srcCfg.BulkExport.Enabled = false
	srcCfg.UnfamiliarLogin.Enabled = false
	srcCfg.SessionHijack.Enabled = false
	srcCfg.RiskyChange.Enabled = false
	acctCfg.CredentialStuffing.Enabled = false
	acctCfg.FailureBurst.Enabled = false
	engines := func(c Config, n int) []*Engine {
		out := make([]*Engine, n)
		for i := range out {
			var err error
			out[i], err = New(c, WithLocator(loc))
			require.NoError(t, err)
		}
		return out
	}
	srcs, accts := engines(srcCfg, nSrc), engines(acctCfg, nAcct)
	pick := func(key string, n int) int {
		h := fnv.New32a()
		h.Write([]byte(key))
		return int(h.Sum32() % uint32(n))
	}
	var out []shopguard.Finding
	for i := range evs {
		ev := &evs[i]
		if ev.Action == shopguard.ActionLoginFailure {
			bits := cfg.CredentialStuffing.IPv6Prefix
			if ev.IP.Is4() {
				bits = cfg.CredentialStuffing.IPv4Prefix
			}
			block, _ := ev.IP.Prefix(bits)
			from := len(out)
			out = srcs[pick(block.String(), nSrc)].Process(out, ev)
			for _, f := range out[from:] {
				p, err := netip.ParsePrefix(f.IP)
				if err != nil {
					a := netip.MustParseAddr(f.IP)
					p = netip.PrefixFrom(a, a.BitLen())
				}
				for _, a := range accts {
					a.FlagSource(p, f.Time, f.ID)
				}
			}
		}
		out = accts[pick(ev.ShopID+"\x00"+ev.Actor, nAcct)].Process(out, ev)
	}
	return out
}

// splitScenario has every rule fire, stuffing both by block and by single
// address with takeovers and critical exports after them, and a block that
// is quiet for longer than its state lives while other traffic goes on.
func splitScenario() []shopguard.Event {
	var evs []shopguard.Event
	acct := func(i int) (string, string) { return fmt.Sprintf("shop-%d", i%7), fmt.Sprintf("user%d@example.jp", i) }
	// Background, from half an hour before the rest: failures from other
	// blocks all along, few accounts per window; logins from Tokyo.
	for m := -30; m < 240; m += 2 {
		shop, actor := acct(1000 + (m+30)%9)
		evs = append(evs, fail(at(time.Duration(m)*time.Minute+17*time.Second), shop, actor, fmt.Sprintf("203.0.%d.%d", 113+(m+30)%4, (m+30)%50)))
		shop, actor = acct(2000 + (m+30)%13)
		evs = append(evs, success(at(time.Duration(m)*time.Minute+41*time.Second), shop, actor, "126.0.1.1"))
	}
	// Block campaign 1: 25 accounts from 25 addresses of 45.95.147.0/24.
	for i := range 25 {
		shop, actor := acct(i)
		evs = append(evs, fail(at(time.Duration(i)*10*time.Second), shop, actor, fmt.Sprintf("45.95.147.%d", i+1)))
	}
	// One of them logs in from the block: takeover, then a critical export.
	shop, actor := acct(3)
	evs = append(evs, success(at(8*time.Minute), shop, actor, "45.95.147.200"))
	evs = append(evs, export(at(10*time.Minute), shop, actor, "45.95.147.200", 500))
	// Block campaign 2, after the block was quiet for 1h40m.
	for i := range 25 {
		shop, actor := acct(100 + i)
		evs = append(evs, fail(at(105*time.Minute+time.Duration(i)*10*time.Second), shop, actor, fmt.Sprintf("45.95.147.%d", 101+i)))
	}
	// A single address stuffing 22 accounts, then logging in to one.
	for i := range 22 {
		shop, actor := acct(200 + i)
		evs = append(evs, fail(at(150*time.Minute+time.Duration(i)*5*time.Second), shop, actor, "198.51.100.7"))
	}
	shop, actor = acct(205)
	evs = append(evs, success(at(155*time.Minute), shop, actor, "198.51.100.7"))
	// Brute force on one account, then a success from the same address.
	shop, actor = acct(300)
	for i := range 12 {
		evs = append(evs, fail(at(170*time.Minute+time.Duration(i)*20*time.Second), shop, actor, "61.200.5.5"))
	}
	evs = append(evs, success(at(175*time.Minute), shop, actor, "61.200.5.5"))
	// Travel Tokyo → Frankfurt in 30 minutes, then an export; and a bulk
	// export by another account.
	shop, actor = acct(400)
	evs = append(evs, success(at(180*time.Minute), shop, actor, "126.0.9.9"))
	evs = append(evs, success(at(210*time.Minute), shop, actor, "18.184.3.3"))
	evs = append(evs, export(at(215*time.Minute), shop, actor, "18.184.3.3", 20))
	shop, actor = acct(500)
	evs = append(evs, export(at(220*time.Minute), shop, actor, "126.0.4.4", 6000))
	evs = append(evs, export(at(225*time.Minute), shop, actor, "126.0.4.4", 6000))
	slices.SortStableFunc(evs, func(a, b shopguard.Event) int { return a.Time.Compare(b.Time) })
	return evs
}

func sortedFindings(fs []shopguard.Finding) []shopguard.Finding {
	fs = slices.Clone(fs)
	slices.SortFunc(fs, func(a, b shopguard.Finding) int { return strings.Compare(a.ID, b.ID) })
	return fs
}

// TestFlagSourceSplitEqualsOneEngine: engines that each see part of the
// events (by source block, by account), with stuffing flags passed on by
// FlagSource, raise exactly the findings of one engine that sees all, to
// the last field of the evidence.
func TestFlagSourceSplitEqualsOneEngine(t *testing.T) {
	evs := splitScenario()
	want := run(t, DefaultConfig, testLocator, evs)
	kinds := map[string]int{}
	for _, f := range want {
		kinds[f.Rule+"/"+f.Evidence.Cause+"/"+string(f.Severity)]++
	}
	for _, k := range []string{
		"credential_stuffing//high", "account_takeover/credential_stuffing/critical", "account_takeover/failures/critical",
		"brute_force//medium", "impossible_travel//high", "bulk_export/after_account_takeover/critical",
		"bulk_export/after_impossible_travel/critical", "bulk_export//high",
	} {
		require.NotZero(t, kinds[k], "the scenario must raise %s; got %v", k, kinds)
	}
	require.Equal(t, 2, kinds["account_takeover/credential_stuffing/critical"], "after a block and after an address")
	for _, split := range [][2]int{{1, 1}, {2, 3}, {3, 5}} {
		got := splitRun(t, DefaultConfig, testLocator, evs, split[0], split[1])
		require.Equal(t, sortedFindings(want), sortedFindings(got), "%d source and %d account engines", split[0], split[1])
	}
}

func TestFlagSourceKeepsTheNewestFlag(t *testing.T) {
	cfg := DefaultConfig
	cfg.CredentialStuffing.Enabled = false
	e, err := New(cfg)
	require.NoError(t, err)
	block := netip.MustParsePrefix("45.95.147.0/24")
	e.FlagSource(block, at(0), "first")
	e.FlagSource(block, at(20*time.Minute), "second")
	e.FlagSource(block, at(10*time.Minute), "older") // late: ignored
	ev := success(at(30*time.Minute), "shop-1", "owner", "45.95.147.9")
	fs := e.Process(nil, &ev)
	require.Len(t, fs, 1)
	require.Equal(t, shopguard.RuleAccountTakeover, fs[0].Rule)
	require.Equal(t, "second", fs[0].Evidence.CauseID)

	// An address flag given in IPv4-mapped form counts for the address.
	e, err = New(cfg)
	require.NoError(t, err)
	e.FlagSource(netip.MustParsePrefix("::ffff:198.51.100.7/128"), at(0), "addr")
	ev = success(at(5*time.Minute), "shop-1", "owner", "198.51.100.7")
	fs = e.Process(nil, &ev)
	require.Len(t, fs, 1)
	require.Equal(t, "addr", fs[0].Evidence.CauseID)

	// A flag older than the takeover window does not count.
	ev = success(at(2*time.Hour), "shop-1", "other", "198.51.100.7")
	require.Empty(t, e.Process(nil, &ev))
}
