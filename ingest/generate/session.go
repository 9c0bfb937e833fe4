package generate

import (
	"net/netip"
	"time"

	"github.com/shopguard/shopguard"
)

// session is a benign admin session in flight: optional failed logins, the
// successful login, a run of admin actions and an optional logout. It
// produces one event per step.
type session struct {
	u       int32
	ip      netip.Addr
	city    int16 // where ip is
	sid     string
	actor   string // login id typed for failures, if not the user's own
	reason  string // of the failures
	fails   int8   // failed logins still to emit
	abandon bool   // no success after the failures
	in      bool   // the successful login was emitted
	logout  bool   // a logout is still to emit
	steps   int32  // admin actions still to emit
	failGap int64
}

// blockLog remembers benign failed logins of one /24 or /64 within
// blockWindow, to keep the number of distinct accounts low.
type blockLog struct {
	t   []int64
	who []int32
}

// Actions of a session step, and how likely each is.
var (
	stepActions = []shopguard.Action{
		shopguard.ActionOther, shopguard.ActionOrdersExport, shopguard.ActionCustomersExport,
		shopguard.ActionPasswordChange, shopguard.ActionMFAEnable, shopguard.ActionMFADisable,
		shopguard.ActionEmailChange, shopguard.ActionAPIKeyCreate, shopguard.ActionPasswordReset,
		shopguard.ActionPayoutChange, shopguard.ActionStaffAdd, shopguard.ActionAppInstall,
	}
	stepCum = cumulative([]float64{0.922, 0.03, 0.02, 0.004, 0.0015, 0.0008, 0.0012, 0.0015, 0.0015, 0.001, 0.001, 0.001})
)

// pickUser draws a user by activity weight.
func (g *Generator) pickUser() int32 {
	return int32(pick(g.actCum, g.rng.Float64()*g.actSum))
}

// spawnSession starts a benign session at t for a user who is awake (by
// the local hour of their home), not in a session already nor under
// attack, and for whom a login at
// their current place is consistent with their last one. If no such user
// turns up in a few draws, no session starts.
func (g *Generator) spawnSession(t int64) {
	for try := 0; try < 16; try++ {
		ui := g.pickUser()
		u := &g.users[ui]
		if t < u.busyUntil || u.active > 0 {
			continue
		}
		if try < 12 && g.rng.Float64()*g.maxHourW > g.hourW[hourOf(t, g.places[u.home].tz)] {
			continue
		}
		g.maybeTravel(u, t)
		if !g.reachable(u, u.cur, t) {
			continue
		}
		g.startSession(ui, t)
		return
	}
}

// maybeTravel moves u between cities when the time since their last login
// allows it: a user idle for tripGap may have gone on a trip (pTravel) or,
// when away, come home (pReturn); plausibleTrip decides whether the
// distance fits the time.
func (g *Generator) maybeTravel(u *user, t int64) {
	if u.lastT != 0 && t-u.lastT < int64(tripGap) {
		return
	}
	if u.cur != u.home {
		if g.rng.Float64() < pReturn && g.plausibleTrip(u, u.home, t) {
			u.cur = u.home
		}
		return
	}
	if g.rng.Float64() >= pTravel {
		return
	}
	abroad := g.rng.Float64() < pTripAbroad
	for try := 0; try < 8; try++ {
		dest := int16(g.rng.IntN(len(g.places)))
		if dest == u.home || g.places[dest].jp == g.places[u.home].jp == abroad || len(g.places[dest].slots) == 0 {
			continue
		}
		if g.plausibleTrip(u, dest, t) {
			u.cur = dest
			u.away = g.places[dest].benign4()
		}
		return
	}
}

// plausibleTrip reports whether u could have reached dest by t since the
// last login: an hour plus the distance at train speed (250 km/h) within
// 1,200 km, at airliner speed (750 km/h) beyond.
func (g *Generator) plausibleTrip(u *user, dest int16, t int64) bool {
	if u.lastT == 0 {
		return true
	}
	d := g.km(u.lastCity, dest)
	speed := 250.0
	if d > 1200 {
		speed = 750
	}
	need := time.Hour + time.Duration(d/speed*float64(time.Hour))
	return t-u.lastT >= int64(need)
}

// sessionAddr is where u logs in from at t: the shop's office on weekdays
// during office hours for office workers, a hotel or mobile address when
// travelling, and home otherwise.
func (g *Generator) sessionAddr(u *user, t int64) netip.Addr {
	if u.cur != u.home {
		return u.away
	}
	if u.officeWorker {
		s := &g.shops[u.shop]
		tz := g.places[u.home].tz
		h := hourOf(t, tz)
		wd := time.Unix(t/int64(time.Second)+tz, 0).UTC().Weekday()
		if s.office.IsValid() && h >= 8 && h < 19 && wd != time.Saturday && wd != time.Sunday {
			return s.office
		}
	}
	return u.addr
}

func (g *Generator) startSession(ui int32, t int64) {
	u := &g.users[ui]
	s := session{u: ui, ip: g.sessionAddr(u, t), city: u.cur, failGap: g.uniform(4*time.Second, 25*time.Second)}
	if s.ip == g.shops[u.shop].office {
		s.city = g.shops[u.shop].city
	}
	switch r := g.rng.Float64(); {
	case r < pAbandon:
		// A mistyped login id: the account does not exist.
		s.fails, s.abandon, s.reason = 1, true, "unknown_user"
		s.actor = u.actor[:len(u.actor)-len(".example")] + ".exmaple"
	case r < pAbandon+pTypo:
		s.fails, s.reason = 1, "bad_password"
		if g.rng.Float64() < 0.3 {
			s.fails = 2
		}
	case r < pAbandon+pTypo+pMFAFail:
		s.fails, s.reason = 1, "mfa_failed"
	}
	if s.fails > 0 && !g.allowFailures(ui, u, s.ip, int(s.fails), t, s.abandon) {
		if s.abandon {
			return
		}
		s.fails = 0
	}
	u.active++
	if !s.abandon {
		s.sid = g.sessionID()
		s.steps = int32(meanSteps * g.rng.ExpFloat64())
		s.logout = g.rng.Float64() < pLogout
		login := t + int64(s.fails)*s.failGap
		if login > u.lastT {
			u.lastT, u.lastCity = login, u.cur
		}
	}
	ref := int32(len(g.sessions))
	if n := len(g.freeSess); n > 0 {
		ref = g.freeSess[n-1]
		g.freeSess = g.freeSess[:n-1]
		g.sessions[ref] = s
	} else {
		g.sessions = append(g.sessions, s)
	}
	g.push(t, ref)
}

// allowFailures decides whether u may fail to log in n times from ip
// starting at t without benign traffic nearing a threshold, and if so
// records the failures. Mistyped login ids count as other accounts.
func (g *Generator) allowFailures(ui int32, u *user, ip netip.Addr, n int, t int64, other bool) bool {
	if !other {
		recent := 0
		for _, f := range u.fails {
			if f != 0 && t-f < int64(time.Hour) {
				recent++
			}
		}
		if recent+n > maxBenignFails {
			return false
		}
	}
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	key, _ := ip.Prefix(bits)
	b := g.blocks[key]
	if b == nil {
		b = &blockLog{}
		g.blocks[key] = b
	}
	// Failures are recorded at the session start and happen up to a
	// minute later; the margin keeps the count conservative.
	drop := 0
	for drop < len(b.t) && t-b.t[drop] > int64(blockWindow+2*time.Minute) {
		drop++
	}
	b.t, b.who = b.t[drop:], b.who[drop:]
	who := ui
	if other {
		who = -1 - ui
	}
	distinct := 0
	for i, w := range b.who {
		if w != who && !containsBefore(b.who, i, w) {
			distinct++
		}
	}
	if distinct+1 > maxBlockAccounts {
		return false
	}
	b.t = append(b.t, t)
	b.who = append(b.who, who)
	if !other {
		for k := 0; k < n; k++ {
			oldest := 0
			for i := range u.fails {
				if u.fails[i] < u.fails[oldest] {
					oldest = i
				}
			}
			u.fails[oldest] = t
		}
	}
	return true
}

// containsBefore reports whether w occurs in s[:i].
func containsBefore(s []int32, i int, w int32) bool {
	for _, x := range s[:i] {
		if x == w {
			return true
		}
	}
	return false
}

// sessionID returns a fresh random session id: "sess_" and 16 hex digits.
func (g *Generator) sessionID() string {
	const hexDigits = "0123456789abcdef"
	var b [21]byte
	copy(b[:], "sess_")
	x := g.rng.Uint64()
	for i := 20; i >= 5; i-- {
		b[i] = hexDigits[x&0xf]
		x >>= 4
	}
	return string(b[:])
}

// stepSession emits the session's next event into ev and queues the one
// after, or ends the session.
func (g *Generator) stepSession(it item, ev *shopguard.Event) {
	s := &g.sessions[it.ref]
	u := &g.users[s.u]
	ev.ShopID = g.shops[u.shop].id
	ev.Actor = u.actor
	ev.IP = s.ip
	ev.UserAgent = u.ua
	next := it.t
	switch {
	case s.fails > 0:
		ev.Action = shopguard.ActionLoginFailure
		ev.Reason = s.reason
		if s.actor != "" {
			ev.Actor = s.actor
		}
		s.fails--
		next += s.failGap
	case !s.in:
		ev.Action = shopguard.ActionLoginSuccess
		ev.SessionID = s.sid
		s.in = true
		// A private office address has no country to learn.
		g.sawLogin(u, it.t, s.city, true, !s.ip.IsPrivate())
		next += g.delay()
	case s.steps > 0:
		ev.SessionID = s.sid
		g.act(u, ev, it.t)
		s.steps--
		next += g.delay()
	default: // the logout
		ev.Action = shopguard.ActionLogout
		ev.SessionID = s.sid
		s.logout = false
	}
	if s.fails > 0 || !s.abandon && (!s.in || s.steps > 0 || s.logout) {
		g.push(next, it.ref)
		return
	}
	u.active--
	*s = session{}
	g.freeSess = append(g.freeSess, it.ref)
}

// delay draws the time between two admin actions.
func (g *Generator) delay() int64 {
	d := g.rng.ExpFloat64() * float64(meanDelay)
	return msRound(min(max(d, float64(time.Second)), float64(20*time.Minute)))
}

// act fills ev with one admin action of u at t. Exports stay small and
// rare enough that an account never exports maxBenignExport records within
// an hour; beyond that the action becomes an ordinary one.
func (g *Generator) act(u *user, ev *shopguard.Event, t int64) {
	a := stepActions[pick(stepCum, g.rng.Float64())]
	switch a {
	case shopguard.ActionOrdersExport, shopguard.ActionCustomersExport:
		n := g.logUniform(10, 2000)
		if g.allowExport(u, n, t) {
			ev.Action, ev.Records = a, n
			ev.Resource = "orders"
			if a == shopguard.ActionCustomersExport {
				ev.Resource = "customers"
			}
			return
		}
	case shopguard.ActionPasswordReset:
		// An owner resets a staff member's password.
		if s := &g.shops[u.shop]; u.owner && len(s.users) > 1 {
			ev.Action = a
			ev.Resource = "staff/" + g.users[s.users[1+g.rng.IntN(len(s.users)-1)]].actor
			return
		}
	case shopguard.ActionAPIKeyCreate:
		ev.Action, ev.Resource = a, "apikeys"
		return
	case shopguard.ActionOther:
	default:
		ev.Action = a
		return
	}
	ev.Action = shopguard.ActionOther
	ev.Resource = g.resources[g.rng.IntN(len(g.resources))]
}

// allowExport records an export of n records by u at t unless it would
// take the account's benign exports within an hour to maxBenignExport.
func (g *Generator) allowExport(u *user, n, t int64) bool {
	sum, slot := n, -1
	for i, e := range u.exports {
		if e.t != 0 && t-e.t < int64(time.Hour) {
			sum += e.n
		} else if slot < 0 {
			slot = i
		}
	}
	if slot < 0 || sum >= maxBenignExport {
		return false
	}
	u.exports[slot] = export{t: t, n: n}
	return true
}
