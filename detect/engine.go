package detect

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/shopguard/shopguard"
)

// Rule is one detection rule. Rules are evaluated by the Engine in a fixed
// order for every event and share its state.
type Rule interface {
	Name() string // stable, low-cardinality; used as a metric label
	// Eval appends findings for ev to dst and returns it. It must not
	// retain ev.
	Eval(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding
}

// account is the state of one admin account (shop_id + actor). It is kept
// small, because there is one per active account for up to a day: what only
// failures, exports and findings need lives in extra, allocated on first
// use.
type account struct {
	h           uint64 // accountHash(shop, actor)
	shop, actor string // one allocation, shared by both
	logins      [travelKeep]login
	nLogins     int
	firedTravel int64 // event time (unix ns) of the last impossible_travel finding; 0 is never
	lastFinding int64 // event time of the last finding on the account; 0 is never
	prof        profile
	x           *extra
	sessions    []session // for session_hijack; most accounts with a session need no extra
}

// extra is the part of an account's state that most accounts never need.
type extra struct {
	fails   window // failed logins, for brute_force and account_takeover
	exports window // exported records, for bulk_export

	// Event times (unix ns) of the last finding of each rule, for the
	// once-per-window suppression; 0 is never.
	firedBrute, firedTakeover, firedExport, firedCritical int64

	// The last impossible_travel or account_takeover finding, which makes
	// exports after it critical.
	compromised                    int64
	compromisedID, compromisedRule string

	risky      risky    // the last risky login finding, for risky_change
	firedRisky [8]int64 // last risky_change per sensitive action
}

// ext returns the account's extra state, creating it.
func (a *account) ext() *extra {
	if a.x == nil {
		a.x = &extra{}
	}
	return a.x
}

// empty reports whether x holds nothing: what a snapshot holds as an
// account's extra state when it had only sessions.
func (x *extra) empty() bool {
	return len(x.fails.s) == 0 && len(x.exports.s) == 0 &&
		x.firedBrute == 0 && x.firedTakeover == 0 && x.firedExport == 0 && x.firedCritical == 0 &&
		x.compromised == 0 && x.compromisedID == "" && x.compromisedRule == "" &&
		x.risky == (risky{}) && x.firedRisky == [8]int64{}
}

// login is one located successful login, for impossible_travel.
type login struct {
	t  int64
	ip netip.Addr
	at spot
}

// spot is where a login was located: a shopguard.Geo without its strings,
// which the engine keeps once each (names). 24 bytes and no pointer, where
// a Geo takes 80 and three.
type spot struct {
	lat, lon float64
	city     uint32 // names index
	country  uint16 // names index; 0 also when over 65,535 countries
	radiusKM uint16
}

// names interns the city and country names of the logins an engine holds:
// a GeoIP database has some hundred thousand, so the table stays small
// however many accounts there are. Index 0 is "".
type names struct {
	idx  map[string]uint32
	strs []string
}

func (n *names) id(s string) uint32 {
	if s == "" {
		return 0
	}
	if i, ok := n.idx[s]; ok {
		return i
	}
	if n.idx == nil {
		n.idx, n.strs = map[string]uint32{}, []string{""}
	}
	i := uint32(len(n.strs))
	s = strings.Clone(s)
	n.strs = append(n.strs, s)
	n.idx[s] = i
	return i
}

func (n *names) name(i uint32) string {
	if int(i) >= len(n.strs) {
		return ""
	}
	return n.strs[i]
}

// spotOf is g as a spot.
func (e *Engine) spotOf(g shopguard.Geo) spot {
	c := e.names.id(g.Country)
	if c > math.MaxUint16 {
		c = 0
	}
	return spot{lat: g.Lat, lon: g.Lon, city: e.names.id(g.City), country: uint16(c), radiusKM: g.RadiusKM}
}

// geoOf is the Geo of s (without the ASN, which travel does not keep).
func (e *Engine) geoOf(s spot) shopguard.Geo {
	return shopguard.Geo{Lat: s.lat, Lon: s.lon, RadiusKM: s.radiusKM, Country: e.names.name(uint32(s.country)), City: e.names.name(s.city)}
}

// travelKeep is how many located logins an account keeps: two, so that a
// login arriving out of order is still compared with its neighbours in time.
const travelKeep = 2

// srcKey identifies a source: an address (full length) or a block.
type srcKey struct {
	addr [16]byte
	bits uint8
}

// source is the state of one source of failed logins.
type source struct {
	prefix netip.Prefix
	accts  []seen       // distinct accounts that failed from it, newest time each
	addrs  []netip.Addr // a sample of distinct addresses, for blocks
	fired  int64        // last credential_stuffing finding of its campaign
	flag   int64        // when a finding named this source (for takeover)
	flagID string       // that finding's id

	burst      []int64 // newest failure times from an address, for failure_burst
	firedBurst int64
}

// seen is one account that failed from a source, and when it last did.
type seen struct {
	h    uint64
	t    int64
	acct shopguard.Account
}

// Engine evaluates the rules over events in the order given. It is not safe
// for concurrent use: one goroutine feeds it (see Run).
type Engine struct {
	cfg   Config
	loc   shopguard.Locator
	m     *Metrics
	log   *slog.Logger
	now   func() time.Time
	allow []netip.Prefix

	accounts *accountStore
	sources  *table[srcKey, source]
	rules    []Rule
	mark     int64 // newest event time seen (unix ns): the watermark

	afterBatch func()
	watch      func(ev *shopguard.Event, fs []shopguard.Finding)
	snapHint   int // buffer size for the next Snapshot: the last one's, plus room

	// Campaign state (wave.go, watchlist.go).
	wave *waveState
	// names interns the place names of the accounts' logins (spot).
	names names
	// waveFollower: the engine keeps the platform's wave state but does
	// not report stuffing_wave (FollowWave).
	waveFollower bool
	wl           watchState

	// Per-event memo, so the rules share one lookup.
	cur     *shopguard.Event
	curAcct *account

	propsOf  *shopguard.Event
	curProps props
	uaCache  uaCache
	asnLevel bool // credential_stuffing judges autonomous systems (stuffingasn.go)
	// lastUse remembers, per session (direct-mapped by the hash of
	// account and session id), where it was last used from, so that
	// session_hijack skips the account lookup for the common case of a
	// session used again from the same address and client.
	lastUse []sessionUse
}

// Option configures an Engine.
type Option func(*Engine)

// WithLocator sets the GeoIP locator; without one, travel is not judged.
func WithLocator(l shopguard.Locator) Option { return func(e *Engine) { e.loc = l } }

// WithMetrics sets the metrics the engine updates.
func WithMetrics(m *Metrics) Option { return func(e *Engine) { e.m = m } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithAfterBatch sets a function Run calls after each batch, once the
// batch's findings are with the sink and its Done has been called, from the
// goroutine that runs the engine: the place to take a checkpoint
// (Snapshot) that matches the acknowledged offsets exactly.
func WithAfterBatch(fn func()) Option { return func(e *Engine) { e.afterBatch = fn } }

// WithWatcher sets a function Run calls for every event, in order, with the
// findings the event raised (often none), from the goroutine that runs the
// engine: the feed of the incident report. fn must not retain ev or fs.
func WithWatcher(fn func(ev *shopguard.Event, fs []shopguard.Finding)) Option {
	return func(e *Engine) { e.watch = fn }
}

// WithClock sets the wall clock used for lag and latency metrics only;
// detection never reads it.
func WithClock(now func() time.Time) Option { return func(e *Engine) { e.now = now } }

// New validates cfg and returns an engine with empty state.
func New(cfg Config, opts ...Option) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, now: time.Now}
	for _, o := range opts {
		o(e)
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.wl.list == nil {
		e.wl.list = new(SharedWatchlist)
	}
	for _, n := range cfg.Allowlist {
		e.allow = append(e.allow, n.Prefix)
	}
	e.accounts = newAccountStore(int64(e.accountHorizon()), cfg.MaxAccounts, e.m.evicted("account"))
	if cfg.HotAccounts > 0 {
		e.accounts.hotCap = min(cfg.HotAccounts, e.accounts.hotCap)
	}
	e.sources = newTable[srcKey, source](int64(e.sourceHorizon()), cfg.MaxSources, e.m.evicted("source"))

	e.wave = newWaveState(cfg)
	if cfg.CredentialStuffing.Enabled {
		e.rules = append(e.rules, stuffingRule{e})
		e.asnLevel = e.locatesASN()
	}
	if cfg.StuffingWave.Enabled {
		e.rules = append(e.rules, waveRule{e})
	}
	if cfg.BruteForce.Enabled {
		e.rules = append(e.rules, bruteRule{e})
	}
	if cfg.FailureBurst.Enabled {
		e.rules = append(e.rules, burstRule{e})
	}
	if cfg.AccountTakeover.Enabled {
		e.rules = append(e.rules, takeoverRule{e})
	}
	if cfg.ImpossibleTravel.Enabled {
		if e.loc == nil {
			e.log.Warn("no GeoIP database: impossible_travel is not judged; pass --geoip or set geoip.path")
		}
		e.rules = append(e.rules, travelRule{e})
	}
	if cfg.UnfamiliarLogin.Enabled {
		e.rules = append(e.rules, unfamiliarRule{e})
	}
	if cfg.LeakedCredentialUse.Enabled {
		e.rules = append(e.rules, leakedRule{e})
	}
	if cfg.SessionHijack.Enabled {
		e.rules = append(e.rules, hijackRule{e})
	}
	if cfg.RiskyChange.Enabled {
		e.rules = append(e.rules, riskyRule{e})
	}
	if cfg.BulkExport.Enabled {
		e.rules = append(e.rules, exportRule{e})
	}
	return e, nil
}

// accountHorizon is how long an idle account's state can still matter: the
// longest window, and for travel the time in which the fastest plausible
// traveller could not cross half the globe (20,037 km).
func (e *Engine) accountHorizon() time.Duration {
	c := e.cfg
	h := max(c.BruteForce.Window, c.AccountTakeover.Window, c.BulkExport.Window, c.BulkExport.AfterCompromise, c.ImpossibleTravel.Suppress)
	if c.SessionHijack.Enabled {
		h = max(h, c.SessionHijack.Window)
	}
	if c.RiskyChange.Enabled {
		h = max(h, c.RiskyChange.Window)
	}
	if c.learnsProfiles() {
		// A profile must outlive its forgetting time.
		h = max(h, c.Profile.OpenFinding, time.Duration(c.Profile.ForgetDays)*24*time.Hour)
	}
	if c.ImpossibleTravel.Enabled {
		// Capped in float first: a tiny max_speed_kmh would overflow a
		// Duration.
		hours := math.Min(20037/c.ImpossibleTravel.MaxSpeedKMH, maxWindow.Hours())
		h = max(h, time.Duration(hours*float64(time.Hour)))
	}
	return h
}

// sourceHorizon: stuffing counts within its window, and a flag set by it
// must outlive the takeover window.
func (e *Engine) sourceHorizon() time.Duration {
	return max(e.cfg.CredentialStuffing.Window, e.cfg.AccountTakeover.Window)
}

// Process evaluates every rule for ev, appends the findings to dst and
// returns it. It does not retain ev.
func (e *Engine) Process(dst []shopguard.Finding, ev *shopguard.Event) []shopguard.Finding {
	t := ev.Time.UnixNano()
	e.advance(t)
	switch ev.Action {
	case shopguard.ActionLoginFailure:
		a := e.account(ev)
		c := e.cfg
		keep := max(c.BruteForce.Window, c.AccountTakeover.Window)
		a.ext().fails.add(stamp{t: t, n: 1, addr: ev.IP}, e.mark-int64(keep), 8*max(c.BruteForce.Threshold, c.AccountTakeover.Failures, 32))
	case shopguard.ActionLoginSuccess:
		e.account(ev)
	case shopguard.ActionPasswordChange, shopguard.ActionPasswordReset, shopguard.ActionMFADisable,
		shopguard.ActionEmailChange, shopguard.ActionAPIKeyCreate, shopguard.ActionPayoutChange,
		shopguard.ActionStaffAdd, shopguard.ActionAppInstall:
		e.m.countSensitive(ev.Action)
		e.account(ev)
		if ev.Action == shopguard.ActionPasswordChange || ev.Action == shopguard.ActionPasswordReset {
			e.rotate(ev) // watchlist.go
		}
	case shopguard.ActionCustomersExport, shopguard.ActionOrdersExport:
		a := e.account(ev)
		keep := e.cfg.BulkExport.Window
		a.ext().exports.add(stamp{t: t, n: ev.Records}, e.mark-int64(keep), 4096)
	default:
		// Any use of a session can show it hijacked.
		if ev.SessionID == "" || !e.cfg.SessionHijack.Enabled {
			return dst
		}
	}
	n := len(dst)
	for _, r := range e.rules {
		dst = r.Eval(dst, ev)
	}
	e.afterRules(ev, dst[n:])
	e.cur, e.curAcct, e.propsOf = nil, nil, nil
	for i := n; i < len(dst); i++ {
		e.m.found(&dst[i])
	}
	return dst
}

// advance moves the engine's event-time watermark to t if t is newer.
func (e *Engine) advance(t int64) {
	if t > e.mark {
		e.mark = t
		e.accounts.advance(t)
		e.sources.advance(t)
	}
}

// account returns the state of ev's account, creating it. Within one event
// every caller gets the same pointer.
func (e *Engine) account(ev *shopguard.Event) *account {
	if e.cur == ev {
		return e.curAcct
	}
	h := accountHash(ev.ShopID, ev.Actor)
	for {
		a := e.accounts.get(h)
		if a == nil {
			name := ev.ShopID + ev.Actor // a copy: ev's strings may alias a reused buffer
			a = e.accounts.create(h)
			a.shop, a.actor = name[:len(ev.ShopID)], name[len(ev.ShopID):]
		} else if a.shop != ev.ShopID || a.actor != ev.Actor {
			h++ // a 64-bit hash collision: probe on
			continue
		}
		e.cur, e.curAcct = ev, a
		return a
	}
}

func accountHash(shop, actor string) uint64 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.WriteString(shop)
	_, _ = d.Write([]byte{0})
	_, _ = d.WriteString(actor)
	return d.Sum64()
}

// source returns the state of the source p, creating it.
func (e *Engine) source(p netip.Prefix) *source {
	k := srcKey{addr: p.Addr().As16(), bits: uint8(p.Bits())}
	s := e.sources.get(k)
	if s == nil {
		s = &source{prefix: p}
		e.sources.put(k, s)
	}
	return s
}

// lookSource returns the state of the source p, or nil.
func (e *Engine) lookSource(p netip.Prefix) *source {
	return e.sources.get(srcKey{addr: p.Addr().As16(), bits: uint8(p.Bits())})
}

// blockOf returns ip's block for credential_stuffing.
func (e *Engine) blockOf(ip netip.Addr) netip.Prefix {
	bits := e.cfg.CredentialStuffing.IPv6Prefix
	if ip.Is4() {
		bits = e.cfg.CredentialStuffing.IPv4Prefix
	}
	p, _ := ip.Prefix(bits)
	return p
}

// allowed reports whether ip is in an allowlisted network.
func (e *Engine) allowed(ip netip.Addr) bool {
	for _, p := range e.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Run processes batches from in until in is closed, hands each batch's
// findings to sink and only then calls the batch's Done, so that a source
// commits nothing whose findings are not held by the sink. It returns nil
// when in is closed, or the sink's error, which leaves the batch
// unacknowledged. ctx bounds the sink's deliveries.
func (e *Engine) Run(ctx context.Context, in <-chan shopguard.Batch, sink shopguard.Sink) error {
	var fs []shopguard.Finding
	for b := range in {
		fs = fs[:0]
		for i := range b.Events {
			n := len(fs)
			fs = e.Process(fs, &b.Events[i])
			if e.watch != nil {
				e.watch(&b.Events[i], fs[n:])
			}
		}
		if len(fs) > 0 {
			if err := sink.Send(ctx, fs...); err != nil {
				return fmt.Errorf("hand %d findings to the sinks: %w", len(fs), err)
			}
		}
		if b.Done != nil {
			b.Done()
		}
		e.observe(&b)
		if e.afterBatch != nil {
			e.afterBatch()
		}
	}
	return nil
}

// observe updates the per-batch metrics.
func (e *Engine) observe(b *shopguard.Batch) {
	if e.m == nil {
		return
	}
	now := e.now()
	e.m.events.Add(float64(len(b.Events)))
	if e.mark > 0 {
		e.m.lag.Set(now.Sub(time.Unix(0, e.mark)).Seconds())
	}
	if !b.Received.IsZero() {
		e.m.latency.Observe(now.Sub(b.Received).Seconds())
	}
	e.m.entries.WithLabelValues("account").Set(float64(e.accounts.len()))
	e.m.entries.WithLabelValues("source").Set(float64(e.sources.len()))
	e.m.SetWatchCounts(e.WatchCounts())
	e.observeWave()
}

// observeWave sets the wave's gauges.
func (e *Engine) observeWave() {
	if e.cfg.StuffingWave.Enabled {
		ws := e.WaveStats()
		e.m.waveNow.Set(float64(ws.Failing))
		e.m.waveBase.Set(ws.Baseline)
	}
}

// Stats summarises the engine's state, for logs and tests.
type Stats struct {
	Accounts, Sources int
	Watermark         time.Time
}

// Stats returns the current state sizes and watermark.
func (e *Engine) Stats() Stats {
	var w time.Time
	if e.mark != 0 {
		w = time.Unix(0, e.mark).UTC()
	}
	return Stats{Accounts: e.accounts.len(), Sources: e.sources.len(), Watermark: w}
}

// haversineKM is the great-circle distance between two points.
func haversineKM(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0088 // mean Earth radius, km
	rad := math.Pi / 180
	dlat := (lat2 - lat1) * rad
	dlon := (lon2 - lon1) * rad
	a := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(a)))
}
