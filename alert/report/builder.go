// Package report builds incidents out of findings and the events around
// them (SPEC §8): it groups findings into campaigns by evidence.cause_id
// chains, shared source (address, block, ASN) and evidence.wave_id, works
// out every account an incident's sources tried, and writes report.html,
// accounts.csv and incidents.json.
//
// It does not detect anything, read input or deliver findings: it is fed
// the engine's events and findings, in event order, by cmd/shopguard. It
// imports only the root package and the standard library.
package report

import (
	"hash/maphash"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/shopguard/shopguard"
)

// Options configures a Builder.
type Options struct {
	// Locator, if set, places sources (country, city) in the report.
	Locator shopguard.Locator
	// Window is how much recent activity (event time) is kept for every
	// source, so that a source flagged by a finding brings in the
	// accounts it tried before the finding. Default 1h, the longest window
	// of the rules that flag a source.
	Window time.Duration
	// AccountHorizon is how long after an account's last finding its own
	// failures (and, once compromised, its changes and exports) still
	// count towards its incident. Default 24h.
	AccountHorizon time.Duration
}

// rec is one event kept in the recent-activity ring: what an incident needs
// of it, in 56 bytes and no pointers (the garbage collector never scans
// the ring), with the account name in the builder's name arena.
type rec struct {
	t    int64  // unix ns
	recs int64  // exported records
	name int64  // offset of shop_id + "\x00" + actor in the name arena
	h    uint64 // hash of the name
	ip   [16]byte
	nlen uint32
	is4  bool
	act  shopguard.Action
	kind uint8
	done bool // already attributed to an incident
}

func (r *rec) addr() netip.Addr {
	a := netip.AddrFrom16(r.ip)
	if r.is4 {
		return a.Unmap()
	}
	return a
}

const (
	kindFail uint8 = iota
	kindSuccess
	kindChange
	kindExport
)

// node is a union-find node: a finding, a source, or a wave.
type node struct {
	parent *node
	size   int
	inc    *incident // root only
}

func (n *node) root() *node {
	for n.parent != nil {
		if n.parent.parent != nil {
			n.parent = n.parent.parent
		}
		n = n.parent
	}
	return n
}

// incident is the state of one group of findings (kept at the root).
type incident struct {
	findings []*shopguard.Finding
	accounts map[string]*acctStat
	sources  map[netip.Addr]*srcStat
	keys     map[string]bool // source keys (addresses, blocks, ASNs) and waves named by findings
	buckets  map[int64]*bucket
	first    int64
	last     int64
}

type acctStat struct {
	shop, actor string
	first, last int64
	fails       int64
	successes   int64
	changes     int64
	exported    int64
	compromised bool
	findings    []string
}

type srcStat struct {
	fails, successes, other int64
	first, last             int64
}

type bucket struct{ fails, successes, findings int64 }

// bucketNS is the resolution of the stored timeline: one minute.
const bucketNS = int64(time.Minute)

// maxSourcesPerIncident bounds the addresses an incident lists; events from
// further addresses still count towards its accounts and timeline.
const maxSourcesPerIncident = 20000

// maxIDsPerAccount bounds finding_ids per account row.
const maxIDsPerAccount = 20

// Builder builds incidents from events and findings fed in event order. It
// is not safe for concurrent use.
type Builder struct {
	opt Options

	ring  []rec // recent activity, oldest first from head
	head  int
	mark  int64  // newest event time seen
	names []byte // the ring's account names, from names offset base
	base  int64
	seed  maphash.Seed

	// Sources and accounts tracked since the ring was last scanned: a scan
	// checks the entries not yet attributed against these only.
	newSrc  []netip.Prefix
	newAcct []uint64
	flush   bool
	scanAll bool // more were tracked than a scan checks one by one

	findings map[string]*node       // finding id → node
	sources  map[netip.Prefix]*node // tracked sources (address or block)
	index    srcIndex               // the same sources, for lookups
	named    map[string]*node       // ASNs and waves
	accounts map[uint64]*acctTrack  // accounts with findings by name hash, for AccountHorizon
	acctBits []uint64               // a one-hash Bloom filter of accounts' keys: most events skip the map
}

// acctBitsLen is the filter's size in words (1 Mibit, 128 KiB).
const acctBitsLen = 1 << 14

func (b *Builder) markAcct(h uint64) { b.acctBits[h>>6%acctBitsLen] |= 1 << (h & 63) }

// acctTrack attributes an account's own activity after a finding.
type acctTrack struct {
	key         string // shop_id + "\x00" + actor
	n           *node
	until       int64
	compromised bool
}

// New returns an empty Builder.
func New(opt Options) *Builder {
	if opt.Window <= 0 {
		opt.Window = time.Hour
	}
	if opt.AccountHorizon <= 0 {
		opt.AccountHorizon = 24 * time.Hour
	}
	return &Builder{opt: opt, seed: maphash.MakeSeed(),
		findings: map[string]*node{}, sources: map[netip.Prefix]*node{}, index: newSrcIndex(), named: map[string]*node{},
		accounts: map[uint64]*acctTrack{}, acctBits: make([]uint64, acctBitsLen)}
}

func acctKey(shop, actor string) string { return shop + "\x00" + actor }

// name returns r's account name; it aliases the arena until the next
// Observe.
func (b *Builder) name(r *rec) []byte {
	o := r.name - b.base
	return b.names[o : o+int64(r.nlen)]
}

// track returns the tracked account named k (hash h), or nil.
func (b *Builder) track(h uint64, k []byte) *acctTrack {
	if b.acctBits[h>>6%acctBitsLen]&(1<<(h&63)) == 0 {
		return nil
	}
	if a := b.accounts[h]; a != nil && a.key == string(k) {
		return a
	}
	return nil
}

// Observe takes one event and the findings the engine raised for it (fs may
// be empty). It copies what it keeps: ev's strings may alias a reused
// buffer.
func (b *Builder) Observe(ev *shopguard.Event, fs []shopguard.Finding) {
	var kind uint8
	switch {
	case ev.Action == shopguard.ActionLoginFailure:
		kind = kindFail
	case ev.Action == shopguard.ActionLoginSuccess:
		kind = kindSuccess
	case ev.Action.IsExport():
		kind = kindExport
	case ev.Action.Sensitive():
		kind = kindChange
	default:
		for i := range fs {
			b.Finding(&fs[i], nil)
		}
		return
	}
	t := ev.Time.UnixNano()
	if t > b.mark {
		b.mark = t
	}
	for i := range fs {
		b.Finding(&fs[i], ev)
	}
	ip := ev.IP.Unmap()
	r := rec{t: t, ip: ip.As16(), is4: ip.Is4(), kind: kind, act: ev.Action, recs: ev.Records,
		name: b.base + int64(len(b.names)), nlen: uint32(len(ev.ShopID) + 1 + len(ev.Actor))}
	b.names = append(b.names, ev.ShopID...)
	b.names = append(b.names, 0)
	b.names = append(b.names, ev.Actor...)
	r.h = maphash.Bytes(b.seed, b.name(&r))
	if len(b.sources) > 0 || len(b.accounts) > 0 {
		r.done = b.attribute(&r)
	}
	b.ring = append(b.ring, r)
	b.expire()
}

// expire drops ring entries older than the window, in chunks of a tenth of
// it, scanning the ring once for sources tracked since the last drop first,
// so that a source's activity before its finding is attributed.
func (b *Builder) expire() {
	win := int64(b.opt.Window)
	if b.ring[b.head].t >= b.mark-win-win/10 {
		return
	}
	b.scan()
	i := b.head
	for i < len(b.ring) && b.ring[i].t < b.mark-win {
		b.ring[i] = rec{}
		i++
	}
	b.head = i
	if b.head > len(b.ring)/2 { // compact, amortised, the names with it
		n := copy(b.ring, b.ring[b.head:])
		clear(b.ring[n:])
		b.ring = b.ring[:n]
		b.head = 0
		cut := int64(len(b.names))
		if n > 0 {
			cut = b.ring[0].name - b.base
		}
		b.names = b.names[:copy(b.names, b.names[cut:])]
		b.base += cut
	}
}

// tracked notes a source (p, if not nil) or an account (name hash h)
// tracked since the last scan.
func (b *Builder) tracked(p *netip.Prefix, h uint64) {
	b.flush = true
	switch {
	case b.scanAll:
	case len(b.newSrc)+len(b.newAcct) >= maxIncremental:
		b.scanAll, b.newSrc, b.newAcct = true, b.newSrc[:0], b.newAcct[:0]
	case p != nil:
		b.newSrc = append(b.newSrc, *p)
	default:
		b.newAcct = append(b.newAcct, h)
	}
}

// maxIncremental is how many newly tracked sources and accounts a scan
// checks each ring entry against one by one; beyond that it looks every
// entry up in full.
const maxIncremental = 16

// scan attributes ring entries not yet attributed to sources and accounts
// tracked since the last scan. An entry that was not attributed before
// was checked against everything tracked then, and sources are only added
// between scans, so the new ones are all it needs to be checked against.
func (b *Builder) scan() {
	if !b.flush {
		return
	}
	full := b.scanAll
	var v4 [maxIncremental]struct{ a, mask uint32 }
	var v6 []netip.Prefix
	n4 := 0
	for _, p := range b.newSrc {
		if p.Addr().Is4() {
			a := p.Addr().As4()
			v4[n4].mask = ^uint32(0) << (32 - p.Bits())
			if p.Bits() == 0 {
				v4[n4].mask = 0
			}
			v4[n4].a = uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
			n4++
		} else {
			v6 = append(v6, p)
		}
	}
	for i := b.head; i < len(b.ring); i++ {
		r := &b.ring[i]
		if r.done {
			continue
		}
		hit := full
		if !hit && r.is4 {
			a := uint32(r.ip[12])<<24 | uint32(r.ip[13])<<16 | uint32(r.ip[14])<<8 | uint32(r.ip[15])
			for _, p := range v4[:n4] {
				if a&p.mask == p.a {
					hit = true
					break
				}
			}
		} else if !hit && len(v6) > 0 {
			a := r.addr()
			for _, p := range v6 {
				hit = hit || p.Contains(a)
			}
		}
		for j := 0; !hit && j < len(b.newAcct); j++ {
			hit = b.newAcct[j] == r.h
		}
		if hit {
			r.done = b.attribute(r)
		}
	}
	b.flush, b.scanAll, b.newSrc, b.newAcct = false, false, b.newSrc[:0], b.newAcct[:0]
}

// attribute counts r towards the incident of its source or, failing that,
// of its account; it reports whether r was attributed.
func (b *Builder) attribute(r *rec) bool {
	n := b.index.get(r.ip, r.is4)
	viaAccount := false
	name := b.name(r)
	if n == nil {
		a := b.track(r.h, name)
		if a == nil || r.t > a.until {
			return false
		}
		// The account's own activity from elsewhere: failures always,
		// changes and exports once it was taken over.
		if r.kind == kindSuccess || (r.kind != kindFail && !a.compromised) {
			return false
		}
		n, viaAccount = a.n, true
	}
	inc := n.root().inc
	st := inc.accounts[string(name)]
	if st == nil {
		k := string(name)
		shop, actor, _ := strings.Cut(k, "\x00")
		st = inc.account(k, shop, actor)
	}
	st.touch(r.t)
	inc.touch(r.t)
	bk := inc.bucket(r.t)
	switch r.kind {
	case kindFail:
		st.fails++
		bk.fails++
	case kindSuccess:
		st.successes++
		bk.successes++
	case kindChange:
		st.changes++
	case kindExport:
		st.exported += r.recs
	}
	if !viaAccount {
		ip := r.addr()
		s := inc.sources[ip]
		if s == nil && len(inc.sources) < maxSourcesPerIncident {
			s = &srcStat{first: r.t}
			inc.sources[ip] = s
		}
		if s != nil {
			switch r.kind {
			case kindFail:
				s.fails++
			case kindSuccess:
				s.successes++
			default:
				s.other++
			}
			s.first, s.last = min(s.first, r.t), max(s.last, r.t)
		}
	}
	return true
}

func (inc *incident) account(key, shop, actor string) *acctStat {
	st := inc.accounts[key]
	if st == nil {
		st = &acctStat{shop: shop, actor: actor}
		inc.accounts[key] = st
	}
	return st
}

func (inc *incident) bucket(t int64) *bucket {
	k := t / bucketNS
	bk := inc.buckets[k]
	if bk == nil {
		bk = &bucket{}
		inc.buckets[k] = bk
	}
	return bk
}

func (inc *incident) touch(t int64) {
	if inc.first == 0 || t < inc.first {
		inc.first = t
	}
	inc.last = max(inc.last, t)
}

func (s *acctStat) touch(t int64) {
	if s.first == 0 || t < s.first {
		s.first = t
	}
	s.last = max(s.last, t)
}

func (s *acctStat) addFinding(id string) {
	for _, x := range s.findings {
		if x == id {
			return
		}
	}
	if len(s.findings) < maxIDsPerAccount {
		s.findings = append(s.findings, id)
	}
}

// newNode returns a root node with an empty incident.
func newNode() *node {
	return &node{size: 1, inc: &incident{accounts: map[string]*acctStat{},
		sources: map[netip.Addr]*srcStat{}, keys: map[string]bool{}, buckets: map[int64]*bucket{}}}
}

// union merges the groups of x and y, the smaller incident into the larger.
func union(x, y *node) *node {
	x, y = x.root(), y.root()
	if x == y {
		return x
	}
	if x.size < y.size {
		x, y = y, x
	}
	y.parent = x
	x.size += y.size
	a, c := x.inc, y.inc
	y.inc = nil
	if len(a.accounts) < len(c.accounts) {
		a.accounts, c.accounts = c.accounts, a.accounts
	}
	for k, s := range c.accounts {
		if d := a.accounts[k]; d != nil {
			d.merge(s)
		} else {
			a.accounts[k] = s
		}
	}
	for k, s := range c.sources {
		if d := a.sources[k]; d != nil {
			d.fails += s.fails
			d.successes += s.successes
			d.other += s.other
			d.first, d.last = min(d.first, s.first), max(d.last, s.last)
		} else if len(a.sources) < maxSourcesPerIncident {
			a.sources[k] = s
		}
	}
	for k, bk := range c.buckets {
		d := a.bucket(k * bucketNS)
		d.fails += bk.fails
		d.successes += bk.successes
		d.findings += bk.findings
	}
	for k := range c.keys {
		a.keys[k] = true
	}
	a.findings = append(a.findings, c.findings...)
	if c.first != 0 {
		a.touch(c.first)
	}
	a.last = max(a.last, c.last)
	return x
}

func (s *acctStat) merge(o *acctStat) {
	if o.first != 0 {
		s.touch(o.first)
	}
	s.last = max(s.last, o.last)
	s.fails += o.fails
	s.successes += o.successes
	s.changes += o.changes
	s.exported += o.exported
	s.compromised = s.compromised || o.compromised
	for _, id := range o.findings {
		s.addFinding(id)
	}
}

// loginRules raise their findings on a successful login: an account with
// one of them was logged into by the attacker.
var loginRules = map[string]bool{
	shopguard.RuleAccountTakeover: true, shopguard.RuleImpossibleTravel: true,
	"unfamiliar_login": true, "session_hijack": true, "leaked_credential_use": true,
}

// Finding adds one finding. ev is the event that raised it, or nil when it
// is not known (then a finding of a login rule is taken as raised by a
// successful login).
func (b *Builder) Finding(f *shopguard.Finding, ev *shopguard.Event) {
	if _, dup := b.findings[f.ID]; dup {
		return
	}
	fc := *f
	fc.Evidence.Accounts = append([]shopguard.Account(nil), f.Evidence.Accounts...)
	fc.Evidence.Addresses = append([]string(nil), f.Evidence.Addresses...)
	n := newNode()
	n.inc.findings = []*shopguard.Finding{&fc}
	b.findings[fc.ID] = n
	t := fc.Time.UnixNano()
	n.inc.bucket(t).findings++
	n.inc.touch(t)

	// Group: the cause, the wave, the source.
	if id := fc.Evidence.CauseID; id != "" {
		c := b.findings[id]
		if c == nil { // not seen (yet): a placeholder the cause will join
			c = newNode()
			b.findings[id] = c
		}
		n = union(n, c)
	}
	if w := fc.Evidence.WaveID; w != "" {
		n = union(n, b.named1("wave:"+w))
		n.root().inc.keys["wave "+w] = true
	}
	if fc.IP != "" {
		n = b.trackSource(fc.IP, n)
	}
	for _, a := range fc.Evidence.Addresses {
		if _, err := netip.ParseAddr(a); err == nil && strings.HasPrefix(fc.IP, "AS") {
			// An ASN's sample addresses are its sources we can match.
			n = b.trackSource(a, n)
		}
	}
	inc := n.root().inc

	// Accounts the finding names.
	compromised := loginRules[fc.Rule] && (ev == nil || ev.Action == shopguard.ActionLoginSuccess)
	if fc.Actor != "" {
		k := acctKey(fc.ShopID, fc.Actor)
		st := inc.account(k, fc.ShopID, fc.Actor)
		st.touch(t)
		st.addFinding(fc.ID)
		if compromised {
			st.compromised = true
		}
		h := maphash.String(b.seed, k)
		tr := b.accounts[h]
		if tr == nil || tr.key != k { // (a different name of the same 64-bit hash is replaced)
			tr = &acctTrack{key: k}
			b.accounts[h] = tr
			b.markAcct(h)
		}
		tr.n = n
		tr.until = max(tr.until, t+int64(b.opt.AccountHorizon))
		tr.compromised = tr.compromised || compromised
		if cid := fc.Evidence.CauseID; cid != "" {
			// The cause of a finding on this account is a login of it.
			if c := b.findings[cid]; c != nil {
				for _, cf := range c.root().inc.findings {
					if cf.ID == cid && loginRules[cf.Rule] {
						st.compromised, tr.compromised = true, true
					}
				}
			}
		}
		b.tracked(nil, h)
	}
	for _, a := range fc.Evidence.Accounts {
		st := inc.account(acctKey(a.ShopID, a.Actor), a.ShopID, a.Actor)
		st.touch(t)
		st.addFinding(fc.ID)
	}
}

func (b *Builder) named1(k string) *node {
	n := b.named[k]
	if n == nil {
		n = newNode()
		b.named[k] = n
	}
	return n
}

// trackSource joins n with the source s (an address, a CIDR block or an
// ASN) and with tracked sources that contain it or that it contains.
func (b *Builder) trackSource(s string, n *node) *node {
	if strings.HasPrefix(s, "AS") {
		n = union(n, b.named1(s))
		n.root().inc.keys[s] = true
		return n
	}
	var p netip.Prefix
	if a, err := netip.ParseAddr(s); err == nil {
		p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	} else if q, err := netip.ParsePrefix(s); err == nil {
		p = q.Masked()
	} else {
		return n
	}
	n.root().inc.keys[p.String()] = true
	if m := b.sources[p]; m != nil {
		return union(n, m)
	}
	// A new source: join the tracked blocks containing it and the tracked
	// sources inside it.
	m := &node{size: 1}
	m.parent = n.root()
	n.root().size++
	for q, o := range b.sources {
		if q.Addr().Is4() == p.Addr().Is4() && (q.Contains(p.Addr()) && q.Bits() <= p.Bits() || p.Contains(q.Addr()) && p.Bits() <= q.Bits()) {
			n = union(n, o)
		}
	}
	b.sources[p] = m
	b.index.set(p, m)
	b.tracked(&p, 0)
	return n
}

// incidents returns the current incidents (roots with findings), oldest
// first. It scans the ring for sources tracked since the last scan.
func (b *Builder) incidents() []*incident {
	b.scan()
	seen := map[*node]bool{}
	var out []*incident
	for _, n := range b.findings {
		r := n.root()
		if seen[r] || len(r.inc.findings) == 0 {
			continue
		}
		seen[r] = true
		out = append(out, r.inc)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].first != out[j].first {
			return out[i].first < out[j].first
		}
		return out[i].findings[0].ID < out[j].findings[0].ID
	})
	return out
}

// Prune forgets the incidents whose newest finding is older than cutoff,
// and, when more than maxFindings are held, the oldest incidents until at
// most maxFindings remain (0: no limit). The live pages use it to bound
// memory; a replay does not prune.
func (b *Builder) Prune(cutoff time.Time, maxFindings int) {
	incs := b.incidents()
	total := 0
	for _, inc := range incs {
		total += len(inc.findings)
	}
	sort.Slice(incs, func(i, j int) bool { return lastFinding(incs[i]) < lastFinding(incs[j]) })
	drop := map[*incident]bool{}
	for _, inc := range incs {
		if lastFinding(inc) < cutoff.UnixNano() || (maxFindings > 0 && total > maxFindings) {
			drop[inc] = true
			total -= len(inc.findings)
		}
	}
	if len(drop) == 0 {
		return
	}
	in := func(n *node) bool {
		r := n.root()
		return r.inc == nil || drop[r.inc]
	}
	for k, n := range b.findings {
		if in(n) {
			delete(b.findings, k)
		}
	}
	for k, n := range b.named {
		if in(n) {
			delete(b.named, k)
		}
	}
	for p, n := range b.sources {
		if in(n) {
			delete(b.sources, p)
			b.index.set(p, nil)
		}
	}
	clear(b.acctBits)
	for h, a := range b.accounts {
		if in(a.n) || a.until < cutoff.UnixNano() {
			delete(b.accounts, h)
		} else {
			b.markAcct(h)
		}
	}
}

func lastFinding(inc *incident) int64 {
	var t int64
	for _, f := range inc.findings {
		t = max(t, f.Time.UnixNano())
	}
	return t
}
