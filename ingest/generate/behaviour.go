package generate

import (
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/shopguard/shopguard"
)

// The generator mirrors as much of the detector's account profile (SPEC
// §3.1) as the labels need: whether an account is still learning, and the
// countries of its clean logins. An attack's login into an account out of
// learning, from a country the account has not logged in from, with a
// client of another family than the owner's, is then expected to raise
// unfamiliar_login. The network is new for every attack login (attackers
// use their own blocks), so it needs no mirror.
const (
	// learnLogins and learnDays are the default learning period.
	learnLogins = 5
	learnDays   = 3
	// openFinding is how long after a finding on an account its logins'
	// properties are not learned (they would be pending, not familiar).
	openFinding = 24 * time.Hour
	// reattackAfter is openFinding plus the trust days (3) and a margin.
	reattackAfter = 5 * 24 * time.Hour
	// burstCount failed logins from one address within burstWindow raise
	// failure_burst, at most once per address per burstQuiet.
	burstCount  = 5
	burstWindow = 60 * time.Second
	burstQuiet  = time.Hour
)

// clientFamilies names the client family (SPEC §3.1) of every user agent
// the generator uses: benign users keep one browser; attackers use tools,
// and one of them a browser of the same family as a common owner's.
var clientFamilies = map[string]string{
	userAgents[0]: "chrome on windows", userAgents[1]: "safari on macos",
	userAgents[2]: "safari on ios", userAgents[3]: "firefox on windows",
	userAgents[4]: "chrome on android", userAgents[5]: "chrome on macos",
	userAgents[6]: "edge on windows",
	toolAgents[0]: "python-requests", toolAgents[1]: "go-http-client",
	toolAgents[2]: "curl", toolAgents[3]: "okhttp", toolAgents[4]: "chrome on windows",
}

// sawLogin updates u's profile mirror with a successful login at t from
// city c. clean is false for a login that itself raises a finding; a login
// within openFinding of a finding on the account is not clean either. Only
// clean logins end learning and make their country familiar; located says
// whether the address has a country at all.
func (g *Generator) sawLogin(u *user, t int64, c int16, clean, located bool) {
	if !clean || u.findingAt != 0 && t-u.findingAt <= int64(openFinding) {
		return
	}
	if u.logins < 0xffff {
		u.logins++
	}
	if d := dayOf(t); u.days == 0 || d != u.lastDay {
		u.days++
		u.lastDay = d
	}
	if located {
		u.countries |= g.countryBit(c)
	}
}

// unfamiliar reports whether a login of u from city c with user agent ua
// would raise unfamiliar_login now.
func (g *Generator) unfamiliar(u *user, c int16, ua string) bool {
	if u.logins < learnLogins || u.days < learnDays {
		return false
	}
	if u.countries&g.countryBit(c) != 0 {
		return false
	}
	return clientFamilies[ua] != clientFamilies[u.ua]
}

// countryBit is the bit of city c's country in user.countries.
func (g *Generator) countryBit(c int16) uint64 {
	return 1 << (g.places[c].country % 64)
}

func dayOf(t int64) uint16 { return uint16(t / int64(24*time.Hour)) }

// withRule returns rules with r added, in the order of shopguard.Rules.
func withRule(rules []string, r string) []string {
	if slices.Contains(rules, r) {
		return rules
	}
	return ordered(append(rules, r))
}

// ordered sorts rules into the order of shopguard.Rules.
func ordered(rules []string) []string {
	order := shopguard.Rules()
	slices.SortStableFunc(rules, func(a, b string) int {
		return slices.Index(order, a) - slices.Index(order, b)
	})
	return rules
}

// labelBursts adds failure_burst to a's label when its failed logins from
// one address reach burstCount within burstWindow, unless that address
// burst less than burstQuiet before (the detector stays quiet then). The
// address joins the label's sources, which is how failure_burst findings
// are matched. a.evs must be sorted by time.
func (g *Generator) labelBursts(a *attack) {
	byIP := map[netip.Addr][]int64{}
	for i := range a.evs {
		if e := &a.evs[i]; e.action == shopguard.ActionLoginFailure {
			byIP[e.ip] = append(byIP[e.ip], e.t)
		}
	}
	for ip, ts := range byIP {
		if len(ts) < burstCount {
			continue
		}
		for i := burstCount - 1; i < len(ts); i++ {
			if ts[i]-ts[i-burstCount+1] > int64(burstWindow) {
				continue
			}
			if last, ok := g.bursts[ip]; ok && ts[i]-last < int64(burstQuiet) {
				break
			}
			g.bursts[ip] = ts[i]
			a.label.Rules = withRule(a.label.Rules, shopguard.RuleFailureBurst)
			if s := ip.String(); !slices.Contains(a.label.Sources, s) {
				a.label.Sources = append(a.label.Sources, s)
			}
			break
		}
	}
}

// sensitiveActions are the credential and payout changes an intruder makes
// to lock the owner out and cash in.
var sensitiveActions = []shopguard.Action{
	shopguard.ActionMFADisable, shopguard.ActionEmailChange, shopguard.ActionAPIKeyCreate,
	shopguard.ActionPayoutChange, shopguard.ActionStaffAdd, shopguard.ActionPasswordChange,
}

// changes appends 1–3 distinct sensitive changes by acc within 1–15 minutes
// of t from ip in session sid, and returns the time of the last.
func (g *Generator) changes(a *attack, acc shopguard.Account, t int64, ip netip.Addr, ua, sid string) int64 {
	acts := g.rng.Perm(len(sensitiveActions))[:g.between(1, 3)]
	for _, k := range acts {
		t += g.uniform(20*time.Second, 5*time.Minute)
		a.evs = append(a.evs, atkEvent{t: t, shopID: acc.ShopID, actor: acc.Actor, action: sensitiveActions[k],
			ip: ip, ua: ua, sid: sid, resource: "settings/security"})
	}
	return t
}

// quietTakeover plans AttackQuietTakeover: the right password, no failed
// login. An owner out of learning is logged into from a server abroad, in a
// country the owner never logged in from, by a script; 70% of the time the
// intruder then disables MFA, changes the e-mail address, creates an API
// key or changes the payout account (1–3 of them) within 15 minutes, and
// half of those export 1,000–5,000 customers.
func (g *Generator) quietTakeover(t0 int64) *attack {
	ua := toolAgents[g.rng.IntN(4)] // a script, never the browser look-alike
	var city int16
	var slot netip.Prefix
	ok := false
	for try := 0; try < 6 && !ok; try++ {
		city, slot, ok = g.attackSource(g.atk, true)
	}
	if !ok {
		return nil
	}
	ui := g.victim(120, true, func(_ int32, u *user) bool {
		return g.free(u) && g.reachable(u, city, t0) && g.unfamiliar(u, city, ua)
	})
	if ui < 0 {
		return nil
	}
	acc := g.accountOf(ui)
	ip := g.attackAddr(city, slot, 0.2)
	sid := g.sessionID()
	a := &attack{busy: []int32{ui}, logins: []atkLogin{{u: ui, city: city, t: t0, raises: true}}}
	if ip.Is4() {
		a.slot = slot
	}
	a.evs = append(a.evs, atkEvent{t: t0, shopID: acc.ShopID, actor: acc.Actor,
		action: shopguard.ActionLoginSuccess, ip: ip, ua: ua, sid: sid})
	rules := []string{shopguard.RuleUnfamiliarLogin}
	if g.rng.Float64() < 0.7 {
		t := g.changes(a, acc, t0, ip, ua, sid)
		rules = append(rules, shopguard.RuleRiskyChange)
		if g.rng.Float64() < 0.5 {
			a.evs = append(a.evs, atkEvent{t: t + g.uniform(time.Minute, 10*time.Minute), shopID: acc.ShopID,
				actor: acc.Actor, action: shopguard.ActionCustomersExport, ip: ip, ua: ua, sid: sid,
				resource: "customers", records: g.logUniform(1000, 5000)})
			rules = append(rules, shopguard.RuleBulkExport)
		}
	}
	a.label = Label{Attack: AttackQuietTakeover, Rules: ordered(rules),
		ShopID: acc.ShopID, Actor: acc.Actor, Accounts: []shopguard.Account{acc},
		Sources: []string{ip.String()}, Targets: 1}
	return a
}

// sessionTheft plans AttackSessionTheft: an owner logs in at home with
// their own browser and works a few minutes; 1–3 hours later the same
// session is used from a far city in another country by curl, which
// browses a little and exports 1,000–5,000 customers; half the time it also
// changes the e-mail address or disables MFA.
func (g *Generator) sessionTheft(t0 int64) *attack {
	far := g.far[g.rng.IntN(len(g.far))]
	ui := g.victim(120, true, func(_ int32, u *user) bool {
		return g.free(u) && u.cur == u.home && g.places[u.home].Country != g.places[far].Country &&
			g.reachable(u, u.home, t0)
	})
	if ui < 0 {
		return nil
	}
	u := &g.users[ui]
	acc := g.accountOf(ui)
	sid := g.sessionID()
	a := &attack{busy: []int32{ui}, logins: []atkLogin{{u: ui, city: u.home, t: t0}}}
	ev := func(t int64, action shopguard.Action, ip netip.Addr, ua string) *atkEvent {
		a.evs = append(a.evs, atkEvent{t: t, shopID: acc.ShopID, actor: acc.Actor, action: action, ip: ip, ua: ua, sid: sid})
		return &a.evs[len(a.evs)-1]
	}
	t := t0
	ev(t, shopguard.ActionLoginSuccess, u.addr, u.ua)
	for k := g.between(1, 4); k > 0; k-- {
		t += g.uniform(20*time.Second, 3*time.Minute)
		ev(t, shopguard.ActionOther, u.addr, u.ua).resource = g.resources[g.rng.IntN(len(g.resources))]
	}
	var ip netip.Addr
	switch slot, free := g.freeSlot(far, true); {
	case free:
		ip = hostIn(slot, uint64(g.rng.IntN(hosts(slot))))
		a.slot = slot
	case len(g.places[far].v6) > 0:
		ip = g.attackAddr(far, netip.Prefix{}, 1)
	default:
		return nil
	}
	const curl = "curl/8.11.1"
	t = t0 + g.uniform(time.Hour, 3*time.Hour)
	for k := g.between(1, 3); k > 0; k-- {
		ev(t, shopguard.ActionOther, ip, curl).resource = "customers/" + strconv.Itoa(100000+g.rng.IntN(900000))
		t += g.uniform(10*time.Second, time.Minute)
	}
	x := ev(t+g.uniform(time.Minute, 10*time.Minute), shopguard.ActionCustomersExport, ip, curl)
	x.resource, x.records = "customers", g.logUniform(1000, 5000)
	rules := []string{shopguard.RuleSessionHijack, shopguard.RuleBulkExport}
	if g.rng.Float64() < 0.5 {
		act := shopguard.ActionEmailChange
		if g.rng.IntN(2) == 0 {
			act = shopguard.ActionMFADisable
		}
		ev(x.t+g.uniform(30*time.Second, 5*time.Minute), act, ip, curl).resource = "settings/security"
		rules = append(rules, shopguard.RuleRiskyChange)
	}
	a.label = Label{Attack: AttackSessionTheft, Rules: ordered(rules),
		ShopID: acc.ShopID, Actor: acc.Actor, Accounts: []shopguard.Account{acc},
		Sources: []string{ip.String()}, Targets: 1}
	return a
}

// burst plans AttackBurst: 5–7 failed logins from one address within
// 15–50 seconds against 2–3 accounts, a script guessing faster than a
// person retries, below brute_force (10 per account) and
// credential_stuffing (20 accounts). None succeeds.
func (g *Generator) burst(t0 int64) *attack {
	cands := g.atk
	if g.rng.Float64() < 0.3 {
		cands = g.vps
	}
	city, slot, ok := g.attackSource(cands, false)
	if !ok {
		return nil
	}
	ip := g.attackAddr(city, slot, 0.2)
	// At least two accounts, so that one account's share of the burst and
	// its owner's own typos stay far below brute_force.
	list := g.targets(g.between(2, 3), nil)
	if len(list) < 2 {
		return nil
	}
	n := g.between(5, 7)
	span := g.uniform(15*time.Second, 50*time.Second)
	ua := toolAgents[g.rng.IntN(len(toolAgents))]
	a := &attack{}
	if ip.Is4() {
		a.slot = slot
	}
	for i := 0; i < n; i++ {
		a.evs = append(a.evs, failure(t0+msRound(float64(span)*float64(i)/float64(n-1)), list[i%len(list)], ip, ua))
	}
	a.label = Label{Attack: AttackBurst, Sources: []string{ip.String()}, Targets: len(list)}
	return a
}
