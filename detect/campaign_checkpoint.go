package detect

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/shopguard/shopguard"
)

// The campaign section of the snapshot (since format version 4), after the
// sources:
//
//	wave     hour start varint | baseline (float64 bits) uint64 |
//	         complete hours varint | last finding varint | wave id string |
//	         wave last above threshold varint |
//	         accounts uvarint, each (sorted by key): key uint64, time
//	             varint, unknown_user byte, shop string, actor string |
//	         addresses uvarint, each (sorted): address, time varint |
//	         wave start varint | last wave finding id string |
//	         wave accounts uvarint, each (sorted) a key uint64 |
//	         wave addresses uvarint, each (sorted) an address
//	rotated  uvarint, each (sorted by key): account key uint64, time varint
//	leaked   uvarint, each (sorted by key): account key uint64, time of
//	         its last leaked_credential_use finding varint
//
// The FIFO queues of the wave's sets are rebuilt in time order on restore;
// their order does not change what the sets hold at any event time.

func (e *Engine) appendCampaign(b []byte) []byte {
	w := e.wave
	b = binary.AppendVarint(b, w.hour)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(w.baseline))
	b = binary.AppendVarint(b, int64(w.hours))
	b = binary.AppendVarint(b, w.fired)
	b = appendString(b, w.waveID)
	b = binary.AppendVarint(b, w.waveEnd)

	keys := make([]uint64, 0, len(w.accts.m))
	for k := range w.accts.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		x := w.accts.m[k]
		b = binary.BigEndian.AppendUint64(b, k)
		b = binary.AppendVarint(b, x.t)
		u := byte(0)
		if x.v.unknown {
			u = 1
		}
		b = append(b, u)
		b = appendString(b, x.v.acct.ShopID)
		b = appendString(b, x.v.acct.Actor)
	}
	addrs := make([]netip.Addr, 0, len(w.addrs.m))
	for a := range w.addrs.m {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	b = binary.AppendUvarint(b, uint64(len(addrs)))
	for _, a := range addrs {
		b = appendAddr(b, a)
		b = binary.AppendVarint(b, w.addrs.m[a].t)
	}

	b = binary.AppendVarint(b, w.waveStart)
	b = appendString(b, w.lastID)
	wk := make([]uint64, 0, len(w.waveAccts))
	for k := range w.waveAccts {
		wk = append(wk, k)
	}
	slices.Sort(wk)
	b = binary.AppendUvarint(b, uint64(len(wk)))
	for _, k := range wk {
		b = binary.BigEndian.AppendUint64(b, k)
	}
	wa := make([]netip.Addr, 0, len(w.waveAddrs))
	for a := range w.waveAddrs {
		wa = append(wa, a)
	}
	slices.SortFunc(wa, netip.Addr.Compare)
	b = binary.AppendUvarint(b, uint64(len(wa)))
	for _, a := range wa {
		b = appendAddr(b, a)
	}

	b = appendTimes(b, e.wl.rotated)
	return appendTimes(b, e.wl.fired)
}

// appendTimes writes a map of account keys to times, sorted by key.
func appendTimes(b []byte, m map[uint64]int64) []byte {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, k)
		b = binary.AppendVarint(b, m[k])
	}
	return b
}

// times reads what appendTimes wrote; nil when empty.
func (d *decoder) times(what string) map[uint64]int64 {
	var m map[uint64]int64
	n := d.count(9)
	var last uint64
	for i := 0; i < n && d.err == nil; i++ {
		k, t := d.u64(), d.varint()
		if d.err != nil {
			break
		}
		if i > 0 && k <= last {
			d.fail("%s out of order", what)
			break
		}
		last = k
		if m == nil {
			m = make(map[uint64]int64, n)
		}
		m[k] = t
	}
	return m
}

// campaign reads the campaign section into fresh state.
func (d *decoder) campaign(cfg Config) (*waveState, map[uint64]int64, map[uint64]int64) {
	w := newWaveState(cfg)
	w.hour = d.varint()
	w.baseline = math.Float64frombits(d.u64())
	w.hours = int(d.varint())
	w.fired = d.varint()
	w.waveID = d.string()
	w.waveEnd = d.varint()
	if d.err == nil && (!(w.baseline >= 0) || math.IsInf(w.baseline, 0) || w.hours < -1) {
		d.fail("bad wave baseline")
	}
	type qk[K any] struct {
		k K
		t int64
	}
	var aq []qk[uint64]
	n := d.count(11)
	for i := 0; i < n && d.err == nil; i++ {
		k, t := d.u64(), d.varint()
		u := d.u8()
		shop, actor := d.string(), d.string()
		if d.err != nil {
			break
		}
		if u > 1 || w.accts.m[k] != nil || (i > 0 && k <= aq[len(aq)-1].k) {
			d.fail("bad wave account")
			break
		}
		w.accts.m[k] = &recentEntry[waveAcct]{t: t, queued: t, v: waveAcct{unknown: u == 1, acct: shopguard.Account{ShopID: shop, Actor: actor}}}
		aq = append(aq, qk[uint64]{k, t})
	}
	var nq []qk[netip.Addr]
	n = d.count(2)
	for i := 0; i < n && d.err == nil; i++ {
		a, t := d.addr(), d.varint()
		if d.err != nil {
			break
		}
		if !a.IsValid() || w.addrs.m[a] != nil {
			d.fail("bad wave address")
			break
		}
		w.addrs.m[a] = &recentEntry[struct{}]{t: t, queued: t}
		nq = append(nq, qk[netip.Addr]{a, t})
	}
	if d.err == nil && (len(w.accts.m) > w.accts.cap || len(w.addrs.m) > w.addrs.cap) {
		d.fail("wave holds more than stuffing_wave.max_accounts")
	}
	slices.SortStableFunc(aq, func(x, y qk[uint64]) int { return cmp.Compare(x.t, y.t) })
	slices.SortStableFunc(nq, func(x, y qk[netip.Addr]) int { return cmp.Compare(x.t, y.t) })
	for _, q := range aq {
		w.accts.queue = append(w.accts.queue, q.k)
	}
	for _, q := range nq {
		w.addrs.queue = append(w.addrs.queue, q.k)
	}

	w.waveStart = d.varint()
	w.lastID = d.string()
	n = d.count(8)
	var lastK uint64
	for i := 0; i < n && d.err == nil; i++ {
		k := d.u64()
		if d.err == nil && i > 0 && k <= lastK {
			d.fail("wave accounts out of order")
		}
		lastK = k
		if w.waveAccts == nil {
			w.waveAccts = make(map[uint64]struct{}, n)
		}
		w.waveAccts[k] = struct{}{}
	}
	n = d.count(2)
	var lastA netip.Addr
	for i := 0; i < n && d.err == nil; i++ {
		a := d.addr()
		if d.err == nil && (!a.IsValid() || (i > 0 && a.Compare(lastA) <= 0)) {
			d.fail("bad wave address")
		}
		lastA = a
		if w.waveAddrs == nil {
			w.waveAddrs = make(map[netip.Addr]struct{}, n)
		}
		w.waveAddrs[a] = struct{}{}
	}
	if d.err == nil && (len(w.waveAccts) > w.accts.cap || len(w.waveAddrs) > w.addrs.cap) {
		d.fail("wave holds more than stuffing_wave.max_accounts")
	}
	if d.err == nil && w.waveID != "" {
		// An active wave's sets exist even when empty, so that failures
		// during it can be added.
		if w.waveAccts == nil {
			w.waveAccts = map[uint64]struct{}{}
		}
		if w.waveAddrs == nil {
			w.waveAddrs = map[netip.Addr]struct{}{}
		}
	}

	// The wave's clock is not written: it is the newest failed login's
	// time, which the sets hold (the newest failure is never expired), or
	// the last finding's or the wave's end. Only a failure that found both
	// sets full is not in them, and then the clock restarts up to an hour behind.
	w.mark = max(w.fired, w.waveEnd)
	for _, x := range w.accts.m {
		w.mark = max(w.mark, x.t)
	}
	for _, x := range w.addrs.m {
		w.mark = max(w.mark, x.t)
	}

	rot := d.times("rotations")
	fired := d.times("leaked findings")
	if d.err != nil {
		return nil, nil, nil
	}
	return w, rot, fired
}

// campaignFingerprint is the part of the settings fingerprint for the
// campaign rules.
func (c Config) campaignFingerprint() string {
	w := c.StuffingWave
	l := c.LeakedCredentialUse
	return fmt.Sprintf("|wave %t %d %g %d %d %d|stuffing48 %d|watch %d|leaked %t %d",
		w.Enabled, w.Min, w.Factor, w.BaselineHours, w.WarmUp, w.MaxAccounts,
		c.CredentialStuffing.IPv6WidePrefix, c.Watchlist.BruteForceThreshold, l.Enabled, l.Suppress)
}
