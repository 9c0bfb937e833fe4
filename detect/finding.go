package detect

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/shopguard/shopguard"
)

// sampleSize is how many accounts or addresses evidence lists at most.
const sampleSize = 20

// newFinding builds a finding triggered by ev. The id is a hash of what
// identifies the finding — rule, account, address and event time — so the
// same input gives the same id, live or replayed.
func newFinding(rule string, sev shopguard.Severity, ev *shopguard.Event, shop, actor, ip, summary string, evd shopguard.Evidence) shopguard.Finding {
	t := ev.Time.UTC()
	h := sha256.New()
	for _, s := range []string{rule, shop, actor, ip, t.Format(time.RFC3339Nano)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	return shopguard.Finding{
		ID:       hex.EncodeToString(h.Sum(sum[:0])[:16]),
		Rule:     rule,
		Severity: sev,
		Time:     t,
		ShopID:   shop,
		Actor:    actor,
		IP:       ip,
		Summary:  summary,
		Evidence: evd,
	}
}

// human formats a duration the way people write it: 10m, 1h, 1h30m, 45s.
func human(d time.Duration) string {
	if d < time.Second {
		return d.String()
	}
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// commas formats n with thousands separators: 45000 → "45,000".
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// place names a located address for summaries: "Tokyo, JP".
func place(g shopguard.Geo) string {
	switch {
	case g.City != "" && g.Country != "":
		return g.City + ", " + g.Country
	case g.Country != "":
		return g.Country
	default:
		return strconv.FormatFloat(g.Lat, 'f', 2, 64) + "," + strconv.FormatFloat(g.Lon, 'f', 2, 64)
	}
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// quiet reports whether a rule that fired at fired (0: never) must stay
// quiet at t: once per key per window, in either direction of event time.
func quiet(fired, t int64, w time.Duration) bool {
	return fired != 0 && absDiff(fired, t) < int64(w)
}
