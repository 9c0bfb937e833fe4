package detect

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// mapLocator is a map-backed Locator: addresses are located by the /16 (or
// /32 for IPv6) they fall in.
type mapLocator map[netip.Prefix]shopguard.Geo

func (m mapLocator) Locate(ip netip.Addr) (shopguard.Geo, bool) {
	for p, g := range m {
		if p.Contains(ip) {
			return g, true
		}
	}
	return shopguard.Geo{}, false
}

// Real coordinates and typical accuracy radii.
var (
	tokyo     = shopguard.Geo{Lat: 35.6895, Lon: 139.6917, RadiusKM: 20, Country: "JP", City: "Tokyo"}
	osaka     = shopguard.Geo{Lat: 34.6937, Lon: 135.5023, RadiusKM: 20, Country: "JP", City: "Osaka"}
	frankfurt = shopguard.Geo{Lat: 50.1109, Lon: 8.6821, RadiusKM: 20, Country: "DE", City: "Frankfurt am Main"}
)

var testLocator = mapLocator{
	netip.MustParsePrefix("126.0.0.0/16"):  tokyo,
	netip.MustParsePrefix("61.200.0.0/16"): osaka,
	netip.MustParsePrefix("18.184.0.0/16"): frankfurt,
}

var t0 = time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)

// at is t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

func event(t time.Time, shop, actor string, a shopguard.Action, ip string) shopguard.Event {
	return shopguard.Event{Time: t, ShopID: shop, Actor: actor, Action: a, IP: netip.MustParseAddr(ip)}
}

func fail(t time.Time, shop, actor, ip string) shopguard.Event {
	return event(t, shop, actor, shopguard.ActionLoginFailure, ip)
}

func success(t time.Time, shop, actor, ip string) shopguard.Event {
	return event(t, shop, actor, shopguard.ActionLoginSuccess, ip)
}

func export(t time.Time, shop, actor, ip string, records int64) shopguard.Event {
	ev := event(t, shop, actor, shopguard.ActionCustomersExport, ip)
	ev.Records = records
	return ev
}

// run feeds events to a fresh engine and returns the findings.
func run(t testing.TB, cfg Config, loc shopguard.Locator, evs []shopguard.Event) []shopguard.Finding {
	t.Helper()
	opts := []Option{WithMetrics(NewMetrics(prometheus.NewRegistry()))}
	if loc != nil {
		opts = append(opts, WithLocator(loc))
	}
	e, err := New(cfg, opts...)
	require.NoError(t, err)
	var out []shopguard.Finding
	for i := range evs {
		out = e.Process(out, &evs[i])
	}
	return out
}

// rules lists the rule of each finding, in order.
func rules(fs []shopguard.Finding) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, f.Rule)
	}
	return out
}

func slicesSortByTime(evs []shopguard.Event) {
	slices.SortStableFunc(evs, func(a, b shopguard.Event) int { return a.Time.Compare(b.Time) })
}

// classicConfig is DefaultConfig with only the rules of SPEC §3 (not the
// behaviour rules of §3.1 nor the campaign rules of §3.2), for the tests written against those rules
// alone: a fast stuffing run would also be a failure_burst, which those
// tests do not mean to pin.
func classicConfig() Config {
	c := DefaultConfig
	c.UnfamiliarLogin.Enabled = false
	c.SessionHijack.Enabled = false
	c.RiskyChange.Enabled = false
	c.FailureBurst.Enabled = false
	c.StuffingWave.Enabled = false
	c.LeakedCredentialUse.Enabled = false
	return c
}
