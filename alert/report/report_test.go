package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// observer is what scenario feeds: a Builder or a Live.
type observer interface {
	Observe(ev *shopguard.Event, fs []shopguard.Finding)
}

func (f *liveFeed) Observe(ev *shopguard.Event, fs []shopguard.Finding) { f.l.Observe(ev, fs) }

var t0 = time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)

func ev(sec int, action shopguard.Action, shop, actor, ip string) shopguard.Event {
	return shopguard.Event{Time: t0.Add(time.Duration(sec) * time.Second), ShopID: shop, Actor: actor,
		Action: action, IP: netip.MustParseAddr(ip)}
}

// scenario: a stuffing address tries 30 accounts (the finding comes at the
// 20th), takes over one, which then changes its password and exports; a
// brute force on another account from elsewhere is a second incident; a
// takeover caused by the stuffing finding from a new address joins the
// first through cause_id.
func scenario(b observer, hostile string) {
	const atk = "45.95.147.9"
	for i := range 30 {
		e := ev(i, shopguard.ActionLoginFailure, "shop-1", fmt.Sprintf("user%02d", i), atk)
		var fs []shopguard.Finding
		if i == 19 {
			fs = []shopguard.Finding{{ID: "stuff-1", Rule: shopguard.RuleCredentialStuffing, Severity: shopguard.SeverityHigh,
				Time: e.Time, IP: atk, Evidence: shopguard.Evidence{Count: 20}}}
		}
		b.Observe(&e, fs)
	}
	e := ev(40, shopguard.ActionLoginSuccess, "shop-1", hostile, atk)
	b.Observe(&e, []shopguard.Finding{{ID: "ato/1?x#y", Rule: shopguard.RuleAccountTakeover, Severity: shopguard.SeverityCritical,
		Time: e.Time, ShopID: "shop-1", Actor: hostile, IP: atk, Summary: "takeover of " + hostile,
		Evidence: shopguard.Evidence{Cause: "credential_stuffing", CauseID: "stuff-1"}}})
	e = ev(50, shopguard.ActionPasswordChange, "shop-1", hostile, "198.51.100.7")
	b.Observe(&e, nil)
	e = ev(60, shopguard.ActionCustomersExport, "shop-1", hostile, "198.51.100.7")
	e.Records = 5000
	b.Observe(&e, nil)
	// Unrelated traffic, never attributed.
	e = ev(61, shopguard.ActionLoginFailure, "shop-2", "owner", "203.0.113.50")
	b.Observe(&e, nil)
	// A takeover from a new address, caused by the stuffing finding.
	e = ev(70, shopguard.ActionLoginSuccess, "shop-3", "victim", "192.0.2.99")
	b.Observe(&e, []shopguard.Finding{{ID: "ato-2", Rule: shopguard.RuleAccountTakeover, Severity: shopguard.SeverityCritical,
		Time: e.Time, ShopID: "shop-3", Actor: "victim", IP: "192.0.2.99", Evidence: shopguard.Evidence{CauseID: "stuff-1"}}})
	// A separate brute force.
	for i := range 10 {
		e = ev(3600+i, shopguard.ActionLoginFailure, "shop-9", "boss", "100.64.1.1")
		var fs []shopguard.Finding
		if i == 9 {
			fs = []shopguard.Finding{{ID: "brute-1", Rule: shopguard.RuleBruteForce, Severity: shopguard.SeverityMedium,
				Time: e.Time, ShopID: "shop-9", Actor: "boss", IP: "100.64.1.1"}}
		}
		b.Observe(&e, fs)
	}
}

func TestReportGroupsAndCountsEveryAccountTried(t *testing.T) {
	b := New(Options{})
	scenario(b, "mallory")
	r := b.Report(t0)
	require.Len(t, r.Incidents, 2)
	in := r.Incidents[0]
	require.Equal(t, map[string]int{"credential_stuffing": 1, "account_takeover": 2}, in.Rules)
	// 30 tried before and after the finding, the hostile one, and the
	// cause_id takeover.
	require.Len(t, in.Accounts, 32)
	byActor := map[string]AccountRow{}
	for _, a := range in.Accounts {
		byActor[a.Actor] = a
	}
	m := byActor["mallory"]
	require.True(t, m.Compromised)
	require.Equal(t, int64(1), m.SensitiveChanges)
	require.Equal(t, int64(5000), m.ExportedRecords)
	require.Equal(t, []string{"ato/1?x#y"}, m.FindingIDs)
	require.True(t, byActor["victim"].Compromised)
	require.Equal(t, int64(1), byActor["user00"].FailedLogins, "tried before the finding, from the ring")
	require.Equal(t, int64(1), byActor["user29"].FailedLogins, "tried after the finding")
	require.False(t, byActor["user00"].Compromised)
	_, ok := byActor["owner"]
	require.False(t, ok)
	require.Equal(t, t0, in.First)

	s := r.Summary
	require.Equal(t, 2, s.Incidents)
	require.Equal(t, 33, s.AccountsTried)
	require.Equal(t, 2, s.AccountsLoggedIn)
	require.Equal(t, 1, s.AccountsChanged)
	require.Equal(t, int64(5000), s.RowsExported)
	require.Equal(t, t0, s.FirstAttackEvent)
	require.Equal(t, t0.Add(3609*time.Second), s.LastAttackEvent)
	require.Equal(t, int64(10), r.Incidents[1].Accounts[0].FailedLogins)
}

func TestReportBlockJoinsItsAddressesAndWaves(t *testing.T) {
	b := New(Options{})
	e := ev(0, shopguard.ActionLoginFailure, "s", "a", "10.1.2.3")
	b.Observe(&e, []shopguard.Finding{{ID: "f1", Rule: shopguard.RuleBruteForce, Time: e.Time, ShopID: "s", Actor: "a", IP: "10.1.2.3"}})
	e = ev(1, shopguard.ActionLoginFailure, "s", "b", "10.1.2.200")
	b.Observe(&e, []shopguard.Finding{{ID: "f2", Rule: shopguard.RuleCredentialStuffing, Time: e.Time, IP: "10.1.2.0/24"}})
	e = ev(2, shopguard.ActionLoginFailure, "s", "c", "2001:db8::1")
	b.Observe(&e, []shopguard.Finding{{ID: "w1", Rule: "stuffing_wave", Time: e.Time, Evidence: shopguard.Evidence{WaveID: "wave-1",
		Accounts: []shopguard.Account{{ShopID: "s", Actor: "c"}}}}})
	e = ev(3, shopguard.ActionLoginSuccess, "s", "d", "2001:db8::2")
	b.Observe(&e, []shopguard.Finding{{ID: "w2", Rule: shopguard.RuleAccountTakeover, Time: e.Time, ShopID: "s", Actor: "d",
		IP: "2001:db8::2", Evidence: shopguard.Evidence{WaveID: "wave-1"}}})
	r := b.Report(t0)
	require.Len(t, r.Incidents, 2)
	require.Equal(t, []string{"10.1.2.0/24", "10.1.2.3/32"}, r.Incidents[0].Keys)
	require.Len(t, r.Incidents[0].Accounts, 2)
	require.Equal(t, int64(1), r.Incidents[0].Accounts[0].FailedLogins, "an event matching an address and its block counts once")
	require.Equal(t, 2, r.Incidents[1].FindingCount)
	require.Contains(t, r.Incidents[1].Keys, "wave wave-1")
}

func TestReportPrune(t *testing.T) {
	b := New(Options{})
	scenario(b, "mallory")
	b.Prune(t0.Add(time.Hour), 0)
	r := b.Report(t0)
	require.Len(t, r.Incidents, 1)
	require.Equal(t, "brute-1", r.Incidents[0].Findings[0].ID)
	b.Prune(time.Time{}, 0)
	require.Len(t, b.Report(t0).Incidents, 1)
}

func TestReportFilesAndHostileNames(t *testing.T) {
	const hostile = `<script>alert(1)</script>`
	b := New(Options{})
	scenario(b, hostile)
	dir := t.TempDir()
	r := b.Report(t0)
	require.NoError(t, r.WriteDir(dir))

	f, err := os.Open(filepath.Join(dir, "accounts.csv"))
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	require.Equal(t, "shop_id,actor,incident,first_attack_time,last_attack_time,failed_logins,compromised,sensitive_changes,exported_records,finding_ids", strings.Join(rows[0], ","))
	require.Len(t, rows, 1+33)
	require.Equal(t, []string{"shop-1", hostile, "INC-001", "2026-01-07T09:00:40Z", "2026-01-07T09:01:00Z", "0", "true", "1", "5000", "ato/1?x#y"}, rows[1])

	var back Report
	raw, err := os.ReadFile(filepath.Join(dir, "incidents.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &back))
	require.Equal(t, r.Summary, back.Summary)

	html, err := os.ReadFile(filepath.Join(dir, "report.html"))
	require.NoError(t, err)
	page := string(html)
	require.NotContains(t, page, hostile)
	require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
	require.Contains(t, page, `<b id="s-tried">33</b>`)
	require.NotRegexp(t, `(src|href)=["']?(https?:)?//`, page, "self-contained: no external resources")

	var live bytes.Buffer
	require.NoError(t, r.WriteHTML(&live, PageOptions{FindingHref: "findings/", Live: true}))
	require.True(t, strings.Contains(live.String(), `href="findings/ato%2F1%3Fx%23y"`), "finding ids are path-escaped in links")
}

func TestReportCSVDefusesFormulas(t *testing.T) {
	b := New(Options{})
	scenario(b, "=HYPERLINK(\"x\")")
	var buf bytes.Buffer
	require.NoError(t, b.Report(t0).WriteCSV(&buf))
	require.Contains(t, buf.String(), `'=HYPERLINK`)
}

// TestReportPageSize: a 10,000-account incident stays under 1 MiB.
func TestReportPageSize(t *testing.T) {
	b := New(Options{})
	for i := range 10_000 {
		e := ev(i/20, shopguard.ActionLoginFailure, fmt.Sprintf("shop-%d", i%500), fmt.Sprintf("staff%05d@shop-%d.example", i, i%500),
			fmt.Sprintf("45.95.%d.%d", 140+i/250%4, i%250))
		var fs []shopguard.Finding
		if i == 0 {
			fs = []shopguard.Finding{{ID: "s", Rule: shopguard.RuleCredentialStuffing, Time: e.Time, IP: "45.95.140.0/22"}}
		}
		b.Observe(&e, fs)
	}
	r := b.Report(t0)
	require.Len(t, r.Incidents[0].Accounts, 10_000)
	var buf bytes.Buffer
	require.NoError(t, r.WriteHTML(&buf, PageOptions{CSVHref: "accounts.csv"}))
	t.Logf("report.html for a 10,000-account incident: %d bytes", buf.Len())
	require.Less(t, buf.Len(), 1<<20)
	require.Contains(t, buf.String(), "this page shows the first 2,000")
}

// TestTimelineHasEmptyEdges: an incident inside one minute charts as three
// steps (empty, its own, empty), not as a single point.
func TestTimelineHasEmptyEdges(t *testing.T) {
	inc := &incident{buckets: map[int64]*bucket{100: {fails: 3}}}
	pts := timeline(inc)
	require.Len(t, pts, 3)
	require.Equal(t, []int64{99 * 60, 100 * 60, 101 * 60}, []int64{pts[0].T, pts[1].T, pts[2].T})
	require.Equal(t, []int64{0, 3, 0}, []int64{pts[0].Failures, pts[1].Failures, pts[2].Failures})
}
