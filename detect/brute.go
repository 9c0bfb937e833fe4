package detect

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/shopguard/shopguard"
)

// bruteRule raises brute_force when one account has at least Threshold
// failed logins within Window, from any addresses.
type bruteRule struct{ e *Engine }

func (bruteRule) Name() string { return shopguard.RuleBruteForce }

func (r bruteRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginFailure {
		return dst
	}
	c := r.e.cfg.BruteForce
	a := r.e.account(ev)
	t := ev.Time.UnixNano()
	if quiet(a.x.firedBrute, t, c.Window) {
		return dst
	}
	threshold := c.Threshold
	if r.e.leaked(a.shop, a.actor, t) { // a listed, unrotated account (watchlist.go)
		threshold = min(threshold, r.e.cfg.Watchlist.BruteForceThreshold)
	}
	n, lo, hi := a.x.fails.densest(t, int64(c.Window), nil)
	if n < int64(threshold) {
		return dst
	}
	a.x.firedBrute = t
	addrs := distinctAddrs(a.x.fails.s[lo:hi])
	summary := fmt.Sprintf("%d failed logins for %s in %s within %s from %d address(es)",
		n, a.actor, a.shop, human(c.Window), len(addrs))
	return append(dst, newFinding(r.Name(), c.Severity, ev, a.shop, a.actor, ev.IP.String(), summary, shopguard.Evidence{
		Count:     n,
		Threshold: int64(threshold),
		Window:    human(c.Window),
		First:     time.Unix(0, a.x.fails.s[lo].t).UTC(),
		Addresses: addrs,
	}))
}

// distinctAddrs lists the distinct addresses of stamps, at most sampleSize.
func distinctAddrs(ss []stamp) []string {
	var seen []netip.Addr
	var out []string
	for i := range ss {
		if len(out) == sampleSize {
			break
		}
		dup := false
		for _, a := range seen {
			if a == ss[i].addr {
				dup = true
				break
			}
		}
		if !dup {
			seen = append(seen, ss[i].addr)
			out = append(out, ss[i].addr.String())
		}
	}
	return out
}
