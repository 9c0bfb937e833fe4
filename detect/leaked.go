package detect

import (
	"fmt"
	"time"

	"github.com/shopguard/shopguard"
)

// LeakedConfig configures leaked_credential_use (SPEC §3.2): a successful
// login of a listed, unrotated account from a network that the account has
// not used before, learning or not.
type LeakedConfig struct {
	Enabled  bool               `yaml:"enabled"`
	Severity shopguard.Severity `yaml:"severity"`
	// Suppress is how long after a finding the account raises no other:
	// one finding per account per hour by default, however many new
	// networks an intruder logs in from.
	Suppress time.Duration `yaml:"suppress"`
}

// learnsProfiles reports whether the engine keeps account profiles: they
// serve unfamiliar_login, leaked_credential_use and the wave-aware
// account_takeover.
func (c Config) learnsProfiles() bool {
	return c.UnfamiliarLogin.Enabled || c.LeakedCredentialUse.Enabled ||
		(c.StuffingWave.Enabled && c.AccountTakeover.Enabled)
}

// leakedRule raises leaked_credential_use. "Used before" means a familiar
// network of the profile (profile.go): a network first seen on a login that
// raised a finding is not one until it has been seen on clean days, so an
// intruder who logged in once does not make the next login look normal.
type leakedRule struct{ e *Engine }

func (leakedRule) Name() string { return shopguard.RuleLeakedCredentialUse }

func (r leakedRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginSuccess {
		return dst
	}
	e := r.e
	t := ev.Time.UnixNano()
	a := e.account(ev)
	if !e.leaked(a.shop, a.actor, t) {
		return dst
	}
	c := e.cfg.LeakedCredentialUse
	if last, ok := e.wl.fired[a.h]; ok && quiet(last, t, c.Suppress) {
		return dst
	}
	pr := e.props(ev)
	if a.prof.familiar(propNetwork, pr.network, day(t), uint16(e.cfg.Profile.ForgetDays)) {
		return dst
	}
	if e.wl.fired == nil {
		e.wl.fired = make(map[uint64]int64)
	}
	e.wl.fired[a.h] = t
	net := networkName(ev.IP, pr.asn)
	summary := fmt.Sprintf("login of a leaked account (on the watchlist, password not changed since) from a network it has not used before (%s)", net)
	return append(dst, newFinding(r.Name(), c.Severity, ev, a.shop, a.actor, ev.IP.String(), summary, shopguard.Evidence{
		Cause: "watchlist:" + net, Count: int64(a.prof.logins),
	}))
}
