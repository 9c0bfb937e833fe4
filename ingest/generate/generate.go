package generate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/geodemo"
)

// Generator produces an endless (or Config.Events long) stream of admin
// audit events in non-decreasing event time, with labelled attack episodes
// mixed in. It is not safe for concurrent use.
//
// Internally it keeps a priority queue of in-flight benign sessions and
// attack episodes, each of which knows only its next event, so memory stays
// proportional to what is in flight, not to the length of the stream.
type Generator struct {
	cfg Config
	rng *rand.Rand

	places []place
	dist   []float64 // km between places, row-major
	far    []int16   // cities of hijackers
	atk    []int16   // cities of other attackers
	vps    []int16   // Japanese cities of attackers renting nearby servers
	atk6   []int16   // cities with IPv6 blocks for /64 rotation

	shops  []shop
	users  []user
	actCum []float64 // cumulative activity weights of users
	actSum float64

	resources []string // pool of "orders/1004211"-style resources

	q        queue
	seq      uint64
	sessions []session
	freeSess []int32
	attacks  []*attack
	freeAtk  []int32

	now     int64 // event time of the last emitted event (unix ns)
	spawnAt int64 // when the next benign session starts
	emitted int64
	// meanSession is the expected number of events per benign session,
	// which turns the configured event rate into a session rate.
	meanSession float64
	hourW       [24]float64 // JST hour → relative activity, mean 1
	maxHourW    float64

	untilAttack float64 // benign events until the next attack starts
	attackCum   []float64
	nAttacks    int
	pendingAtk  int64 // events of started attacks not yet emitted

	blocks   map[netip.Prefix]*blockLog // benign failed logins per /24 and /64
	slotBusy map[netip.Prefix]int64     // attacker /24s in use, until when
	slotFlag map[netip.Prefix]int64     // attacker /24s flagged for stuffing, until when
	bursts   map[netip.Addr]int64       // when an attack address last raised failure_burst

	done  []Label
	idBuf []byte
	// last is the attack the last emitted event belonged to, nil for
	// benign traffic; tests use it to tell the two apart.
	last *attack
}

// The limits that keep benign traffic clear of the default thresholds of
// SPEC §3, with margin.
const (
	// maxBenignFails is how many failed logins an account may have in an
	// hour of benign traffic (takeover needs 5 from one address, brute
	// force 10 in 10 minutes).
	maxBenignFails = 3
	// maxBlockAccounts is how many distinct accounts may fail from one /24
	// or /64 within blockWindow in benign traffic (stuffing needs 20).
	maxBlockAccounts = 8
	blockWindow      = 10 * time.Minute
	// maxBenignExport is how many records an account may export within an
	// hour of benign traffic (bulk_export needs 10,000).
	maxBenignExport = 5000
	// safeKMH is the fastest raw (radius-free) speed between two logins of
	// an account that benign traffic and non-travel attacks allow;
	// impossible_travel needs more than 1,000 km/h after subtracting radii.
	safeKMH = 900
	// nearKM: two places whose distance minus both accuracy radii is below
	// this are never far enough apart for impossible_travel (500 km).
	nearKM = 450
	// busyAfter keeps benign sessions off an attacked account this long
	// after the episode, past the one-hour window of critical exports.
	busyAfter = 65 * time.Minute
	// slotRest keeps an attacker /24 from the next episode this long after
	// the last: longer than the ten-minute stuffing window and the
	// detector's quiet time after a finding.
	slotRest = 12 * time.Minute
	// flagAfter keeps a /24 flagged for credential_stuffing from hijackers
	// this long: a flagged block makes every success from it an
	// account_takeover for an hour.
	flagAfter = 70 * time.Minute
)

// Benign session shape.
const (
	pTypo     = 0.05  // one or two mistyped passwords before the success
	pMFAFail  = 0.005 // one failed MFA code before the success
	pAbandon  = 0.004 // a login with a mistyped login id, then nothing
	pLogout   = 0.6   // sessions that end with an explicit logout
	meanSteps = 30.0  // mean admin actions per session (exponential)
	// meanDelay is the mean time between two actions of a session. With
	// EventsPerSecond events a second, about EventsPerSecond·meanDelay
	// sessions are open at once; it is kept short so that at the default
	// rate most users are not in a session at any moment.
	meanDelay = 8 * time.Second
	// A user whose last login is at least tripGap ago may have travelled
	// meanwhile (overnight, say): with pTravel they log in from another
	// city, and when away, with pReturn they are back home.
	tripGap     = 3 * time.Hour
	pTravel     = 0.05
	pReturn     = 0.5
	pTripAbroad = 0.2 // share of trips that leave the home country
)

// sessionEvents is the expected number of events of a benign session,
// from the constants above.
func sessionEvents() float64 {
	steps := 1 / (math.Exp(1/meanSteps) - 1) // mean of floor(meanSteps·Exp(1))
	typos := pTypo*1.3 + pMFAFail
	return pAbandon + (1-pAbandon)*(typos+1+steps+pLogout)
}

// jstProfile is the relative activity by hour of the day in Japan (JST),
// before normalisation to a mean of 1.
var jstProfile = [24]float64{
	0.30, 0.20, 0.12, 0.08, 0.08, 0.12, 0.25, 0.55, 1.00, 1.50, 1.75, 1.75,
	1.40, 1.65, 1.75, 1.65, 1.50, 1.30, 1.15, 1.05, 0.95, 0.85, 0.65, 0.45,
}

// New returns a generator for cfg. Zero Shops, Start, EventsPerSecond and
// Mix take their defaults (see Config); the result is then validated.
func New(cfg Config) (*Generator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("generator config: %w", err)
	}
	if len(geodemo.Cities) == 0 {
		return nil, errors.New("generator: the geodemo city table is empty")
	}
	seed := uint64(cfg.Seed)
	g := &Generator{
		cfg:         cfg,
		rng:         rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		meanSession: sessionEvents(),
		blocks:      make(map[netip.Prefix]*blockLog),
		slotBusy:    make(map[netip.Prefix]int64),
		slotFlag:    make(map[netip.Prefix]int64),
		bursts:      make(map[netip.Addr]int64),
	}
	var sum float64
	for _, w := range jstProfile {
		sum += w
	}
	for h, w := range jstProfile {
		g.hourW[h] = w * 24 / sum
		g.maxHourW = max(g.maxHourW, g.hourW[h])
	}
	g.buildPopulation()
	g.resources = make([]string, 4096)
	kinds := []string{"orders/", "orders/", "orders/", "products/", "products/", "customers/", "discounts/", "pages/"}
	for i := range g.resources {
		g.resources[i] = kinds[g.rng.IntN(len(kinds))] + strconv.Itoa(100000+g.rng.IntN(900000))
	}
	for i, s := range []string{"settings/shipping", "settings/payments", "settings/taxes", "settings/staff", "themes/current"} {
		g.resources[i*97] = s
	}
	m := cfg.Mix
	v6, v6w := m.RotationV6, m.RotationV6W
	if len(g.atk6) == 0 { // no IPv6 in the city table: no /64 or /48 rotation
		v6, v6w = 0, 0
	}
	g.attackCum = cumulative([]float64{m.Stuffing, m.BruteForce, m.Hijack, m.RotationV4, v6, m.Insider, m.Quiet, m.Theft, m.Burst,
		m.ListWave, m.UnknownSpray, v6w})
	g.now = cfg.Start.UnixNano()
	g.spawnAt = g.now
	g.untilAttack = g.attackGap()
	return g, nil
}

// Next fills ev with the next event and reports true, or reports false once
// Config.Events events have been produced (never, if it is 0). Every field
// of ev is overwritten, and ev may be retained: nothing in it is reused for
// later events. Event times never decrease. Next allocates only the
// event's id (and a session id per session).
func (g *Generator) Next(ev *shopguard.Event) bool {
	if g.cfg.Events > 0 && g.emitted >= g.cfg.Events {
		return false
	}
	// Start every session due before the earliest pending event, so that
	// no event can be emitted ahead of one that precedes it.
	for len(g.q) == 0 || g.spawnAt <= g.q[0].t {
		g.spawnSession(g.spawnAt)
		g.spawnAt += g.sessionGap(g.spawnAt)
	}
	it := g.q.pop()
	g.now = it.t
	*ev = shopguard.Event{Time: time.Unix(0, it.t).UTC()}
	if it.ref >= 0 {
		g.last = nil
		g.stepSession(it, ev)
		if g.cfg.AttackRate > 0 {
			if g.untilAttack--; g.untilAttack <= 0 {
				g.untilAttack += g.attackGap()
				g.spawnAttack()
			}
		}
	} else {
		g.stepAttack(it, ev)
	}
	g.emitted++
	g.idBuf = append(g.idBuf[:0], 'g')
	g.idBuf = strconv.AppendInt(g.idBuf, g.cfg.Seed, 10)
	g.idBuf = append(g.idBuf, '-')
	g.idBuf = strconv.AppendInt(g.idBuf, g.emitted, 10)
	ev.ID = string(g.idBuf)
	return true
}

// TakeLabels appends to dst the labels of the attack episodes whose events
// have all been emitted since the previous call, in the order they
// completed, and returns the extended slice. Each label is handed out once,
// so an endless generator does not accumulate them; `generate --labels`
// calls it once at the end.
func (g *Generator) TakeLabels(dst []Label) []Label {
	dst = append(dst, g.done...)
	clear(g.done)
	g.done = g.done[:0]
	return dst
}

// hourOf returns the hour of the day of t (unix ns) at offset tz seconds.
func hourOf(t, tz int64) int {
	s := t/int64(time.Second) + tz
	return int(((s % 86400) + 86400) % 86400 / 3600)
}

// sessionGap draws the time to the next benign session start at t, so that
// sessions times their mean length give the configured event rate, shaped
// by the JST day.
func (g *Generator) sessionGap(t int64) int64 {
	rate := g.cfg.EventsPerSecond * g.hourW[hourOf(t, 9*3600)] / g.meanSession // sessions/s
	return msRound(g.rng.ExpFloat64() / rate * float64(time.Second))
}

// expectedEvents is the expected number of benign events in [from, to].
func (g *Generator) expectedEvents(from, to int64) float64 {
	var n float64
	for t := from; t < to; {
		h := hourOf(t, 9*3600)
		end := min(to, t-t%int64(time.Hour)+int64(time.Hour))
		n += g.cfg.EventsPerSecond * g.hourW[h] * float64(end-t) / float64(time.Second)
		t = end
	}
	return n
}

// attackGap draws the number of benign events until the next attack.
func (g *Generator) attackGap() float64 {
	if g.cfg.AttackRate <= 0 {
		return math.Inf(1)
	}
	return g.rng.ExpFloat64() * 10000 / g.cfg.AttackRate
}

// msRound rounds a duration in ns to whole milliseconds, as audit logs
// usually carry them.
func msRound(ns float64) int64 {
	return int64(math.Round(ns/1e6)) * 1e6
}

// uniform draws a duration in [lo, hi), rounded to milliseconds.
func (g *Generator) uniform(lo, hi time.Duration) int64 {
	return msRound(float64(lo) + g.rng.Float64()*float64(hi-lo))
}

// logUniform draws an integer in [lo, hi] whose logarithm is uniform: many
// small values, a few large ones.
func (g *Generator) logUniform(lo, hi int64) int64 {
	v := math.Exp(math.Log(float64(lo)) + g.rng.Float64()*(math.Log(float64(hi))-math.Log(float64(lo))))
	return min(max(int64(v), lo), hi)
}

// between draws an integer in [lo, hi].
func (g *Generator) between(lo, hi int) int { return lo + g.rng.IntN(hi-lo+1) }

// km is the distance between two places.
func (g *Generator) km(a, b int16) float64 { return g.dist[int(a)*len(g.places)+int(b)] }

// reachable reports whether a successful login of u in city c at t would be
// consistent with the account's last login — close enough that radii make
// it count as near, or slower than safeKMH — so that impossible_travel
// cannot fire on it.
func (g *Generator) reachable(u *user, c int16, t int64) bool {
	if u.lastT == 0 || u.lastCity == c {
		return true
	}
	d := g.km(u.lastCity, c)
	a, b := &g.places[u.lastCity], &g.places[c]
	if d-float64(a.RadiusKM)-float64(b.RadiusKM) < nearKM {
		return true
	}
	dt := math.Abs(float64(t-u.lastT)) / float64(time.Hour)
	return d <= safeKMH*dt
}

// free reports whether u can be an attack's victim now: no benign session
// in flight and no other attack on it.
func (g *Generator) free(u *user) bool {
	return u.active == 0 && g.now >= u.busyUntil
}

// item is an entry of the event queue: the next event time of a session
// (ref ≥ 0, index into sessions) or an attack (ref < 0, -ref-1 indexes
// attacks). seq orders equal times by insertion, for determinism.
type item struct {
	t   int64
	seq uint64
	ref int32
}

// queue is a binary min-heap of items by (t, seq).
type queue []item

func (q queue) less(i, j int) bool {
	return q[i].t < q[j].t || q[i].t == q[j].t && q[i].seq < q[j].seq
}

func (g *Generator) push(t int64, ref int32) {
	g.seq++
	q := append(g.q, item{t: t, seq: g.seq, ref: ref})
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
	g.q = q
}

func (q *queue) pop() item {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}
