package detect

import (
	"fmt"

	"github.com/shopguard/shopguard"
)

// exportRule raises bulk_export when one account exports at least Threshold
// records within Window (Severity), and for any export within
// AfterCompromise of an impossible_travel or account_takeover finding on the
// account (CompromiseSeverity).
type exportRule struct{ e *Engine }

func (exportRule) Name() string { return shopguard.RuleBulkExport }

func (r exportRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if !ev.Action.IsExport() {
		return dst
	}
	c := r.e.cfg.BulkExport
	acct := r.e.account(ev)
	a := acct.ext() // Process recorded the export, so it exists
	t := ev.Time.UnixNano()
	ip := ev.IP.String

	if a.compromised != 0 && t >= a.compromised && t-a.compromised <= int64(c.AfterCompromise) && !quiet(a.firedCritical, t, c.Window) {
		a.firedCritical, a.firedExport = t, t
		summary := fmt.Sprintf("%s of %s records %s after %s", ev.Action, commas(ev.Records),
			human(timeOf(t).Sub(timeOf(a.compromised))), a.compromisedRule)
		return append(dst, newFinding(r.Name(), c.CompromiseSeverity, ev, acct.shop, acct.actor, ip(), summary, shopguard.Evidence{
			Cause:     "after_" + a.compromisedRule,
			CauseID:   a.compromisedID,
			CauseRule: a.compromisedRule,
			Records:   ev.Records,
			Window:    human(c.AfterCompromise),
			First:     timeOf(a.compromised),
		}))
	}
	if quiet(a.firedExport, t, c.Window) {
		return dst
	}
	sum, lo, hi := a.exports.densest(t, int64(c.Window), nil)
	if sum < c.Threshold {
		return dst
	}
	a.firedExport = t
	summary := fmt.Sprintf("%s records exported in %d export(s) within %s (threshold %s)",
		commas(sum), hi-lo, human(c.Window), commas(c.Threshold))
	return append(dst, newFinding(r.Name(), c.Severity, ev, acct.shop, acct.actor, ip(), summary, shopguard.Evidence{
		Count:     sum,
		Threshold: c.Threshold,
		Window:    human(c.Window),
		First:     timeOf(a.exports.s[lo].t),
		Records:   ev.Records,
	}))
}
