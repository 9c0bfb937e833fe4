package generate

import (
	"bytes"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
)

func at(d time.Duration) time.Time { return time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC).Add(d) }

func TestEvaluate(t *testing.T) {
	victim := shopguard.Account{ShopID: "shop-1", Actor: "owner@shop-1.example"}
	other := shopguard.Account{ShopID: "shop-2", Actor: "owner@shop-2.example"}
	labels := []Label{
		{ID: "addr", Rules: []string{shopguard.RuleCredentialStuffing, shopguard.RuleAccountTakeover},
			Accounts: []shopguard.Account{other}, Sources: []string{"45.95.147.3"}, Start: at(0), End: at(10 * time.Minute)},
		{ID: "block", Rules: []string{shopguard.RuleCredentialStuffing},
			Sources: []string{"2a02:6b8:1:2::/64"}, Start: at(0), End: at(10 * time.Minute)},
		{ID: "brute", Rules: []string{shopguard.RuleBruteForce}, ShopID: victim.ShopID, Actor: victim.Actor,
			Sources: []string{"18.184.0.9"}, Start: at(0), End: at(5 * time.Minute)},
		{ID: "missed", Rules: []string{shopguard.RuleBulkExport}, ShopID: "shop-9", Actor: "x@shop-9.example",
			Start: at(0), End: at(time.Minute)},
	}
	stuff := func(ip string, tm time.Time) shopguard.Finding {
		return shopguard.Finding{Rule: shopguard.RuleCredentialStuffing, IP: ip, Time: tm}
	}
	on := func(rule string, a shopguard.Account, tm time.Time) shopguard.Finding {
		return shopguard.Finding{Rule: rule, ShopID: a.ShopID, Actor: a.Actor, IP: "18.184.0.9", Time: tm}
	}
	slackEnd := at(10*time.Minute + MatchSlack)
	tests := []struct {
		name  string
		f     shopguard.Finding
		match []string // labels the finding matches
	}{
		{"address equals source", stuff("45.95.147.3", at(time.Minute)), []string{"addr"}},
		{"at start", stuff("45.95.147.3", at(0)), []string{"addr"}},
		{"just before start", stuff("45.95.147.3", at(-time.Nanosecond)), nil},
		{"at end plus slack", stuff("45.95.147.3", slackEnd), []string{"addr"}},
		{"just after end plus slack", stuff("45.95.147.3", slackEnd.Add(time.Nanosecond)), nil},
		{"block containing the source", stuff("45.95.147.0/24", at(time.Minute)), []string{"addr"}},
		{"wider block", stuff("45.95.0.0/16", at(time.Minute)), []string{"addr"}},
		{"neighbouring block", stuff("45.95.148.0/24", at(time.Minute)), nil},
		{"neighbouring address", stuff("45.95.147.4", at(time.Minute)), nil},
		{"mapped address", stuff("::ffff:45.95.147.3", at(time.Minute)), []string{"addr"}},
		{"address inside the /64", stuff("2a02:6b8:1:2::77", at(time.Minute)), []string{"block"}},
		{"the /64 itself", stuff("2a02:6b8:1:2::/64", at(time.Minute)), []string{"block"}},
		{"address in the next /64", stuff("2a02:6b8:1:3::1", at(time.Minute)), nil},
		{"garbage ip", stuff("not-an-ip", at(time.Minute)), nil},
		{"stuffing is keyed by source, not account", shopguard.Finding{Rule: shopguard.RuleCredentialStuffing,
			ShopID: other.ShopID, Actor: other.Actor, IP: "1.1.1.1", Time: at(time.Minute)}, nil},
		{"label account", on(shopguard.RuleBruteForce, victim, at(time.Minute)), []string{"brute"}},
		{"account in Accounts", on(shopguard.RuleAccountTakeover, other, at(time.Minute)), []string{"addr"}},
		{"rule not expected", on(shopguard.RuleImpossibleTravel, victim, at(time.Minute)), nil},
		{"other account", on(shopguard.RuleBruteForce, other, at(time.Minute)), nil},
		{"same actor, other shop", on(shopguard.RuleBruteForce, shopguard.Account{ShopID: "shop-3", Actor: victim.Actor}, at(time.Minute)), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, li := range newMatcher(labels).match(nil, &tc.f) {
				got = append(got, labels[li].ID)
			}
			require.Equal(t, tc.match, got)
		})
	}

	// Counting: two matched stuffing findings of one label, one false
	// positive, a finding matching two labels, a rule no label expects.
	both := append(labels, Label{ID: "addr-too", Rules: []string{shopguard.RuleCredentialStuffing},
		Sources: []string{"45.95.147.0/24"}, Start: at(0), End: at(time.Minute)})
	r := Evaluate(both, []shopguard.Finding{
		stuff("45.95.147.3", at(time.Minute)), // addr and addr-too
		stuff("45.95.147.3", at(2*time.Minute)),
		stuff("9.9.9.9", at(time.Minute)),
		on(shopguard.RuleBruteForce, victim, at(time.Minute)),
		{Rule: "weird_rule", Time: at(0)},
	})
	byRule := map[string]RuleScore{}
	for _, s := range r.Rules {
		byRule[s.Rule] = s
	}
	require.Equal(t, RuleScore{Rule: shopguard.RuleCredentialStuffing, Findings: 3, Matched: 2, Labels: 3, Detected: 2}, byRule[shopguard.RuleCredentialStuffing])
	require.Equal(t, 1, byRule[shopguard.RuleCredentialStuffing].FalsePositives())
	require.Equal(t, 1, byRule[shopguard.RuleCredentialStuffing].FalseNegatives(), "the /64 label was missed")
	require.InDelta(t, 2.0/3, byRule[shopguard.RuleCredentialStuffing].Precision(), 1e-9)
	require.InDelta(t, 2.0/3, byRule[shopguard.RuleCredentialStuffing].Recall(), 1e-9)
	require.Equal(t, RuleScore{Rule: shopguard.RuleBruteForce, Findings: 1, Matched: 1, Labels: 1, Detected: 1}, byRule[shopguard.RuleBruteForce])
	require.Equal(t, RuleScore{Rule: shopguard.RuleBulkExport, Labels: 1}, byRule[shopguard.RuleBulkExport])
	require.True(t, math.IsNaN(byRule[shopguard.RuleBulkExport].Precision()), "no findings: precision undefined")
	require.Zero(t, byRule[shopguard.RuleBulkExport].Recall())
	require.True(t, math.IsNaN(byRule[shopguard.RuleImpossibleTravel].Recall()), "no labels: recall undefined")
	require.Equal(t, RuleScore{Rule: "weird_rule", Findings: 1}, byRule["weird_rule"])
	require.Equal(t, "weird_rule", r.Rules[len(r.Rules)-1].Rule, "unknown rules come after the known ones")
	require.Len(t, r.Rules, len(shopguard.Rules())+1)
	require.Equal(t, RuleScore{Rule: "all", Findings: 5, Matched: 3, Labels: 6, Detected: 3}, r.Total)

	var out strings.Builder
	require.NoError(t, r.WriteTable(&out))
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	require.Len(t, lines, len(r.Rules)+2)
	require.Equal(t, []string{"rule", "findings", "matched", "false", "pos", "precision", "labels", "detected", "missed", "recall"}, strings.Fields(lines[0]))
	require.Equal(t, []string{shopguard.RuleCredentialStuffing, "3", "2", "1", "66.7%", "3", "2", "1", "66.7%"}, strings.Fields(lines[1]))
	require.Equal(t, []string{shopguard.RuleBulkExport, "0", "0", "0", "-", "1", "0", "1", "0.0%"}, strings.Fields(lines[len(lines)-3]))
	require.Equal(t, []string{"all", "5", "3", "2", "60.0%", "6", "3", "3", "50.0%"}, strings.Fields(lines[len(lines)-1]))
}

func TestReadFindings(t *testing.T) {
	in := `{"id":"a","rule":"brute_force","severity":"medium","time":"2026-01-05T09:00:00Z","shop_id":"shop-1","actor":"x","ip":"1.2.3.4","summary":"s","evidence":{"count":10}}

{"id":"b","rule":"credential_stuffing","severity":"high","time":"2026-01-05T09:00:01.5Z","shop_id":"","actor":"","ip":"1.2.3.0/24","summary":"s","evidence":{}}
`
	fs, err := ReadFindings(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, fs, 2)
	require.Equal(t, "brute_force", fs[0].Rule)
	require.Equal(t, int64(10), fs[0].Evidence.Count)
	require.True(t, fs[1].Time.Equal(at(1500*time.Millisecond)))

	_, err = ReadFindings(strings.NewReader(in + "{oops\n"))
	require.ErrorContains(t, err, "line 4")
}

func TestLabelsRoundTrip(t *testing.T) {
	_, labels := run(t, attackHeavy(6), 60_000)
	require.NotEmpty(t, labels)
	var buf bytes.Buffer
	require.NoError(t, WriteLabels(&buf, labels))
	require.Equal(t, len(labels), bytes.Count(buf.Bytes(), []byte("\n")), "one label per line")
	got, err := ReadLabels(&buf)
	require.NoError(t, err)
	require.Equal(t, len(labels), len(got))
	for i := range labels {
		require.True(t, labels[i].Start.Equal(got[i].Start) && labels[i].End.Equal(got[i].End))
		got[i].Start, got[i].End = labels[i].Start, labels[i].End
	}
	require.Equal(t, labels, got)

	// The JSON shape a label file has.
	one := `{"id":"atk00001-s1","attack":"session_hijack","rules":["impossible_travel","bulk_export"],` +
		`"shop_id":"shop-3","actor":"yuki.sato@shop-3.example","accounts":[{"shop_id":"shop-3","actor":"yuki.sato@shop-3.example"}],` +
		`"sources":["18.184.0.77"],"targets":1,"events":9,"start":"2026-01-05T09:00:00Z","end":"2026-01-05T10:10:00Z"}`
	got, err = ReadLabels(strings.NewReader("  \n[" + one + "," + one + "]\n"))
	require.NoError(t, err, "a JSON array is accepted too")
	require.Len(t, got, 2)
	var enc bytes.Buffer
	require.NoError(t, WriteLabels(&enc, got[:1]))
	require.JSONEq(t, one, enc.String())

	got, err = ReadLabels(strings.NewReader(""))
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = ReadLabels(strings.NewReader(one + "\n{\"id\": 3}\n"))
	require.ErrorContains(t, err, "label 2")
}

func TestAppendJSON(t *testing.T) {
	ev := shopguard.Event{
		Time:      time.Date(2026, 1, 5, 18, 30, 0, 120_000_000, time.FixedZone("JST", 9*3600)),
		ShopID:    "shop-1",
		Actor:     "a\"b\\c\n\x01é\xff@x",
		Action:    shopguard.ActionCustomersExport,
		IP:        mustAddr("2a02:6b8:1:2::77"),
		UserAgent: "São Paulo <ua>",
		Records:   0,
	}
	got := string(ingest.AppendJSON(nil, &ev))
	require.Equal(t, `{"time":"2026-01-05T09:30:00.12Z","shop_id":"shop-1","actor":"a\"b\\c\n\u0001é\ufffd@x",`+
		`"action":"customers.export","ip":"2a02:6b8:1:2::77","user_agent":"São Paulo <ua>","records":0}`, got)

	ev = shopguard.Event{Time: at(0), ShopID: "s", Actor: "a", Action: shopguard.ActionLoginFailure,
		IP: mustAddr("45.95.147.3"), Reason: "bad_password", SessionID: "x", Resource: "r", ID: "g1-1"}
	require.Equal(t, `{"time":"2026-01-05T09:00:00Z","shop_id":"s","actor":"a","action":"login.failure","ip":"45.95.147.3",`+
		`"session_id":"x","reason":"bad_password","resource":"r","id":"g1-1"}`, string(ingest.AppendJSON(nil, &ev)))
}

// failingWriter accepts n writes, then fails.
type failingWriter struct{ n int }

var errDisk = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errDisk
	}
	w.n--
	return len(p), nil
}

func TestWriteJSONLStopsOnWriteError(t *testing.T) {
	g, err := New(Config{Seed: 1})
	require.NoError(t, err)
	n, err := WriteJSONL(&failingWriter{n: 2}, g)
	require.ErrorIs(t, err, errDisk)
	require.Positive(t, n)

	// Every counted event reached the writer in full.
	g, err = New(Config{Seed: 1, Events: n})
	require.NoError(t, err)
	var buf bytes.Buffer
	m, err := WriteJSONL(&buf, g)
	require.NoError(t, err)
	require.Equal(t, n, m)
	require.Equal(t, int64(bytes.Count(buf.Bytes(), []byte("\n"))), n)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestEvaluateExplainedWave: a wave no label expects is matched when the
// episodes running in the hour before it tried 50 accounts between them,
// not 49, and it never counts towards recall.
func TestEvaluateExplainedWave(t *testing.T) {
	t0 := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		targets [2]int
		matched int
	}{{[2]int{30, 19}, 0}, {[2]int{30, 20}, 1}} {
		labels := []Label{
			{ID: "a", Attack: AttackStuffing, Rules: []string{shopguard.RuleCredentialStuffing}, Sources: []string{"192.0.2.1"},
				Targets: c.targets[0], Start: t0, End: t0.Add(10 * time.Minute)},
			{ID: "b", Attack: AttackStuffing, Rules: []string{shopguard.RuleCredentialStuffing}, Sources: []string{"192.0.2.2"},
				Targets: c.targets[1], Start: t0.Add(20 * time.Minute), End: t0.Add(30 * time.Minute)},
			// Ended more than an hour before the wave: not its episode.
			{ID: "c", Attack: AttackStuffing, Rules: []string{shopguard.RuleCredentialStuffing}, Sources: []string{"192.0.2.3"},
				Targets: 500, Start: t0.Add(-3 * time.Hour), End: t0.Add(-2 * time.Hour)},
		}
		f := shopguard.Finding{ID: "w", Rule: shopguard.RuleStuffingWave, Time: t0.Add(40 * time.Minute)}
		r := Evaluate(labels, []shopguard.Finding{f})
		for _, s := range r.Rules {
			switch s.Rule {
			case shopguard.RuleStuffingWave:
				require.Equal(t, 1, s.Findings)
				require.Equal(t, c.matched, s.Matched, "tried %v", c.targets)
				require.Zero(t, s.Detected, "no label expects a wave")
			case shopguard.RuleCredentialStuffing:
				require.Zero(t, s.Detected)
			}
		}
	}
}
