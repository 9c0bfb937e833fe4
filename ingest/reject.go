package ingest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// DeadLetter receives the raw input of rejected events, so that an operator
// can inspect or re-feed them. pos locates the input ("file:line" or
// "topic/partition/offset"). raw is only valid during the call: an
// implementation that keeps it must copy it. Implementations are safe for
// concurrent use; a returned error means the input was not kept.
type DeadLetter interface {
	DeadLetter(ctx context.Context, pos string, raw []byte, derr *DecodeError) error
}

// Defaults of Rejects.
const (
	// DefaultRejectLogBurst is how many rejects are logged per window.
	DefaultRejectLogBurst = 10
	// DefaultRejectLogInterval is the length of a logging window.
	DefaultRejectLogInterval = time.Minute
	// rejectSnippet is how much of a rejected input a log line repeats.
	rejectSnippet = 256
)

// Rejects handles input that is not a valid event, for every source: it
// counts it, logs it (rate-limited), and hands it to the dead-letter sink.
// All fields are optional. A Rejects is safe for concurrent use and must
// not be copied after first use.
type Rejects struct {
	Metrics    *Metrics
	Logger     *slog.Logger
	DeadLetter DeadLetter

	// LogBurst is the most rejects logged individually per LogInterval
	// (default DefaultRejectLogBurst); the rest are only counted, and the
	// next log line after the interval says how many were suppressed. A
	// flood of bad input thus never gives one log line per event.
	LogBurst int
	// LogInterval is the length of a logging window (default
	// DefaultRejectLogInterval).
	LogInterval time.Duration

	mu          sync.Mutex
	windowStart time.Time
	logged      int
	suppressed  int64
}

// Reject counts, logs and dead-letters one rejected input read at pos, and
// returns the dead-letter sink's error, if any. A nil *Rejects does nothing.
func (r *Rejects) Reject(ctx context.Context, pos string, raw []byte, derr *DecodeError) error {
	if r == nil {
		return nil
	}
	if derr == nil {
		derr = &DecodeError{Reason: ReasonNotJSON, Msg: "rejected without a reason"}
	}
	r.Metrics.Invalid(derr.Reason)
	if r.Logger != nil && r.admit() {
		r.Logger.LogAttrs(ctx, slog.LevelWarn, "invalid event skipped",
			slog.String("pos", pos),
			slog.String("reason", derr.Reason.String()),
			slog.Any("err", derr),
			slog.String("raw", Snippet(raw, rejectSnippet)))
	}
	if r.DeadLetter == nil {
		return nil
	}
	if err := r.DeadLetter.DeadLetter(ctx, pos, raw, derr); err != nil {
		return fmt.Errorf("dead-letter %s: %w", pos, err)
	}
	return nil
}

// admit reports whether the next reject may be logged, starting a new
// window (and logging what the last one suppressed) when it is time.
func (r *Rejects) admit() bool {
	burst, interval := r.LogBurst, r.LogInterval
	if burst <= 0 {
		burst = DefaultRejectLogBurst
	}
	if interval <= 0 {
		interval = DefaultRejectLogInterval
	}
	now := time.Now()
	r.mu.Lock()
	var suppressed int64
	if r.windowStart.IsZero() || now.Sub(r.windowStart) >= interval {
		suppressed = r.suppressed
		r.windowStart, r.logged, r.suppressed = now, 0, 0
	}
	ok := r.logged < burst
	if ok {
		r.logged++
	} else {
		r.suppressed++
	}
	r.mu.Unlock()
	if suppressed > 0 {
		r.logSuppressed(suppressed)
	}
	return ok
}

// Flush logs how many rejects the current window suppressed, if any. A
// source calls it when its input ends, so that the tail of a flood is not
// left unmentioned.
func (r *Rejects) Flush() {
	if r == nil || r.Logger == nil {
		return
	}
	r.mu.Lock()
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		r.logSuppressed(n)
	}
}

func (r *Rejects) logSuppressed(n int64) {
	r.Logger.LogAttrs(context.Background(), slog.LevelWarn, "more invalid events skipped without logging them",
		slog.Int64("suppressed", n),
		slog.String("hint", "see shopguard_events_invalid_total"))
}

// Snippet returns at most limit bytes of raw (cut on a rune boundary) as
// printable text for a log line: control characters, invalid UTF-8 and
// other unprintable runes are escaped Go-style, so input cannot forge log
// lines or terminal sequences. A cut is marked with the full length.
func Snippet(raw []byte, limit int) string {
	b := make([]byte, 0, min(len(raw), limit)+24)
	i := 0
	for i < len(raw) && i < limit {
		r, size := utf8.DecodeRune(raw[i:])
		if i+size > limit {
			break
		}
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\x`...)
			b = append(b, "0123456789abcdef"[raw[i]>>4], "0123456789abcdef"[raw[i]&0xf])
		case r == '\\':
			b = append(b, `\\`...)
		case unicode.IsPrint(r):
			b = append(b, raw[i:i+size]...)
		default:
			q := strconv.QuoteRune(r) // e.g. '\n' or '\u2028'
			b = append(b, q[1:len(q)-1]...)
		}
		i += size
	}
	if i < len(raw) {
		b = append(b, "… ("...)
		b = strconv.AppendInt(b, int64(len(raw)), 10)
		b = append(b, " bytes)"...)
	}
	return string(b)
}

// FileDeadLetter is a DeadLetter that appends one JSON object per rejected
// input to a file:
//
//	{"pos":"events.jsonl:17","reason":"bad_ip","error":"bad_ip: field …","raw":"{…}"}
//
// raw is the input as a string when it is valid UTF-8; otherwise the object
// has "raw_base64" instead, so that no byte is lost. Each object is written
// with one write call as it arrives.
type FileDeadLetter struct {
	mu   sync.Mutex
	f    *os.File
	path string
	buf  []byte
}

var _ DeadLetter = (*FileDeadLetter)(nil)

// NewFileDeadLetter opens path for appending, creating it with mode 0600
// (dead letters hold raw audit data) if it does not exist.
func NewFileDeadLetter(path string) (*FileDeadLetter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open dead-letter file: %w", err)
	}
	return &FileDeadLetter{f: f, path: path}, nil
}

// deadLetterRecord is one line of a FileDeadLetter.
type deadLetterRecord struct {
	Pos       string `json:"pos"`
	Reason    string `json:"reason"`
	Error     string `json:"error"`
	Raw       string `json:"raw,omitempty"`
	RawBase64 string `json:"raw_base64,omitempty"`
}

// DeadLetter appends the record for one rejected input.
func (d *FileDeadLetter) DeadLetter(_ context.Context, pos string, raw []byte, derr *DecodeError) error {
	rec := deadLetterRecord{Pos: pos, Reason: derr.Reason.String(), Error: derr.Error()}
	if utf8.Valid(raw) {
		rec.Raw = string(raw)
	} else {
		rec.RawBase64 = base64.StdEncoding.EncodeToString(raw)
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return fmt.Errorf("write %s: %w", d.path, os.ErrClosed)
	}
	d.buf = append(append(d.buf[:0], line...), '\n')
	if _, err := d.f.Write(d.buf); err != nil {
		return fmt.Errorf("write %s: %w", d.path, err)
	}
	return nil
}

// Close syncs and closes the file. It is safe to call more than once.
func (d *FileDeadLetter) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	f := d.f
	d.f = nil
	return errors.Join(f.Sync(), f.Close())
}
