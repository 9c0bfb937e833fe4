package detect

import (
	"fmt"
	"net/netip"

	"github.com/shopguard/shopguard"
)

// takeoverRule raises account_takeover for a successful login from an
// address that, within Window, failed at least Failures times on the same
// account, or that (or its block) was named by a credential_stuffing
// finding, or that failed during a stuffing_wave the account also failed
// in, with a country or client new to the account (wave.go).
type takeoverRule struct{ e *Engine }

func (takeoverRule) Name() string { return shopguard.RuleAccountTakeover }

func (r takeoverRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginSuccess {
		return dst
	}
	e := r.e
	c := e.cfg.AccountTakeover
	a := e.account(ev)
	t := ev.Time.UnixNano()
	x := a.x
	if x == nil {
		x = &noExtra
	}
	if quiet(x.firedTakeover, t, c.Window) {
		return dst
	}
	from := t - int64(c.Window)
	var n int64
	first := t
	for i := range x.fails.s {
		if s := &x.fails.s[i]; s.addr == ev.IP && s.t >= from && s.t <= t {
			n++
			first = min(first, s.t)
		}
	}
	var evd shopguard.Evidence
	var summary string
	switch {
	case n >= int64(c.Failures):
		evd = shopguard.Evidence{Cause: "failures", Count: n, Threshold: int64(c.Failures),
			Window: human(c.Window), First: timeOf(first)}
		summary = fmt.Sprintf("successful login from %s after %d failed logins from it within %s", ev.IP, n, human(c.Window))
	case c.AfterStuffing && e.flaggedSource(ev.IP, from, t) != nil:
		s := e.flaggedSource(ev.IP, from, t)
		evd = shopguard.Evidence{Cause: shopguard.RuleCredentialStuffing, CauseID: s.flagID,
			CauseRule: shopguard.RuleCredentialStuffing, Window: human(c.Window), First: timeOf(s.flag)}
		if s.prefix.Bits() == ev.IP.BitLen() {
			summary = fmt.Sprintf("successful login from %s, flagged for credential stuffing at %s", ev.IP, timeOf(s.flag).Format("15:04:05Z07:00"))
		} else {
			summary = fmt.Sprintf("successful login from %s in %s, flagged for credential stuffing at %s", ev.IP, s.prefix, timeOf(s.flag).Format("15:04:05Z07:00"))
		}
	default:
		why, ok := e.waveTakeover(a, ev, t)
		if !ok {
			return dst
		}
		w := e.wave
		evd = shopguard.Evidence{Cause: shopguard.RuleStuffingWave, CauseID: w.lastID, CauseRule: shopguard.RuleStuffingWave,
			WaveID: w.waveID, First: timeOf(w.waveStart)}
		summary = fmt.Sprintf("successful login during stuffing wave %s of an account and from an address that failed in it, with %s", w.waveID, why)
	}
	f := newFinding(r.Name(), c.Severity, ev, a.shop, a.actor, ev.IP.String(), summary, evd)
	a.ext().firedTakeover = t
	a.compromise(t, &f)
	return append(dst, f)
}

// flaggedSource returns the state of ip, or of its block, if a
// credential_stuffing finding named it within [from, t].
func (e *Engine) flaggedSource(ip netip.Addr, from, t int64) *source {
	for _, p := range [2]netip.Prefix{netip.PrefixFrom(ip, ip.BitLen()), e.blockOf(ip)} {
		if s := e.lookSource(p); s != nil && s.flag != 0 && s.flag >= from && s.flag <= t {
			return s
		}
	}
	return nil
}

// noExtra stands in for the extra state of an account that has none.
var noExtra extra

// compromise marks the account as probably in an attacker's hands since t,
// which makes its exports critical (bulk_export).
func (a *account) compromise(t int64, f *shopguard.Finding) {
	if x := a.ext(); t >= x.compromised {
		x.compromised, x.compromisedID, x.compromisedRule = t, f.ID, f.Rule
	}
}
