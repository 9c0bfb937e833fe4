package alert

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/shopguard/shopguard"
)

// marshalFinding encodes f as the JSON object of SPEC §2. encoding/json
// already escapes control characters and replaces invalid UTF-8, so hostile
// actor names cannot break the JSONL framing; escapeJSON escapes what it
// leaves raw (bidi overrides, DEL, C1 controls), so that `cat` or `less` of
// a findings file shows them inert. What it cannot encode are
// non-finite floats (a travel speed computed over a zero interval is +Inf),
// and a record sink that retried such a finding forever would stall the
// pipeline; finite replaces them first.
func marshalFinding(f *shopguard.Finding) ([]byte, error) {
	b, err := json.Marshal(finite(f))
	if err != nil {
		return nil, &permanentError{fmt.Errorf("encode finding %s: %w", f.ID, err)}
	}
	return escapeJSON(b), nil
}

// marshalEvidence encodes a finding's evidence, as finite does.
func marshalEvidence(f *shopguard.Finding) ([]byte, error) {
	b, err := json.Marshal(&finite(f).Evidence)
	if err != nil {
		return nil, &permanentError{fmt.Errorf("encode evidence of finding %s: %w", f.ID, err)}
	}
	return escapeJSON(b), nil
}

// escapeJSON rewrites the runes of encoding/json output that escapeText
// would escape as JSON \u escapes. JSON syntax outside strings is printable
// ASCII, so every such rune is inside a string, and the result decodes to
// the same value: the escaping is lossless, unlike escapeText's.
func escapeJSON(b []byte) []byte {
	if !needsEscape(string(b)) {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError || unsafeRune(r) { // all in the BMP
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

// finite returns f, or a copy of it whose NaN floats are 0 and whose
// infinities are ±math.MaxFloat64. It never modifies f or what f points to.
func finite(f *shopguard.Finding) *shopguard.Finding {
	ev := &f.Evidence
	if isFinite(ev.DistanceKM) && isFinite(ev.SpeedKMH) && loginFinite(ev.From) && loginFinite(ev.To) {
		return f
	}
	c := *f
	c.Evidence.DistanceKM = clampFloat(ev.DistanceKM)
	c.Evidence.SpeedKMH = clampFloat(ev.SpeedKMH)
	if ev.From != nil {
		from := *ev.From
		from.Lat, from.Lon = clampFloat(from.Lat), clampFloat(from.Lon)
		c.Evidence.From = &from
	}
	if ev.To != nil {
		to := *ev.To
		to.Lat, to.Lon = clampFloat(to.Lat), clampFloat(to.Lon)
		c.Evidence.To = &to
	}
	return &c
}

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func loginFinite(l *shopguard.Login) bool {
	return l == nil || (isFinite(l.Lat) && isFinite(l.Lon))
}

func clampFloat(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return 0
	case math.IsInf(x, 1):
		return math.MaxFloat64
	case math.IsInf(x, -1):
		return -math.MaxFloat64
	}
	return x
}

// escapeText makes attacker-controlled text (actor names, summaries that
// quote them) safe to show in alert text and logs: control characters,
// invalid UTF-8 and the Unicode bidirectional overrides that can make text
// read differently from what it is are replaced by Go-style escapes, the
// rest is kept as is. The result is deterministic, so escaped label values
// still de-duplicate.
func escapeText(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

func needsEscape(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || unsafeRune(r) {
			return true
		}
	}
	return false
}

// unsafeRune reports control characters (C0, DEL, C1), bidirectional
// embeddings, overrides and isolates, and the line and paragraph separators.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) ||
		r == 0x2028 || r == 0x2029 || r == 0x200e || r == 0x200f
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence,
// marking the cut with an ellipsis.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
