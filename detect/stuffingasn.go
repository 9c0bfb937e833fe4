package detect

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/shopguard/shopguard"
)

// knowsASN is what a Locator implements to say whether it knows
// autonomous systems (geoip.DB with an ASN database); one that does not
// say is taken to (test locators fill Geo.ASN directly).
type knowsASN interface{ HasASN() bool }

// locatesASN reports whether the ASN level of credential_stuffing can
// run: New sets Engine.asnLevel from it.
func (e *Engine) locatesASN() bool {
	c := e.cfg.CredentialStuffing
	if e.loc == nil || (c.ASNThreshold == 0 && c.ASNHostingThreshold == 0) {
		return false
	}
	if l, ok := e.loc.(knowsASN); ok {
		return l.HasASN()
	}
	return true
}

// asnPrefix is the source key of autonomous system n: a /128 of an
// address in the multicast space ff00::/8, which no login comes from
// (and which checkpoints restore like any other source).
func asnPrefix(n uint32) netip.Prefix {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0xff, 0xa5, 'A', 'S'
	b[12], b[13], b[14], b[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return netip.PrefixFrom(netip.AddrFrom16(b), 128)
}

// asn judges the failed login's autonomous system (SPEC §3.2): at least
// ASNThreshold distinct accounts within Window, ASNHostingThreshold for a
// hosting ASN. The finding's ip names it ("AS14061"). It runs only with an
// ASN database; a campaign its address or block reported within Window is
// not reported again by its ASN (the ASN catches campaigns spread thinner
// than every block's threshold); and it does not flag the ASN for account_takeover: an autonomous system holds
// far too many ordinary users.
// guard is the widest block of ev's address (stuffingRule.blocks).
func (r stuffingRule) asn(dst []shopguard.Finding, ev *shopguard.Event, guard *source) []shopguard.Finding {
	e := r.e
	c := e.cfg.CredentialStuffing
	if !e.asnLevel {
		return dst
	}
	geo, ok := e.loc.Locate(ev.IP)
	if !ok || geo.ASN == 0 {
		return dst
	}
	threshold := c.ASNThreshold
	if slices.Contains(e.cfg.UnfamiliarLogin.HostingASNs, geo.ASN) {
		threshold = c.ASNHostingThreshold
	}
	if threshold == 0 {
		return dst
	}
	a := e.account(ev)
	t := ev.Time.UnixNano()
	s := e.source(asnPrefix(geo.ASN))
	s.note(a.h, t, a, max(2*threshold, 64))
	s.noteAddr(ev.IP)
	if quiet(s.fired, t, c.Window) {
		return dst
	}
	// A campaign its address or block already reported is not reported
	// again as its ASN: one campaign, one finding.
	if quiet(guard.fired, t, c.Window) {
		return dst
	}
	n, first := s.distinct(t, c.Window)
	if n < threshold {
		return dst
	}
	s.fired = t
	name := "AS" + strconv.FormatUint(uint64(geo.ASN), 10)
	addrs := make([]string, len(s.addrs))
	for i, x := range s.addrs {
		addrs[i] = x.String()
	}
	summary := fmt.Sprintf("failed logins against %d accounts from %s within %s", n, name, human(c.Window))
	if geo.ASOrg != "" {
		summary = fmt.Sprintf("failed logins against %d accounts from %s (%s) within %s", n, name, geo.ASOrg, human(c.Window))
	}
	return append(dst, newFinding(r.Name(), c.Severity, ev, "", "", name, summary, shopguard.Evidence{
		Count:     int64(n),
		Threshold: int64(threshold),
		Window:    human(c.Window),
		First:     time.Unix(0, first).UTC(),
		Accounts:  s.sample(t, c.Window),
		Addresses: addrs,
	}))
}
