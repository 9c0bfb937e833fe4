package detect

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/shopguard/shopguard"
)

// WaveConfig configures stuffing_wave (SPEC §3.2): the number of distinct
// accounts with failed logins in the last hour, platform-wide, exceeds both
// Min and Factor times its trailing baseline.
type WaveConfig struct {
	Enabled  bool               `yaml:"enabled"`
	Severity shopguard.Severity `yaml:"severity"`
	// Min is the absolute floor: the hourly count must exceed it.
	Min int `yaml:"min"`
	// Factor is how many times the baseline the hourly count must exceed.
	Factor float64 `yaml:"factor"`
	// BaselineHours is the span of the exponentially weighted mean of the
	// hourly count: its weight is 2/(BaselineHours+1).
	BaselineHours int `yaml:"baseline_hours"`
	// WarmUp is how many complete hours of event time the baseline must
	// have seen before a wave is judged at all. See the README: a zero
	// baseline on empty state would make every busy first hour a wave.
	WarmUp int `yaml:"warm_up_hours"`
	// MaxAccounts caps the exact set of accounts failing in the last hour
	// (and MaxAccounts the set of addresses). Past it the count saturates,
	// which is far above any threshold worth setting.
	MaxAccounts int `yaml:"max_accounts"`
}

// DefaultWaveConfig holds the defaults of SPEC §3.2.
var DefaultWaveConfig = WaveConfig{Enabled: true, Severity: shopguard.SeverityHigh,
	Min: 50, Factor: 3, BaselineHours: 24, WarmUp: 24, MaxAccounts: 200_000}

func (c WaveConfig) validate(bad func(key, format string, args ...any)) {
	if !c.Severity.Valid() {
		bad("stuffing_wave.severity", "%q is not one of low, medium, high, critical", c.Severity)
	}
	if c.Min < 1 || c.Min > 10_000_000 {
		bad("stuffing_wave.min", "must be between 1 and 10000000, got %d", c.Min)
	}
	if !(c.Factor >= 1) || math.IsInf(c.Factor, 1) {
		bad("stuffing_wave.factor", "must be a finite number of at least 1, got %g", c.Factor)
	}
	if c.BaselineHours < 1 || c.BaselineHours > 24*7 {
		bad("stuffing_wave.baseline_hours", "must be between 1 and 168, got %d", c.BaselineHours)
	}
	if c.WarmUp < 0 || c.WarmUp > 24*7 {
		bad("stuffing_wave.warm_up_hours", "must be between 0 and 168, got %d", c.WarmUp)
	}
	if c.MaxAccounts < c.Min {
		bad("stuffing_wave.max_accounts", "must be at least stuffing_wave.min (%d), got %d", c.Min, c.MaxAccounts)
	}
}

// recent is the set of keys seen within the last span of event time, each
// with its newest time and a value, counted exactly. Each key has exactly
// one entry in the FIFO queue, so expiry is amortised O(1) per event and the
// memory is proportional to the distinct keys of one span, capped.
type recent[K comparable, V any] struct {
	m     map[K]*recentEntry[V]
	queue []K // keys in the order of their queued time
	head  int
	cap   int
}

type recentEntry[V any] struct {
	t, queued int64 // newest time seen; time of the key's queue entry
	v         V
}

func newRecent[K comparable, V any](cap int) *recent[K, V] {
	return &recent[K, V]{m: make(map[K]*recentEntry[V]), cap: cap}
}

// note records k at t and returns its entry, or nil when the set is full.
func (r *recent[K, V]) note(k K, t int64) *recentEntry[V] {
	if x, ok := r.m[k]; ok {
		x.t = max(x.t, t)
		return x
	}
	if len(r.m) >= r.cap {
		return nil
	}
	x := &recentEntry[V]{t: t, queued: t}
	r.m[k] = x
	r.queue = append(r.queue, k)
	return x
}

// expire drops every key whose newest time is at or before from. A key seen
// again since it was queued is queued anew at its newest time.
func (r *recent[K, V]) expire(from int64) {
	for r.head < len(r.queue) {
		k := r.queue[r.head]
		x := r.m[k]
		if x.queued > from {
			break
		}
		r.head++
		if x.t > from {
			x.queued = x.t
			r.queue = append(r.queue, k)
			continue
		}
		delete(r.m, k)
	}
	if r.head > 1024 && r.head*2 > len(r.queue) {
		r.queue = append(r.queue[:0], r.queue[r.head:]...)
		r.head = 0
	}
}

// waveAcct is what the wave keeps of one failing account.
type waveAcct struct {
	unknown bool // its newest failure was unknown_user
	acct    shopguard.Account
}

// waveState is the platform-wide state of stuffing_wave: tiny, one per
// engine.
type waveState struct {
	accts *recent[uint64, waveAcct]
	addrs *recent[netip.Addr, struct{}]

	// The wave keeps its own clock, the newest failed login's time, so
	// that it depends on the platform's failed logins alone: an engine that
	// follows them (FollowFailure) keeps exactly the same wave.
	mark     int64   // newest failed login's time (unix ns)
	hour     int64   // start (unix ns) of the hour being counted; 0 before the first failed login
	baseline float64 // EWMA of the hourly counts of complete hours
	hours    int     // complete hours folded into baseline (capped)
	fired    int64   // event time of the last stuffing_wave finding
	waveID   string  // the current wave's id, while it lasts
	waveEnd  int64   // when the current wave was last above threshold

	// What failed during the current wave (from the hour before it was
	// first seen until an hour after it was last above threshold), for
	// the wave-aware account_takeover; capped like the sets above.
	waveStart int64                   // when the current wave was first above threshold
	lastID    string                  // id of the current wave's last stuffing_wave finding
	waveAccts map[uint64]struct{}     // accounts that failed during the wave
	waveAddrs map[netip.Addr]struct{} // addresses that failed during the wave

	waves int // waves started in this engine's life, for the replay summary
}

// active reports whether t is within the current wave or the hour after it.
func (w *waveState) active(t int64) bool {
	return w.waveID != "" && t >= w.waveStart-int64(time.Hour) && t-w.waveEnd <= int64(time.Hour)
}

// startWave begins a wave at t: its sets start with everything that failed
// in the last hour, which is what made it a wave.
func (w *waveState) startWave(t int64) {
	sum := sha256.Sum256([]byte("stuffing_wave\x00" + strconv.FormatInt(t, 10)))
	w.waveID = hex.EncodeToString(sum[:8])
	w.waveStart, w.waveEnd, w.lastID = t, t, ""
	w.waveAccts = make(map[uint64]struct{}, len(w.accts.m))
	for k := range w.accts.m {
		w.waveAccts[k] = struct{}{}
	}
	w.waveAddrs = make(map[netip.Addr]struct{}, len(w.addrs.m))
	for k := range w.addrs.m {
		w.waveAddrs[k] = struct{}{}
	}
}

// endWave forgets a wave that is over.
func (w *waveState) endWave() {
	w.waveID, w.lastID, w.waveStart, w.waveAccts, w.waveAddrs = "", "", 0, nil, nil
}

// newWaveState sizes the sets by the wave's cap and the engine's own caps,
// so a spray of random keys cannot make the wave hold more than the
// engine's state tables may.
func newWaveState(c Config) *waveState {
	return &waveState{
		accts: newRecent[uint64, waveAcct](min(c.StuffingWave.MaxAccounts, c.MaxAccounts)),
		addrs: newRecent[netip.Addr, struct{}](min(c.StuffingWave.MaxAccounts, c.MaxSources)),
	}
}

// roll folds the hours that ended before t into the baseline. The first,
// partial hour of a run is not folded: it would understate the count.
func (w *waveState) roll(c WaveConfig, t int64) {
	h := t - t%int64(time.Hour)
	if w.hour == 0 {
		w.hour = h
		w.hours = -1 // the hour the run starts in is partial
		return
	}
	alpha := 2 / float64(c.BaselineHours+1)
	for n := 0; w.hour < h; n++ {
		w.hour += int64(time.Hour)
		if n > 24*7 { // a long gap: the baseline decays to nothing anyway
			w.hour, w.baseline = h, 0
			break
		}
		if w.hours < 0 {
			w.hours = 0
			continue
		}
		// The count of the hour that just ended: accounts whose newest
		// failure lies within it (later ones cannot exist yet, bar
		// out-of-order events, which this ignores).
		count := float64(w.countAt(w.hour))
		if w.waveEnd != 0 && w.hour-w.waveEnd <= int64(time.Hour) {
			// An hour in a wave teaches at most the threshold, so a wave
			// does not quickly become its own baseline; a lasting step
			// up still becomes normal within about a day.
			count = math.Min(count, c.Factor*math.Max(w.baseline, 1))
		}
		if w.hours < c.BaselineHours {
			w.hours++
		}
		// Until the span is full, the mean of the hours seen (weight 1/n),
		// so the start is not biased towards zero.
		a := math.Max(alpha, 1/float64(w.hours))
		w.baseline = a*count + (1-a)*w.baseline
	}
}

// countAt is the number of accounts whose newest failure lies in
// [end-1h, end).
func (w *waveState) countAt(end int64) int {
	n := 0
	from := end - int64(time.Hour)
	for _, x := range w.accts.m {
		if x.t >= from && x.t < end {
			n++
		}
	}
	return n
}

// waveRule raises stuffing_wave. It keeps the set of accounts that failed
// within the last hour exactly (up to a cap), and the baseline per hour of
// event time.
type waveRule struct{ e *Engine }

func (waveRule) Name() string { return shopguard.RuleStuffingWave }

func (r waveRule) Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginFailure {
		return dst
	}
	e := r.e
	c := e.cfg.StuffingWave
	w := e.wave
	t := ev.Time.UnixNano()
	w.mark = max(w.mark, t)
	w.roll(c, w.mark)
	// By the account's hash and not its state: FollowFailure feeds the
	// failures of accounts the engine does not keep.
	h := accountHash(ev.ShopID, ev.Actor)
	if x := w.accts.note(h, t); x != nil {
		if x.v.acct == (shopguard.Account{}) {
			name := ev.ShopID + ev.Actor // a copy: ev's strings may alias a reused buffer
			x.v.acct = shopguard.Account{ShopID: name[:len(ev.ShopID)], Actor: name[len(ev.ShopID):]}
		}
		x.v.unknown = ev.Reason == "unknown_user"
	}
	w.addrs.note(ev.IP, t)
	from := w.mark - int64(time.Hour)
	w.accts.expire(from)
	w.addrs.expire(from)
	if w.waveID != "" && !w.active(w.mark) {
		w.endWave()
	}
	if w.active(t) {
		if len(w.waveAccts) < w.accts.cap {
			w.waveAccts[h] = struct{}{}
		}
		if len(w.waveAddrs) < w.addrs.cap {
			w.waveAddrs[ev.IP] = struct{}{}
		}
	}

	n := len(w.accts.m)
	if w.hours < c.WarmUp || n <= c.Min || float64(n) <= c.Factor*w.baseline {
		return dst
	}
	if !w.active(t) {
		w.startWave(t)
		w.waves++
	}
	w.waveEnd = max(w.waveEnd, t)
	if quiet(w.fired, t, time.Hour) {
		return dst
	}
	w.fired = t
	f := r.finding(ev, n)
	w.lastID = f.ID
	if e.waveFollower {
		return dst // another engine reports it; this one needs its id
	}
	return append(dst, f)
}

// FollowWave makes the engine a follower of stuffing_wave: it keeps the
// platform's wave state as usual, for the wave-aware account_takeover, but
// does not report stuffing_wave itself. A scaled-out account task that is
// not the wave's reporter is one: every account task follows every failed
// login of the platform (FollowFailure), and one of them reports.
func (e *Engine) FollowWave(follow bool) { e.waveFollower = follow }

// FollowFailure feeds ev, a failed login of an account this engine does
// not keep, to stuffing_wave only, as Process would, and returns dst with
// the stuffing_wave finding ev raises, if any (none in a follower). It
// keeps no account or source state and leaves the engine's watermark
// alone: the wave keeps its own clock. Events that are not failed logins,
// and engines without stuffing_wave, ignore it.
func (e *Engine) FollowFailure(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	if ev.Action != shopguard.ActionLoginFailure || !e.cfg.StuffingWave.Enabled {
		return dst
	}
	n := len(dst)
	dst = waveRule{e}.Eval(dst, ev)
	for i := n; i < len(dst); i++ {
		e.m.found(&dst[i])
	}
	return dst
}

// waveTakeover reports whether a successful login is an account_takeover
// of the current wave (SPEC §3.2): within the wave or the hour after it,
// of an account that failed during it, from an address that failed during
// it, and with a country or a client new to the account's profile.
func (e *Engine) waveTakeover(a *account, ev *shopguard.Event, t int64) (why string, ok bool) {
	w := e.wave
	if !e.cfg.StuffingWave.Enabled || !w.active(t) {
		return "", false
	}
	if _, ok := w.waveAccts[accountHash(a.shop, a.actor)]; !ok {
		return "", false
	}
	if _, ok := w.waveAddrs[ev.IP]; !ok {
		return "", false
	}
	pr := e.props(ev)
	today, forget := day(t), uint16(e.cfg.Profile.ForgetDays)
	// New means absent from a profile that trusts some value of the
	// property (as for unfamiliar_login): an owner who has only logged in
	// from a private office address has no country to be new to. An
	// account's first login ever has nothing to compare with: it is one
	// when the client is a script or a headless browser.
	if len(a.prof.ents) == 0 {
		if pr.kind == clientScript || pr.kind == clientHeadless {
			return "a script client (" + pr.family + ") on the account's first login", true
		}
		return "", false
	}
	switch {
	case pr.hasCountry && a.prof.trusts(propCountry) && !a.prof.familiar(propCountry, pr.country, today, forget):
		return "a country new to the account", true
	case a.prof.trusts(propClient) && !a.prof.familiar(propClient, pr.client, today, forget):
		return "a client (" + pr.family + ") new to the account", true
	}
	return "", false
}

// finding builds the wave's evidence from the last hour's failures.
func (r waveRule) finding(ev *shopguard.Event, n int) shopguard.Finding {
	e := r.e
	c := e.cfg.StuffingWave
	w := e.wave
	unknown := 0
	accts := make([]shopguard.Account, 0, n)
	first := ev.Time.UnixNano()
	for _, x := range w.accts.m {
		if x.v.unknown {
			unknown++
		}
		first = min(first, x.t)
		accts = append(accts, x.v.acct)
	}
	slices.SortFunc(accts, func(x, y shopguard.Account) int {
		return cmp.Or(cmp.Compare(x.ShopID, y.ShopID), cmp.Compare(x.Actor, y.Actor))
	})
	if len(accts) > sampleSize {
		accts = accts[:sampleSize]
	}
	blocks := map[string]int{}
	countries := map[string]int{}
	asns := map[string]int{}
	for ip := range w.addrs.m {
		p, _ := ip.Prefix(16)
		if ip.Is6() {
			p, _ = ip.Prefix(32)
		}
		blocks[p.String()]++
		if e.loc != nil {
			if g, ok := e.loc.Locate(ip); ok {
				if g.Country != "" {
					countries[g.Country]++
				}
				if g.ASN != 0 {
					asns["AS"+strconv.FormatUint(uint64(g.ASN), 10)]++
				}
			}
		}
	}
	share := float64(unknown) / float64(max(n, 1))
	summary := fmt.Sprintf("failed logins against %d accounts platform-wide within 1h from %d addresses, %.1f× the baseline of %.1f",
		n, len(w.addrs.m), float64(n)/math.Max(w.baseline, 1e-9), w.baseline)
	return newFinding(shopguard.RuleStuffingWave, c.Severity, ev, "", "", "", summary, shopguard.Evidence{
		Count:            int64(n),
		Threshold:        int64(math.Max(float64(c.Min), math.Floor(c.Factor*w.baseline))),
		Window:           "1h",
		First:            time.Unix(0, first).UTC(),
		Accounts:         accts,
		WaveID:           w.waveID,
		Baseline:         math.Round(w.baseline*100) / 100,
		UnknownUserShare: math.Round(share*1000) / 1000,
		Sources:          int64(len(w.addrs.m)),
		TopBlocks:        topTallies(blocks),
		Countries:        topTallies(countries),
		ASNs:             topTallies(asns),
	})
}

// topTallies returns the largest counts of m, at most ten, largest first
// and then by key, so that the evidence is deterministic.
func topTallies(m map[string]int) []shopguard.Tally {
	if len(m) == 0 {
		return nil
	}
	out := make([]shopguard.Tally, 0, len(m))
	for k, v := range m {
		out = append(out, shopguard.Tally{Key: k, Count: int64(v)})
	}
	slices.SortFunc(out, func(x, y shopguard.Tally) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Key, y.Key))
	})
	return out[:min(len(out), 10)]
}

// WaveStats are the figures of stuffing_wave: the distinct accounts failing
// in the last hour, the baseline (0 while warming up), whether the warm-up
// is over, and the waves and their findings seen so far by this engine
// (not restored from a checkpoint).
type WaveStats struct {
	Failing  int
	Baseline float64
	WarmedUp bool
	Waves    int
}

// WaveStats returns the wave figures. Call it from the engine's goroutine.
func (e *Engine) WaveStats() WaveStats {
	w := e.wave
	s := WaveStats{Failing: len(w.accts.m), WarmedUp: w.hours >= e.cfg.StuffingWave.WarmUp, Waves: w.waves}
	if s.WarmedUp {
		s.Baseline = math.Round(w.baseline*100) / 100
	}
	return s
}
