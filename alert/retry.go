package alert

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// backoff computes exponential delays with jitter between delivery attempts.
type backoff struct {
	min, max time.Duration
}

// The delays of the two kinds of sink. Record sinks start fast and stay
// short, because consumption waits on them and should resume soon after the
// sink recovers; notification sinks back off further, so a receiver that is
// down is not hammered.
var (
	recordBackoff       = backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	notificationBackoff = backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
)

// delay returns the wait before retry number attempt (0 for the first
// retry): min doubled per attempt up to max, of which the upper half is
// random ("equal jitter"), so several instances retrying against the same
// receiver spread out while the delay still grows.
func (b backoff) delay(attempt int) time.Duration {
	d := b.max
	if attempt < 32 {
		if e := b.min << attempt; e > 0 && e < b.max {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleepCtx waits for d or until ctx is done, returning ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// logLimiter lets a message through at most once per interval per key and
// counts what it held back, so a sink that is down, or a queue that
// overflows on every Send, does not flood the log.
type logLimiter struct {
	every time.Duration

	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, last: map[string]time.Time{}, suppressed: map[string]int{}}
}

// allow reports whether to log key now, and how many times it was held back
// since it was last let through.
func (l *logLimiter) allow(key string) (ok bool, suppressed int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, seen := l.last[key]; seen && now.Sub(last) < l.every {
		l.suppressed[key]++
		return false, 0
	}
	l.last[key] = now
	n := l.suppressed[key]
	delete(l.suppressed, key)
	return true, n
}

// health remembers the outcome of a record sink's last delivery attempt,
// for readiness checks. It is safe for concurrent use and never blocks, so
// a check does not wait behind a Send that is retrying.
type health struct{ last atomic.Pointer[error] }

func (h *health) set(err error) {
	if err == nil {
		h.last.Store(nil)
		return
	}
	h.last.Store(&err)
}

func (h *health) get() error {
	if p := h.last.Load(); p != nil {
		return *p
	}
	return nil
}
