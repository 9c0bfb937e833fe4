package detect

import (
	"fmt"
	"math"
	"time"

	"github.com/shopguard/shopguard"
)

// travelRule raises impossible_travel when two successful logins of one
// account are further apart than anyone could travel in the time between
// them: at least MinDistanceKM apart after subtracting both accuracy radii,
// at more than MaxSpeedKMH. Private, reserved and unlocatable addresses and
// allowlisted networks never count.
type travelRule struct{ e *Engine }

func (travelRule) Name() string { return shopguard.RuleImpossibleTravel }

func (r travelRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	e := r.e
	if ev.Action != shopguard.ActionLoginSuccess || e.loc == nil || e.allowed(ev.IP) {
		return dst
	}
	g, ok := e.loc.Locate(ev.IP)
	if !ok {
		return dst
	}
	c := e.cfg.ImpossibleTravel
	a := e.account(ev)
	cur := login{t: ev.Time.UnixNano(), ip: ev.IP, at: e.spotOf(g)}

	// Compare with the neighbours in time, then insert in order.
	i := a.nLogins
	for i > 0 && a.logins[i-1].t > cur.t {
		i--
	}
	if !quiet(a.firedTravel, cur.t, c.Suppress) {
		var from, to *login
		switch {
		case i > 0 && r.impossible(&a.logins[i-1], &cur):
			from, to = &a.logins[i-1], &cur
		case i < a.nLogins && r.impossible(&cur, &a.logins[i]):
			from, to = &cur, &a.logins[i]
		}
		if from != nil {
			dst = append(dst, r.finding(ev, a, from, to))
			a.firedTravel = cur.t
			a.compromise(cur.t, &dst[len(dst)-1])
		}
	}
	if a.nLogins == travelKeep {
		if i == 0 {
			return dst // older than everything kept
		}
		copy(a.logins[:], a.logins[1:])
		a.nLogins--
		i--
	}
	copy(a.logins[i+1:a.nLogins+1], a.logins[i:a.nLogins])
	a.logins[i] = cur
	a.nLogins++
	return dst
}

// distance is how far apart two logins are at least, given the accuracy of
// their positions, and how fast one would have had to travel (the time
// between them is floored at one second).
func distance(x, y *login) (km, kmh float64) {
	km = haversineKM(x.at.lat, x.at.lon, y.at.lat, y.at.lon) - float64(x.at.radiusKM) - float64(y.at.radiusKM)
	hours := math.Max(float64(absDiff(y.t, x.t)), float64(time.Second)) / float64(time.Hour)
	return km, km / hours
}

func (r travelRule) impossible(x, y *login) bool {
	c := r.e.cfg.ImpossibleTravel
	km, kmh := distance(x, y)
	return km >= c.MinDistanceKM && km > 0 && kmh > c.MaxSpeedKMH
}

func (r travelRule) finding(ev *shopguard.Event, a *account, from, to *login) shopguard.Finding {
	km, kmh := distance(from, to)
	other := from
	if from.t == ev.Time.UnixNano() && from.ip == ev.IP {
		other = to
	}
	here := to
	if other == to {
		here = from
	}
	summary := fmt.Sprintf("login from %s %s km from %s within %s",
		place(r.e.geoOf(here.at)), commas(int64(math.Round(km))), place(r.e.geoOf(other.at)), human(time.Duration(absDiff(to.t, from.t))))
	return newFinding(r.Name(), r.e.cfg.ImpossibleTravel.Severity, ev, a.shop, a.actor, ev.IP.String(), summary, shopguard.Evidence{
		From:       from.evidence(&r.e.names),
		To:         to.evidence(&r.e.names),
		DistanceKM: math.Round(km*10) / 10,
		SpeedKMH:   math.Round(kmh*10) / 10,
	})
}

func (l *login) evidence(n *names) *shopguard.Login {
	return &shopguard.Login{
		IP: l.ip.String(), Time: timeOf(l.t),
		City: n.name(l.at.city), Country: n.name(uint32(l.at.country)),
		Lat: l.at.lat, Lon: l.at.lon, RadiusKM: int(l.at.radiusKM),
	}
}

func timeOf(ns int64) time.Time { return time.Unix(0, ns).UTC() }
