package generate

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/shopguard/shopguard"
)

// The campaign attacks of SPEC §3.2. They are off in DefaultConfig.Mix (weight
// 0), so that the streams of a seed stay what they were before them; turn
// them on with mix.list_wave, mix.unknown_spray and mix.rotation_v6_48.
// stuffing_wave needs a day of baseline first (its warm-up), so a stream
// shorter than that raises no wave whatever its episodes.
const (
	// AttackListWave is a leaked list tried from a botnet: 150–300
	// accounts of different shops within about 45 minutes, one attempt
	// each, each from an address of its own in a random attacker block
	// (no source nears credential_stuffing), and 1–2 of them logged into
	// with a script from an address that failed in the wave: a
	// stuffing_wave and account_takeover findings with its wave_id.
	AttackListWave = "stuffing_wave_list"
	// AttackUnknownSpray is 200–400 failures as unknown_user (ids that do
	// not exist) within 10 minutes from as many addresses: a
	// stuffing_wave with a high unknown_user share.
	AttackUnknownSpray = "unknown_user_spray"
	// AttackRotationV6W rotates across 25–60 /64s of one IPv6 /48, one
	// account per /64: only the /48 crosses credential_stuffing.
	AttackRotationV6W = "rotation_ipv6_48"
)

// CampaignAttacks lists the campaign attack kinds (see Attacks for the
// others).
func CampaignAttacks() []string {
	return []string{AttackListWave, AttackUnknownSpray, AttackRotationV6W}
}

// spreadAddr returns an address of a random attacker /24 of a random
// attacker city: consecutive calls land in different /16s, as a botnet's
// or a residential proxy pool's do. It reserves nothing: one address per
// attempt never brings a block near a threshold.
func (g *Generator) spreadAddr() (netip.Addr, int16) {
	cands := g.atk
	if g.rng.IntN(3) == 0 {
		cands = g.vps
	}
	c := cands[g.rng.IntN(len(cands))]
	pl := &g.places[c]
	slots := pl.slots[pl.benign:]
	if len(slots) == 0 {
		slots = pl.slots
	}
	s := slots[g.rng.IntN(len(slots))]
	return hostIn(s, uint64(g.rng.IntN(hosts(s)))), c
}

// spread is spreadAddr's address alone.
func (g *Generator) spread() netip.Addr {
	ip, _ := g.spreadAddr()
	return ip
}

// listWave plans AttackListWave.
func (g *Generator) listWave(t0 int64) *attack {
	n := g.between(150, 300)
	span := g.uniform(35*time.Minute, 50*time.Minute)
	// The logins come late in the wave, once it is above threshold, from
	// a city each victim could have reached (no impossible_travel).
	var victims []int32
	var logins []int64
	var addrs []netip.Addr
	var cities []int16
	for k := range g.between(1, 2) {
		tl := t0 + span*int64(8+k)/10
		ip, city := g.spreadAddr()
		v := g.victim(40, false, func(ui int32, u *user) bool {
			return g.free(u) && !contains32(victims, ui) && g.reachable(u, city, tl)
		})
		if v >= 0 {
			victims = append(victims, v)
			logins, addrs, cities = append(logins, tl), append(addrs, ip), append(cities, city)
		}
	}
	list := g.targets(n-len(victims), victims)
	if len(list) < 120 {
		return nil // too small a platform for a wave
	}
	a := &attack{busy: victims}
	a.label = Label{Attack: AttackListWave, Sources: []string{}, Targets: len(list) + len(victims)}
	ua := toolAgents[g.rng.IntN(len(toolAgents))]
	for i, acc := range list {
		t := t0 + span*int64(i)/int64(len(list))
		a.evs = append(a.evs, failure(t, acc, g.spread(), userAgents[g.rng.IntN(len(userAgents))]))
	}
	for k, ui := range victims {
		acc := g.accountOf(ui)
		ip := addrs[k]
		a.logins = append(a.logins, atkLogin{u: ui, city: cities[k], t: logins[k]})
		tf := logins[k] - g.uniform(time.Minute, 5*time.Minute)
		a.evs = append(a.evs, failure(tf, account{u: ui, shopID: acc.ShopID, actor: acc.Actor}, ip, ua),
			atkEvent{t: logins[k], shopID: acc.ShopID, actor: acc.Actor, action: shopguard.ActionLoginSuccess,
				ip: ip, ua: ua, sid: g.sessionID()})
		a.label.Accounts = append(a.label.Accounts, acc)
	}
	a.label.Rules = []string{shopguard.RuleStuffingWave}
	if len(victims) > 0 {
		a.label.Rules = append(a.label.Rules, shopguard.RuleAccountTakeover)
	}
	return a
}

// unknownSpray plans AttackUnknownSpray.
func (g *Generator) unknownSpray(t0 int64) *attack {
	n := g.between(200, 400)
	a := &attack{}
	a.label = Label{Attack: AttackUnknownSpray, Rules: []string{shopguard.RuleStuffingWave}, Sources: []string{}, Targets: n}
	ua := toolAgents[g.rng.IntN(len(toolAgents))]
	span := g.uniform(6*time.Minute, 10*time.Minute)
	for i := range n {
		s := &g.shops[g.rng.IntN(len(g.shops))]
		acc := account{u: -1, shopID: s.id,
			actor: unknownLocal[g.rng.IntN(len(unknownLocal))] + strconv.Itoa(i) + "@" + s.domain}
		a.evs = append(a.evs, failure(t0+span*int64(i)/int64(n), acc, g.spread(), ua))
	}
	return a
}

// rotation48 plans AttackRotationV6W: the attacker /64s of one city's
// /48, one account from each.
func (g *Generator) rotation48(t0 int64) *attack {
	if len(g.atk6) == 0 {
		return nil
	}
	pl := &g.places[g.atk6[g.rng.IntN(len(g.atk6))]]
	pr := pl.v6[g.rng.IntN(len(pl.v6))]
	if pr.Bits() > 48 {
		return nil
	}
	// Distinct /64s of one /48 of the block, in the upper half of each
	// /48's subnets: the benign users' /64s are in the block's lower half
	// (place.benign6) and a /48 block's attacker /64s in its upper half.
	subs := subnets64(pr)
	s0 := subs/2 + g.rng.Uint64()%max(subs-subs/2, 1)
	wide, _ := addr6(pr, s0, 0).Prefix(48)
	return g.rotation(t0, g.between(25, 60), AttackRotationV6W, wide.String(), netip.Prefix{}, func(i int) netip.Addr {
		sub := s0&^0xffff | 0x8000 | (s0+uint64(i))&0x7fff
		return addr6(pr, sub, g.rng.Uint64()|1)
	})
}

func contains32(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
