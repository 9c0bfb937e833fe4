package detect

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net/netip"
	"slices"

	"github.com/shopguard/shopguard"
)

// ErrCheckpoint marks a snapshot that cannot be restored: not a snapshot,
// corrupt, of another format version, or taken with other rule settings.
var ErrCheckpoint = errors.New("unusable engine snapshot")

// The snapshot format, version 4. Integers in the header and trailer are
// big endian; "varint" and "uvarint" are encoding/binary's; a string is a
// uvarint length and the bytes; an address is a uvarint length and
// netip.Addr's binary form (0, 4, or 16 bytes plus a zone); a prefix is
// the same for netip.Prefix (its address and one byte of bits).
//
//	header   "SGCK" | version uint32 | payload length uint64
//	payload  settings fingerprint [32]byte (SHA-256, see fingerprint)
//	         watermark varint
//	         accounts: generation start varint, older count uvarint,
//	                   newer count uvarint, then the older generation's
//	                   entries sorted by key, then the newer one's
//	         sources:  the same
//	         campaign: see campaign_checkpoint.go (version 3)
//	trailer  CRC-32C (Castagnoli) of header and payload, uint32
//
// An account entry:
//
//	key uint64 | shop string | actor string | last travel finding varint
//	login count byte (0–2), each: time varint, address, lat and lon
//	    (float64 bits, uint64), accuracy radius uvarint, country string,
//	    city string
//	has-extra byte (0 or 1), then if 1: failures window, exports window
//	    (each a uvarint count of: time varint, n varint, address), last
//	    brute_force, account_takeover, bulk_export and critical bulk_export
//	    finding varints, compromised-at varint, its finding's id and rule
//	    strings; then (since version 3) session count uvarint, each:
//	    hash uint64, first use varint, last address [16]byte, last user
//	    agent hash uint32, country, network, client uint32,
//	    fired byte; the risky login: time varint, address, session hash
//	    uint64, finding id and rule strings; 8 last risky_change varints
//	last finding varint | profile: logins uvarint, days byte, last day
//	    uvarint, entry count uvarint, each: value uint32, last day
//	    uvarint, kind byte, flags byte, clean days byte (since version 3)
//
// A source entry:
//
//	prefix | account count uvarint, each: account key uint64, time varint,
//	    shop string, actor string | address count uvarint, each an address |
//	last finding varint | flagged-at varint | flagging finding's id string |
//	    (since version 3) burst count uvarint, each a time varint, last
//	    failure_burst varint
//
// Version 2 snapshots, taken before the profiles of SPEC §3.1 existed, are
// refused with a message that says so: restoring them with empty profiles
// would put every account back into learning silently. Version 3
// snapshots (profiles, no campaign section) are restored with empty
// campaign state: a version 3 engine had no watchlist, so no rotation is
// lost, and the stuffing_wave baseline starts its warm-up again, which is
// what an empty state does anyway (the log says so).
// Times are unix nanoseconds of event time; 0 is "never". Entries are
// sorted (accounts by key, sources by address then prefix length) so that
// equal state always encodes to equal bytes. Bump snapshotVersion whenever
// any of this changes shape or meaning.
const (
	snapshotMagic   = "SGCK"
	snapshotVersion = 4
	snapshotHeader  = 16
	// maxSnapshot bounds the payload length Restore accepts: far above
	// what the state caps allow, far below what would exhaust memory on a
	// corrupt length (Restore reads, it does not preallocate, past 64 MiB).
	maxSnapshot = 16 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fingerprint identifies the settings that shape the engine's state: a
// snapshot taken under other windows, thresholds, blocks or allowlist
// would mean something else, so Restore refuses it. Severities, which only
// label findings, and the state caps, which only bound it, are left out.
// version is the snapshot format's: the campaign settings are part of the
// fingerprint since version 4.
func (c Config) fingerprint(version uint32) [32]byte {
	t, b, s, a, x := c.ImpossibleTravel, c.BruteForce, c.CredentialStuffing, c.AccountTakeover, c.BulkExport
	d := fmt.Appendf(nil, "travel %t %g %g %d|brute %t %d %d|stuffing %t %d %d %d %d|takeover %t %d %d %t|export %t %d %d %d|allow",
		t.Enabled, t.MaxSpeedKMH, t.MinDistanceKM, t.Suppress,
		b.Enabled, b.Threshold, b.Window,
		s.Enabled, s.Threshold, s.Window, s.IPv4Prefix, s.IPv6Prefix,
		a.Enabled, a.Failures, a.Window, a.AfterStuffing,
		x.Enabled, x.Threshold, x.Window, x.AfterCompromise)
	for _, n := range c.Allowlist {
		d = append(d, ' ')
		d = n.Prefix.AppendTo(d)
	}
	p, u, h, r, fb := c.Profile, c.UnfamiliarLogin, c.SessionHijack, c.RiskyChange, c.FailureBurst
	d = fmt.Appendf(d, "|profile %d %d %d %d %d %d|unfamiliar %t|hijack %t %d|risky %t %d|burst %t %d %d %d",
		p.MaxEntries, p.ForgetDays, p.LearningLogins, p.LearningDays, p.TrustDays, p.OpenFinding,
		u.Enabled, h.Enabled, h.Window, r.Enabled, r.Window, fb.Enabled, fb.Threshold, fb.Window, fb.Suppress)
	if version >= 4 {
		d = append(d, c.campaignFingerprint()...)
	}
	return sha256.Sum256(d)
}

// Snapshot writes the engine's whole state to w in the format above. Call
// it from the goroutine that feeds the engine, between events. Equal state
// gives equal bytes.
func (e *Engine) Snapshot(w io.Writer) error {
	b := make([]byte, snapshotHeader, max(e.snapHint, 4096))
	copy(b, snapshotMagic)
	binary.BigEndian.PutUint32(b[4:8], snapshotVersion)
	fp := e.cfg.fingerprint(snapshotVersion)
	b = append(b, fp[:]...)
	b = binary.AppendVarint(b, e.mark)

	b = binary.AppendVarint(b, e.accounts.start)
	b = binary.AppendUvarint(b, uint64(e.accounts.prev.idx.len()))
	b = binary.AppendUvarint(b, uint64(e.accounts.cur.idx.len()))
	e.accounts.each(func(_ bool, a *account) { b = a.appendTo(b, &e.names) })
	b = binary.AppendVarint(b, e.sources.start)
	b = binary.AppendUvarint(b, uint64(len(e.sources.prev)))
	b = binary.AppendUvarint(b, uint64(len(e.sources.cur)))
	for _, gen := range []map[srcKey]*source{e.sources.prev, e.sources.cur} {
		for _, s := range sortedEntries(gen, cmpSrcKey) {
			b = s.appendTo(b)
		}
	}
	b = e.appendCampaign(b)

	binary.BigEndian.PutUint64(b[8:16], uint64(len(b)-snapshotHeader))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	e.snapHint = len(b) + len(b)/8
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write engine snapshot: %w", err)
	}
	return nil
}

// sortedEntries returns m's values in the order of their keys.
func sortedEntries[K comparable, V any](m map[K]*V, cmpKey func(K, K) int) []*V {
	type kv struct {
		k K
		v *V
	}
	all := make([]kv, 0, len(m))
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(x, y kv) int { return cmpKey(x.k, y.k) })
	out := make([]*V, len(all))
	for i := range all {
		out[i] = all[i].v
	}
	return out
}

func cmpSrcKey(x, y srcKey) int {
	if c := bytes.Compare(x.addr[:], y.addr[:]); c != 0 {
		return c
	}
	return cmp.Compare(x.bits, y.bits)
}

func (a *account) appendTo(b []byte, n *names) []byte {
	b = binary.BigEndian.AppendUint64(b, a.h)
	b = appendString(b, a.shop)
	b = appendString(b, a.actor)
	b = binary.AppendVarint(b, a.firedTravel)
	b = append(b, byte(a.nLogins))
	for i := range a.nLogins {
		l := &a.logins[i]
		b = binary.AppendVarint(b, l.t)
		b = appendAddr(b, l.ip)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(l.at.lat))
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(l.at.lon))
		b = binary.AppendUvarint(b, uint64(l.at.radiusKM))
		b = appendString(b, n.name(uint32(l.at.country)))
		b = appendString(b, n.name(l.at.city))
	}
	b = binary.AppendVarint(b, a.lastFinding)
	b = a.prof.appendTo(b)
	// The sessions are written in the extra section, where snapshot
	// format 4 has them; an account with sessions and no extra state
	// writes an empty one.
	x := a.x
	if x == nil {
		if len(a.sessions) == 0 {
			return append(b, 0)
		}
		x = &extra{}
	}
	b = append(b, 1)
	b = x.appendHead(b)
	b = binary.AppendUvarint(b, uint64(len(a.sessions)))
	for i := range a.sessions {
		s := &a.sessions[i]
		b = binary.BigEndian.AppendUint64(b, s.h)
		b = binary.AppendVarint(b, s.t)
		b = append(b, s.last[:]...)
		b = binary.BigEndian.AppendUint32(b, s.lastUA)
		b = binary.BigEndian.AppendUint32(b, s.country)
		b = binary.BigEndian.AppendUint32(b, s.network)
		b = binary.BigEndian.AppendUint32(b, s.client)
		b = append(b, boolByte(s.fired))
	}
	return x.appendTail(b)
}

// appendHead writes the part of x that snapshot format 4 has before an
// account's sessions (the compact records of accounts.go use it too).
func (x *extra) appendHead(b []byte) []byte {
	b = appendWindow(b, &x.fails)
	b = appendWindow(b, &x.exports)
	for _, t := range [...]int64{x.firedBrute, x.firedTakeover, x.firedExport, x.firedCritical, x.compromised} {
		b = binary.AppendVarint(b, t)
	}
	b = appendString(b, x.compromisedID)
	return appendString(b, x.compromisedRule)
}

// appendTail writes the part of x after the sessions.
func (x *extra) appendTail(b []byte) []byte {
	r := &x.risky
	b = binary.AppendVarint(b, r.t)
	b = appendAddr(b, r.ip)
	b = binary.BigEndian.AppendUint64(b, r.session)
	b = appendString(b, r.id)
	b = appendString(b, r.rule)
	for _, t := range x.firedRisky {
		b = binary.AppendVarint(b, t)
	}
	return b
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func (p *profile) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(p.logins))
	b = append(b, p.days)
	b = binary.AppendUvarint(b, uint64(p.lastDay))
	b = binary.AppendUvarint(b, uint64(len(p.ents)))
	for i := range p.ents {
		e := &p.ents[i]
		b = binary.BigEndian.AppendUint32(b, e.h)
		b = binary.AppendUvarint(b, uint64(e.last))
		b = append(b, e.kind, e.flags, e.days)
	}
	return b
}

func appendWindow(b []byte, w *window) []byte {
	b = binary.AppendUvarint(b, uint64(len(w.s)))
	for i := range w.s {
		s := &w.s[i]
		b = binary.AppendVarint(b, s.t)
		b = binary.AppendVarint(b, s.n)
		b = appendAddr(b, s.addr)
	}
	return b
}

func (s *source) appendTo(b []byte) []byte {
	p, _ := s.prefix.AppendBinary(nil) // never fails
	b = appendBytes(b, p)
	b = binary.AppendUvarint(b, uint64(len(s.accts)))
	for i := range s.accts {
		x := &s.accts[i]
		b = binary.BigEndian.AppendUint64(b, x.h)
		b = binary.AppendVarint(b, x.t)
		b = appendString(b, x.acct.ShopID)
		b = appendString(b, x.acct.Actor)
	}
	b = binary.AppendUvarint(b, uint64(len(s.addrs)))
	for _, a := range s.addrs {
		b = appendAddr(b, a)
	}
	b = binary.AppendVarint(b, s.fired)
	b = binary.AppendVarint(b, s.flag)
	b = appendString(b, s.flagID)
	b = binary.AppendUvarint(b, uint64(len(s.burst)))
	for _, t := range s.burst {
		b = binary.AppendVarint(b, t)
	}
	return binary.AppendVarint(b, s.firedBurst)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendAddr(b []byte, a netip.Addr) []byte {
	var tmp [16 + 64]byte
	p, _ := a.AppendBinary(tmp[:0]) // never fails
	return appendBytes(b, p)
}

// Restore replaces the engine's state with a snapshot written by Snapshot,
// reading exactly the snapshot's bytes from r. On any error the engine's
// state is left as it was, and the error wraps ErrCheckpoint when the
// snapshot itself is unusable. Restore never panics on bad input.
func (e *Engine) Restore(r io.Reader) error {
	var hdr [snapshotHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("%w: header: %w", ErrCheckpoint, err)
	}
	if string(hdr[:4]) != snapshotMagic {
		return fmt.Errorf("%w: not a shopguard engine snapshot", ErrCheckpoint)
	}
	v := binary.BigEndian.Uint32(hdr[4:8])
	if v == 2 {
		return fmt.Errorf("%w: format version 2 was written before account profiles existed; this shopguard reads versions 3 and %d only: remove the checkpoint to start with empty state", ErrCheckpoint, snapshotVersion)
	} else if v != 3 && v != snapshotVersion {
		return fmt.Errorf("%w: format version %d, this shopguard reads versions 3 and %d", ErrCheckpoint, v, snapshotVersion)
	}
	size := binary.BigEndian.Uint64(hdr[8:16])
	if size > maxSnapshot {
		return fmt.Errorf("%w: payload of %d bytes", ErrCheckpoint, size)
	}
	buf := bytes.NewBuffer(make([]byte, 0, snapshotHeader+min(size, 64<<20)+4))
	buf.Write(hdr[:])
	if n, err := io.CopyN(buf, r, int64(size)+4); err != nil {
		return fmt.Errorf("%w: truncated after %d of %d bytes: %w", ErrCheckpoint, n, size+4, err)
	}
	all := buf.Bytes()
	body, sum := all[:len(all)-4], binary.BigEndian.Uint32(all[len(all)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return fmt.Errorf("%w: checksum mismatch (corrupt)", ErrCheckpoint)
	}
	d := decoder{b: body[snapshotHeader:], e: e}
	fp := e.cfg.fingerprint(v)
	waveless := false
	if got := d.take(len(fp)); d.err == nil && !bytes.Equal(got, fp[:]) {
		// An engine that now runs stuffing_wave takes the snapshot of one
		// that did not (the account stage of a scaled-out shopguard before
		// it followed the wave): it holds no wave, which starts anew.
		nw := e.cfg
		nw.StuffingWave.Enabled = false
		if alt := nw.fingerprint(v); !e.cfg.StuffingWave.Enabled || !bytes.Equal(got, alt[:]) {
			return fmt.Errorf("%w: taken with other detect settings (thresholds, windows or allowlist changed)", ErrCheckpoint)
		}
		waveless = true
	}
	mark := d.varint()
	var last uint64 // key of the previous account: keys ascend in each generation
	accounts := e.accounts.empty()
	accounts.start = d.varint()
	nPrev, nCur := d.count(1), d.count(1)
	for gen, n := range [2]int{nPrev, nCur} {
		for i := range n {
			a := d.account()
			if d.err != nil {
				break
			}
			if accounts.has(a.h) {
				d.fail("account key %#x twice", a.h)
				break
			}
			if i > 0 && a.h < last {
				d.fail("accounts out of order")
				break
			}
			last = a.h
			accounts.hold(gen == 0, a)
		}
	}
	sources := newTable[srcKey, source](e.sources.gen, e.sources.cap, e.sources.onEvict)
	sources.start = d.varint()
	var lastSrc srcKey
	for _, gen := range generations(&d, sources.prev, sources.cur) {
		for i := range gen.n {
			s := d.source()
			if d.err != nil {
				break
			}
			k := srcKey{addr: s.prefix.Addr().As16(), bits: uint8(s.prefix.Bits())}
			if _, dup := sources.prev[k]; dup || sources.cur[k] != nil {
				d.fail("source %s twice", s.prefix)
				break
			}
			if i > 0 && cmpSrcKey(k, lastSrc) < 0 {
				d.fail("sources out of order")
				break
			}
			lastSrc = k
			gen.m[k] = s
		}
	}
	wave, rotated, leakedAt := newWaveState(e.cfg), map[uint64]int64(nil), map[uint64]int64(nil)
	if v >= 4 {
		wave, rotated, leakedAt = d.campaign(e.cfg)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the last entry", len(d.b))
	}
	if d.err != nil {
		accounts.release()
		return fmt.Errorf("%w: %w", ErrCheckpoint, d.err)
	}
	e.accounts.release()
	e.accounts, e.sources, e.mark = accounts, sources, mark
	e.wave, e.wl.rotated, e.wl.fired, e.wl.seenFor = wave, rotated, leakedAt, nil
	e.cur, e.curAcct, e.propsOf = nil, nil, nil
	switch {
	case v < snapshotVersion:
		e.log.Warn("restored a snapshot of format version 3, which holds no campaign state: the stuffing_wave baseline starts its warm-up again",
			"warm_up_hours", e.cfg.StuffingWave.WarmUp)
	case waveless:
		e.wave = newWaveState(e.cfg)
		e.log.Warn("restored a snapshot taken without stuffing_wave: its baseline starts its warm-up now",
			"warm_up_hours", e.cfg.StuffingWave.WarmUp)
	}
	return nil
}

// decoder reads the payload. The first problem sticks in err; after it
// every read returns zero values, so callers check err once per entry.
type decoder struct {
	b   []byte
	err error
	e   *Engine // whose names the logins' places are interned in
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.fail("truncated payload")
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() byte {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	b := d.take(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// profile reads an account profile.
func (d *decoder) profile(p *profile) {
	l := d.uvarint()
	p.days = d.u8()
	ld := d.uvarint()
	if l > math.MaxUint16 || ld > math.MaxUint16 {
		d.fail("bad profile counters")
		return
	}
	p.logins, p.lastDay = uint16(l), uint16(ld)
	n := d.count(7)
	if n > int(numProps)*64 {
		d.fail("profile with %d entries", n)
		return
	}
	if n > 0 || p.ents != nil {
		p.ents = slices.Grow(p.ents[:0], n)[:n] // the memory of a reused account's
	}
	for i := range p.ents {
		e := &p.ents[i]
		e.h = d.u32()
		last := d.uvarint()
		e.last = uint16(last)
		e.kind, e.flags, e.days = d.u8(), d.u8(), d.u8()
		if d.err == nil && (last > math.MaxUint16 || e.kind >= numProps) {
			d.fail("bad profile entry")
			return
		}
	}
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a number of entries, each at least min bytes long: a count
// the remaining bytes cannot hold is corrupt, and refusing it keeps a bad
// count from allocating.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.fail("count %d exceeds the remaining %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte { return d.take(d.count(1)) }

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) addr() netip.Addr {
	var a netip.Addr
	if p := d.bytes(); d.err == nil {
		if err := a.UnmarshalBinary(p); err != nil {
			d.fail("address: %w", err)
		}
	}
	return a
}

// generation is one generation map of a table and how many entries the
// snapshot holds for it.
type generation[K comparable, V any] struct {
	m map[K]*V
	n int
}

// generations reads the older and newer generations' entry counts.
func generations[K comparable, V any](d *decoder, prev, cur map[K]*V) [2]generation[K, V] {
	np := d.count(1)
	nc := d.count(1)
	return [2]generation[K, V]{{prev, np}, {cur, nc}}
}

func (d *decoder) account() *account {
	h := d.u64()
	shop, actor := d.bytes(), d.bytes()
	name := string(shop) + string(actor) // one allocation, as Engine.account makes
	a := &account{h: h, shop: name[:len(shop)], actor: name[len(shop):], firedTravel: d.varint()}
	if a.nLogins = int(d.u8()); a.nLogins > travelKeep {
		d.fail("account with %d logins", a.nLogins)
		return nil
	}
	for i := range a.nLogins {
		l := &a.logins[i]
		l.t, l.ip = d.varint(), d.addr()
		var g shopguard.Geo
		g.Lat, g.Lon = math.Float64frombits(d.u64()), math.Float64frombits(d.u64())
		r := d.uvarint()
		g.RadiusKM = uint16(r)
		g.Country, g.City = d.string(), d.string()
		l.at = d.e.spotOf(g)
		if d.err == nil && (r > math.MaxUint16 || !l.ip.IsValid() || (i > 0 && l.t < a.logins[i-1].t)) {
			d.fail("account with a bad login")
		}
	}
	a.lastFinding = d.varint()
	d.profile(&a.prof)
	switch d.u8() {
	case 0:
	case 1:
		x := &extra{}
		d.extraHead(x)
		if n := d.count(42); n > sessionKeep {
			d.fail("account with %d sessions", n)
		} else if n > 0 {
			a.sessions = make([]session, n)
		}
		for i := range a.sessions {
			s := &a.sessions[i]
			s.h, s.t = d.u64(), d.varint()
			if p := d.take(16); p != nil {
				s.last = [16]byte(p)
			}
			s.lastUA = d.u32()
			s.country, s.network, s.client = d.u32(), d.u32(), d.u32()
			s.fired = d.u8() == 1
		}
		d.extraTail(x)
		if !x.empty() {
			a.x = x
		}
	default:
		d.fail("bad extra marker")
	}
	if d.err != nil {
		return nil
	}
	return a
}

// extraHead reads what extra.appendHead writes.
func (d *decoder) extraHead(x *extra) {
	x.fails, x.exports = d.window(), d.window()
	x.firedBrute, x.firedTakeover, x.firedExport, x.firedCritical = d.varint(), d.varint(), d.varint(), d.varint()
	x.compromised, x.compromisedID, x.compromisedRule = d.varint(), d.string(), d.string()
}

// extraTail reads what extra.appendTail writes.
func (d *decoder) extraTail(x *extra) {
	x.risky = risky{t: d.varint(), ip: d.addr(), session: d.u64(), id: d.string(), rule: d.string()}
	for i := range x.firedRisky {
		x.firedRisky[i] = d.varint()
	}
}

// window reads a window; its stamps must be in time order, as window.add
// keeps them.
func (d *decoder) window() window {
	n := d.count(3)
	var w window
	if n > 0 {
		w.s = make([]stamp, n)
	}
	for i := range w.s {
		s := &w.s[i]
		s.t, s.n, s.addr = d.varint(), d.varint(), d.addr()
		if d.err == nil && i > 0 && s.t < w.s[i-1].t {
			d.fail("window out of time order")
		}
	}
	return w
}

func (d *decoder) source() *source {
	s := &source{}
	if p := d.bytes(); d.err == nil {
		if err := s.prefix.UnmarshalBinary(p); err != nil || !s.prefix.IsValid() || s.prefix != s.prefix.Masked() {
			d.fail("bad source prefix")
			return nil
		}
	}
	if n := d.count(11); n > 0 {
		s.accts = make([]seen, n)
	}
	for i := range s.accts {
		x := &s.accts[i]
		x.h, x.t = d.u64(), d.varint()
		x.acct = shopguard.Account{ShopID: d.string(), Actor: d.string()}
	}
	if n := d.count(1); n > 0 {
		s.addrs = make([]netip.Addr, n)
	}
	for i := range s.addrs {
		s.addrs[i] = d.addr()
	}
	s.fired, s.flag, s.flagID = d.varint(), d.varint(), d.string()
	if n := d.count(1); n > 0 {
		s.burst = make([]int64, n)
	}
	for i := range s.burst {
		s.burst[i] = d.varint()
	}
	s.firedBurst = d.varint()
	if d.err != nil {
		return nil
	}
	return s
}
