package detect

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/medama-io/go-useragent"

	"github.com/shopguard/shopguard"
)

// Property kinds of a profile entry (SPEC §3.1).
const (
	propCountry uint8 = iota
	propNetwork
	propClient
	numProps
)

// Entry flags.
const (
	entTainted     uint8 = 1 << iota // seen first on a login that raised, or during, a finding
	entLastTainted                   // its last sighting was on such a login
)

// pentry is one remembered property of an account: 8 bytes, no pointers.
type pentry struct {
	h     uint32 // the property's value (country code, ASN or hashed block, client family id)
	last  uint16 // event-time day it was last seen
	kind  uint8  // propCountry, propNetwork or propClient
	flags uint8  // entTainted
	days  uint8  // for a tainted entry: distinct clean days it was seen on since
	_     [3]byte
}

// profile is what is normal for one account. It holds at most
// Profile.MaxEntries entries per property in one slice of 8-byte entries
// (most accounts have one to three per property), plus learning counters.
type profile struct {
	ents    []pentry
	logins  uint16 // successful logins
	days    uint8  // distinct days with a successful login
	lastDay uint16 // day of the last successful login
}

// day is the event-time day number of t (unix ns).
func day(t int64) uint16 { return uint16(t / (24 * 3600 * 1e9)) }

// learning reports whether the account is still learning.
func (p *profile) learning(c ProfileConfig) bool {
	return int(p.logins) < c.LearningLogins || int(p.days) < c.LearningDays
}

// familiar reports whether kind/h is a familiar (untainted, unexpired)
// property. It does not allocate.
func (p *profile) familiar(kind uint8, h uint32, today uint16, forget uint16) bool {
	for i := range p.ents {
		e := &p.ents[i]
		if e.kind == kind && e.h == h && e.flags&entTainted == 0 && today-e.last <= forget {
			return true
		}
	}
	return false
}

// trusts reports whether the profile has ever trusted a value of kind: an
// untainted entry, forgotten or not (an account back after months away is
// judged; one whose every value is still pending is not).
func (p *profile) trusts(kind uint8) bool {
	for i := range p.ents {
		if e := &p.ents[i]; e.kind == kind && e.flags&entTainted == 0 {
			return true
		}
	}
	return false
}

// learn records a successful login's property. tainted means the login
// raised a finding or happened while the account had an open one.
func (p *profile) learn(kind uint8, h uint32, today uint16, tainted bool, c ProfileConfig) {
	forget := uint16(c.ForgetDays)
	n, oldest := 0, -1
	for i := range p.ents {
		e := &p.ents[i]
		if e.kind != kind {
			continue
		}
		if e.h == h {
			// A familiar property stays familiar whoever uses it; a
			// pending one starts its clean days over.
			// The first clean sighting after a tainted one counts as a
			// clean day even on the same day, so that a pending property
			// of the owner's gains its clean days with the logins that end
			// learning (which count clean logins only).
			if tainted {
				e.days = 0
				e.flags |= entLastTainted
			} else if e.flags&entTainted != 0 && (today != e.last || e.flags&entLastTainted != 0) {
				e.flags &^= entLastTainted
				if e.days++; int(e.days) >= c.TrustDays {
					e.flags &^= entTainted
				}
			}
			e.last = today
			return
		}
		n++
		if oldest < 0 || e.last < p.ents[oldest].last {
			oldest = i
		}
	}
	ne := pentry{h: h, last: today, kind: kind}
	if tainted {
		ne.flags = entTainted | entLastTainted
	}
	if n >= c.MaxEntries && oldest >= 0 {
		p.ents[oldest] = ne
		return
	}
	// Reuse an expired slot of any kind before growing.
	for i := range p.ents {
		if today-p.ents[i].last > forget {
			p.ents[i] = ne
			return
		}
	}
	if p.ents == nil {
		// Room for two values of each property at once: most accounts
		// never need more, so one allocation per account.
		p.ents = make([]pentry, 0, 2*numProps)
	}
	p.ents = append(p.ents, ne)
}

// clean resets the clean-day counts of tainted entries: a finding on the
// account means the days seen so far were not clean.
func (p *profile) clean() {
	for i := range p.ents {
		if p.ents[i].flags&entTainted != 0 {
			p.ents[i].days = 0
		}
	}
}

// countLogin updates the learning counters.
func (p *profile) countLogin(today uint16) {
	if p.logins < 0xffff {
		p.logins++
	}
	if p.days == 0 || today != p.lastDay {
		if p.days < 0xff {
			p.days++
		}
		p.lastDay = today
	}
}

// props are the three properties of one login.
type props struct {
	country, network, client uint32
	hasCountry               bool
	asn                      uint32
	family                   string
	kind                     clientKind
}

// countryKey packs an ISO code into a property value.
func countryKey(cc string) uint32 {
	if len(cc) != 2 {
		return 0
	}
	return uint32(cc[0])<<8 | uint32(cc[1])
}

// networkKey is the ASN when known, else the hashed IPv4 /24 or IPv6 /48.
func networkKey(ip netip.Addr, asn uint32) uint32 {
	var b [18]byte
	if asn != 0 {
		b[0] = 'A'
		binary.BigEndian.PutUint32(b[1:], asn)
		return uint32(xxhash.Sum64(b[:5]))
	}
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	a := p.Addr().As16()
	b[0] = 'P'
	copy(b[1:], a[:])
	b[17] = byte(bits)
	return uint32(xxhash.Sum64(b[:]))
}

// clientKind says what sort of client a user agent is.
type clientKind uint8

const (
	clientBrowser clientKind = iota
	clientUnknown
	clientScript
	clientHeadless
)

// tools are user-agent tokens of scripts and HTTP libraries, lower case.
var tools = [...]string{"curl/", "python-requests", "python-urllib", "aiohttp", "httpx", "go-http-client",
	"wget/", "okhttp", "java/", "apache-httpclient", "libwww-perl", "node-fetch", "axios/", "postman",
	"powershell", "ruby", "guzzlehttp", "httpie", "scrapy", "zgrab", "masscan", "nikto", "sqlmap"}

// headless are user-agent tokens of headless browsers, lower case.
var headless = [...]string{"headlesschrome", "phantomjs", "slimerjs", "puppeteer", "playwright", "selenium", "electron"}

// uaParser parses browser user agents (medama-io/go-useragent: a trie
// built once, Parse allocates nothing and is safe for concurrent use).
var uaParser = useragent.NewParser()

// classify returns the client family of a user agent without allocating:
// a headless browser its tokens name, the browser and OS (from uaParser)
// for a browser, else the tool its tokens name (a bounded ASCII case-folding scan, not
// a lowered copy). Tools are named by their token, which the parser does
// not give (it calls them all bots).
func classify(ua string) (family string, kind clientKind) {
	if ua == "" {
		return "none", clientUnknown
	}
	// Headless browsers first: the parser takes some (PhantomJS) for the
	// browser they imitate.
	for _, t := range headless {
		if containsFold(ua, t) {
			return t, clientHeadless
		}
	}
	a := uaParser.Parse(ua)
	if b := a.Browser(); b != "" && !a.IsBot() {
		return familyName(string(b), string(a.OS())), clientBrowser
	}
	for _, t := range tools {
		if containsFold(ua, t) {
			return strings.TrimSuffix(t, "/"), clientScript
		}
	}
	if b := a.Browser(); b != "" {
		return familyName(string(b), string(a.OS())), clientBrowser
	}
	return "unknown", clientUnknown
}

// families interns "browser on os" (lower case) per pair the parser
// returns, so classify allocates only the first time it meets a pair.
var families = struct {
	sync.RWMutex
	m map[[2]string]string
}{m: map[[2]string]string{}}

// familyName is the interned lower-case b+" on "+o ("other" for an empty
// OS).
func familyName(b, o string) string {
	if o == "" {
		o = "other"
	}
	k := [2]string{b, o}
	families.RLock()
	f, ok := families.m[k]
	families.RUnlock()
	if ok {
		return f
	}
	families.Lock()
	defer families.Unlock()
	if f, ok := families.m[k]; ok {
		return f
	}
	f = strings.ToLower(b + " on " + o)
	families.m[k] = f
	return f
}

// containsFold reports whether s contains the lower-case ASCII token t,
// ignoring ASCII case in s.
func containsFold(s, t string) bool {
	n := len(t)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != t[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

// loginProps computes the profile properties of ev.
func (e *Engine) loginProps(ev *shopguard.Event) props {
	var p props
	if e.loc != nil {
		if g, ok := e.loc.Locate(ev.IP); ok {
			p.country = countryKey(g.Country)
			p.hasCountry = p.country != 0
			p.asn = g.ASN
		}
	}
	p.network = networkKey(ev.IP, p.asn)
	c := e.uaCache.get(ev.UserAgent)
	p.family, p.kind, p.client = c.family, c.kind, c.id
	return p
}

// uaCacheSize is the number of slots of the user-agent cache: real traffic
// has a few hundred distinct user agents at any time.
const uaCacheSize = 1024

// uaEntry is one classified user agent.
type uaEntry struct {
	h      uint64
	ua     string // the user agent, owned (a copy)
	family string
	kind   clientKind
	id     uint32 // hash of family: the profile's client value
}

// uaCache memoises classify per distinct user agent, direct-mapped by its
// hash, so the hot path hashes the string instead of scanning it for
// dozens of tokens (a replay spent two thirds of its time there). A miss
// copies the user agent once; a hit allocates nothing.
type uaCache struct{ slots []uaEntry }

func (c *uaCache) get(ua string) *uaEntry {
	if c.slots == nil {
		c.slots = make([]uaEntry, uaCacheSize)
	}
	h := xxhash.Sum64String(ua)
	s := &c.slots[h%uaCacheSize]
	if s.h == h && s.ua == ua && s.family != "" {
		return s
	}
	fam, kind := classify(ua)
	*s = uaEntry{h: h, ua: strings.Clone(ua), family: fam, kind: kind, id: uint32(xxhash.Sum64String(fam))}
	return s
}
