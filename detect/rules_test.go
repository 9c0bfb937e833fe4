package detect

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

func TestBruteForce(t *testing.T) {
	failures := func(n int, span time.Duration) []shopguard.Event {
		var evs []shopguard.Event
		for i := range n {
			var d time.Duration
			if n > 1 {
				d = span * time.Duration(i) / time.Duration(n-1)
			}
			evs = append(evs, fail(at(d), "shop-1", "owner@example.jp", fmt.Sprintf("45.95.147.%d", 1+i%3)))
		}
		return evs
	}
	tests := []struct {
		name string
		evs  []shopguard.Event
		want int
	}{
		{"9 failures", failures(9, time.Minute), 0},
		{"10 failures", failures(10, time.Minute), 1},
		{"10 failures spanning exactly the window", failures(10, 10*time.Minute), 1},
		{"10 failures spanning the window and a second", failures(10, 10*time.Minute+time.Second), 0},
		{"30 failures in one window fire once", failures(30, 9*time.Minute), 1},
		{"60 failures over 20 minutes fire once per window", failures(60, 20*time.Minute), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := run(t, classicConfig(), nil, tt.evs)
			require.Len(t, fs, tt.want)
			for _, f := range fs {
				require.Equal(t, shopguard.RuleBruteForce, f.Rule)
				require.Equal(t, shopguard.SeverityMedium, f.Severity)
				require.Equal(t, "owner@example.jp", f.Actor)
				require.GreaterOrEqual(t, f.Evidence.Count, int64(10))
				require.Equal(t, "10m", f.Evidence.Window)
				require.Len(t, f.Evidence.Addresses, 3)
			}
		})
	}

	t.Run("other accounts do not add up", func(t *testing.T) {
		var evs []shopguard.Event
		for i := range 10 {
			evs = append(evs, fail(at(time.Duration(i)*time.Second), "shop-1", fmt.Sprintf("staff%d", i%2), "45.95.147.1"))
		}
		require.Empty(t, run(t, classicConfig(), nil, evs))
	})

	t.Run("out of order within the window", func(t *testing.T) {
		evs := failures(10, 5*time.Minute)
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		require.Len(t, run(t, classicConfig(), nil, evs), 1)
	})

	t.Run("threshold is configurable", func(t *testing.T) {
		cfg := classicConfig()
		cfg.BruteForce.Threshold = 3
		require.Len(t, run(t, cfg, nil, failures(3, time.Minute)), 1)
		cfg.BruteForce.Enabled = false
		require.Empty(t, run(t, cfg, nil, failures(30, time.Minute)))
	})
}

func TestCredentialStuffing(t *testing.T) {
	// spray fails n distinct accounts; addr picks each failure's address.
	spray := func(n int, span time.Duration, addr func(i int) string) []shopguard.Event {
		var evs []shopguard.Event
		for i := range n {
			var d time.Duration
			if n > 1 {
				d = span * time.Duration(i) / time.Duration(n-1)
			}
			evs = append(evs, fail(at(d), fmt.Sprintf("shop-%d", i), "owner", addr(i)))
		}
		return evs
	}
	one := func(int) string { return "45.95.147.9" }
	tests := []struct {
		name   string
		evs    []shopguard.Event
		wantIP []string
	}{
		{"19 accounts", spray(19, time.Minute, one), nil},
		{"20 accounts", spray(20, time.Minute, one), []string{"45.95.147.9"}},
		{"20 accounts spanning exactly the window", spray(20, 10*time.Minute, one), []string{"45.95.147.9"}},
		{"20 accounts spanning the window and a second", spray(20, 10*time.Minute+time.Second, one), nil},
		{"60 accounts in one window: one finding", spray(60, 5*time.Minute, one), []string{"45.95.147.9"}},
		{"rotation inside an IPv4 /24", spray(40, 5*time.Minute, func(i int) string { return fmt.Sprintf("45.95.147.%d", 10+i) }),
			[]string{"45.95.147.0/24"}},
		{"19 addresses of a /24", spray(19, 5*time.Minute, func(i int) string { return fmt.Sprintf("45.95.147.%d", 10+i) }), nil},
		{"rotation across /24s does not add up", spray(40, 5*time.Minute, func(i int) string { return fmt.Sprintf("45.95.%d.1", i) }), nil},
		{"rotation inside an IPv6 /64", spray(25, 5*time.Minute, func(i int) string { return fmt.Sprintf("2001:db8:1:2::%x", 1000+i) }),
			[]string{"2001:db8:1::/48"}}, // the widest level that crossed (SPEC §3.2)
		{"rotation across IPv6 /64s of one /48", spray(25, 5*time.Minute, func(i int) string { return fmt.Sprintf("2001:db8:1:%x::1", i) }), []string{"2001:db8:1::/48"}},
		{"rotation across IPv6 /48s does not add up", spray(25, 5*time.Minute, func(i int) string { return fmt.Sprintf("2001:db8:%x::1", i) }), nil},
		{"one address of a rotating block crosses: one finding", spray(60, 5*time.Minute, func(i int) string {
			if i%2 == 0 {
				return "45.95.147.1"
			}
			return fmt.Sprintf("45.95.147.%d", 10+i)
		}), []string{"45.95.147.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := run(t, classicConfig(), nil, tt.evs)
			var ips []string
			for _, f := range fs {
				require.Equal(t, shopguard.RuleCredentialStuffing, f.Rule)
				require.Empty(t, f.Actor)
				require.Empty(t, f.ShopID)
				require.Equal(t, int64(20), f.Evidence.Count)
				require.Len(t, f.Evidence.Accounts, 20)
				ips = append(ips, f.IP)
			}
			require.Equal(t, tt.wantIP, ips)
		})
	}

	t.Run("the same account many times counts once", func(t *testing.T) {
		var evs []shopguard.Event
		for i := range 100 {
			evs = append(evs, fail(at(time.Duration(i)*time.Second), "shop-1", fmt.Sprintf("user%d", i%19), "45.95.147.9"))
		}
		require.NotContains(t, rules(run(t, classicConfig(), nil, evs)), shopguard.RuleCredentialStuffing)
	})

	t.Run("a long campaign fires once per window", func(t *testing.T) {
		// 20 new accounts every 5 minutes for 30 minutes.
		evs := spray(120, 30*time.Minute, one)
		fs := run(t, classicConfig(), nil, evs)
		require.Len(t, fs, 3) // at ~3m, then not before 13m, then not before 23m
		for i := 1; i < len(fs); i++ {
			require.GreaterOrEqual(t, fs[i].Time.Sub(fs[i-1].Time), 10*time.Minute)
		}
	})
}

func TestAccountTakeover(t *testing.T) {
	attempt := func(failures int, from string, successAfter time.Duration) []shopguard.Event {
		var evs []shopguard.Event
		for i := range failures {
			evs = append(evs, fail(at(time.Duration(i)*time.Second), "shop-1", "owner", from))
		}
		return append(evs, success(at(successAfter), "shop-1", "owner", "45.95.147.9"))
	}
	tests := []struct {
		name string
		evs  []shopguard.Event
		want []string
	}{
		{"4 failures then success", attempt(4, "45.95.147.9", time.Minute), []string{}},
		{"5 failures then success", attempt(5, "45.95.147.9", time.Minute), []string{shopguard.RuleAccountTakeover}},
		{"5 failures then success at the window edge", attempt(5, "45.95.147.9", time.Hour), []string{shopguard.RuleAccountTakeover}},
		{"5 failures then success after the window", attempt(5, "45.95.147.9", time.Hour+5*time.Second), []string{}},
		{"5 failures from another address", attempt(5, "45.95.147.10", time.Minute), []string{}},
		{"10 failures: brute force and takeover", attempt(10, "45.95.147.9", time.Minute),
			[]string{shopguard.RuleBruteForce, shopguard.RuleAccountTakeover}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := run(t, classicConfig(), nil, tt.evs)
			require.Equal(t, tt.want, rules(fs))
			if len(fs) > 0 {
				f := fs[len(fs)-1]
				require.Equal(t, shopguard.SeverityCritical, f.Severity)
				require.Equal(t, "failures", f.Evidence.Cause)
				require.Equal(t, "45.95.147.9", f.IP)
			}
		})
	}

	stuffed := func(successAt time.Duration, from string) []shopguard.Event {
		var evs []shopguard.Event
		for i := range 20 {
			evs = append(evs, fail(at(time.Duration(i)*time.Second), fmt.Sprintf("shop-%d", i), "owner", fmt.Sprintf("45.95.147.%d", 1+i%2)))
		}
		return append(evs, success(at(successAt), "shop-99", "owner", from))
	}
	t.Run("success from a flagged block", func(t *testing.T) {
		fs := run(t, classicConfig(), nil, stuffed(time.Minute, "45.95.147.200"))
		require.Equal(t, []string{shopguard.RuleCredentialStuffing, shopguard.RuleAccountTakeover}, rules(fs))
		require.Equal(t, shopguard.RuleCredentialStuffing, fs[1].Evidence.Cause)
		require.Equal(t, fs[0].ID, fs[1].Evidence.CauseID)
	})
	t.Run("success from outside the flagged block", func(t *testing.T) {
		require.Equal(t, []string{shopguard.RuleCredentialStuffing}, rules(run(t, classicConfig(), nil, stuffed(time.Minute, "45.95.148.1"))))
	})
	t.Run("success an hour after the flag", func(t *testing.T) {
		require.Equal(t, []string{shopguard.RuleCredentialStuffing}, rules(run(t, classicConfig(), nil, stuffed(time.Hour+20*time.Second, "45.95.147.1"))))
	})
	t.Run("stuffing flag can be switched off", func(t *testing.T) {
		cfg := classicConfig()
		cfg.AccountTakeover.AfterStuffing = false
		require.Equal(t, []string{shopguard.RuleCredentialStuffing}, rules(run(t, cfg, nil, stuffed(time.Minute, "45.95.147.1"))))
	})
}

func TestImpossibleTravel(t *testing.T) {
	pair := func(first, second string, gap time.Duration) []shopguard.Event {
		return []shopguard.Event{
			success(at(0), "shop-17", "owner@example.jp", first),
			success(at(gap), "shop-17", "owner@example.jp", second),
		}
	}
	t.Run("Tokyo to Frankfurt in 30 minutes", func(t *testing.T) {
		fs := run(t, classicConfig(), testLocator, pair("126.0.0.1", "18.184.0.1", 30*time.Minute))
		require.Len(t, fs, 1)
		f := fs[0]
		require.Equal(t, shopguard.RuleImpossibleTravel, f.Rule)
		require.Equal(t, shopguard.SeverityHigh, f.Severity)
		require.Equal(t, "18.184.0.1", f.IP)
		require.Equal(t, "Tokyo", f.Evidence.From.City)
		require.Equal(t, "Frankfurt am Main", f.Evidence.To.City)
		require.InDelta(t, 9330-40, f.Evidence.DistanceKM, 30)
		require.InDelta(t, f.Evidence.DistanceKM*2, f.Evidence.SpeedKMH, 1)
		require.Equal(t, "login from Frankfurt am Main, DE 9,292 km from Tokyo, JP within 30m", f.Summary)
	})
	t.Run("Tokyo to Osaka in 10 minutes with 500 km radii", func(t *testing.T) {
		wide := mapLocator{}
		for p, g := range testLocator {
			g.RadiusKM = 500
			wide[p] = g
		}
		require.Empty(t, run(t, classicConfig(), wide, pair("126.0.0.1", "61.200.0.1", 10*time.Minute)))
	})
	t.Run("Tokyo to Frankfurt in 10 hours", func(t *testing.T) {
		require.Empty(t, run(t, classicConfig(), testLocator, pair("126.0.0.1", "18.184.0.1", 10*time.Hour)))
	})

	// Two points on the equator 10° apart, radius 0: d = 1,111.95 km.
	d := haversineKM(0, 0, 0, 10)
	equator := mapLocator{
		netip.MustParsePrefix("1.1.0.0/16"): {Lat: 0, Lon: 0},
		netip.MustParsePrefix("1.2.0.0/16"): {Lat: 0, Lon: 10},
		netip.MustParsePrefix("1.3.0.0/16"): {Lat: 0, Lon: 4.49},              // 499.3 km from 1.1
		netip.MustParsePrefix("1.4.0.0/16"): {Lat: 0, Lon: 4.51},              // 501.5 km from 1.1
		netip.MustParsePrefix("1.5.0.0/16"): {Lat: 0, Lon: 10, RadiusKM: 306}, // 1.2 with a radius
	}
	hoursAt := func(kmh float64) time.Duration { return time.Duration(d / kmh * float64(time.Hour)) }
	tests := []struct {
		name   string
		second string
		gap    time.Duration
		want   int
	}{
		{"999 km/h", "1.2.0.1", hoursAt(999), 0},
		{"1,001 km/h", "1.2.0.1", hoursAt(1001), 1},
		{"499 km at any speed", "1.3.0.1", time.Second, 0},
		{"501 km in a second", "1.4.0.1", time.Second, 1},
		{"the same instant", "1.2.0.1", 0, 1},
		{"radius leaves 805 km: 1,001 km/h of it", "1.5.0.1", time.Duration((d - 306) / 1001 * float64(time.Hour)), 1},
		{"radius leaves 805 km: 999 km/h of it", "1.5.0.1", time.Duration((d - 306) / 999 * float64(time.Hour)), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, run(t, classicConfig(), equator, pair("1.1.0.1", tt.second, tt.gap)), tt.want)
		})
	}

	t.Run("unlocatable addresses never count", func(t *testing.T) {
		// 10.0.0.1 is not in the locator (the GeoIP locator never places
		// private addresses).
		require.Empty(t, run(t, classicConfig(), testLocator, pair("126.0.0.1", "10.0.0.1", time.Minute)))
		require.Empty(t, run(t, classicConfig(), testLocator, pair("10.0.0.1", "18.184.0.1", time.Minute)))
	})
	t.Run("allowlisted networks never count", func(t *testing.T) {
		cfg := classicConfig()
		var n Network
		require.NoError(t, n.UnmarshalText([]byte("18.184.0.0/16")))
		cfg.Allowlist = []Network{n}
		require.Empty(t, run(t, cfg, testLocator, pair("126.0.0.1", "18.184.0.1", time.Minute)))
		require.Len(t, run(t, classicConfig(), testLocator, pair("126.0.0.1", "18.184.0.1", time.Minute)), 1)
	})
	t.Run("without a locator travel is not judged", func(t *testing.T) {
		require.Empty(t, run(t, classicConfig(), nil, pair("126.0.0.1", "18.184.0.1", time.Minute)))
	})
	t.Run("out of order: the late login is compared with both neighbours", func(t *testing.T) {
		evs := []shopguard.Event{
			success(at(0), "s", "a", "126.0.0.1"),
			success(at(2*time.Hour), "s", "a", "126.0.0.2"),
			success(at(time.Hour), "s", "a", "18.184.0.1"), // arrives last
		}
		fs := run(t, classicConfig(), testLocator, evs)
		require.Len(t, fs, 1)
		require.Equal(t, "18.184.0.1", fs[0].IP)
	})
	t.Run("fires once per account within the suppression window", func(t *testing.T) {
		evs := []shopguard.Event{
			success(at(0), "s", "a", "126.0.0.1"),
			success(at(10*time.Minute), "s", "a", "18.184.0.1"),
			success(at(20*time.Minute), "s", "a", "126.0.0.1"),
			success(at(90*time.Minute), "s", "a", "18.184.0.1"),
		}
		require.Len(t, run(t, classicConfig(), testLocator, evs), 2)
	})
}

func TestBulkExport(t *testing.T) {
	tests := []struct {
		name    string
		evs     []shopguard.Event
		want    int
		wantSev shopguard.Severity
	}{
		{"9,999 records", []shopguard.Event{export(at(0), "s", "a", "126.0.0.1", 9999)}, 0, ""},
		{"10,000 records", []shopguard.Event{export(at(0), "s", "a", "126.0.0.1", 10000)}, 1, shopguard.SeverityHigh},
		{"5,000 + 5,000 within the hour", []shopguard.Event{
			export(at(0), "s", "a", "126.0.0.1", 5000), export(at(time.Hour), "s", "a", "126.0.0.1", 5000)}, 1, shopguard.SeverityHigh},
		{"5,000 + 5,000 an hour and a second apart", []shopguard.Event{
			export(at(0), "s", "a", "126.0.0.1", 5000), export(at(time.Hour+time.Second), "s", "a", "126.0.0.1", 5000)}, 0, ""},
		{"two accounts do not add up", []shopguard.Event{
			export(at(0), "s", "a", "126.0.0.1", 5000), export(at(time.Minute), "s", "b", "126.0.0.1", 5000)}, 0, ""},
		{"once per window", []shopguard.Event{
			export(at(0), "s", "a", "126.0.0.1", 20000), export(at(time.Minute), "s", "a", "126.0.0.1", 20000)}, 1, shopguard.SeverityHigh},
		{"orders count too", []shopguard.Event{func() shopguard.Event {
			ev := export(at(0), "s", "a", "126.0.0.1", 10000)
			ev.Action = shopguard.ActionOrdersExport
			return ev
		}()}, 1, shopguard.SeverityHigh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := run(t, classicConfig(), nil, tt.evs)
			require.Len(t, fs, tt.want)
			for _, f := range fs {
				require.Equal(t, shopguard.RuleBulkExport, f.Rule)
				require.Equal(t, tt.wantSev, f.Severity)
			}
		})
	}

	hijack := func(exportAfter time.Duration, records int64) []shopguard.Event {
		return []shopguard.Event{
			success(at(0), "s", "a", "126.0.0.1"),
			success(at(30*time.Minute), "s", "a", "18.184.0.1"),
			export(at(30*time.Minute+exportAfter), "s", "a", "18.184.0.1", records),
		}
	}
	t.Run("any export within an hour after travel is critical", func(t *testing.T) {
		fs := run(t, classicConfig(), testLocator, hijack(59*time.Minute, 12))
		require.Equal(t, []string{shopguard.RuleImpossibleTravel, shopguard.RuleBulkExport}, rules(fs))
		require.Equal(t, shopguard.SeverityCritical, fs[1].Severity)
		require.Equal(t, fs[0].ID, fs[1].Evidence.CauseID)
		require.Equal(t, int64(12), fs[1].Evidence.Records)
	})
	t.Run("a small export after the hour is not", func(t *testing.T) {
		require.Equal(t, []string{shopguard.RuleImpossibleTravel}, rules(run(t, classicConfig(), testLocator, hijack(61*time.Minute, 12))))
	})
	t.Run("a large export after the hour is high", func(t *testing.T) {
		fs := run(t, classicConfig(), testLocator, hijack(61*time.Minute, 45000))
		require.Equal(t, shopguard.SeverityHigh, fs[len(fs)-1].Severity)
	})
}

// The attack the platform saw after the 2018 leak: a leaked list tried
// against 60 shops from one address, three successes, one of them exports
// 45,000 customers; benign shops around it stay quiet.
func TestLeakedListScenario(t *testing.T) {
	const attacker = "45.95.147.9"
	var evs []shopguard.Event
	// Benign traffic: owners log in from Tokyo, one typo each, small exports.
	for i := range 40 {
		shop, home := fmt.Sprintf("benign-%d", i), fmt.Sprintf("126.0.%d.1", i)
		evs = append(evs,
			fail(at(time.Duration(i)*time.Second), shop, "owner", home),
			success(at(time.Duration(i)*time.Second+10*time.Second), shop, "owner", home),
			export(at(time.Duration(i)*time.Second+time.Minute), shop, "owner", home, 800))
	}
	for i := range 60 {
		evs = append(evs, fail(at(2*time.Minute+time.Duration(i)*5*time.Second), fmt.Sprintf("victim-%d", i), "owner", attacker))
	}
	for _, i := range []int{25, 40, 55} {
		evs = append(evs, success(at(8*time.Minute+time.Duration(i)*time.Second), fmt.Sprintf("victim-%d", i), "owner", attacker))
	}
	evs = append(evs, export(at(12*time.Minute), "victim-40", "owner", attacker, 45000))
	slicesSortByTime(evs)

	fs := run(t, classicConfig(), testLocator, evs)
	require.Equal(t, []string{
		shopguard.RuleCredentialStuffing,
		shopguard.RuleAccountTakeover, shopguard.RuleAccountTakeover, shopguard.RuleAccountTakeover,
		shopguard.RuleBulkExport,
	}, rules(fs))
	require.Equal(t, attacker, fs[0].IP)
	for _, f := range fs[1:4] {
		require.Equal(t, shopguard.SeverityCritical, f.Severity)
		require.Equal(t, fs[0].ID, f.Evidence.CauseID)
	}
	require.Equal(t, "victim-40", fs[4].ShopID)
	require.Equal(t, shopguard.SeverityCritical, fs[4].Severity)
	require.Equal(t, int64(45000), fs[4].Evidence.Records)
	for _, f := range fs {
		require.NotContains(t, f.ShopID, "benign")
	}
}
