package detect

import (
	"net/netip"
	"strings"
	"time"
)

// FlagSource records that a credential_stuffing finding with id named the
// source p at event time t, as the engine's own credential_stuffing rule
// does when it fires. account_takeover then treats a successful login from
// p (an address as a full-length prefix, or a block) within its window
// after t as a takeover, exactly as if this engine had raised the finding.
//
// It is for a scaled-out shopguard, where the source that is flagged and
// the account that logs in from it are judged by different engines: feed
// FlagSource and Process in the event order one engine would have seen, the
// flag right after the failed login that raised it. A flag older than the
// one the source already has is ignored.
func (e *Engine) FlagSource(p netip.Prefix, t time.Time, id string) {
	ns := t.UnixNano()
	if ns > e.mark {
		// A flag moves event time on like an event does, so that state
		// expiry (by event time) keeps it as long as it can matter.
		e.mark = ns
		e.accounts.advance(ns)
		e.sources.advance(ns)
	}
	if a := p.Addr(); a.Is4In6() {
		p = netip.PrefixFrom(a.Unmap(), max(p.Bits()-96, 0))
	}
	s := e.source(p.Masked())
	if ns >= s.flag {
		s.flag, s.flagID = ns, strings.Clone(id)
	}
}

// Observe counts events processed with Process, and sets the event-time
// lag from the newest event time the engine has seen, as Run does after
// each batch. It is for callers that feed the engine with Process (the
// account stage of a scaled-out shopguard); the processing-latency
// histogram and the state-size gauges are Run's alone.
func (e *Engine) Observe(events int) {
	if e.m == nil {
		return
	}
	e.m.events.Add(float64(events))
	if e.mark > 0 {
		e.m.lag.Set(e.now().Sub(time.Unix(0, e.mark)).Seconds())
	}
	// Every account task follows the platform's wave (FollowFailure), so
	// any of them has its figures.
	e.observeWave()
}
