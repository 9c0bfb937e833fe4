package detect

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/shopguard/shopguard"
)

// WatchlistConfig configures what the watchlist of leaked accounts changes
// in the rules (SPEC §3.2). The list itself is loaded by the caller (see
// ParseWatchlist and Engine.SetWatchlist).
type WatchlistConfig struct {
	// BruteForceThreshold replaces brute_force.threshold for a listed,
	// unrotated account.
	BruteForceThreshold int `yaml:"brute_force_threshold"`
}

// DefaultWatchlistConfig holds the defaults of SPEC §3.2.
var DefaultWatchlistConfig = WatchlistConfig{BruteForceThreshold: 3}

func (c WatchlistConfig) validate(bad func(key, format string, args ...any)) {
	if c.BruteForceThreshold < 1 || c.BruteForceThreshold > maxThreshold {
		bad("watchlist.brute_force_threshold", "must be between 1 and %d, got %d", maxThreshold, c.BruteForceThreshold)
	}
}

// Watchlist is an immutable set of leaked accounts. It stores only the
// sorted 64-bit hashes of shop_id+actor: 8 bytes an account, so 100,000
// accounts take 800 KB, and a lookup is a binary search. A false match
// needs a 64-bit hash collision.
type Watchlist struct {
	keys []uint64
}

// LineError is a line of a watchlist file that was skipped.
type LineError struct {
	Line int
	Err  string
}

func (l LineError) Error() string { return fmt.Sprintf("line %d: %s", l.Line, l.Err) }

// ParseWatchlist reads lines "shop_id<TAB>actor"; blank lines and lines
// starting with # are skipped. A malformed line is skipped and returned
// among the line errors; err is only a read error, in which case the
// partial list must not be used.
func ParseWatchlist(r io.Reader) (w *Watchlist, bad []LineError, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	w = &Watchlist{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		shop, actor, ok := strings.Cut(line, "\t")
		switch {
		case !ok:
			bad = append(bad, LineError{n, "no tab between shop_id and actor"})
		case shop == "" || len(shop) > 128:
			bad = append(bad, LineError{n, "shop_id must be 1–128 bytes"})
		case actor == "" || len(actor) > 256 || strings.Contains(actor, "\t"):
			bad = append(bad, LineError{n, "actor must be 1–256 bytes without a tab"})
		default:
			w.keys = append(w.keys, accountHash(shop, actor))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, bad, fmt.Errorf("read watchlist: %w", err)
	}
	slices.Sort(w.keys)
	w.keys = slices.Compact(w.keys)
	w.keys = slices.Clip(w.keys)
	return w, bad, nil
}

// Len is the number of distinct listed accounts.
func (w *Watchlist) Len() int {
	if w == nil {
		return 0
	}
	return len(w.keys)
}

// Has reports whether the account is listed.
func (w *Watchlist) Has(shop, actor string) bool { return w.has(accountHash(shop, actor)) }

// HasKey reports whether the account with the key TakeRotations reports
// is listed.
func (w *Watchlist) HasKey(key uint64) bool { return w.has(key) }

func (w *Watchlist) has(h uint64) bool {
	if w == nil {
		return false
	}
	_, ok := slices.BinarySearch(w.keys, h)
	return ok
}

// WatchCounts are the watchlist's figures: listed accounts, and of those
// the rotated (password changed or reset since) and unrotated ones.
type WatchCounts struct {
	Listed, Rotated, Unrotated int
}

// watchState is the engine's part of the watchlist: the current list,
// swapped in atomically from any goroutine, and the rotations the engine
// has seen, which are event-time state and part of the checkpoint.
type watchState struct {
	list    *SharedWatchlist // the engine's own unless WithWatchlist
	rotated map[uint64]int64 // account hash → event time of its rotation
	fired   map[uint64]int64 // account hash → last leaked_credential_use finding
	seenFor *Watchlist       // the list the counts below were computed for
	counts  WatchCounts

	// Rotations recorded since the last TakeRotations, from its first call.
	report bool
	fresh  []rotation
}

type rotation struct{ h, t uint64 }

// SharedWatchlist is the current watchlist of any number of engines
// (WithWatchlist): Set replaces it for all of them at once.
type SharedWatchlist struct{ p atomic.Pointer[Watchlist] }

// Set replaces the list; nil clears it. It is safe to call from any
// goroutine while the engines run; they use the new list from their next
// event.
func (s *SharedWatchlist) Set(w *Watchlist) { s.p.Store(w) }

// Load returns the current list (nil: none).
func (s *SharedWatchlist) Load() *Watchlist { return s.p.Load() }

// WithWatchlist makes the engine use the list s holds (the tasks of a
// scaled-out shopguard share one); SetWatchlist then sets s.
func WithWatchlist(s *SharedWatchlist) Option { return func(e *Engine) { e.wl.list = s } }

// SetWatchlist replaces the watchlist. It is safe to call from any
// goroutine while the engine runs; the engine uses the new list from its
// next event. nil clears it.
func (e *Engine) SetWatchlist(w *Watchlist) { e.wl.list.Set(w) }

// TakeRotations calls f with the key (Watchlist.HasKey) and event time of
// each rotation the engine recorded since the last call, and forgets them:
// for a scaled-out shopguard, whose instances count every task's rotations
// (shopguard_watchlist_accounts). Rotations are recorded for it from its
// first call on. A rotation recorded again with an earlier time is
// reported again.
func (e *Engine) TakeRotations(f func(key uint64, at int64)) {
	e.wl.report = true
	for _, r := range e.wl.fresh {
		f(r.h, int64(r.t))
	}
	e.wl.fresh = e.wl.fresh[:0]
}

// rotate records a password change or reset of a listed account.
func (e *Engine) rotate(ev *shopguard.Event) {
	l := e.wl.list.Load()
	h := accountHash(ev.ShopID, ev.Actor)
	if !l.has(h) {
		return
	}
	if e.wl.rotated == nil {
		e.wl.rotated = make(map[uint64]int64)
	}
	t := ev.Time.UnixNano()
	if old, ok := e.wl.rotated[h]; !ok || t < old {
		e.wl.rotated[h] = t
		e.wl.seenFor = nil // recount
		if e.wl.report {
			e.wl.fresh = append(e.wl.fresh, rotation{h, uint64(t)})
		}
	}
}

// leaked reports whether the account is listed and has not rotated its
// password before t.
func (e *Engine) leaked(shop, actor string, t int64) bool {
	l := e.wl.list.Load()
	if l == nil {
		return false
	}
	h := accountHash(shop, actor)
	if !l.has(h) {
		return false
	}
	at, ok := e.wl.rotated[h]
	return !ok || at > t
}

// WatchCounts returns the watchlist figures. Call it from the engine's
// goroutine (the replay summary, observe).
func (e *Engine) WatchCounts() WatchCounts {
	l := e.wl.list.Load()
	if l == e.wl.seenFor && l != nil {
		return e.wl.counts
	}
	c := WatchCounts{Listed: l.Len()}
	for h := range e.wl.rotated {
		if l.has(h) {
			c.Rotated++
		}
	}
	c.Unrotated = c.Listed - c.Rotated
	e.wl.seenFor, e.wl.counts = l, c
	return c
}
