package generate

import (
	"encoding/binary"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/shopguard/shopguard/ingest/geodemo"
)

// place is a geodemo city as the generator uses it: its address blocks cut
// into /24 slots and /64 subnets, split into a benign part (homes, offices,
// hotels) and an attacker part, so that no attack ever shares a /24 or /64
// with benign users when the city's blocks allow it.
type place struct {
	geodemo.City
	jp      bool
	tz      int64   // offset of local time from UTC in seconds (approximate outside Japan)
	homeW   float64 // weight as a shop's home city
	country uint8   // index of the country among the cities' countries
	slots   []netip.Prefix
	benign  int // slots[:benign] are benign, slots[benign:] the attackers'
	v6      []netip.Prefix

	next4, atk4 uint64 // allocation counters
	next6, atk6 uint64
}

// maxSlots bounds how many /24 slots of one city the generator enumerates.
const maxSlots = 1 << 16

func newPlace(c geodemo.City) place {
	p := place{City: c, jp: c.Country == "JP"}
	if p.jp {
		p.tz = 9 * 3600
	} else {
		p.tz = int64(math.Round(c.Lon/15)) * 3600
	}
	for _, pr := range c.V4 {
		pr = pr.Masked()
		if !pr.Addr().Is4() {
			continue
		}
		if pr.Bits() > 24 {
			p.slots = append(p.slots, pr)
			continue
		}
		base := v4uint(pr.Addr())
		for j := uint32(0); j < 1<<(24-pr.Bits()) && len(p.slots) < maxSlots; j++ {
			p.slots = append(p.slots, netip.PrefixFrom(v4addr(base+j<<8), 24))
		}
	}
	switch n := len(p.slots); {
	case n >= 4:
		p.benign = n - n/4
	case n >= 2:
		p.benign = n - 1
	default:
		p.benign = n // one slot: benign and attackers share it
	}
	for _, pr := range c.V6 {
		pr = pr.Masked()
		if pr.Addr().Is6() && !pr.Addr().Is4In6() {
			p.v6 = append(p.v6, pr)
		}
	}
	return p
}

func v4uint(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func v4addr(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// hostIn returns the i-th usable host of a slot (modulo its size), skipping
// the network and broadcast addresses when the slot has room for that.
func hostIn(slot netip.Prefix, i uint64) netip.Addr {
	size := uint64(1) << (32 - slot.Bits())
	base := v4uint(slot.Addr())
	if size >= 4 {
		return v4addr(base + 1 + uint32(i%(size-2)))
	}
	return v4addr(base + uint32(i%size))
}

// hosts is how many distinct addresses hostIn yields for slot.
func hosts(slot netip.Prefix) int {
	size := 1 << (32 - slot.Bits())
	if size >= 4 {
		return size - 2
	}
	return size
}

// benign4 allocates the next benign IPv4 address, spreading consecutive
// allocations over the benign slots so that no /24 collects many users.
func (p *place) benign4() netip.Addr {
	k := p.next4
	p.next4++
	n := uint64(p.benign)
	// Stride the hosts so neighbouring users do not get neighbouring
	// addresses; 97 is prime to 254, the hosts of a /24.
	return hostIn(p.slots[k%n], (k/n)*97)
}

// attackSlot returns the next attacker /24 slot, cycling through them so
// that consecutive attacks in a city use different blocks when it has more
// than one.
func (p *place) attackSlot() netip.Prefix {
	k := p.atk4
	p.atk4++
	if n := uint64(len(p.slots) - p.benign); n > 0 {
		return p.slots[uint64(p.benign)+k%n]
	}
	return p.slots[k%uint64(len(p.slots))]
}

// subnets64 is how many /64s of pr the generator uses (all of them, up to
// 2^40).
func subnets64(pr netip.Prefix) uint64 {
	if pr.Bits() >= 64 {
		return 1
	}
	return uint64(1) << min(64-pr.Bits(), 40)
}

// addr6 returns the address with interface id iid in the sub-th /64 of pr.
// For a block narrower than /64 the interface id is taken modulo its size.
func addr6(pr netip.Prefix, sub, iid uint64) netip.Addr {
	b := pr.Addr().As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	if pr.Bits() <= 64 {
		hi += sub % subnets64(pr)
		lo = iid
	} else {
		lo += iid & (uint64(1)<<(128-pr.Bits()) - 1)
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// benign6 allocates a benign IPv6 address in a /64 of its own (like a home
// ISP's delegation), from the lower half of the city's /64s.
func (p *place) benign6(iid uint64) netip.Addr {
	k := p.next6
	p.next6++
	n := uint64(len(p.v6))
	pr := p.v6[k%n]
	half := max(subnets64(pr)/2, 1)
	return addr6(pr, (k/n)%half, iid)
}

// attack64 returns the next attacker /64 (from the upper half of the
// city's /64s) as a block and its index, for addr6.
func (p *place) attack64() (netip.Prefix, uint64) {
	k := p.atk6
	p.atk6++
	pr := p.v6[k%uint64(len(p.v6))]
	n := subnets64(pr)
	sub := n/2 + (k/uint64(len(p.v6)))%max(n-n/2, 1)
	if n == 1 {
		sub = 0
	}
	a := addr6(pr, sub, 0)
	if pr.Bits() > 64 {
		return pr, 0
	}
	return netip.PrefixFrom(a, 64), sub
}

// homeWeights weighs the cities shops are based in; a city not listed
// weighs 1.5 in Japan and 0.6 elsewhere.
var homeWeights = map[string]float64{
	"Tokyo": 30, "Osaka": 12, "Yokohama": 7, "Nagoya": 6, "Sapporo": 4,
	"Fukuoka": 4, "Kobe": 3, "Kyoto": 3, "Kawasaki": 3, "Saitama": 3,
	"Sendai": 2, "Hiroshima": 2, "Chiba": 2,
}

// Attackers come from these cities, when the demo database has them.
var (
	// farCities host the hijackers of AttackHijack.
	farCities = []string{"Frankfurt", "Moscow", "São Paulo", "Lagos"}
	// attackCities host the other attackers' servers and proxies.
	attackCities = []string{"Frankfurt", "Moscow", "São Paulo", "Lagos", "Amsterdam",
		"Kyiv", "Singapore", "Hong Kong", "Hanoi", "Jakarta", "Ashburn", "Seoul",
		"Shanghai", "Bangkok", "Mumbai", "London", "Paris", "New York", "San Francisco", "Taipei"}
	// vpsCities host attackers renting servers close to their victims.
	vpsCities = []string{"Tokyo", "Osaka", "Fukuoka"}
)

// shop is one tenant.
type shop struct {
	id     string // "shop-17"
	domain string // "shop-17.example", for actors' e-mail addresses
	city   int16
	office netip.Addr // shared office address (public or a private LAN address), or invalid
	users  []int32    // owner first
}

// user is one admin account and what the generator remembers about it to
// keep its benign behaviour below every threshold.
type user struct {
	shop         int32
	actor        string
	owner        bool
	officeWorker bool // logs in from the shop's office on weekdays
	home, cur    int16
	addr         netip.Addr // home address
	away         netip.Addr // address while travelling (cur != home)
	ua           string

	// The last successful login (attack or benign) in event time, for
	// keeping benign travel possible; lastT 0 is none.
	lastT    int64
	lastCity int16
	// busyUntil keeps benign sessions away while an attack episode runs on
	// the account and for an hour after it.
	busyUntil int64
	active    int32 // benign sessions in flight

	fails   [maxBenignFails]int64 // event times of recent benign failed logins
	hits    [2]int64              // when stuffing lists last tried the account
	exports [8]export             // recent benign exports

	// The mirror of the detector's profile (see sawLogin): successful
	// logins, the distinct days they fell on, the last of those days, the
	// countries of clean logins (a bit per country), and the end of the
	// last attack episode that raised a finding on the account.
	logins    uint16
	days      uint8
	lastDay   uint16
	countries uint64
	findingAt int64
}

type export struct{ t, n int64 }

// Name lists for actors' e-mail addresses (ASCII local parts).
var (
	jpGiven  = []string{"yuki", "haruto", "sakura", "ren", "aoi", "hina", "sota", "yui", "kaito", "mei", "riku", "hana", "takumi", "yuna", "daiki", "miku", "kenta", "ayaka", "shota", "nanami", "kenji", "emi", "hiroshi", "mayu"}
	jpFamily = []string{"sato", "suzuki", "takahashi", "tanaka", "watanabe", "ito", "yamamoto", "nakamura", "kobayashi", "kato", "yoshida", "yamada", "sasaki", "yamaguchi", "matsumoto", "inoue", "kimura", "hayashi", "shimizu", "mori"}
	exGiven  = []string{"anna", "lukas", "maria", "jonas", "sofia", "felix", "olga", "ivan", "ana", "pedro", "chidi", "amara", "emma", "noah", "lena", "tomas", "priya", "wei"}
	exFamily = []string{"mueller", "schmidt", "ivanova", "petrov", "silva", "santos", "okafor", "adeyemi", "smith", "jones", "novak", "garcia", "chen", "kumar", "nguyen", "weber"}
	// Roles stuffing lists try that no generated shop has.
	unknownLocal = []string{"admin", "info", "sales", "support", "contact", "shop", "office", "test", "webmaster", "manager"}
)

// Browser user agents of benign users, and the tools attackers use.
var (
	userAgents = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Safari/605.1.15",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
	}
	toolAgents = []string{
		"python-requests/2.32.3",
		"Go-http-client/1.1",
		"curl/8.11.1",
		"okhttp/4.12.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
	}
)

// buildPopulation creates the cities, shops and users. It draws only from
// g.rng, so it is deterministic for a seed.
func (g *Generator) buildPopulation() {
	g.places = make([]place, len(geodemo.Cities))
	countries := map[string]uint8{}
	for i, c := range geodemo.Cities {
		g.places[i] = newPlace(c)
		k, ok := countries[c.Country]
		if !ok {
			k = uint8(len(countries))
			countries[c.Country] = k
		}
		g.places[i].country = k
		w, ok := homeWeights[c.Name]
		switch {
		case ok:
		case g.places[i].jp:
			w = 1.5
		default:
			w = 0.6
		}
		if len(g.places[i].slots) == 0 {
			w = 0 // nowhere to live without IPv4
		}
		g.places[i].homeW = w
	}
	n := len(g.places)
	g.dist = make([]float64, n*n)
	for i := range g.places {
		for j := range g.places {
			g.dist[i*n+j] = haversineKM(g.places[i].Lat, g.places[i].Lon, g.places[j].Lat, g.places[j].Lon)
		}
	}
	g.far = g.cityIndexes(farCities, false)
	g.atk = g.cityIndexes(attackCities, false)
	g.vps = g.cityIndexes(vpsCities, true)
	for i := range g.places {
		if len(g.places[i].v6) > 0 && len(g.places[i].slots) > 0 && !g.places[i].jp {
			g.atk6 = append(g.atk6, int16(i))
		}
	}
	if len(g.atk6) == 0 {
		for i := range g.places {
			if len(g.places[i].v6) > 0 {
				g.atk6 = append(g.atk6, int16(i))
			}
		}
	}

	homeCum := make([]float64, n)
	var sum float64
	for i := range g.places {
		sum += g.places[i].homeW
		homeCum[i] = sum
	}

	g.shops = make([]shop, g.cfg.Shops)
	g.users = make([]user, 0, g.cfg.Shops*3)
	var actCum []float64
	var act float64
	for si := range g.shops {
		s := &g.shops[si]
		s.id = "shop-" + strconv.Itoa(si+1)
		s.domain = s.id + ".example"
		s.city = int16(pick(homeCum, g.rng.Float64()*sum))
		pl := &g.places[s.city]
		switch r := g.rng.Float64(); {
		case r < 0.55:
			s.office = pl.benign4()
		case r < 0.60:
			// An office LAN behind a proxy that logs private addresses:
			// unlocatable noise, one /24 per shop.
			s.office = netip.AddrFrom4([4]byte{10, byte(si >> 8), byte(si), byte(1 + g.rng.IntN(250))})
		}
		staff := staffCounts[pick(staffCum, g.rng.Float64())]
		taken := map[string]bool{}
		for k := 0; k <= staff; k++ {
			u := user{
				shop:     int32(si),
				owner:    k == 0,
				home:     s.city,
				cur:      s.city,
				lastCity: s.city,
				ua:       userAgents[g.rng.IntN(len(userAgents))],
			}
			u.officeWorker = s.office.IsValid() && g.rng.Float64() < 0.7
			u.actor = g.actorName(pl.jp, s.domain, taken)
			if len(pl.v6) > 0 && g.rng.Float64() < 0.15 {
				u.addr = pl.benign6(g.rng.Uint64() | 1)
			} else {
				u.addr = pl.benign4()
			}
			s.users = append(s.users, int32(len(g.users)))
			g.users = append(g.users, u)
			// Activity varies a lot between people; owners log in more.
			w := 0.1 + g.rng.ExpFloat64()
			if u.owner {
				w *= 1.5
			}
			act += w
			actCum = append(actCum, act)
		}
	}
	g.actCum, g.actSum = actCum, act
}

// Staff per shop besides the owner, and how likely each count is.
var (
	staffCounts = []int{0, 1, 2, 3, 4, 5}
	staffCum    = cumulative([]float64{0.30, 0.25, 0.18, 0.12, 0.08, 0.07})
)

func cumulative(ws []float64) []float64 {
	out := make([]float64, len(ws))
	var s float64
	for i, w := range ws {
		s += w
		out[i] = s
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

// pick returns the first index whose cumulative weight exceeds x.
func pick(cum []float64, x float64) int {
	lo, hi := 0, len(cum)-1
	for lo < hi {
		m := (lo + hi) / 2
		if cum[m] > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// actorName returns an e-mail address not yet taken in the shop.
func (g *Generator) actorName(jp bool, domain string, taken map[string]bool) string {
	given, family := exGiven, exFamily
	if jp || g.rng.Float64() < 0.2 {
		given, family = jpGiven, jpFamily
	}
	local := given[g.rng.IntN(len(given))] + "." + family[g.rng.IntN(len(family))]
	name := local
	for i := 2; taken[name]; i++ {
		name = local + strconv.Itoa(i)
	}
	taken[name] = true
	return name + "@" + domain
}

// cityIndexes returns the indexes of the named cities the database has; if
// none, every city outside Japan (or, with jp, in Japan); if still none,
// every city. Only cities with IPv4 blocks qualify.
func (g *Generator) cityIndexes(names []string, jp bool) []int16 {
	var out []int16
	for _, name := range names {
		for i := range g.places {
			if strings.EqualFold(g.places[i].Name, name) && len(g.places[i].slots) > 0 {
				out = append(out, int16(i))
				break
			}
		}
	}
	for pass := 0; len(out) == 0 && pass < 2; pass++ {
		for i := range g.places {
			if len(g.places[i].slots) > 0 && (pass == 1 || g.places[i].jp == jp) {
				out = append(out, int16(i))
			}
		}
	}
	return out
}

// haversineKM is the great-circle distance between two points in km.
func haversineKM(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	p1, p2 := lat1*math.Pi/180, lat2*math.Pi/180
	dp, dl := p2-p1, (lon2-lon1)*math.Pi/180
	a := math.Sin(dp/2)*math.Sin(dp/2) + math.Cos(p1)*math.Cos(p2)*math.Sin(dl/2)*math.Sin(dl/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(a)))
}
