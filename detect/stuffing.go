package detect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/shopguard/shopguard"
)

// stuffingRule raises credential_stuffing when failed logins from one source
// hit at least Threshold distinct accounts within Window. A source is an
// address and also its block (IPv4 /24, IPv6 /64 by default), so that
// rotating addresses inside a block does not evade the rule. One campaign
// gives one finding per window: the block's suppression covers the address.
type stuffingRule struct{ e *Engine }

func (stuffingRule) Name() string { return shopguard.RuleCredentialStuffing }

func (r stuffingRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginFailure {
		return dst
	}
	n := len(dst)
	dst, guard := r.blocks(dst, ev)
	if len(dst) == n {
		dst = r.asn(dst, ev, guard) // stuffingasn.go
	}
	return dst
}

// blocks judges the address and its blocks, and returns the widest of
// them, whose suppression stands for the campaign.
func (r stuffingRule) blocks(dst []shopguard.Finding, ev *shopguard.Event) ([]shopguard.Finding, *source) {
	e := r.e
	c := e.cfg.CredentialStuffing
	a := e.account(ev)
	h := a.h
	t := ev.Time.UnixNano()
	limit := max(2*c.Threshold, 64)

	// The levels, narrowest first: the address, its block, and for IPv6
	// the wider block (stuffing48.go). The widest level's suppression
	// covers the campaign, so one campaign gives one finding.
	var lv [3]*source
	n := 0
	var buf [3]netip.Prefix
	for _, p := range e.stuffingLevels(&buf, ev.IP) {
		s := e.source(p)
		s.note(h, t, a, limit)
		if n > 0 {
			s.noteAddr(ev.IP)
		}
		lv[n] = s
		n++
	}
	levels := lv[:n]
	guard := levels[n-1]
	if quiet(guard.fired, t, c.Window) {
		// One finding per campaign, but a narrower level that crosses
		// later (the /64 of a campaign first seen across its /48) is
		// still flagged for account_takeover, under that finding.
		for _, s := range levels[:n-1] {
			if s.flag < guard.fired {
				if k, _ := s.distinct(t, c.Window); k >= c.Threshold {
					s.flag, s.flagID = t, guard.flagID
				}
			}
		}
		return dst, guard
	}
	// hit is the address when it crossed by itself (SPEC §2), else the
	// widest block that crossed (SPEC §3.2).
	var hit *source
	var cnt int
	var first int64
	if k, f := levels[0].distinct(t, c.Window); k >= c.Threshold {
		hit, cnt, first = levels[0], k, f
	}
	for i := n - 1; i > 0 && hit == nil; i-- {
		if k, f := levels[i].distinct(t, c.Window); k >= c.Threshold {
			hit, cnt, first = levels[i], k, f
		}
	}
	if hit == nil {
		return dst, guard
	}
	for _, s := range levels {
		s.fired = t
	}
	ip := ev.IP.String()
	var addrs []string
	if hit != levels[0] {
		ip = hit.prefix.String()
		addrs = make([]string, len(hit.addrs))
		for i, x := range hit.addrs {
			addrs[i] = x.String()
		}
	}
	n = cnt
	f := newFinding(r.Name(), c.Severity, ev, "", "", ip,
		fmt.Sprintf("failed logins against %d accounts from %s within %s", n, ip, human(c.Window)),
		shopguard.Evidence{
			Count:     int64(n),
			Threshold: int64(c.Threshold),
			Window:    human(c.Window),
			First:     time.Unix(0, first).UTC(),
			Accounts:  hit.sample(t, c.Window),
			Addresses: addrs,
		})
	// Every level that crossed is flagged for account_takeover, not only
	// the one the finding names: a campaign inside one /64 that also
	// crossed its /48 still makes the /64's successes takeovers.
	// (account_takeover looks at the address and its /64 or /24, never at
	// the /48, which in many networks holds ordinary users too.)
	guard.flagID = f.ID // for the levels that cross later, above
	for _, s := range levels {
		if k, _ := s.distinct(t, c.Window); s == hit || k >= c.Threshold {
			s.flag, s.flagID = t, f.ID
		}
	}
	return append(dst, f), guard
}

// note records that account h (a) failed from s at t, keeping at most limit
// accounts, the most recent.
func (s *source) note(h uint64, t int64, a *account, limit int) {
	for i := range s.accts {
		if s.accts[i].h == h {
			s.accts[i].t = max(s.accts[i].t, t)
			return
		}
	}
	x := seen{h: h, t: t, acct: shopguard.Account{ShopID: a.shop, Actor: a.actor}}
	if len(s.accts) < limit {
		s.accts = append(s.accts, x)
		return
	}
	oldest := 0
	for i := range s.accts {
		if s.accts[i].t < s.accts[oldest].t {
			oldest = i
		}
	}
	s.accts[oldest] = x
}

// noteAddr keeps a sample of the block's distinct addresses.
func (s *source) noteAddr(ip netip.Addr) {
	if len(s.addrs) < sampleSize && !slices.Contains(s.addrs, ip) {
		s.addrs = append(s.addrs, ip)
	}
}

// distinct counts the accounts whose latest failure from s lies within
// [t-w, t], and returns the earliest such time.
func (s *source) distinct(t int64, w time.Duration) (n int, first int64) {
	from := t - int64(w)
	first = t
	for i := range s.accts {
		if at := s.accts[i].t; at >= from && at <= t {
			n++
			first = min(first, at)
		}
	}
	return n, first
}

// sample lists up to sampleSize accounts counted in [t-w, t], sorted so that
// the evidence does not depend on eviction order.
func (s *source) sample(t int64, w time.Duration) []shopguard.Account {
	from := t - int64(w)
	var out []shopguard.Account
	for i := range s.accts {
		if at := s.accts[i].t; at >= from && at <= t {
			out = append(out, s.accts[i].acct)
		}
	}
	slices.SortFunc(out, func(x, y shopguard.Account) int {
		if c := strings.Compare(x.ShopID, y.ShopID); c != 0 {
			return c
		}
		return strings.Compare(x.Actor, y.Actor)
	})
	if len(out) > sampleSize {
		out = out[:sampleSize]
	}
	return out
}
