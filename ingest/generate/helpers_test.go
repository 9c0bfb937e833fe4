package generate

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/geodemo"
)

// rec is one generated event and the id of the label of the attack it
// belongs to ("" for benign traffic).
type rec struct {
	ev    shopguard.Event
	label string
}

// run draws n events (fewer if cfg.Events ends the stream first) and
// returns them with every label completed by then.
func run(t testing.TB, cfg Config, n int) ([]rec, []Label) {
	recs, labels, _ := runPending(t, cfg, n)
	return recs, labels
}

// runPending is run that also returns the labels of the episodes still
// running at the end of the sample.
func runPending(t testing.TB, cfg Config, n int) (recs []rec, done, pending []Label) {
	t.Helper()
	g, err := New(cfg)
	require.NoError(t, err)
	recs = make([]rec, 0, n)
	var ev shopguard.Event
	for len(recs) < n && g.Next(&ev) {
		r := rec{ev: ev}
		if g.last != nil {
			r.label = g.last.label.ID
		}
		recs = append(recs, r)
	}
	for _, a := range g.attacks {
		if a != nil {
			pending = append(pending, a.label)
		}
	}
	return recs, g.TakeLabels(nil), pending
}

// blocks lists every geodemo block with its city.
var blocks = func() (out []struct {
	p netip.Prefix
	c *geodemo.City
}) {
	for i := range geodemo.Cities {
		c := &geodemo.Cities[i]
		for _, p := range append(append([]netip.Prefix(nil), c.V4...), c.V6...) {
			out = append(out, struct {
				p netip.Prefix
				c *geodemo.City
			}{p, c})
		}
	}
	return out
}()

// locate finds the geodemo city of ip, as the demo GeoIP database would.
func locate(ip netip.Addr) (geodemo.City, bool) {
	for _, b := range blocks {
		if b.p.Contains(ip) {
			return *b.c, true
		}
	}
	return geodemo.City{}, false
}

// oracle is a plain re-statement of the default rules of SPEC §3, without
// suppression (it reports every event that crosses a threshold), used to
// check that generated traffic trips exactly what its labels say. It has
// no account profiles, so no unfamiliar_login (and no risky_change or
// bulk_export escalation after one): TestTripsExactlyTheLabels sets those
// aside, and cmd/shopguard's eval test holds the real engine to them.
type oracle struct {
	fails    map[shopguard.Account][]failure_ // failed logins per account
	srcFails map[netip.Prefix][]srcFail       // failed logins per address and block
	flagged  map[netip.Prefix]int64           // sources flagged for stuffing, when
	logins   map[shopguard.Account]located    // last located successful login
	exports  map[shopguard.Account][]export
	comp     map[shopguard.Account]int64 // when a takeover or travel finding named it
	bursts   map[netip.Addr][]int64      // failed logins per address, last minute
	sessions map[string]located          // where and when a session was first used
	risky    map[shopguard.Account]riskyLogin
	out      []shopguard.Finding
}

// riskyLogin is the last login of an account that raised a finding
// making sensitive changes risky.
type riskyLogin struct {
	t   int64
	ip  netip.Addr
	sid string
}

type failure_ struct {
	t  int64
	ip netip.Addr
}

type srcFail struct {
	t   int64
	acc shopguard.Account
}

type located struct {
	t int64
	c geodemo.City
}

func newOracle() *oracle {
	return &oracle{
		fails:    map[shopguard.Account][]failure_{},
		srcFails: map[netip.Prefix][]srcFail{},
		flagged:  map[netip.Prefix]int64{},
		logins:   map[shopguard.Account]located{},
		exports:  map[shopguard.Account][]export{},
		comp:     map[shopguard.Account]int64{},
		bursts:   map[netip.Addr][]int64{},
		sessions: map[string]located{},
		risky:    map[shopguard.Account]riskyLogin{},
	}
}

func (o *oracle) find(rule string, ev *shopguard.Event, acc shopguard.Account, ip string) {
	o.out = append(o.out, shopguard.Finding{Rule: rule, Time: ev.Time, ShopID: acc.ShopID, Actor: acc.Actor, IP: ip})
}

func (o *oracle) feed(ev *shopguard.Event) {
	t := ev.Time.UnixNano()
	acc := shopguard.Account{ShopID: ev.ShopID, Actor: ev.Actor}
	hour, tenMin := int64(time.Hour), int64(10*time.Minute)
	if ev.SessionID != "" && ev.Action != shopguard.ActionLoginFailure {
		// session_hijack: a session used from two countries within 24 h.
		if c, ok := locate(ev.IP); ok {
			first, seen := o.sessions[ev.SessionID]
			switch {
			case !seen:
				o.sessions[ev.SessionID] = located{t: t, c: c}
			case first.c.Country != c.Country && t-first.t <= int64(24*time.Hour):
				o.find(shopguard.RuleSessionHijack, ev, acc, ev.IP.String())
				o.comp[acc] = t
				o.risky[acc] = riskyLogin{t: t, ip: ev.IP, sid: ev.SessionID}
			}
		}
	}
	if ev.Action.Sensitive() {
		if r, ok := o.risky[acc]; ok && t-r.t <= hour && (r.ip == ev.IP || r.sid == ev.SessionID) {
			o.find(shopguard.RuleRiskyChange, ev, acc, ev.IP.String())
		}
	}
	switch {
	case ev.Action == shopguard.ActionLoginFailure:
		o.bursts[ev.IP] = append(prune(o.bursts[ev.IP], func(b int64) bool { return t-b > int64(time.Minute) }), t)
		if len(o.bursts[ev.IP]) >= 5 {
			o.find(shopguard.RuleFailureBurst, ev, shopguard.Account{}, ev.IP.String())
		}
		o.fails[acc] = append(prune(o.fails[acc], func(f failure_) bool { return t-f.t > hour }), failure_{t: t, ip: ev.IP})
		n := 0
		for _, f := range o.fails[acc] {
			if t-f.t <= tenMin {
				n++
			}
		}
		if n >= 10 {
			o.find(shopguard.RuleBruteForce, ev, acc, ev.IP.String())
		}
		addr := netip.PrefixFrom(ev.IP, ev.IP.BitLen())
		bits := 64
		if ev.IP.Is4() {
			bits = 24
		}
		block, _ := ev.IP.Prefix(bits)
		for _, src := range []netip.Prefix{addr, block} {
			o.srcFails[src] = append(prune(o.srcFails[src], func(f srcFail) bool { return t-f.t > tenMin }), srcFail{t: t, acc: acc})
			distinct := map[shopguard.Account]bool{}
			for _, f := range o.srcFails[src] {
				if t-f.t <= tenMin {
					distinct[f.acc] = true
				}
			}
			if len(distinct) >= 20 {
				ip := ev.IP.String()
				if src == block {
					ip = block.String()
				}
				o.find(shopguard.RuleCredentialStuffing, ev, shopguard.Account{}, ip)
				o.flagged[src] = t
				break
			}
		}
	case ev.Action == shopguard.ActionLoginSuccess:
		n := 0
		for _, f := range o.fails[acc] {
			if f.ip == ev.IP && t-f.t <= hour {
				n++
			}
		}
		bits := 64
		if ev.IP.Is4() {
			bits = 24
		}
		block, _ := ev.IP.Prefix(bits)
		ft, fa := o.flagged[block]
		at, aa := o.flagged[netip.PrefixFrom(ev.IP, ev.IP.BitLen())]
		if n >= 5 || fa && t-ft <= hour || aa && t-at <= hour {
			o.find(shopguard.RuleAccountTakeover, ev, acc, ev.IP.String())
			o.comp[acc] = t
			o.risky[acc] = riskyLogin{t: t, ip: ev.IP, sid: ev.SessionID}
		}
		c, ok := locate(ev.IP)
		if !ok || ev.IP.IsPrivate() {
			return
		}
		if prev, ok := o.logins[acc]; ok {
			km := haversineKM(prev.c.Lat, prev.c.Lon, c.Lat, c.Lon) - float64(prev.c.RadiusKM) - float64(c.RadiusKM)
			h := math.Max(float64(t-prev.t), float64(time.Second)) / float64(time.Hour)
			if km >= 500 && km/h > 1000 {
				o.find(shopguard.RuleImpossibleTravel, ev, acc, ev.IP.String())
				o.comp[acc] = t
				o.risky[acc] = riskyLogin{t: t, ip: ev.IP, sid: ev.SessionID}
			}
		}
		o.logins[acc] = located{t: t, c: c}
	case ev.Action.IsExport():
		o.exports[acc] = append(prune(o.exports[acc], func(e export) bool { return t-e.t > hour }), export{t: t, n: ev.Records})
		var sum int64
		for _, e := range o.exports[acc] {
			if t-e.t <= hour {
				sum += e.n
			}
		}
		if c, ok := o.comp[acc]; ok && t-c <= hour || sum >= 10000 {
			o.find(shopguard.RuleBulkExport, ev, acc, ev.IP.String())
		}
	}
}

// prune drops the leading elements of s (oldest first) that old reports.
func prune[T any](s []T, old func(T) bool) []T {
	i := 0
	for i < len(s) && old(s[i]) {
		i++
	}
	return s[i:]
}
