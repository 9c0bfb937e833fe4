package generate

import (
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/shopguard/shopguard"
)

// attack is one labelled episode: all of its events are planned when it
// starts, and emitted in time order as the stream reaches them.
type attack struct {
	label Label
	evs   []atkEvent
	next  int

	// Applied to the accounts only when the episode is started, so that an
	// episode discarded near the end of a bounded stream does not keep
	// them from logging in.
	logins []atkLogin   // successful logins into real accounts
	busy   []int32      // users kept free of benign sessions until End+busyAfter
	marked []int32      // users with a finding but not kept busy
	slot   netip.Prefix // attacker /24, reserved until End+slotRest
	flags  bool         // the episode gets slot flagged for credential_stuffing
}

// atkEvent is one planned event of an attack.
type atkEvent struct {
	t        int64
	shopID   string
	actor    string
	action   shopguard.Action
	ip       netip.Addr
	ua       string
	sid      string
	reason   string
	resource string
	records  int64
}

type atkLogin struct {
	u      int32
	city   int16
	t      int64
	raises bool // the login itself raises a finding on the account
}

// account is a login id an attack tries: a real user (u ≥ 0) or one that
// does not exist on the platform.
type account struct {
	u             int32
	shopID, actor string
}

// spawnAttack plans an episode of a randomly drawn kind starting now and
// queues its first event. When the stream is bounded, an episode that
// might not be fully emitted within Config.Events is dropped.
func (g *Generator) spawnAttack() {
	t0 := g.now + g.uniform(0, 30*time.Second)
	var a *attack
	switch kind := pick(g.attackCum, g.rng.Float64()); kind {
	case 0:
		a = g.stuffing(t0)
	case 1:
		a = g.bruteForce(t0)
	case 2:
		a = g.hijack(t0)
	case 3:
		a = g.rotation4(t0)
	case 4:
		a = g.rotation6(t0)
	case 5:
		a = g.insider(t0)
	case 6:
		a = g.quietTakeover(t0)
	case 7:
		a = g.sessionTheft(t0)
	case 8:
		a = g.burst(t0)
	case 9: // campaign.go
		a = g.listWave(t0)
	case 10:
		a = g.unknownSpray(t0)
	default:
		a = g.rotation48(t0)
	}
	if a == nil || len(a.evs) == 0 {
		return
	}
	slices.SortStableFunc(a.evs, func(x, y atkEvent) int { return cmpInt(x.t, y.t) })
	start, end := a.evs[0].t, a.evs[len(a.evs)-1].t
	if g.cfg.Events > 0 {
		// Events that will be emitted before this episode's last one: the
		// ones already out, the rest of the running episodes, this one,
		// and the benign traffic until its end, with margin.
		need := g.emitted + g.pendingAtk + int64(len(a.evs)) + int64(1.3*g.expectedEvents(g.now, end)) + 200
		if need > g.cfg.Events {
			return
		}
	}
	g.labelBursts(a)

	g.nAttacks++
	l := &a.label
	l.ID = "atk" + pad5(g.nAttacks) + "-s" + strconv.FormatInt(g.cfg.Seed, 10)
	l.Start, l.End = time.Unix(0, start).UTC(), time.Unix(0, end).UTC()
	l.Events = len(a.evs)
	if l.Sources == nil {
		l.Sources = []string{}
	}
	for _, lg := range a.logins {
		u := &g.users[lg.u]
		if lg.t >= u.lastT {
			u.lastT, u.lastCity = lg.t, lg.city
		}
	}
	for _, ui := range a.busy {
		g.users[ui].busyUntil = max(g.users[ui].busyUntil, end+int64(busyAfter))
	}
	for _, ui := range append(a.busy, a.marked...) {
		// The episode's findings on the account fall before its end.
		g.users[ui].findingAt = max(g.users[ui].findingAt, end)
	}
	if a.slot.IsValid() {
		g.slotBusy[a.slot] = max(g.slotBusy[a.slot], end+int64(slotRest))
		if a.flags {
			g.slotFlag[a.slot] = max(g.slotFlag[a.slot], end+int64(flagAfter))
		}
	}

	ref := int32(len(g.attacks))
	if n := len(g.freeAtk); n > 0 {
		ref = g.freeAtk[n-1]
		g.freeAtk = g.freeAtk[:n-1]
		g.attacks[ref] = a
	} else {
		g.attacks = append(g.attacks, a)
	}
	g.pendingAtk += int64(len(a.evs))
	g.push(start, -ref-1)
}

// stepAttack emits the attack's next event into ev and queues the one
// after, or completes the episode and files its label.
func (g *Generator) stepAttack(it item, ev *shopguard.Event) {
	ref := -it.ref - 1
	a := g.attacks[ref]
	e := &a.evs[a.next]
	if e.action == shopguard.ActionLoginSuccess {
		for _, lg := range a.logins {
			if lg.t == e.t && g.users[lg.u].actor == e.actor {
				g.sawLogin(&g.users[lg.u], e.t, lg.city, !lg.raises, true)
				break
			}
		}
	}
	ev.ShopID, ev.Actor, ev.Action, ev.IP = e.shopID, e.actor, e.action, e.ip
	ev.UserAgent, ev.SessionID, ev.Reason = e.ua, e.sid, e.reason
	ev.Resource, ev.Records = e.resource, e.records
	a.next++
	g.pendingAtk--
	g.last = a
	if a.next < len(a.evs) {
		g.push(a.evs[a.next].t, it.ref)
		return
	}
	g.done = append(g.done, a.label)
	g.attacks[ref] = nil
	g.freeAtk = append(g.freeAtk, ref)
}

func cmpInt(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func pad5(n int) string {
	s := strconv.Itoa(n)
	for len(s) < 5 {
		s = "0" + s
	}
	return s
}

// rulesOf lists the rules whose flags are set, in the engine's order.
func rulesOf(stuffing, brute, takeover, travel, export bool) []string {
	var out []string
	for _, r := range []struct {
		on   bool
		name string
	}{
		{stuffing, shopguard.RuleCredentialStuffing}, {brute, shopguard.RuleBruteForce},
		{takeover, shopguard.RuleAccountTakeover}, {travel, shopguard.RuleImpossibleTravel},
		{export, shopguard.RuleBulkExport},
	} {
		if r.on {
			out = append(out, r.name)
		}
	}
	return out
}

func (g *Generator) accountOf(ui int32) shopguard.Account {
	u := &g.users[ui]
	return shopguard.Account{ShopID: g.shops[u.shop].id, Actor: u.actor}
}

// attackBlock picks an attacker city among cands and one of its attacker
// /24s that is free (see freeSlot), if one turns up in a few draws.
func (g *Generator) attackBlock(cands []int16, unflagged bool) (int16, netip.Prefix, bool) {
	for try := 0; try < 12; try++ {
		c := cands[g.rng.IntN(len(cands))]
		if s, ok := g.freeSlot(c, unflagged); ok {
			return c, s, true
		}
	}
	return 0, netip.Prefix{}, false
}

// freeSlot returns an attacker /24 of city c that no episode has used
// within slotRest, and with unflagged, none has got flagged for
// credential_stuffing within flagAfter. Attacker blocks are never shared:
// two campaigns in one block within ten minutes give the detector one
// finding for both (SPEC §2), and a failure of another episode could tip a
// block over the threshold in an episode whose label does not expect it.
func (g *Generator) freeSlot(c int16, unflagged bool) (netip.Prefix, bool) {
	p := &g.places[c]
	if len(p.slots) == p.benign {
		return netip.Prefix{}, false // no block of its own for attackers
	}
	for k := len(p.slots) - p.benign; k > 0; k-- {
		if s := p.attackSlot(); g.slotBusy[s] <= g.now && (!unflagged || g.slotFlag[s] <= g.now) {
			return s, true
		}
	}
	return netip.Prefix{}, false
}

// attackSource picks an attacker city among cands and a free /24 of it;
// when no /24 is free, the block is invalid and the city one with IPv6
// (among cands if possible), for an address in a fresh /64. It reports
// false only if no city has IPv6.
func (g *Generator) attackSource(cands []int16, unflagged bool) (int16, netip.Prefix, bool) {
	if c, s, ok := g.attackBlock(cands, unflagged); ok {
		return c, s, true
	}
	off := g.rng.IntN(len(cands))
	for i := range cands {
		if c := cands[(off+i)%len(cands)]; len(g.places[c].v6) > 0 {
			return c, netip.Prefix{}, true
		}
	}
	if len(g.atk6) == 0 {
		return 0, netip.Prefix{}, false
	}
	return g.atk6[g.rng.IntN(len(g.atk6))], netip.Prefix{}, true
}

// attackAddr returns one attacker address in city c: usually IPv4 in slot,
// with probability p6 (or if slot is invalid) IPv6 in a fresh attacker /64
// of the city.
func (g *Generator) attackAddr(c int16, slot netip.Prefix, p6 float64) netip.Addr {
	pl := &g.places[c]
	if len(pl.v6) > 0 && (!slot.IsValid() || g.rng.Float64() < p6) {
		pr, sub := pl.attack64()
		return addr6(pr, sub, g.rng.Uint64()|1)
	}
	return hostIn(slot, uint64(g.rng.IntN(hosts(slot))))
}

// victim draws up to tries users satisfying ok, owners first when owners is
// set, and returns -1 if none does. An account is attacked again only
// reattackAfter after the last episode that raised a finding on it, when
// the properties its owner used meanwhile are trusted again and the
// profile mirror (see sawLogin) is exact.
func (g *Generator) victim(tries int, owners bool, ok func(ui int32, u *user) bool) int32 {
	for try := 0; try < tries; try++ {
		var ui int32
		if owners && try < tries/2 {
			ui = g.shops[g.rng.IntN(len(g.shops))].users[0]
		} else {
			ui = int32(g.rng.IntN(len(g.users)))
		}
		if u := &g.users[ui]; u.findingAt != 0 && g.now-u.findingAt < int64(reattackAfter) {
			continue
		}
		if ok(ui, &g.users[ui]) {
			return ui
		}
	}
	return -1
}

// targets draws n distinct accounts for a stuffing list, one per shop while
// shops last, about a quarter of them login ids the platform does not have.
// Accounts in skip (victims chosen before) are not drawn again.
func (g *Generator) targets(n int, skip []int32) []account {
	out := make([]account, 0, n)
	seen := make(map[shopguard.Account]bool, n+len(skip))
	usedShop := make(map[int32]bool, n+len(skip))
	for _, ui := range skip {
		seen[g.accountOf(ui)] = true
		usedShop[g.users[ui].shop] = true
	}
	for try := 0; len(out) < n && try < 50*n; try++ {
		si := int32(g.rng.IntN(len(g.shops)))
		if usedShop[si] && len(usedShop) < len(g.shops) {
			continue
		}
		s := &g.shops[si]
		var acc account
		if g.rng.Float64() < 0.25 {
			acc = account{u: -1, shopID: s.id, actor: unknownLocal[g.rng.IntN(len(unknownLocal))] + "@" + s.domain}
		} else {
			ui := s.users[g.rng.IntN(len(s.users))]
			if !g.hit(&g.users[ui]) {
				continue
			}
			acc = account{u: ui, shopID: s.id, actor: g.users[ui].actor}
		}
		k := shopguard.Account{ShopID: acc.shopID, Actor: acc.actor}
		if seen[k] {
			continue
		}
		seen[k] = true
		usedShop[si] = true
		out = append(out, acc)
	}
	return out
}

// hit records that a stuffing list tries u now, unless two lists did
// within the last hour: with at most maxBenignFails typos, an account then
// never nears a failure threshold from list attempts alone.
func (g *Generator) hit(u *user) bool {
	for i, h := range u.hits {
		if h == 0 || g.now-h >= int64(time.Hour) {
			u.hits[i] = g.now
			return true
		}
	}
	return false
}

// failure returns a failed login of acc.
func failure(t int64, acc account, ip netip.Addr, ua string) atkEvent {
	reason := "bad_password"
	if acc.u < 0 {
		reason = "unknown_user"
	}
	return atkEvent{t: t, shopID: acc.shopID, actor: acc.actor, action: shopguard.ActionLoginFailure, ip: ip, ua: ua, reason: reason}
}

// stuffing plans AttackStuffing: one address works through a leaked list
// of 40–80 accounts of different shops, one attempt each every 2–7 s (so
// the whole list fits in 10 minutes). After at least 22 failures — the
// source is flagged at the 20th distinct account — 2–4 attempts succeed,
// and 2–15 minutes after its login one of those accounts exports
// 20,000–60,000 customers from the same address. A success needs an
// account that is idle and whose last login is consistent with one from
// the attacker's city; when fewer turn up, fewer attempts succeed, and
// with none the label expects credential_stuffing alone.
func (g *Generator) stuffing(t0 int64) *attack {
	n := g.between(40, 80)
	times := make([]int64, n)
	t := t0
	for i := range times {
		times[i] = t
		t += g.uniform(2*time.Second, 7*time.Second)
	}
	wins := g.between(2, 4)
	pos := g.rng.Perm(n - 22)[:wins]
	for i := range pos {
		pos[i] += 22
	}
	slices.Sort(pos)

	// Attackers use servers abroad or, to pass geo-blocking, rented ones
	// in Japan; a victim is an account whose owner has no session open and
	// whose last login is consistent with one from there.
	cands := g.atk
	if g.rng.Float64() < 0.5 {
		cands = g.vps
	}
	var city int16
	var slot netip.Prefix
	var victims []int32
	var won []int // positions in the list of the victims' successes
	for attempt := 0; attempt < 2 && len(victims) == 0; attempt++ {
		var ok bool
		if city, slot, ok = g.attackSource(cands, false); !ok {
			return nil
		}
		for _, p := range pos {
			v := g.victim(40, false, func(ui int32, u *user) bool {
				return g.free(u) && g.reachable(u, city, times[p]) && !slices.Contains(victims, ui) &&
					!g.shopIn(victims, u.shop)
			})
			if v >= 0 {
				victims = append(victims, v)
				won = append(won, p)
			}
		}
		cands = g.vps
	}
	pos = won

	ip := g.attackAddr(city, slot, 0)
	ua := toolAgents[g.rng.IntN(len(toolAgents))]
	list := g.targets(n-len(victims), victims)
	if len(list) < 22 {
		return nil // too small a platform for a campaign
	}
	a := &attack{}
	if ip.Is4() {
		a.slot, a.flags = slot, true
	}
	a.label = Label{Attack: AttackStuffing, Sources: []string{ip.String()}, Targets: len(list) + len(victims)}
	next := 0
	for i := range times {
		if next < len(pos) && pos[next] == i {
			ui := victims[next]
			acc := g.accountOf(ui)
			a.evs = append(a.evs, atkEvent{t: times[i], shopID: acc.ShopID, actor: acc.Actor,
				action: shopguard.ActionLoginSuccess, ip: ip, ua: ua, sid: g.sessionID()})
			a.logins = append(a.logins, atkLogin{u: ui, city: city, t: times[i], raises: true})
			a.label.Accounts = append(a.label.Accounts, acc)
			next++
			continue
		}
		if k := i - next; k < len(list) {
			a.evs = append(a.evs, failure(times[i], list[k], ip, ua))
		}
	}
	a.busy = victims
	unfamiliar := false
	for _, ui := range victims {
		unfamiliar = unfamiliar || g.unfamiliar(&g.users[ui], city, ua)
	}
	export := len(victims) > 0
	if export {
		k := g.rng.IntN(len(victims))
		var login *atkEvent
		for i := range a.evs {
			if a.evs[i].action == shopguard.ActionLoginSuccess && a.evs[i].actor == g.users[victims[k]].actor {
				login = &a.evs[i]
				break
			}
		}
		a.evs = append(a.evs, atkEvent{t: login.t + g.uniform(2*time.Minute, 15*time.Minute),
			shopID: login.shopID, actor: login.actor, action: shopguard.ActionCustomersExport,
			ip: ip, ua: ua, sid: login.sid, resource: "customers", records: int64(g.between(20000, 60000))})
	}
	a.label.Rules = rulesOf(true, false, len(victims) > 0, false, export)
	if unfamiliar {
		a.label.Rules = withRule(a.label.Rules, shopguard.RuleUnfamiliarLogin)
	}
	return a
}

// shopIn reports whether one of users belongs to shop s.
func (g *Generator) shopIn(users []int32, s int32) bool {
	for _, ui := range users {
		if g.users[ui].shop == s {
			return true
		}
	}
	return false
}

// bruteForce plans AttackBruteForce: 10–30 failed logins on one account
// from one address, spread over 1.5–9.5 minutes. Half the time the last
// guess is right (a takeover after ≥ 5 failures), and then 40% of the time
// the attacker exports 200–5,000 records within 20 minutes (critical after
// a takeover).
func (g *Generator) bruteForce(t0 int64) *attack {
	n := g.between(10, 30)
	span := g.uniform(max(90*time.Second, time.Duration(n)*8*time.Second), 570*time.Second)
	gaps := make([]float64, n-1)
	var sum float64
	for i := range gaps {
		gaps[i] = 0.6 + 0.8*g.rng.Float64()
		sum += gaps[i]
	}
	times := make([]int64, n)
	times[0] = t0
	for i, gap := range gaps {
		times[i+1] = times[i] + msRound(gap/sum*float64(span))
	}
	last := times[n-1]
	success := g.rng.Float64() < 0.5
	tWin := last + g.uniform(10*time.Second, 90*time.Second)

	cands := g.atk
	if g.rng.Float64() < 0.5 {
		cands = g.vps
	}
	city, slot, ok := g.attackSource(cands, false)
	if !ok {
		return nil
	}
	ip := g.attackAddr(city, slot, 0.2)
	ui := int32(-1)
	if success {
		ui = g.victim(60, false, func(_ int32, u *user) bool { return g.free(u) && g.reachable(u, city, tWin) })
		success = ui >= 0
	}
	if ui < 0 {
		ui = g.victim(20, false, func(_ int32, u *user) bool { return g.free(u) })
	}
	if ui < 0 {
		ui = int32(g.rng.IntN(len(g.users)))
	}
	acc := g.accountOf(ui)
	ua := toolAgents[g.rng.IntN(len(toolAgents))]
	a := &attack{}
	if ip.Is4() {
		a.slot = slot
	}
	for _, t := range times {
		a.evs = append(a.evs, failure(t, account{u: ui, shopID: acc.ShopID, actor: acc.Actor}, ip, ua))
	}
	export, unfamiliar, changes := false, false, false
	if success {
		sid := g.sessionID()
		a.evs = append(a.evs, atkEvent{t: tWin, shopID: acc.ShopID, actor: acc.Actor,
			action: shopguard.ActionLoginSuccess, ip: ip, ua: ua, sid: sid})
		a.logins = []atkLogin{{u: ui, city: city, t: tWin, raises: true}}
		a.busy = []int32{ui}
		unfamiliar = g.unfamiliar(&g.users[ui], city, ua)
		if changes = g.rng.Float64() < 0.3; changes {
			g.changes(a, acc, tWin, ip, ua, sid)
		}
		if export = g.rng.Float64() < 0.4; export {
			act, res := shopguard.ActionCustomersExport, "customers"
			if g.rng.IntN(2) == 0 {
				act, res = shopguard.ActionOrdersExport, "orders"
			}
			a.evs = append(a.evs, atkEvent{t: tWin + g.uniform(3*time.Minute, 20*time.Minute),
				shopID: acc.ShopID, actor: acc.Actor, action: act, ip: ip, ua: ua, sid: sid,
				resource: res, records: g.logUniform(200, 5000)})
		}
	}
	if !success {
		a.marked = []int32{ui}
	}
	a.label = Label{Attack: AttackBruteForce, Rules: rulesOf(false, true, success, false, export),
		ShopID: acc.ShopID, Actor: acc.Actor, Accounts: []shopguard.Account{acc},
		Sources: []string{ip.String()}, Targets: 1}
	if unfamiliar {
		a.label.Rules = withRule(a.label.Rules, shopguard.RuleUnfamiliarLogin)
	}
	if changes {
		a.label.Rules = withRule(a.label.Rules, shopguard.RuleRiskyChange)
	}
	return a
}

// hijack plans AttackHijack: an owner (or, failing that, anyone) at home
// logs in and works a few minutes; 30–90 minutes later the same account,
// with the same browser, logs in from a city at least 3,000 km away and
// exports 1,000–30,000 customers within 20 minutes.
func (g *Generator) hijack(t0 int64) *attack {
	far := g.far[g.rng.IntN(len(g.far))]
	ui := g.victim(120, true, func(_ int32, u *user) bool {
		return g.free(u) && u.cur == u.home && g.km(u.home, far) >= 3000 && g.reachable(u, u.home, t0)
	})
	if ui < 0 {
		return nil
	}
	u := &g.users[ui]
	acc := g.accountOf(ui)
	a := &attack{}
	sid := g.sessionID()
	ev := func(t int64, action shopguard.Action, ip netip.Addr, sid string) *atkEvent {
		a.evs = append(a.evs, atkEvent{t: t, shopID: acc.ShopID, actor: acc.Actor, action: action, ip: ip, ua: u.ua, sid: sid})
		return &a.evs[len(a.evs)-1]
	}
	t := t0
	ev(t, shopguard.ActionLoginSuccess, u.addr, sid)
	for k := g.between(1, 4); k > 0; k-- {
		t += g.uniform(20*time.Second, 3*time.Minute)
		ev(t, shopguard.ActionOther, u.addr, sid).resource = g.resources[g.rng.IntN(len(g.resources))]
	}
	if g.rng.Float64() < 0.7 {
		t += g.uniform(10*time.Second, 2*time.Minute)
		ev(t, shopguard.ActionLogout, u.addr, sid)
	}

	// The hijacker's login must not come from a block flagged for
	// stuffing, which would make it an account_takeover too: it comes from
	// a fresh IPv6 /64, an unflagged attacker /24, or a residential proxy
	// in one of the city's ordinary /24s (never flagged: benign failures
	// stay far below the threshold).
	t1 := t0 + g.uniform(30*time.Minute, 90*time.Minute)
	pl := &g.places[far]
	var ip netip.Addr
	switch slot, free := g.freeSlot(far, true); {
	case len(pl.v6) > 0 && g.rng.Float64() < 0.3:
		ip = g.attackAddr(far, netip.Prefix{}, 1)
	case free:
		ip = hostIn(slot, uint64(g.rng.IntN(hosts(slot))))
		a.slot = slot
	default:
		res := pl.slots[g.rng.IntN(pl.benign)]
		ip = hostIn(res, uint64(g.rng.IntN(hosts(res))))
	}
	sid2 := g.sessionID()
	ev(t1, shopguard.ActionLoginSuccess, ip, sid2)
	t = t1
	for k := g.between(0, 2); k > 0; k-- {
		t += g.uniform(15*time.Second, 2*time.Minute)
		ev(t, shopguard.ActionOther, ip, sid2).resource = "customers/" + strconv.Itoa(100000+g.rng.IntN(900000))
	}
	x := ev(t1+g.uniform(2*time.Minute, 20*time.Minute), shopguard.ActionCustomersExport, ip, sid2)
	x.resource, x.records = "customers", g.logUniform(1000, 30000)

	a.logins = []atkLogin{{u: ui, city: u.home, t: t0}, {u: ui, city: far, t: t1, raises: true}}
	a.busy = []int32{ui}
	a.label = Label{Attack: AttackHijack, Rules: rulesOf(false, false, false, true, true),
		ShopID: acc.ShopID, Actor: acc.Actor, Accounts: []shopguard.Account{acc},
		Sources: []string{ip.String()}, Targets: 1}
	return a
}

// rotation4 plans AttackRotationV4: 25–60 accounts of different shops,
// each tried once from a different address of one attacker /24, one
// attempt every 3–9 s (all within 10 minutes). No attempt succeeds.
func (g *Generator) rotation4(t0 int64) *attack {
	cands, other := g.atk, g.vps
	if g.rng.Float64() < 0.3 {
		cands, other = other, cands
	}
	_, slot, ok := g.attackBlock(cands, false)
	if !ok {
		if _, slot, ok = g.attackBlock(other, false); !ok {
			return nil // every attacker /24 is in use
		}
	}
	n := g.between(25, 60)
	hostIdx := g.rng.Perm(hosts(slot))
	block, _ := hostIn(slot, 0).Prefix(24)
	return g.rotation(t0, n, AttackRotationV4, block.String(), slot, func(i int) netip.Addr {
		return hostIn(slot, uint64(hostIdx[i%len(hostIdx)]))
	})
}

// rotation6 plans AttackRotationV6: like rotation4 inside one attacker /64,
// with random interface ids.
func (g *Generator) rotation6(t0 int64) *attack {
	c := g.atk6[g.rng.IntN(len(g.atk6))]
	pr, sub := g.places[c].attack64()
	block, _ := addr6(pr, sub, 0).Prefix(64)
	return g.rotation(t0, g.between(25, 60), AttackRotationV6, block.String(), netip.Prefix{}, func(int) netip.Addr {
		return addr6(pr, sub, g.rng.Uint64()|1)
	})
}

func (g *Generator) rotation(t0 int64, n int, kind, source string, slot netip.Prefix, addr func(i int) netip.Addr) *attack {
	a := &attack{slot: slot, flags: slot.IsValid()}
	list := g.targets(n, nil)
	if len(list) < 25 {
		return nil // too small a platform for a campaign
	}
	t := t0
	for i, acc := range list {
		// Botnets rotate browser user agents along with the addresses.
		a.evs = append(a.evs, failure(t, acc, addr(i), userAgents[g.rng.IntN(len(userAgents))]))
		t += g.uniform(3*time.Second, 9*time.Second)
	}
	a.label = Label{Attack: kind, Rules: rulesOf(true, false, false, false, false),
		Sources: []string{source}, Targets: len(list)}
	return a
}

// insider plans AttackInsider: a user (staff rather than owners), from
// wherever they usually are, logs in and within 45 minutes exports
// 12,000–30,000 records in 3–6 exports, browsing in between. Nothing else
// about it is suspicious.
func (g *Generator) insider(t0 int64) *attack {
	ui := g.victim(60, false, func(_ int32, u *user) bool {
		return g.free(u) && !u.owner && g.reachable(u, u.cur, t0)
	})
	if ui < 0 {
		ui = g.victim(60, false, func(_ int32, u *user) bool { return g.free(u) && g.reachable(u, u.cur, t0) })
	}
	if ui < 0 {
		return nil
	}
	u := &g.users[ui]
	acc := g.accountOf(ui)
	ip := g.sessionAddr(u, t0)
	sid := g.sessionID()
	a := &attack{}
	ev := func(t int64, action shopguard.Action) *atkEvent {
		a.evs = append(a.evs, atkEvent{t: t, shopID: acc.ShopID, actor: acc.Actor, action: action, ip: ip, ua: u.ua, sid: sid})
		return &a.evs[len(a.evs)-1]
	}
	ev(t0, shopguard.ActionLoginSuccess)
	m := g.between(3, 6)
	total := int64(g.between(12000, 30000))
	parts := make([]float64, m)
	var sum float64
	for i := range parts {
		parts[i] = 0.5 + g.rng.Float64()
		sum += parts[i]
	}
	t := t0 + g.uniform(time.Minute, 5*time.Minute)
	left := total
	for i := range parts {
		n := int64(parts[i] / sum * float64(total))
		if i == m-1 {
			n = left
		}
		left -= n
		act, res := shopguard.ActionCustomersExport, "customers"
		if g.rng.IntN(3) == 0 {
			act, res = shopguard.ActionOrdersExport, "orders"
		}
		x := ev(t, act)
		x.resource, x.records = res, n
		if i < m-1 {
			gap := g.uniform(3*time.Minute, 8*time.Minute)
			for k := g.between(0, 3); k > 0; k-- {
				ev(t+msRound(float64(gap*int64(k)/4)), shopguard.ActionOther).resource = g.resources[g.rng.IntN(len(g.resources))]
			}
			t += gap
		}
	}
	if g.rng.Float64() < 0.8 {
		ev(t+g.uniform(time.Minute, 5*time.Minute), shopguard.ActionLogout)
	}
	a.logins = []atkLogin{{u: ui, city: u.cur, t: t0}}
	a.busy = []int32{ui}
	a.label = Label{Attack: AttackInsider, Rules: rulesOf(false, false, false, false, true),
		ShopID: acc.ShopID, Actor: acc.Actor, Accounts: []shopguard.Account{acc},
		Sources: []string{ip.String()}, Targets: 1}
	return a
}
