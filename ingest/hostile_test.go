package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
)

// hostileText is what an attacker puts into a login id or a user agent: an
// ANSI colour and screen-clear, a carriage return and newline followed by a
// forged log record, a right-to-left override, the other bidi controls,
// invalid UTF-8, NUL, DEL and C1 controls (NEL and CSI).
const hostileText = "ev\x1b[31mil\x1b[2J\r\ntime=2026-01-07T09:00:00Z level=ERROR msg=forged\r" +
	"\u202eroot\u202c\u2066x\u2069\u200f\xff\xfe\x00\x7f\u0085\u009b"

// jsonString returns s as a JSON string literal with only what JSON
// requires escaped: control characters, quote and backslash. The bidi
// overrides and invalid UTF-8 stay raw, as an attacker would send them.
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[c>>4])
			b.WriteByte("0123456789abcdef"[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// hostileLines are invalid events carrying hostileText, one per reason.
// None holds a raw newline, so that they are lines of a file too.
func hostileLines() [][]byte {
	h := jsonString(hostileText)
	rawNoLF := strings.ReplaceAll(hostileText, "\n", "") // raw control bytes: not JSON
	lines := []string{
		// not_json: raw ESC and CR inside a string.
		`{"time":"2026-01-07T09:00:00Z","shop_id":"s","actor":"` + rawNoLF + `","action":"login.failure","ip":"192.0.2.1"}`,
		// bad_ip: the hostile text as the address, and as actor and agent.
		`{"time":"2026-01-07T09:00:00Z","shop_id":"s","actor":` + h + `,"action":"login.failure","ip":` + h + `,"user_agent":` + h + `}`,
		// bad_time.
		`{"time":` + h + `,"shop_id":"s","actor":` + h + `,"action":"login.failure","ip":"192.0.2.1"}`,
		// bad_field: an actor over 256 bytes.
		`{"time":"2026-01-07T09:00:00Z","shop_id":"s","actor":` + jsonString(strings.Repeat(hostileText, 8)) + `,"action":"login.failure","ip":"192.0.2.1"}`,
		// bad_field: a shop_id of the wrong type, the agent hostile.
		`{"time":"2026-01-07T09:00:00Z","shop_id":` + h + `,"actor":"a","action":"login.failure","ip":"192.0.2.1","user_agent":` + h + `,"records":"` + rawNoLF + `"}`,
		// missing_field, with hostile text in the key names too.
		`{"time":"2026-01-07T09:00:00Z",` + h + `:1,"actor":` + h + `,"user_agent":` + h + `}`,
		// too_large.
		`{"time":"2026-01-07T09:00:00Z","shop_id":"s","actor":` + h + `,"user_agent":"` + strings.Repeat(rawNoLF, 4000) + `"}`,
	}
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = []byte(l)
	}
	return out
}

// dangerous reports runes a terminal or log viewer acts on or that make
// text read differently than it is.
func dangerous(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) ||
		r == '\u2028' || r == '\u2029'
}

// requireInert fails unless out is valid UTF-8 holding no dangerous rune
// except the newline that ends each of its lines records lines.
func requireInert(t *testing.T, out []byte, records int) {
	t.Helper()
	require.True(t, utf8.Valid(out), "invalid UTF-8 in log output:\n%q", out)
	for i, r := range string(out) {
		if r != '\n' && dangerous(r) {
			lo, hi := max(0, i-60), min(len(out), i+60)
			t.Fatalf("log output holds %U at byte %d: %q", r, i, out[lo:hi])
		}
	}
	require.Equal(t, records, bytes.Count(out, []byte("\n")), "a value broke a log record over lines:\n%s", out)
}

// TestRejectLogsAreInert runs hostile invalid lines through Rejects with a
// text and a JSON slog handler at debug level and checks that no control
// character, bidi override or invalid UTF-8 reaches the log output, and
// that every record stays one line (no forged records).
func TestRejectLogsAreInert(t *testing.T) {
	lines := hostileLines()
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var out bytes.Buffer
			opts := &slog.HandlerOptions{Level: slog.LevelDebug}
			var h slog.Handler = slog.NewTextHandler(&out, opts)
			if format == "json" {
				h = slog.NewJSONHandler(&out, opts)
			}
			m := ingest.NewMetrics(prometheus.NewRegistry())
			r := &ingest.Rejects{Metrics: m, Logger: slog.New(h), LogBurst: 100}
			reasons := map[string]bool{}
			for i, line := range lines {
				var ev shopguard.Event
				err := ingest.Decode(line, &ev)
				var derr *ingest.DecodeError
				require.ErrorAs(t, err, &derr, "line %d", i)
				reasons[derr.Reason.String()] = true
				require.NoError(t, r.Reject(context.Background(), "events.jsonl:"+string(rune('1'+i)), line, derr))
			}
			require.Len(t, reasons, len(ingest.Reasons()), "every reason is exercised: %v", reasons)
			requireInert(t, out.Bytes(), len(lines))
			if format == "json" {
				// Decoded, the values are inert too: jq -r shows no raw
				// escape sequence.
				shown := 0
				for _, l := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
					var rec map[string]any
					require.NoError(t, json.Unmarshal(l, &rec), "%s", l)
					for k, v := range rec {
						s, _ := v.(string)
						for _, r := range s {
							require.False(t, dangerous(r), "%s holds %U after decoding: %q", k, r, s)
						}
					}
					if strings.Contains(rec["raw"].(string), `\x1b`) {
						shown++
					}
				}
				require.Equal(t, 2, shown, "the snippets of the lines with a raw ESC show it, escaped")
			} else {
				require.Contains(t, out.String(), `\\x1b`, "the snippet shows what was there, escaped")
			}
			require.NotContains(t, out.String(), "level=ERROR msg=forged\n")
		})
	}
}

// TestFileSourceRejectLogsAreInert reads the same lines from a file, as
// replay does, with the dead-letter file alongside.
func TestFileSourceRejectLogsAreInert(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hostile.jsonl")
	lines := hostileLines()
	good := `{"time":"2026-01-07T09:00:00Z","shop_id":"s","actor":` + jsonString("\u202eevil\x1b[0m") + `,"action":"login.failure","ip":"192.0.2.1","user_agent":` + jsonString(hostileText) + `}`
	require.NoError(t, os.WriteFile(path, append(bytes.Join(append(lines, []byte(good)), []byte("\n")), '\n'), 0o600))

	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dl, err := ingest.NewFileDeadLetter(filepath.Join(dir, "dead.jsonl"))
	require.NoError(t, err)
	m := ingest.NewMetrics(prometheus.NewRegistry())
	src := &ingest.FileSource{Paths: []string{path}, Workers: 2, Metrics: m, Logger: log,
		Rejects: &ingest.Rejects{Metrics: m, Logger: log, LogBurst: 100, DeadLetter: dl}}
	ch := make(chan shopguard.Batch, 16)
	require.NoError(t, src.Run(context.Background(), ch))
	close(ch)
	require.NoError(t, dl.Close())
	var evs []shopguard.Event
	for b := range ch {
		evs = append(evs, b.Events...)
	}
	// The valid event keeps its actor and agent as sent (invalid UTF-8
	// replaced, as encoding/json does): escaping is for output, not for
	// detection, where the account is what the platform logged.
	require.Len(t, evs, 1)
	require.Equal(t, "\u202eevil\x1b[0m", evs[0].Actor)
	require.Equal(t, strings.ReplaceAll(hostileText, "\xff\xfe", "\uFFFD\uFFFD"), evs[0].UserAgent)
	// One debug line for the file, one warning per invalid line.
	requireInert(t, out.Bytes(), 1+len(lines))

	// Dead letters keep the input exactly, as JSON (or base64) that cannot
	// break the file's framing either.
	dead, err := os.ReadFile(filepath.Join(dir, "dead.jsonl"))
	require.NoError(t, err)
	recs := bytes.Split(bytes.TrimSpace(dead), []byte("\n"))
	require.Len(t, recs, len(lines))
	for _, rec := range recs {
		require.True(t, json.Valid(rec), "%q", rec)
		require.NotContains(t, string(rec), "\x1b")
		require.NotContains(t, string(rec), "\r")
	}
}

// TestDecodeErrorTextIsInert: the message of every DecodeError, which ends
// up in logs, in dead-letter headers and in `replay --strict`'s exit
// message, quotes the offending value escaped and bounded.
func TestDecodeErrorTextIsInert(t *testing.T) {
	for i, line := range hostileLines() {
		var ev shopguard.Event
		err := ingest.Decode(line, &ev)
		require.Error(t, err, "line %d", i)
		msg := err.Error()
		for _, r := range msg {
			require.False(t, dangerous(r), "line %d: error holds %U: %q", i, r, msg)
		}
		require.Less(t, len(msg), 400, "line %d: error repeats too much: %q", i, msg)
	}
}
