package detect

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
)

// accountStore holds the accounts' state with the expiry and cap of table
// (state.go), in two forms. The accounts in use (at most hotCap, by a CLOCK
// of recent use) are Go structs that the rules read and change in place.
// Every other account is a compact pointer-free record in a slot of its
// generation's arena, found through the generation's index, both outside the
// Go heap: about a third of the memory of its struct, and nothing for the
// garbage collector to scan or to leave headroom for. An account is decoded
// when an event needs it and encoded again, into the same slot when it
// fits, when it leaves the hot set.
//
// The two forms hold the same state (the record is lossless), so which form
// an account is in never changes a finding; a test runs the rules with a hot
// set of one account to pin that.
type accountStore struct {
	cur, prev *acctGen
	start     int64 // event time at which cur began
	gen       int64 // generation length, ns
	cap       int
	onEvict   func(reason string, n int)

	hot    map[uint64]*hotAcct
	clock  []*hotAcct // the hot accounts, swept by hand
	hand   int
	hotCap int
	spare  []*hotAcct // left the hot set, for reuse with their slices
	genNo  uint32     // number of the newest generation

	places places
	buf    []byte // encoding scratch
}

// acctGen is one generation: its accounts' keys, each with the slot of its
// record in mem, or inHot for an account in the hot set.
type acctGen struct {
	idx index
	mem arena
	no  uint32
}

// hotAcct is an account in the hot set.
type hotAcct struct {
	a    account
	gen  uint32 // number of the generation the account belongs to
	ref  bool   // used since the clock hand last passed
	slot int    // index in clock
	// The slot the account was decoded from in its generation's arena,
	// written back into when the record fits; 0 for none.
	r ref
}

// DefaultHotAccounts is how many accounts an engine keeps decoded unless
// Config.HotAccounts says fewer: enough for the accounts active in any
// minute of a large platform, and about 40 MB.
const DefaultHotAccounts = 1 << 16

// hotAccounts is DefaultHotAccounts; the tests run the rules with 1 as well
// (TestColdAccounts).
var hotAccounts = DefaultHotAccounts

func newAccountStore(gen int64, cap int, onEvict func(string, int)) *accountStore {
	s := &accountStore{gen: gen, cap: cap, onEvict: onEvict, hot: map[uint64]*hotAcct{}, hotCap: hotAccounts}
	s.cur, s.prev = s.newGen(), s.newGen()
	// The arenas and indexes are outside the Go heap: a store dropped
	// without release (an engine a test or a rebalance lets go) returns
	// them when collected. The two generations are the store's for its
	// whole life (swap reuses them), and do not point back at it.
	runtime.AddCleanup(s, func(gs [2]*acctGen) {
		gs[0].reset()
		gs[1].reset()
	}, [2]*acctGen{s.cur, s.prev})
	return s
}

// empty returns a new empty store with s's settings, for Restore.
func (s *accountStore) empty() *accountStore {
	n := newAccountStore(s.gen, s.cap, s.onEvict)
	n.hotCap = s.hotCap
	return n
}

// release returns the memory of the records now; s is unusable after it.
func (s *accountStore) release() {
	s.cur.reset()
	s.prev.reset()
	clear(s.hot)
	s.clock, s.spare = nil, nil
}

func (s *accountStore) newGen() *acctGen {
	s.genNo++
	return &acctGen{no: s.genNo}
}

// reset empties g and returns its memory.
func (g *acctGen) reset() {
	g.idx.reset()
	g.mem.reset()
}

// mapped is the memory the records and indexes hold outside the Go heap.
func (s *accountStore) mapped() int {
	return s.cur.mem.size + s.prev.mem.size + len(s.cur.idx.mem) + len(s.prev.idx.mem)
}

// len is the number of accounts held.
func (s *accountStore) len() int { return s.cur.idx.len() + s.prev.idx.len() }

// get returns the account for h, promoting it to the current generation,
// or nil. The pointer is valid until the next get or create (which may
// move other accounts out of the hot set, never the one returned).
func (s *accountStore) get(h uint64) *account {
	if ha := s.hot[h]; ha != nil {
		ha.ref = true
		if ha.gen != s.cur.no {
			// In the previous generation: its slot there is given back.
			if ha.r != 0 {
				s.free(s.prev, ha.r)
			}
			s.prev.idx.del(h)
			s.cur.idx.put(h, inHot)
			ha.gen, ha.r = s.cur.no, 0
		}
		return &ha.a
	}
	// Room first: moving an account out of the hot set may move records
	// (free), the one about to be read among them.
	s.trim()
	if r := s.cur.idx.get(h); r != 0 {
		ha := s.load(h, s.cur, r)
		ha.r = r
		s.cur.idx.put(h, inHot)
		return &ha.a
	}
	if r := s.prev.idx.get(h); r != 0 {
		ha := s.load(h, s.prev, r)
		s.prev.idx.del(h) // first: free may move the records the index names
		s.cur.idx.put(h, inHot)
		s.free(s.prev, r)
		return &ha.a
	}
	return nil
}

// create adds a new, empty account for h (not held) and returns it.
func (s *accountStore) create(h uint64) *account {
	if s.cur.idx.len() >= (s.cap+1)/2 || s.len() >= s.cap {
		// As table.put: the previous generation goes, and the current one
		// becomes it.
		s.evict("cap")
		s.swap()
		if s.prev.idx.len() >= s.cap {
			s.evict("cap")
		}
	}
	s.cur.idx.put(h, inHot)
	ha := s.addHot(h)
	ha.a.h = h
	return &ha.a
}

// addHot makes room in the hot set and adds an empty account to it in the
// current generation.
func (s *accountStore) addHot(h uint64) *hotAcct {
	s.trim()
	var ha *hotAcct
	if n := len(s.spare); n > 0 {
		ha, s.spare = s.spare[n-1], s.spare[:n-1]
		// Keep the slices' memory for the next account: no rule holds on
		// to them past an event.
		ents, sessions := ha.a.prof.ents[:0], ha.a.sessions[:0]
		*ha = hotAcct{}
		ha.a.prof.ents, ha.a.sessions = ents, sessions
	} else {
		ha = &hotAcct{}
	}
	ha.gen, ha.ref, ha.slot = s.cur.no, true, len(s.clock)
	s.hot[h] = ha
	s.clock = append(s.clock, ha)
	return ha
}

// trim moves accounts out of the hot set until one more fits.
func (s *accountStore) trim() {
	for len(s.clock) >= s.hotCap && len(s.clock) > 0 {
		if s.hand >= len(s.clock) {
			s.hand = 0
		}
		ha := s.clock[s.hand]
		if ha.ref {
			ha.ref = false
			s.hand++
			continue
		}
		s.spill(ha)
	}
}

// spill writes ha's account into its generation's arena and drops it from
// the hot set.
func (s *accountStore) spill(ha *hotAcct) {
	g := s.cur
	if ha.gen != g.no {
		g = s.prev
	}
	s.write(g, ha.r, &ha.a)
	s.unhot(ha)
}

// write encodes a into g: into slot r if it fits there (r not 0), else into
// a new slot, r given back.
func (s *accountStore) write(g *acctGen, r ref, a *account) {
	s.buf = s.appendRecord(s.buf[:0], a)
	var p []byte
	if r != 0 {
		if p = g.mem.record(r); len(s.buf) > len(p) {
			s.free(g, r)
			r = 0
		}
	}
	if r == 0 {
		r, p = g.mem.alloc(len(s.buf))
	}
	copy(p, s.buf)
	g.idx.put(a.h, r)
}

// free gives slot r of g back, and empties the chunks left mostly free
// when there are enough of them (arena.release): the records that remain
// there move to other slots, so that accounts that grew out of their slots
// all at once (every account's second login, say) do not leave a
// generation's memory mostly unused.
func (s *accountStore) free(g *acctGen, r ref) {
	if !g.mem.release(r) {
		return
	}
	g.mem.seal()
	for _, ha := range s.clock {
		if ha.gen == g.no && ha.r != 0 && g.mem.isSparse(ha.r) {
			ha.r = 0 // written to a new slot when it leaves the hot set
		}
	}
	g.idx.update(func(_ uint64, r ref) ref {
		if r == inHot || !g.mem.isSparse(r) {
			return r
		}
		return g.mem.move(r)
	})
	g.mem.drop()
}

// unhot removes ha from the hot set and keeps it for reuse.
func (s *accountStore) unhot(ha *hotAcct) {
	delete(s.hot, ha.a.h)
	last := s.clock[len(s.clock)-1]
	s.clock[ha.slot], last.slot = last, ha.slot
	s.clock = s.clock[:len(s.clock)-1]
	if len(s.spare) < 64 {
		s.spare = append(s.spare, ha)
	}
}

// load decodes the record in slot r of g into a new hot account.
func (s *accountStore) load(h uint64, g *acctGen, r ref) *hotAcct {
	ha := s.addHot(h)
	s.decode(h, g, r, &ha.a)
	return ha
}

// decode decodes the record in slot r of g into a.
func (s *accountStore) decode(h uint64, g *acctGen, r ref, a *account) {
	d := decoder{b: g.mem.record(r)}
	s.decodeRecord(&d, a)
	if d.err != nil {
		panic(fmt.Errorf("detect: account record %#x: %w", h, d.err)) // memory this process wrote
	}
	a.h = h
}

// swap makes the current generation the previous one; the previous one
// must be empty.
func (s *accountStore) swap() {
	s.prev, s.cur = s.cur, s.prev
	s.genNo++
	s.cur.no = s.genNo
}

// evict drops the previous generation, counting its accounts.
func (s *accountStore) evict(reason string) {
	n := s.prev.idx.len()
	if n == 0 {
		return
	}
	for i := 0; i < len(s.clock); {
		if ha := s.clock[i]; ha.gen == s.prev.no {
			s.unhot(ha) // moves the last one to i
			continue
		}
		i++
	}
	s.prev.reset()
	if s.onEvict != nil {
		s.onEvict(reason, n)
	}
}

// advance expires generations up to event time now, as table.advance.
func (s *accountStore) advance(now int64) {
	if s.start == 0 {
		s.start = floorGen(now, s.gen)
		return
	}
	if now-s.start < s.gen {
		return
	}
	s.evict("expired")
	s.swap()
	if now-s.start >= 2*s.gen {
		// Nothing touched during the last two generations is recent.
		s.evict("expired")
	}
	s.start = floorGen(now, s.gen)
}

// each calls fn for every account of the previous generation, then every
// account of the current one, each in the order of their keys, for
// snapshots. The account given to fn is valid only during the call.
func (s *accountStore) each(fn func(prev bool, a *account)) {
	var scratch account
	for _, g := range []*acctGen{s.prev, s.cur} {
		type entry struct {
			h uint64
			r ref
		}
		ents := make([]entry, 0, g.idx.len())
		g.idx.each(func(h uint64, r ref) { ents = append(ents, entry{h, r}) })
		slices.SortFunc(ents, func(a, b entry) int { return cmp.Compare(a.h, b.h) })
		for _, e := range ents {
			if e.r == inHot {
				fn(g == s.prev, &s.hot[e.h].a)
				continue
			}
			scratch = account{}
			s.decode(e.h, g, e.r, &scratch)
			fn(g == s.prev, &scratch)
		}
	}
}

// hold adds a (from a snapshot) to the previous or current generation as a
// record, not to the hot set.
func (s *accountStore) hold(prev bool, a *account) {
	g := s.cur
	if prev {
		g = s.prev
	}
	s.write(g, 0, a)
}

// has reports whether h is held.
func (s *accountStore) has(h uint64) bool {
	return s.cur.idx.get(h) != 0 || s.prev.idx.get(h) != 0
}

func floorGen(now, gen int64) int64 {
	r := now % gen
	if r < 0 {
		r += gen
	}
	return now - r
}

// The record of an account: the state of account, smaller than a
// snapshot's (which is a stable format) by keeping login places as ids of
// places, times as differences and addresses of sessions in 4 bytes when
// they are IPv4. The key is the index's.
const (
	recExtra    = 1 << iota // the extra state follows
	recSessions             // sessions follow
)

func (s *accountStore) appendRecord(b []byte, a *account) []byte {
	var flags byte
	if a.x != nil {
		flags |= recExtra
	}
	if len(a.sessions) > 0 {
		flags |= recSessions
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(a.shop)))
	b = binary.AppendUvarint(b, uint64(len(a.actor)))
	b = append(b, a.shop...)
	b = append(b, a.actor...)
	b = binary.AppendVarint(b, a.firedTravel)
	b = binary.AppendVarint(b, a.lastFinding)
	b = append(b, byte(a.nLogins))
	var last int64
	for i := range a.nLogins {
		l := &a.logins[i]
		b = binary.AppendVarint(b, l.t-last)
		last = l.t
		b = appendAddr(b, l.ip)
		b = binary.AppendUvarint(b, uint64(s.places.id(l.at)))
	}
	b = a.prof.appendTo(b)
	if flags&recSessions != 0 {
		b = binary.AppendUvarint(b, uint64(len(a.sessions)))
		for i := range a.sessions {
			ss := &a.sessions[i]
			b = binary.BigEndian.AppendUint64(b, ss.h)
			b = binary.AppendVarint(b, ss.t-last)
			if v4 := [12]byte(ss.last[:12]) == v4InV6Prefix; v4 {
				b = append(b, 4)
				b = append(b, ss.last[12:]...)
			} else {
				b = append(b, 16)
				b = append(b, ss.last[:]...)
			}
			b = binary.BigEndian.AppendUint32(b, ss.lastUA)
			b = binary.AppendUvarint(b, uint64(ss.country))
			b = binary.BigEndian.AppendUint32(b, ss.network)
			b = binary.AppendUvarint(b, uint64(ss.client))
			b = append(b, boolByte(ss.fired))
		}
	}
	if flags&recExtra != 0 {
		b = a.x.appendHead(b)
		b = a.x.appendTail(b)
	}
	return b
}

var v4InV6Prefix = [12]byte{10: 0xff, 11: 0xff}

func (s *accountStore) decodeRecord(d *decoder, a *account) {
	flags := d.u8()
	ls, la := d.uvarint(), d.uvarint()
	if d.err != nil || ls+la > uint64(len(d.b)) {
		d.fail("bad name")
		return
	}
	name := string(d.take(int(ls + la))) // one allocation, as Engine.account makes
	a.shop, a.actor = name[:ls], name[ls:]
	a.firedTravel = d.varint()
	a.lastFinding = d.varint()
	a.nLogins = int(d.u8())
	if a.nLogins > travelKeep {
		d.fail("%d logins", a.nLogins)
		return
	}
	var last int64
	for i := range a.nLogins {
		l := &a.logins[i]
		l.t = last + d.varint()
		last = l.t
		l.ip = d.addr()
		l.at = s.places.spot(uint32(d.uvarint()))
	}
	d.profile(&a.prof)
	if flags&recSessions != 0 {
		n := d.count(20)
		a.sessions = slices.Grow(a.sessions[:0], max(n, 2))[:n]
		for i := range a.sessions {
			ss := &a.sessions[i]
			ss.h = d.u64()
			ss.t = last + d.varint()
			switch d.u8() {
			case 4:
				copy(ss.last[:], v4InV6Prefix[:])
				copy(ss.last[12:], d.take(4))
			default:
				copy(ss.last[:], d.take(16))
			}
			ss.lastUA = d.u32()
			ss.country = uint32(d.uvarint())
			ss.network = d.u32()
			ss.client = uint32(d.uvarint())
			ss.fired = d.u8() == 1
		}
	}
	if flags&recExtra != 0 {
		x := &extra{}
		d.extraHead(x)
		d.extraTail(x)
		a.x = x
	}
}

// places interns the places of logins, so that a record names one in a few
// bytes: a GeoIP database has some hundred thousand.
type places struct {
	idx   map[placeKey]uint32
	spots []spot
}

// placeKey is a spot compared by bits, so that a NaN is one place too.
type placeKey struct {
	lat, lon uint64
	city     uint32
	country  uint16
	radiusKM uint16
}

func (p *places) id(s spot) uint32 {
	k := placeKey{math.Float64bits(s.lat), math.Float64bits(s.lon), s.city, s.country, s.radiusKM}
	if i, ok := p.idx[k]; ok {
		return i
	}
	if p.idx == nil {
		p.idx = map[placeKey]uint32{}
	}
	i := uint32(len(p.spots))
	p.spots = append(p.spots, s)
	p.idx[k] = i
	return i
}

func (p *places) spot(i uint32) spot {
	if int(i) >= len(p.spots) {
		return spot{}
	}
	return p.spots[i]
}
