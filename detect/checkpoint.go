package detect

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"

	"github.com/shopguard/shopguard"
)

// ErrCheckpoint marks a snapshot that cannot be restored: not a snapshot,
// corrupt, of another format version, or taken with other rule settings.
var ErrCheckpoint = errors.New("unusable engine snapshot")

// The snapshot format: magic "SGCK", format version (uint32), CRC-32C of the
// payload (uint32), 4 reserved bytes, payload length (uint64), all big
// endian, then the payload, a gob-encoded snapshotState. Bump the
// version whenever snapshotState changes shape or meaning.
const (
	snapshotMagic   = "SGCK"
	snapshotVersion = 1
	// maxSnapshot bounds what Restore reads: far above the state caps
	// allow, far below what would exhaust memory on a corrupt length.
	maxSnapshot = 16 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type snapshotState struct {
	Config            [32]byte // fingerprint of the settings that shape state
	Watermark         int64
	AccountsStart     int64
	SourcesStart      int64
	Accounts          []accountRec
	Sources           []sourceRec
	AccountsPrevCount int // the first AccountsPrevCount accounts are the older generation
	SourcesPrevCount  int
}

type accountRec struct {
	H           uint64
	Shop, Actor string
	Logins      []loginRec
	FiredTravel int64
	X           *extraRec
}

type loginRec struct {
	T   int64
	IP  netip.Addr
	Geo shopguard.Geo
}

type extraRec struct {
	Fails, Exports                                        []stampRec
	FiredBrute, FiredTakeover, FiredExport, FiredCritical int64
	Compromised                                           int64
	CompromisedID, CompromisedRule                        string
}

type stampRec struct {
	T, N int64
	Addr netip.Addr
}

type sourceRec struct {
	Key    srcKeyRec
	Prefix netip.Prefix
	Accts  []seenRec
	Addrs  []netip.Addr
	Fired  int64
	Flag   int64
	FlagID string
}

type srcKeyRec struct {
	Addr [16]byte
	Bits uint8
}

type seenRec struct {
	H           uint64
	T           int64
	Shop, Actor string
}

// fingerprint identifies the settings a snapshot's state depends on: a
// snapshot taken under other windows or thresholds would mean something
// else, so Restore refuses it.
func (c Config) fingerprint() [32]byte {
	return sha256.Sum256(fmt.Appendf(nil, "%+v|%+v|%+v|%+v|%+v|%v",
		c.ImpossibleTravel, c.BruteForce, c.CredentialStuffing, c.AccountTakeover, c.BulkExport, c.Allowlist))
}

// Snapshot writes the engine's whole state to w. Call it from the goroutine
// that feeds the engine, between events. The encoding is deterministic for a
// given state except for map order, which Restore does not depend on.
func (e *Engine) Snapshot(w io.Writer) error {
	st := snapshotState{Config: e.cfg.fingerprint(), Watermark: e.mark,
		AccountsStart: e.accounts.start, SourcesStart: e.sources.start}
	for _, gen := range []map[uint64]*account{e.accounts.prev, e.accounts.cur} {
		for _, a := range gen {
			st.Accounts = append(st.Accounts, a.record())
		}
	}
	st.AccountsPrevCount = len(e.accounts.prev)
	for _, gen := range []map[srcKey]*source{e.sources.prev, e.sources.cur} {
		for k, s := range gen {
			st.Sources = append(st.Sources, s.record(k))
		}
	}
	st.SourcesPrevCount = len(e.sources.prev)

	var payload bytes.Buffer
	if err := gob.NewEncoder(&payload).Encode(&st); err != nil {
		return fmt.Errorf("encode engine snapshot: %w", err)
	}
	var hdr [16]byte
	copy(hdr[:4], snapshotMagic)
	binary.BigEndian.PutUint32(hdr[4:8], snapshotVersion)
	binary.BigEndian.PutUint32(hdr[8:12], crc32.Checksum(payload.Bytes(), castagnoli))
	// hdr[12:16] is reserved (zero).
	bw := bufio.NewWriter(w)
	_, _ = bw.Write(hdr[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(payload.Len()))
	_, _ = bw.Write(n[:])
	_, _ = bw.Write(payload.Bytes())
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write engine snapshot: %w", err)
	}
	return nil
}

// Restore replaces the engine's state with a snapshot written by Snapshot.
// On any error the engine's state is left as it was, and the error wraps
// ErrCheckpoint when the snapshot itself is unusable.
func (e *Engine) Restore(r io.Reader) error {
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("%w: header: %w", ErrCheckpoint, err)
	}
	if string(hdr[:4]) != snapshotMagic {
		return fmt.Errorf("%w: not a shopguard engine snapshot", ErrCheckpoint)
	}
	if v := binary.BigEndian.Uint32(hdr[4:8]); v != snapshotVersion {
		return fmt.Errorf("%w: format version %d, this shopguard reads %d", ErrCheckpoint, v, snapshotVersion)
	}
	sum := binary.BigEndian.Uint32(hdr[8:12])
	size := binary.BigEndian.Uint64(hdr[16:24])
	if size > maxSnapshot {
		return fmt.Errorf("%w: payload of %d bytes", ErrCheckpoint, size)
	}
	payload := make([]byte, 0, min(size, 64<<20))
	buf := bytes.NewBuffer(payload)
	if n, err := io.CopyN(buf, r, int64(size)); err != nil {
		return fmt.Errorf("%w: truncated after %d of %d bytes: %w", ErrCheckpoint, n, size, err)
	}
	if crc32.Checksum(buf.Bytes(), castagnoli) != sum {
		return fmt.Errorf("%w: checksum mismatch (corrupt)", ErrCheckpoint)
	}
	var st snapshotState
	if err := gob.NewDecoder(buf).Decode(&st); err != nil {
		return fmt.Errorf("%w: decode: %w", ErrCheckpoint, err)
	}
	if st.Config != e.cfg.fingerprint() {
		return fmt.Errorf("%w: taken with other detect settings (thresholds or windows changed)", ErrCheckpoint)
	}
	if st.AccountsPrevCount < 0 || st.AccountsPrevCount > len(st.Accounts) ||
		st.SourcesPrevCount < 0 || st.SourcesPrevCount > len(st.Sources) {
		return fmt.Errorf("%w: inconsistent generation counts", ErrCheckpoint)
	}

	accounts := newTable[uint64, account](e.accounts.gen, e.accounts.cap, e.accounts.onEvict)
	accounts.start = st.AccountsStart
	for i := range st.Accounts {
		a, err := st.Accounts[i].account()
		if err != nil {
			return err
		}
		gen := accounts.cur
		if i < st.AccountsPrevCount {
			gen = accounts.prev
		}
		gen[a.h] = a
	}
	sources := newTable[srcKey, source](e.sources.gen, e.sources.cap, e.sources.onEvict)
	sources.start = st.SourcesStart
	for i := range st.Sources {
		rec := &st.Sources[i]
		gen := sources.cur
		if i < st.SourcesPrevCount {
			gen = sources.prev
		}
		gen[srcKey{addr: rec.Key.Addr, bits: rec.Key.Bits}] = rec.source()
	}
	e.accounts, e.sources, e.mark = accounts, sources, st.Watermark
	e.cur, e.curAcct = nil, nil
	return nil
}

func (a *account) record() accountRec {
	r := accountRec{H: a.h, Shop: a.shop, Actor: a.actor, FiredTravel: a.firedTravel}
	for i := range a.nLogins {
		l := &a.logins[i]
		r.Logins = append(r.Logins, loginRec{T: l.t, IP: l.ip, Geo: l.geo})
	}
	if x := a.x; x != nil {
		r.X = &extraRec{Fails: stamps(x.fails.s), Exports: stamps(x.exports.s),
			FiredBrute: x.firedBrute, FiredTakeover: x.firedTakeover, FiredExport: x.firedExport, FiredCritical: x.firedCritical,
			Compromised: x.compromised, CompromisedID: x.compromisedID, CompromisedRule: x.compromisedRule}
	}
	return r
}

func (r *accountRec) account() (*account, error) {
	if len(r.Logins) > travelKeep {
		return nil, fmt.Errorf("%w: account with %d logins", ErrCheckpoint, len(r.Logins))
	}
	name := r.Shop + r.Actor
	a := &account{h: r.H, shop: name[:len(r.Shop)], actor: name[len(r.Shop):], firedTravel: r.FiredTravel, nLogins: len(r.Logins)}
	for i, l := range r.Logins {
		a.logins[i] = login{t: l.T, ip: l.IP, geo: l.Geo}
	}
	if x := r.X; x != nil {
		a.x = &extra{fails: window{s: unstamps(x.Fails)}, exports: window{s: unstamps(x.Exports)},
			firedBrute: x.FiredBrute, firedTakeover: x.FiredTakeover, firedExport: x.FiredExport, firedCritical: x.FiredCritical,
			compromised: x.Compromised, compromisedID: x.CompromisedID, compromisedRule: x.CompromisedRule}
	}
	return a, nil
}

func (s *source) record(k srcKey) sourceRec {
	r := sourceRec{Key: srcKeyRec{Addr: k.addr, Bits: k.bits}, Prefix: s.prefix, Addrs: s.addrs, Fired: s.fired, Flag: s.flag, FlagID: s.flagID}
	for _, x := range s.accts {
		r.Accts = append(r.Accts, seenRec{H: x.h, T: x.t, Shop: x.acct.ShopID, Actor: x.acct.Actor})
	}
	return r
}

func (r *sourceRec) source() *source {
	s := &source{prefix: r.Prefix, addrs: r.Addrs, fired: r.Fired, flag: r.Flag, flagID: r.FlagID}
	for _, x := range r.Accts {
		s.accts = append(s.accts, seen{h: x.H, t: x.T, acct: shopguard.Account{ShopID: x.Shop, Actor: x.Actor}})
	}
	return s
}

func stamps(ss []stamp) []stampRec {
	out := make([]stampRec, len(ss))
	for i, s := range ss {
		out[i] = stampRec{T: s.t, N: s.n, Addr: s.addr}
	}
	return out
}

func unstamps(rs []stampRec) []stamp {
	out := make([]stamp, len(rs))
	for i, r := range rs {
		out[i] = stamp{t: r.T, n: r.N, addr: r.Addr}
	}
	return out
}
