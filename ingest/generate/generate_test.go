package generate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
)

// attackHeavy is a config with many attacks of every kind in few events,
// at a low event rate so that a sample spans hours of event time and even
// the longest episodes complete.
func attackHeavy(seed int64) Config {
	cfg := DefaultConfig
	cfg.Seed = seed
	cfg.EventsPerSecond = 5
	cfg.AttackRate = 40
	return cfg
}

func encode(t *testing.T, cfg Config, n int64) ([]byte, []Label) {
	t.Helper()
	cfg.Events = n
	g, err := New(cfg)
	require.NoError(t, err)
	var buf bytes.Buffer
	written, err := WriteJSONL(&buf, g)
	require.NoError(t, err)
	require.Equal(t, n, written)
	return buf.Bytes(), g.TakeLabels(nil)
}

func TestDeterministic(t *testing.T) {
	a, la := encode(t, attackHeavy(7), 30000)
	b, lb := encode(t, attackHeavy(7), 30000)
	require.Equal(t, a, b, "same seed, same bytes")
	require.Equal(t, la, lb)
	require.NotEmpty(t, la)

	c, lc := encode(t, attackHeavy(8), 30000)
	require.NotEqual(t, a, c, "another seed, other events")
	require.NotEqual(t, la, lc)
	require.Equal(t, 30000, bytes.Count(a, []byte("\n")))
}

func TestEventsValidAndOrdered(t *testing.T) {
	cfg := DefaultConfig
	recs, labels := run(t, cfg, 200_000)
	require.Len(t, recs, 200_000)
	require.NotEmpty(t, labels)

	start := cfg.Start
	prev := start
	ids := map[string]bool{}
	reasons := []string{"bad_password", "unknown_user", "locked", "mfa_failed"}
	seen := map[shopguard.Action]int{}
	var buf []byte
	lan := netip.MustParsePrefix("10.0.0.0/8")
	for i := range recs {
		ev := &recs[i].ev
		if ev.Time.Before(prev) {
			t.Fatalf("event %d goes back in time: %s after %s", i, ev.Time, prev)
		}
		prev = ev.Time
		problem := ""
		switch {
		case !ev.Time.Equal(ev.Time.Truncate(time.Millisecond)):
			problem = "time has more than millisecond precision"
		case len(ev.ShopID) < 1 || len(ev.ShopID) > 128:
			problem = "shop_id length"
		case len(ev.Actor) < 1 || len(ev.Actor) > 256:
			problem = "actor length"
		case !ev.IP.IsValid():
			problem = "no ip"
		case ids[ev.ID]:
			problem = "duplicate id"
		case (ev.Action == shopguard.ActionLoginFailure) != slices.Contains(reasons, ev.Reason):
			problem = "reason on a non-failure or bad reason on a failure"
		case ev.Action.IsExport() != (ev.Records > 0):
			problem = "records on a non-export or none on an export"
		case ev.Action == shopguard.ActionLoginSuccess && ev.SessionID == "":
			problem = "login without session"
		}
		if _, ok := locate(ev.IP); !ok && !(ev.IP.Is4() && lan.Contains(ev.IP)) {
			problem = "address neither in a geodemo block nor an office LAN"
		}
		if problem != "" {
			t.Fatalf("event %d: %s: %+v", i, problem, *ev)
		}
		ids[ev.ID] = true
		seen[ev.Action]++

		if i%10 != 0 {
			continue
		}
		// The wire form decodes back to the same fields.
		buf = ingest.AppendJSON(buf[:0], ev)
		var m map[string]any
		require.NoError(t, json.Unmarshal(buf, &m), string(buf))
		tm, err := time.Parse(time.RFC3339Nano, m["time"].(string))
		require.NoError(t, err)
		require.True(t, tm.Equal(ev.Time))
		require.True(t, strings.HasSuffix(m["time"].(string), "Z"))
		require.Equal(t, ev.Action.String(), m["action"])
		require.Equal(t, ev.IP.String(), m["ip"])
		require.Equal(t, ev.ShopID, m["shop_id"])
		require.Equal(t, ev.Actor, m["actor"])
	}
	for _, a := range shopguard.Actions() {
		require.Positive(t, seen[a], "action %s never generated", a)
	}

	// The rate follows the configured mean shaped by the JST day.
	g, err := New(cfg)
	require.NoError(t, err)
	want := g.expectedEvents(start.UnixNano(), prev.UnixNano())
	var benign int
	for _, r := range recs {
		if r.label == "" {
			benign++
		}
	}
	require.InEpsilon(t, want, float64(benign), 0.1, "benign events over %s", prev.Sub(start))
}

// TestTripsExactlyTheLabels replays generated traffic through a plain
// re-statement of the default rules: every finding must match a label (so
// benign traffic trips nothing) and every label must be found (so each
// episode has the shape its rules need).
func TestTripsExactlyTheLabels(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		events int
	}{
		{"default", DefaultConfig, 200_000},
		{"attack-heavy", attackHeavy(3), 100_000},
		{"night", func() Config {
			c := attackHeavy(4)
			c.Start = time.Date(2026, 1, 10, 15, 0, 0, 0, time.UTC) // Sunday midnight JST
			return c
		}(), 100_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, all, pending := runPending(t, tc.cfg, tc.events)
			require.NotEmpty(t, pending, "the sample cuts episodes off")
			// The oracle has no profiles: an episode that relies on
			// unfamiliar_login is set aside like an unfinished one, and
			// unfamiliar_login is dropped from the others.
			var labels []Label
			for _, l := range all {
				if l.Attack == AttackQuietTakeover {
					pending = append(pending, l)
					continue
				}
				l.Rules = slices.DeleteFunc(slices.Clone(l.Rules), func(r string) bool { return r == shopguard.RuleUnfamiliarLogin })
				labels = append(labels, l)
			}
			// Only episodes that finished within the sample can be held to
			// their rules; findings about unfinished ones — triggered by
			// their events or matching their labels — are set aside.
			done := map[string]bool{}
			for _, l := range labels {
				done[l.ID] = true
			}
			o := newOracle()
			unfinished := newMatcher(pending)
			var findings []shopguard.Finding
			for i := range recs {
				n := len(o.out)
				o.feed(&recs[i].ev)
				if id := recs[i].label; id != "" && !done[id] {
					continue
				}
				for _, f := range o.out[n:] {
					if len(unfinished.match(nil, &f)) == 0 {
						findings = append(findings, f)
					}
				}
			}
			complete := labels
			rep := Evaluate(complete, findings)
			var table strings.Builder
			require.NoError(t, rep.WriteTable(&table))
			for _, s := range rep.Rules {
				require.Zero(t, s.FalsePositives(), "%s: findings no label explains\n%s\n%s", s.Rule, table.String(), unexplained(complete, findings, s.Rule))
				require.Equal(t, s.Labels, s.Detected, "%s: labels without finding\n%s", s.Rule, table.String())
			}
			require.Positive(t, rep.Total.Labels)
			t.Logf("%d events, %d labels\n%s", len(recs), len(complete), table.String())
		})
	}
}

// unexplained lists findings of rule matching no label, for failure messages.
func unexplained(labels []Label, findings []shopguard.Finding, rule string) string {
	var b strings.Builder
	m := newMatcher(labels)
	for _, f := range findings {
		if f.Rule != rule {
			continue
		}
		if len(m.match(nil, &f)) == 0 {
			fmt.Fprintf(&b, "%s %s %s/%s %s\n", f.Rule, f.Time.Format(time.RFC3339), f.ShopID, f.Actor, f.IP)
		}
	}
	return b.String()
}

func TestBenignStaysBelowThresholds(t *testing.T) {
	recs, _ := run(t, DefaultConfig, 200_000)
	fails := map[shopguard.Account][]int64{}
	exports := map[shopguard.Account][]export{}
	blocks := map[netip.Prefix][]srcFail{}
	hour := int64(time.Hour)
	for _, r := range recs {
		if r.label != "" {
			continue
		}
		ev := &r.ev
		t0 := ev.Time.UnixNano()
		acc := shopguard.Account{ShopID: ev.ShopID, Actor: ev.Actor}
		switch {
		case ev.Action == shopguard.ActionLoginFailure:
			fails[acc] = append(prune(fails[acc], func(x int64) bool { return t0-x > hour }), t0)
			require.Less(t, len(fails[acc]), 5, "%v fails 5 times within an hour at %s", acc, ev.Time)
			block, _ := ev.IP.Prefix(map[bool]int{true: 24, false: 64}[ev.IP.Is4()])
			blocks[block] = append(prune(blocks[block], func(f srcFail) bool { return t0-f.t > int64(10*time.Minute) }), srcFail{t: t0, acc: acc})
			distinct := map[shopguard.Account]bool{}
			for _, f := range blocks[block] {
				distinct[f.acc] = true
			}
			require.LessOrEqual(t, len(distinct), maxBlockAccounts, "%s at %s", block, ev.Time)
		case ev.Action.IsExport():
			exports[acc] = append(prune(exports[acc], func(e export) bool { return t0-e.t > hour }), export{t: t0, n: ev.Records})
			var sum int64
			for _, e := range exports[acc] {
				sum += e.n
			}
			require.Less(t, sum, int64(maxBenignExport), "%v exports %d within an hour at %s", acc, sum, ev.Time)
		}
	}
	require.NotEmpty(t, fails, "benign traffic has typos")
	require.NotEmpty(t, exports, "benign traffic exports")
}

func TestBenignTravelIsPossible(t *testing.T) {
	// A low rate spreads the sample over a day and a half, with the nights
	// in which people travel.
	cfg := DefaultConfig
	cfg.EventsPerSecond = 3
	cfg.AttackRate = 0
	recs, _ := run(t, cfg, 400_000)
	last := map[shopguard.Account]located{}
	moves := map[bool]int{} // by abroad
	for _, r := range recs {
		ev := &r.ev
		if ev.Action != shopguard.ActionLoginSuccess {
			continue
		}
		c, ok := locate(ev.IP)
		if !ok {
			continue
		}
		acc := shopguard.Account{ShopID: ev.ShopID, Actor: ev.Actor}
		if p, ok := last[acc]; ok && p.c.Name != c.Name {
			km := haversineKM(p.c.Lat, p.c.Lon, c.Lat, c.Lon)
			h := float64(ev.Time.UnixNano()-p.t) / float64(time.Hour)
			require.LessOrEqual(t, km/h, float64(safeKMH), "%v: %s → %s, %.0f km in %.2f h", acc, p.c.Name, c.Name, km, h)
			moves[p.c.Country != c.Country]++
		}
		last[acc] = located{t: ev.Time.UnixNano(), c: c}
	}
	require.Positive(t, moves[false], "some users travel in their country")
	t.Logf("trips between cities: %d domestic, %d abroad", moves[false], moves[true])
}

func TestAttackShapes(t *testing.T) {
	// Four and a half days at one event a second, so that accounts leave
	// learning and quiet takeovers find victims.
	cfg := attackHeavy(11)
	cfg.EventsPerSecond = 1
	recs, labels := run(t, cfg, 400_000)
	byLabel := map[string][]shopguard.Event{}
	for _, r := range recs {
		if r.label != "" {
			byLabel[r.label] = append(byLabel[r.label], r.ev)
		}
	}
	kinds := map[string]int{}
	for _, l := range labels {
		evs := byLabel[l.ID]
		kinds[l.Attack]++
		require.Len(t, evs, l.Events, l.ID)
		require.True(t, evs[0].Time.Equal(l.Start) && evs[len(evs)-1].Time.Equal(l.End), l.ID)
		require.True(t, slices.IsSortedFunc(l.Rules, func(a, b string) int {
			return slices.Index(shopguard.Rules(), a) - slices.Index(shopguard.Rules(), b)
		}), l.ID)
		failed := map[shopguard.Account]bool{}
		addrs := map[netip.Addr]bool{}
		var success, exported []shopguard.Event
		for _, ev := range evs {
			switch {
			case ev.Action == shopguard.ActionLoginFailure:
				require.Less(t, ev.Time.Sub(l.Start), 10*time.Minute, l.ID)
				failed[shopguard.Account{ShopID: ev.ShopID, Actor: ev.Actor}] = true
				addrs[ev.IP] = true
			case ev.Action == shopguard.ActionLoginSuccess:
				success = append(success, ev)
			case ev.Action.IsExport():
				exported = append(exported, ev)
			}
		}
		switch l.Attack {
		case AttackStuffing:
			require.Len(t, addrs, 1, l.ID)
			for a := range addrs {
				require.Equal(t, []string{a.String()}, l.Sources)
			}
			require.GreaterOrEqual(t, len(failed), 20, l.ID)
			require.Len(t, success, len(l.Accounts))
			for _, s := range success {
				require.Equal(t, l.Sources[0], s.IP.String())
				before := map[shopguard.Account]bool{}
				for _, ev := range evs {
					if ev.Action == shopguard.ActionLoginFailure && ev.Time.Before(s.Time) {
						before[shopguard.Account{ShopID: ev.ShopID, Actor: ev.Actor}] = true
					}
				}
				require.GreaterOrEqual(t, len(before), 20, "success before the source is flagged")
			}
			if len(success) > 0 {
				require.Len(t, exported, 1)
				require.GreaterOrEqual(t, exported[0].Records, int64(20000))
				require.Contains(t, l.Accounts, shopguard.Account{ShopID: exported[0].ShopID, Actor: exported[0].Actor})
			}
		case AttackRotationV4, AttackRotationV6:
			block := netip.MustParsePrefix(l.Sources[0])
			require.Equal(t, map[string]int{AttackRotationV4: 24, AttackRotationV6: 64}[l.Attack], block.Bits())
			require.GreaterOrEqual(t, len(addrs), 20, l.ID)
			require.Len(t, addrs, len(failed), "one address per account")
			for a := range addrs {
				require.True(t, block.Contains(a), "%s outside %s", a, block)
			}
			require.Empty(t, success)
		case AttackBruteForce:
			require.Len(t, failed, 1)
			require.Len(t, addrs, 1)
			require.GreaterOrEqual(t, l.Events-len(success)-len(exported), 10)
			require.Equal(t, len(success) > 0, slices.Contains(l.Rules, shopguard.RuleAccountTakeover))
		case AttackHijack:
			require.Len(t, success, 2)
			from, _ := locate(success[0].IP)
			to, _ := locate(success[1].IP)
			km := haversineKM(from.Lat, from.Lon, to.Lat, to.Lon) - float64(from.RadiusKM) - float64(to.RadiusKM)
			h := success[1].Time.Sub(success[0].Time).Hours()
			require.Greater(t, km/h, 1000.0, "%s → %s", from.Name, to.Name)
			require.Contains(t, []string{"Frankfurt", "Moscow", "São Paulo", "Lagos"}, to.Name)
			require.Len(t, exported, 1)
			require.Greater(t, exported[0].Time, success[1].Time)
		case AttackQuietTakeover:
			require.Empty(t, failed, l.ID)
			require.Len(t, success, 1, l.ID)
			require.Contains(t, toolAgents[:4], success[0].UserAgent)
			require.Equal(t, shopguard.RuleUnfamiliarLogin, l.Rules[0])
			changes := 0
			for _, ev := range evs {
				require.Equal(t, success[0].IP, ev.IP, l.ID)
				if ev.Action.Sensitive() {
					changes++
					require.Less(t, ev.Time.Sub(success[0].Time), time.Hour)
				}
			}
			require.Equal(t, changes > 0, slices.Contains(l.Rules, shopguard.RuleRiskyChange), l.ID)
			require.Equal(t, len(exported) > 0, slices.Contains(l.Rules, shopguard.RuleBulkExport), l.ID)
		case AttackSessionTheft:
			require.Len(t, success, 1, l.ID)
			countries := map[string]bool{}
			for _, ev := range evs {
				require.Equal(t, success[0].SessionID, ev.SessionID, l.ID)
				c, ok := locate(ev.IP)
				require.True(t, ok, ev.IP)
				countries[c.Country] = true
			}
			require.Len(t, countries, 2, l.ID)
			require.Len(t, exported, 1)
			require.GreaterOrEqual(t, exported[0].Records, int64(1000))
			require.Contains(t, l.Rules, shopguard.RuleSessionHijack)
		case AttackBurst:
			require.Empty(t, success, l.ID)
			require.Len(t, addrs, 1, l.ID)
			require.GreaterOrEqual(t, len(failed), 2, l.ID)
			require.True(t, l.Events >= 5 && l.Events <= 7, l.ID)
			require.LessOrEqual(t, l.End.Sub(l.Start), time.Minute, l.ID)
			require.Equal(t, []string{shopguard.RuleFailureBurst}, l.Rules, l.ID)
		case AttackInsider:
			var sum int64
			for _, e := range exported {
				sum += e.Records
				require.Less(t, e.Time.Sub(exported[0].Time), time.Hour)
			}
			require.GreaterOrEqual(t, sum, int64(12000))
			require.Empty(t, failed)
		}
	}
	for _, k := range Attacks() {
		require.Positive(t, kinds[k], "no %s episode", k)
	}
}

func TestBoundedStreamLabelsAreComplete(t *testing.T) {
	cfg := attackHeavy(5)
	cfg.Events = 40_000
	g, err := New(cfg)
	require.NoError(t, err)
	count := map[string]int{}
	var ev shopguard.Event
	n := 0
	for g.Next(&ev) {
		n++
		if g.last != nil {
			count[g.last.label.ID]++
		}
	}
	require.Equal(t, 40_000, n)
	require.False(t, g.Next(&ev), "stays ended")
	labels := g.TakeLabels(nil)
	require.NotEmpty(t, labels)
	require.Empty(t, g.TakeLabels(nil), "labels are handed out once")
	ids := map[string]bool{}
	for _, l := range labels {
		require.Equal(t, l.Events, count[l.ID], "every event of %s is in the stream", l.ID)
		ids[l.ID] = true
	}
	for id := range count {
		require.True(t, ids[id], "events of %s are in the stream without a label", id)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*Config)
		errors []string
	}{
		{"default", func(*Config) {}, nil},
		{"no attacks", func(c *Config) { c.AttackRate = 0; c.Mix = AttackMix{} }, nil},
		{"one kind", func(c *Config) { c.Mix = AttackMix{Hijack: 1} }, nil},
		{"bad everything", func(c *Config) {
			c.Shops, c.EventsPerSecond, c.AttackRate, c.Events = -1, -5, -1, -3
			c.Mix.Insider = -1
		}, []string{"shops:", "events_per_second:", "attack_rate:", "events:", "mix.insider:"}},
		{"no start", func(c *Config) { c.Start = time.Time{} }, []string{"start:"}},
		{"all weights zero", func(c *Config) { c.Mix = AttackMix{} }, []string{"mix:"}},
		{"too many attacks", func(c *Config) { c.AttackRate = maxAttackRate + 1 }, []string{"attack_rate:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig
			tc.edit(&c)
			err := c.Validate()
			if tc.errors == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, s := range tc.errors {
				require.Contains(t, err.Error(), s)
			}
		})
	}

	// New fills the zero fields whose zero value means nothing.
	g, err := New(Config{Seed: 3})
	require.NoError(t, err)
	require.Equal(t, DefaultConfig.Shops, g.cfg.Shops)
	require.Equal(t, DefaultConfig.Start, g.cfg.Start)
	require.Zero(t, g.cfg.AttackRate, "zero attack rate stays: no attacks")
	_, err = New(Config{Shops: -2})
	require.ErrorContains(t, err, "shops:")
}

func TestConfigYAML(t *testing.T) {
	var c Config
	require.NoError(t, yaml.Unmarshal([]byte("seed: 9\nattack_rate: 2\nmix:\n  hijack: 3\n"), &c))
	want := DefaultConfig
	want.Seed, want.AttackRate = 9, 2
	want.Mix.Hijack = 3 // the other weights keep their defaults
	require.Equal(t, want, c)

	dec := yaml.NewDecoder(strings.NewReader("seed: 1\nshps: 4\n"))
	dec.KnownFields(true)
	require.ErrorContains(t, dec.Decode(&c), "shps")
}

func TestSmallPlatform(t *testing.T) {
	// Too few shops for a campaign: no stuffing label claims one.
	cfg := attackHeavy(2)
	cfg.Shops = 1
	recs, labels := run(t, cfg, 30_000)
	require.Len(t, recs, 30_000)
	for _, l := range labels {
		require.NotEqual(t, AttackStuffing, l.Attack)
		require.NotEqual(t, AttackRotationV4, l.Attack)
	}
}
