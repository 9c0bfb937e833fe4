package report

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

func TestSrcIndexLongestMatch(t *testing.T) {
	x := newSrcIndex()
	n16, n24, n32, n48, n64 := &node{}, &node{}, &node{}, &node{}, &node{}
	x.set(netip.MustParsePrefix("10.1.0.0/16"), n16)
	x.set(netip.MustParsePrefix("10.1.2.0/24"), n24)
	x.set(netip.MustParsePrefix("10.1.2.3/32"), n32)
	x.set(netip.MustParsePrefix("2001:db8:1::/48"), n48)
	x.set(netip.MustParsePrefix("2001:db8:1:2::/64"), n64)
	get := func(s string) *node {
		a := netip.MustParseAddr(s)
		return x.get(a.As16(), a.Is4())
	}
	require.Same(t, n32, get("10.1.2.3"))
	require.Same(t, n24, get("10.1.2.4"))
	require.Same(t, n16, get("10.1.255.4"))
	require.Nil(t, get("10.2.0.1"))
	require.Same(t, n64, get("2001:db8:1:2::99"))
	require.Same(t, n48, get("2001:db8:1:3::1"))
	require.Nil(t, get("2001:db8:2::1"))
	require.Nil(t, get("::ffff:10.9.9.9"), "an IPv6 lookup never matches IPv4 blocks")

	x.set(netip.MustParsePrefix("10.1.2.0/24"), nil)
	require.Same(t, n16, get("10.1.2.4"), "a removed block falls back to the wider one")
	require.Equal(t, []int{32, 16}, x.lens4)
}

// TestScanAttributesBeforeTheFinding: events from sources and accounts
// that a later finding names are attributed when the ring is scanned,
// whether few (checked one by one) or many (looked up in full) were
// tracked since the last scan, and the ring keeps its account names when
// it is compacted.
func TestScanAttributesBeforeTheFinding(t *testing.T) {
	// With the /48, the address of the account's finding and the account:
	// 16 checked one by one, 17 in full.
	for _, tracked := range []int{maxIncremental - 3, maxIncremental - 2} {
		t.Run(fmt.Sprint("tracked=", tracked), func(t *testing.T) {
			b := New(Options{Window: time.Hour})
			base := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
			at := func(d time.Duration, a shopguard.Action, shop, actor, ip string, fs ...shopguard.Finding) {
				e := shopguard.Event{Time: base.Add(d), ShopID: shop, Actor: actor, Action: a, IP: netip.MustParseAddr(ip)}
				b.Observe(&e, fs)
			}
			// Before any finding: one failure per future source, an
			// IPv6 failure inside a future /48, an unrelated one.
			for i := range tracked {
				at(time.Duration(i)*time.Second, shopguard.ActionLoginFailure, "shop-1", fmt.Sprint("user", i), fmt.Sprintf("198.51.100.%d", i+1))
			}
			at(time.Minute, shopguard.ActionLoginFailure, "shop-2", "six", "2001:db8:7:1::5")
			at(time.Minute, shopguard.ActionLoginFailure, "shop-3", "bystander", "203.0.113.9")
			at(time.Minute, shopguard.ActionLoginFailure, "shop-4", "owner", "192.0.2.50")
			// Later, findings naming them (each at its own address, and
			// the account of shop-4 from elsewhere).
			t1 := 10 * time.Minute
			for i := range tracked {
				ip := fmt.Sprintf("198.51.100.%d", i+1)
				at(t1, shopguard.ActionLoginFailure, "shop-9", "x", "192.0.2.1", shopguard.Finding{ID: fmt.Sprint("f", i),
					Rule: shopguard.RuleBruteForce, Time: base.Add(t1), IP: ip})
			}
			at(t1, shopguard.ActionLoginFailure, "shop-9", "x", "192.0.2.1", shopguard.Finding{ID: "f48",
				Rule: shopguard.RuleCredentialStuffing, Time: base.Add(t1), IP: "2001:db8:7::/48"})
			at(t1, shopguard.ActionLoginFailure, "shop-4", "owner", "192.0.2.2", shopguard.Finding{ID: "fa",
				Rule: shopguard.RuleBruteForce, Time: base.Add(t1), ShopID: "shop-4", Actor: "owner", IP: "192.0.2.2"})
			// Enough later traffic to expire, scan and compact the ring.
			for i := range 200 {
				at(t1+time.Duration(i)*time.Minute, shopguard.ActionLoginSuccess, "shop-5", fmt.Sprint("late", i), "203.0.113.77")
			}
			require.Positive(t, b.base, "the ring and its names were compacted")
			require.Equal(t, "shop-5\x00late199", string(b.name(&b.ring[len(b.ring)-1])))

			tried := map[string]int64{}
			for _, in := range b.Report(base).Incidents {
				for _, a := range in.Accounts {
					tried[a.ShopID+"/"+a.Actor] += a.FailedLogins
				}
			}
			for i := range tracked {
				require.Equal(t, int64(1), tried[fmt.Sprint("shop-1/user", i)], "user%d", i)
			}
			require.Equal(t, int64(1), tried["shop-2/six"], "inside the /48")
			require.Equal(t, int64(2), tried["shop-4/owner"], "the account's own failure before its finding, and the one raising it")
			require.NotContains(t, tried, "shop-3/bystander")
			require.NotContains(t, tried, "shop-5/late0")
		})
	}
}
