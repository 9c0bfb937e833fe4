package detect

import (
	"fmt"
	"hash/maphash"

	"github.com/cespare/xxhash/v2"

	"net/netip"
	"slices"

	"github.com/shopguard/shopguard"
)

// session is one session_id of an account, for session_hijack.
type session struct {
	h       uint64   // hash of the session id
	t       int64    // first use
	last    [16]byte // address of the last use, and
	lastUA  uint32   // hash of its user agent: a use from both is skipped cheaply
	country uint32
	network uint32
	client  uint32
	fired   bool
}

// risky is the last login finding that makes sensitive changes risky.
type risky struct {
	t       int64
	ip      netip.Addr
	session uint64
	id      string
	rule    string
}

// sessionKeep bounds the sessions an account remembers.
const sessionKeep = 8

// sessionUse is an Engine.lastUse slot: a session (key: its id's hash
// mixed with its account's), its start, and the address and client hash of
// its last use. It only lets the rule skip what it would skip anyway.
type sessionUse struct {
	key   uint64
	start int64
	ip    [16]byte
	ua    uint32
}

// useSeed seeds the hashes of Engine.lastUse, which lives only in memory.
var useSeed = maphash.MakeSeed()

// lastUseSlots is the size of Engine.lastUse (1.5 MiB): more sessions
// than are open at once on a large platform.
const lastUseSlots = 1 << 15

// unfamiliarRule raises unfamiliar_login (SPEC §3.1).
type unfamiliarRule struct{ e *Engine }

func (unfamiliarRule) Name() string { return shopguard.RuleUnfamiliarLogin }

func (r unfamiliarRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginSuccess {
		return dst
	}
	e := r.e
	c := e.cfg.UnfamiliarLogin
	a := e.account(ev)
	p := &a.prof
	if p.learning(e.cfg.Profile) {
		return dst
	}
	pr := e.props(ev)
	today, forget := day(ev.Time.UnixNano()), uint16(e.cfg.Profile.ForgetDays)
	// A property is judged only against a profile that trusts some value
	// of it: an account whose every client so far was seen under a
	// finding (its first login was the intruder's, say) has no normal
	// client to compare with yet.
	judged := false
	for _, q := range [...]struct {
		kind    uint8
		h       uint32
		present bool
	}{{propCountry, pr.country, pr.hasCountry}, {propNetwork, pr.network, true}, {propClient, pr.client, true}} {
		if !q.present || !p.trusts(q.kind) {
			continue
		}
		if p.familiar(q.kind, q.h, today, forget) {
			return dst
		}
		judged = true
	}
	if !judged {
		return dst
	}
	sev := c.Severity
	hosting := pr.asn != 0 && slices.Contains(c.HostingASNs, pr.asn)
	if hosting || pr.kind == clientScript || pr.kind == clientHeadless {
		sev = c.RiskySeverity
	}
	net := networkName(ev.IP, pr.asn)
	summary := fmt.Sprintf("login from a country, network (%s) and client (%s) new to the account", net, pr.family)
	if hosting {
		summary += "; the network is a hosting provider"
	}
	f := newFinding(r.Name(), sev, ev, a.shop, a.actor, ev.IP.String(), summary, shopguard.Evidence{
		Cause: "unfamiliar:" + pr.family + ":" + net, Count: int64(p.logins),
	})
	a.compromise(ev.Time.UnixNano(), &f)
	return append(dst, f)
}

// networkName names a login's profile network: the ASN when known, else
// the IPv4 /24 or IPv6 /48.
func networkName(ip netip.Addr, asn uint32) string {
	if asn != 0 {
		return "AS" + fmt.Sprint(asn)
	}
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	pp, _ := ip.Prefix(bits)
	return pp.String()
}

// hijackRule raises session_hijack (SPEC §3.1).
type hijackRule struct{ e *Engine }

func (hijackRule) Name() string { return shopguard.RuleSessionHijack }

func (r hijackRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.SessionID == "" || ev.Action == shopguard.ActionLoginFailure {
		return dst
	}
	e := r.e
	c := e.cfg.SessionHijack
	t := ev.Time.UnixNano()
	ip16 := ev.IP.As16()
	h := hashString(ev.SessionID)
	if e.lastUse == nil {
		e.lastUse = make([]sessionUse, lastUseSlots)
	}
	// The slot key mixes the session id with the account; the client is
	// compared by a fast in-memory hash (the session's own lastUA below is
	// the checkpointed, seed-free one).
	key := h ^ maphash.String(useSeed, ev.ShopID) ^ maphash.String(useSeed, ev.Actor)*0x9e3779b97f4a7c15
	kua := uint32(maphash.String(useSeed, ev.UserAgent))
	lu := &e.lastUse[key&(lastUseSlots-1)]
	if lu.key == key && lu.ip == ip16 && lu.ua == kua && t >= lu.start && t-lu.start <= int64(c.Window) {
		// Used again from where it was last used: nothing to judge, as
		// below, without finding the account.
		return dst
	}
	uah := uint32(hashString(ev.UserAgent))
	a := e.account(ev)
	x := a // the sessions live on the account: no extra state for them
	var s *session
	for i := range x.sessions {
		if x.sessions[i].h == h && t-x.sessions[i].t <= int64(c.Window) && t >= x.sessions[i].t {
			s = &x.sessions[i]
			break
		}
	}
	if s != nil && (s.fired || (s.last == ip16 && s.lastUA == uah)) {
		// Most uses of a session come from where it was last used: no
		// need to locate and classify them again.
		*lu = sessionUse{key: key, start: s.t, ip: ip16, ua: kua}
		return dst
	}
	pr := e.props(ev)
	if s == nil {
		ns := session{h: h, t: t, last: ip16, lastUA: uah, country: pr.country, network: pr.network, client: pr.client}
		if x.sessions == nil {
			x.sessions = make([]session, 0, 2)
		}
		if len(x.sessions) < sessionKeep {
			x.sessions = append(x.sessions, ns)
		} else {
			old := 0
			for i := range x.sessions {
				if x.sessions[i].t < x.sessions[old].t {
					old = i
				}
			}
			// The forgotten session must not be skipped by its slot.
			ok := x.sessions[old].h ^ key ^ h // the forgotten session's key
			if olu := &e.lastUse[ok&(lastUseSlots-1)]; olu.key == ok {
				*olu = sessionUse{}
			}
			x.sessions[old] = ns
		}
		*lu = sessionUse{key: key, start: t, ip: ip16, ua: kua}
		return dst
	}
	s.last, s.lastUA = ip16, uah
	country := pr.country != 0 && s.country != 0 && pr.country != s.country
	if !country && (pr.network == s.network || pr.client == s.client) {
		*lu = sessionUse{key: key, start: s.t, ip: ip16, ua: kua}
		return dst
	}
	s.fired = true
	summary := fmt.Sprintf("session used from another network and client (%s) within %s of its start", pr.family, human(timeOf(t).Sub(timeOf(s.t))))
	if country {
		summary = fmt.Sprintf("session used from another country within %s of its start", human(timeOf(t).Sub(timeOf(s.t))))
	}
	f := newFinding(r.Name(), c.Severity, ev, a.shop, a.actor, ev.IP.String(), summary, shopguard.Evidence{
		Window: human(c.Window), First: timeOf(s.t),
	})
	a.compromise(t, &f)
	return append(dst, f)
}

// riskyRule raises risky_change (SPEC §3.1).
type riskyRule struct{ e *Engine }

func (riskyRule) Name() string { return shopguard.RuleRiskyChange }

func (r riskyRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if !ev.Action.Sensitive() {
		return dst
	}
	e := r.e
	c := e.cfg.RiskyChange
	a := e.account(ev)
	x := a.x
	if x == nil || x.risky.id == "" {
		return dst
	}
	t := ev.Time.UnixNano()
	rk := &x.risky
	if t < rk.t || t-rk.t > int64(c.Window) {
		return dst
	}
	same := rk.ip == ev.IP || (ev.SessionID != "" && rk.session == hashString(ev.SessionID))
	if !same {
		return dst
	}
	i := sensitiveIndex(ev.Action)
	if quiet(x.firedRisky[i], t, c.Window) {
		return dst
	}
	x.firedRisky[i] = t
	summary := fmt.Sprintf("%s %s after a login that raised %s", ev.Action, human(timeOf(t).Sub(timeOf(rk.t))), rk.rule)
	return append(dst, newFinding(r.Name(), c.Severity, ev, a.shop, a.actor, ev.IP.String(), summary, shopguard.Evidence{
		Cause: "after_" + rk.rule, CauseID: rk.id, CauseRule: rk.rule, Window: human(c.Window), First: timeOf(rk.t),
	}))
}

// sensitiveIndex numbers the sensitive actions 0..7.
func sensitiveIndex(a shopguard.Action) int {
	switch a {
	case shopguard.ActionPasswordChange:
		return 0
	case shopguard.ActionPasswordReset:
		return 1
	case shopguard.ActionMFADisable:
		return 2
	case shopguard.ActionEmailChange:
		return 3
	case shopguard.ActionAPIKeyCreate:
		return 4
	case shopguard.ActionPayoutChange:
		return 5
	case shopguard.ActionStaffAdd:
		return 6
	}
	return 7
}

// burstRule raises failure_burst (SPEC §3.1).
type burstRule struct{ e *Engine }

func (burstRule) Name() string { return shopguard.RuleFailureBurst }

func (r burstRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginFailure {
		return dst
	}
	e := r.e
	c := e.cfg.FailureBurst
	s := e.source(netip.PrefixFrom(ev.IP, ev.IP.BitLen()))
	t := ev.Time.UnixNano()
	s.burst = append(s.burst, t)
	slices.Sort(s.burst)
	lo := 0
	for lo < len(s.burst) && s.burst[lo] < t-int64(c.Window) {
		lo++
	}
	s.burst = s.burst[lo:]
	if len(s.burst) > c.Threshold {
		s.burst = s.burst[len(s.burst)-c.Threshold:]
	}
	n := 0
	for _, b := range s.burst {
		if b >= t-int64(c.Window) && b <= t {
			n++
		}
	}
	if n < c.Threshold || quiet(s.firedBurst, t, c.Suppress) {
		return dst
	}
	s.firedBurst = t
	summary := fmt.Sprintf("%d failed logins from %s within %s", n, ev.IP, human(c.Window))
	return append(dst, newFinding(r.Name(), c.Severity, ev, "", "", ev.IP.String(), summary, shopguard.Evidence{
		Count: int64(n), Threshold: int64(c.Threshold), Window: human(c.Window), First: timeOf(s.burst[0]),
	}))
}

// props returns ev's profile properties, computed once per event.
func (e *Engine) props(ev *shopguard.Event) *props {
	if e.propsOf != ev {
		e.curProps = e.loginProps(ev)
		e.propsOf = ev
	}
	return &e.curProps
}

// afterRules learns from a successful login and records the findings the
// event raised on its account, once every rule has seen it.
func (e *Engine) afterRules(ev *shopguard.Event, fs []shopguard.Finding) {
	if len(fs) == 0 && ev.Action != shopguard.ActionLoginSuccess {
		return // nothing raised, nothing to learn: no need for the account
	}
	a := e.account(ev)
	t := ev.Time.UnixNano()
	raised := false
	for i := range fs {
		f := &fs[i]
		if f.Actor != a.actor || f.ShopID != a.shop {
			continue
		}
		raised = true
		switch f.Rule {
		case shopguard.RuleImpossibleTravel, shopguard.RuleAccountTakeover, shopguard.RuleUnfamiliarLogin, shopguard.RuleSessionHijack:
			x := a.ext()
			var sh uint64
			if ev.SessionID != "" {
				sh = hashString(ev.SessionID)
			}
			x.risky = risky{t: t, ip: ev.IP, session: sh, id: f.ID, rule: f.Rule}
		}
	}
	if raised {
		a.lastFinding = t
		a.prof.clean()
	}
	if ev.Action != shopguard.ActionLoginSuccess || !e.cfg.learnsProfiles() {
		return
	}
	c := e.cfg.Profile
	tainted := raised || (a.lastFinding != 0 && t-a.lastFinding <= int64(c.OpenFinding))
	pr := e.props(ev)
	today := day(t)
	if pr.hasCountry {
		a.prof.learn(propCountry, pr.country, today, tainted, c)
	}
	a.prof.learn(propNetwork, pr.network, today, tainted, c)
	a.prof.learn(propClient, pr.client, today, tainted, c)
	if !tainted {
		// Only clean logins end learning: an account whose every login
		// so far fell under a finding has nothing familiar to judge by.
		a.prof.countLogin(today)
	}
}

// hashString hashes a session id.
func hashString(s string) uint64 { return xxhash.Sum64String(s) }
