package detect

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

const (
	safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
	iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
	chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
	pyreq  = "python-requests/2.32.3"
	curlUA = "curl/8.7.1"
)

// asnLocator knows countries and ASNs: Tokyo on a Japanese home ISP,
// Osaka on a mobile carrier, Frankfurt and London on AWS.
var asnLocator = mapLocator{
	netip.MustParsePrefix("126.0.0.0/16"):  withASN(tokyo, 17676),
	netip.MustParsePrefix("61.200.0.0/16"): withASN(osaka, 2516),
	netip.MustParsePrefix("18.184.0.0/16"): withASN(frankfurt, 16509),
	netip.MustParsePrefix("3.8.0.0/16"):    withASN(shopguard.Geo{Lat: 51.5, Lon: -0.12, RadiusKM: 20, Country: "GB", City: "London"}, 16509),
	netip.MustParsePrefix("95.216.0.0/16"): withASN(shopguard.Geo{Lat: 60.17, Lon: 24.94, RadiusKM: 20, Country: "FI", City: "Helsinki"}, 24940),
}

func withASN(g shopguard.Geo, asn uint32) shopguard.Geo { g.ASN = asn; return g }

func ownerLogin(t time.Time, ip, ua, sid string) shopguard.Event {
	ev := success(t, "shop-1", "owner", ip)
	ev.UserAgent, ev.SessionID = ua, sid
	return ev
}

func act(t time.Time, a shopguard.Action, ip, ua, sid string) shopguard.Event {
	ev := event(t, "shop-1", "owner", a, ip)
	ev.UserAgent, ev.SessionID = ua, sid
	return ev
}

const day1 = 24 * time.Hour

// habit is n logins of the owner from home with Safari, spread over days
// days (one a day, the rest on the last day).
func habit(n, days int) []shopguard.Event {
	var evs []shopguard.Event
	for i := range n {
		d := min(i, days-1)
		evs = append(evs, ownerLogin(at(time.Duration(d)*day1+time.Duration(i)*time.Minute), "126.0.1.1", safari, ""))
	}
	return evs
}

func TestLearningBoundaries(t *testing.T) {
	intruder := func(after time.Duration) shopguard.Event {
		return ownerLogin(at(after), "18.184.0.1", pyreq, "")
	}
	tests := []struct {
		name  string
		n, d  int
		fires bool
	}{
		{"4 logins on 3 days: learning", 4, 3, false},
		{"5 logins on 2 days: learning", 5, 2, false},
		{"5 logins on 3 days: judged", 5, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := append(habit(tt.n, tt.d), intruder(10*day1))
			fs := run(t, DefaultConfig, asnLocator, evs)
			if !tt.fires {
				require.Empty(t, fs)
				return
			}
			require.Equal(t, []string{shopguard.RuleUnfamiliarLogin}, rules(fs))
			// AWS and a script: both make it high.
			require.Equal(t, shopguard.SeverityHigh, fs[0].Severity)
			require.Contains(t, fs[0].Summary, "AS16509")
		})
	}
}

func TestUnfamiliarNeedsAllThreeNew(t *testing.T) {
	base := habit(5, 5)
	tests := []struct {
		name  string
		ev    shopguard.Event
		fires bool
		sev   shopguard.Severity
	}{
		{"traveller with own browser", ownerLogin(at(9*day1), "18.184.0.1", safari, ""), false, ""},
		{"home network, new phone", ownerLogin(at(9*day1), "126.0.1.1", iphone, ""), false, ""},
		{"new country, network and browser", ownerLogin(at(9*day1), "61.200.0.1", chrome, ""), false, ""}, // JP is familiar
		{"all new, browser, residential", ownerLogin(at(9*day1), "2001:db8::1", chrome, ""), true, shopguard.SeverityMedium},
		{"all new, hosting", ownerLogin(at(9*day1), "95.216.1.1", chrome, ""), true, shopguard.SeverityHigh},
		{"all new, headless", ownerLogin(at(9*day1), "2001:db8::1", "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/126.0 Safari/537.36", ""), true, shopguard.SeverityHigh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := run(t, DefaultConfig, asnLocator, append(append([]shopguard.Event(nil), base...), tt.ev))
			if !tt.fires {
				require.Empty(t, fs)
				return
			}
			require.Equal(t, []string{shopguard.RuleUnfamiliarLogin}, rules(fs))
			require.Equal(t, tt.sev, fs[0].Severity)
		})
	}
}

func TestForgetAfter90Days(t *testing.T) {
	evs := habit(5, 5)
	// Day 100: a login from a new network and country with Safari, more
	// than 90 days after Safari was last seen: Safari is forgotten.
	evs = append(evs, ownerLogin(at(100*day1), "2001:db8::1", safari, ""))
	fs := run(t, DefaultConfig, asnLocator, evs)
	require.Equal(t, []string{shopguard.RuleUnfamiliarLogin}, rules(fs))
	// Day 90: still remembered.
	evs[len(evs)-1] = ownerLogin(at(93*day1), "2001:db8::1", safari, "")
	require.Empty(t, run(t, DefaultConfig, asnLocator, evs))
}

// TestAttackerDoesNotTeach pins the 2 vs 3 clean days a property first seen
// under suspicion needs to become familiar.
func TestAttackerDoesNotTeach(t *testing.T) {
	for _, days := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d clean days", days), func(t *testing.T) {
			evs := habit(5, 5)
			// Day 5: brute_force on the account from Osaka.
			for i := range 10 {
				evs = append(evs, fail(at(5*day1+time.Duration(i)*50*time.Second), "shop-1", "owner", "61.200.9.9"))
			}
			// Within the open finding: AWS Frankfurt with Safari (no
			// finding, the browser is familiar) is learned as tainted.
			evs = append(evs, ownerLogin(at(5*day1+time.Hour), "18.184.0.1", safari, ""))
			for d := 1; d <= days; d++ {
				evs = append(evs, ownerLogin(at(time.Duration(5+d)*day1+2*time.Hour), "18.184.0.1", safari, ""))
			}
			// Then AWS again, from London, with curl: only the network
			// can be familiar.
			evs = append(evs, ownerLogin(at(10*day1), "3.8.0.1", curlUA, ""))
			fs := run(t, DefaultConfig, asnLocator, evs)
			got := rules(fs)
			require.Equal(t, shopguard.RuleBruteForce, got[0])
			if days == 2 {
				require.Equal(t, []string{shopguard.RuleBruteForce, shopguard.RuleUnfamiliarLogin}, got)
			} else {
				require.Equal(t, []string{shopguard.RuleBruteForce}, got)
			}
		})
	}
}

func TestRiskyChangeWindow(t *testing.T) {
	for _, tt := range []struct {
		after time.Duration
		fires bool
	}{{59 * time.Minute, true}, {61 * time.Minute, false}} {
		t.Run(tt.after.String(), func(t *testing.T) {
			evs := append(habit(5, 5), ownerLogin(at(9*day1), "18.184.0.1", pyreq, "s-evil"))
			evs = append(evs,
				act(at(9*day1+tt.after), shopguard.ActionMFADisable, "18.184.0.1", pyreq, "s-evil"),
				act(at(9*day1+tt.after+time.Second), shopguard.ActionMFADisable, "18.184.0.1", pyreq, "s-evil"), // once per action per hour
				act(at(9*day1+tt.after+2*time.Second), shopguard.ActionPayoutChange, "18.184.0.1", pyreq, "s-evil"),
			)
			fs := run(t, DefaultConfig, asnLocator, evs)
			if !tt.fires {
				require.Equal(t, []string{shopguard.RuleUnfamiliarLogin}, rules(fs))
				return
			}
			require.Equal(t, []string{shopguard.RuleUnfamiliarLogin, shopguard.RuleRiskyChange, shopguard.RuleRiskyChange}, rules(fs))
			require.Equal(t, fs[0].ID, fs[1].Evidence.CauseID)
			require.Equal(t, shopguard.SeverityCritical, fs[1].Severity)
		})
	}
}

func TestSensitiveChangeAloneIsQuiet(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	e, err := New(DefaultConfig, WithLocator(asnLocator), WithMetrics(m))
	require.NoError(t, err)
	var fs []shopguard.Finding
	for _, ev := range append(habit(5, 5), act(at(6*day1), shopguard.ActionPasswordChange, "126.0.1.1", safari, "")) {
		fs = e.Process(fs, &ev)
	}
	require.Empty(t, fs)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var got float64
	for _, mf := range mfs {
		if mf.GetName() == "shopguard_sensitive_changes_total" {
			require.Len(t, mf.Metric, 8) // pre-created
			for _, x := range mf.Metric {
				if x.Label[0].GetValue() == "password.change" {
					got = x.Counter.GetValue()
				}
			}
		}
	}
	require.Equal(t, 1.0, got)
}

func TestSessionHijack(t *testing.T) {
	evs := append(habit(5, 5),
		ownerLogin(at(9*day1), "126.0.1.1", safari, "s-1"),
		export(at(9*day1+3*time.Hour), "shop-1", "owner", "95.216.7.7", 3000),
	)
	evs[len(evs)-1].UserAgent, evs[len(evs)-1].SessionID = curlUA, "s-1"
	fs := run(t, DefaultConfig, asnLocator, evs)
	require.Equal(t, []string{shopguard.RuleSessionHijack, shopguard.RuleBulkExport}, rules(fs))
	require.Equal(t, shopguard.SeverityHigh, fs[0].Severity)
	require.Equal(t, shopguard.SeverityCritical, fs[1].Severity)
	require.Equal(t, fs[0].ID, fs[1].Evidence.CauseID)

	// The same session from the phone on the home network: another client
	// but the same network and country, so no hijack.
	evs = append(habit(5, 5),
		ownerLogin(at(9*day1), "126.0.1.1", safari, "s-1"),
		act(at(9*day1+time.Hour), shopguard.ActionOther, "126.0.1.1", iphone, "s-1"),
	)
	require.Empty(t, run(t, DefaultConfig, asnLocator, evs))
}

func TestFailureBurstBoundaries(t *testing.T) {
	tests := []struct {
		name  string
		times []time.Duration
		fires bool
	}{
		{"4 within 60s", []time.Duration{0, 10, 20, 30}, false},
		{"5 within 60s", []time.Duration{0, 15, 30, 45, 60}, true},
		{"5 within 61s", []time.Duration{0, 15, 30, 45, 61}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var evs []shopguard.Event
			for i, s := range tt.times {
				evs = append(evs, fail(at(s*time.Second), "shop-1", fmt.Sprintf("u%d", i%2), "45.95.147.9"))
			}
			// More within the hour: still one finding.
			for i := range 7 {
				evs = append(evs, fail(at(10*time.Minute+time.Duration(i)*time.Second), "shop-1", "u0", "45.95.147.9"))
			}
			fs := run(t, DefaultConfig, nil, evs)
			if tt.fires {
				require.Equal(t, []string{shopguard.RuleFailureBurst}, rules(fs))
				require.Equal(t, at(time.Duration(tt.times[4])*time.Second), fs[0].Time)
				require.Empty(t, fs[0].Actor)
			} else {
				// Only the later run of 7 fires.
				require.Equal(t, []string{shopguard.RuleFailureBurst}, rules(fs))
				require.Equal(t, at(10*time.Minute+4*time.Second), fs[0].Time)
			}
		})
	}
}

// TestOfficeNATAndMobileStayQuiet: 40 owners behind one office address
// with a few typos, and owners whose phones hop between mobile addresses,
// for two weeks: nothing.
func TestOfficeNATAndMobileStayQuiet(t *testing.T) {
	var evs []shopguard.Event
	uas := []string{safari, chrome, iphone}
	for d := range 14 {
		for u := range 40 {
			tt := at(time.Duration(d)*day1 + time.Duration(u)*37*time.Second)
			actor := fmt.Sprintf("staff%d", u)
			if (u+d)%9 == 0 {
				evs = append(evs, fail(tt, "shop-office", actor, "126.0.50.5"))
				tt = tt.Add(10 * time.Second)
			}
			ev := success(tt, "shop-office", actor, "126.0.50.5")
			ev.UserAgent = uas[u%3]
			evs = append(evs, ev)
		}
		for u := range 20 {
			// A new mobile address (another /24 each day) with the phone,
			// and the laptop at home some days.
			tt := at(time.Duration(d)*day1 + 8*time.Hour + time.Duration(u)*time.Minute)
			ev := success(tt, "shop-mobile", fmt.Sprintf("m%d", u), fmt.Sprintf("61.200.%d.%d", (d*20+u)%250, u+1))
			ev.UserAgent, ev.SessionID = iphone, fmt.Sprintf("m%d-%d", u, d)
			evs = append(evs, ev)
			o := act(tt.Add(30*time.Minute), shopguard.ActionOrdersExport, fmt.Sprintf("61.200.%d.%d", (d*20+u+1)%250, u+1), iphone, ev.SessionID)
			o.ShopID, o.Actor, o.Records = "shop-mobile", ev.Actor, 50
			evs = append(evs, o)
			if d%3 == 0 {
				h := success(tt.Add(4*time.Hour), "shop-mobile", ev.Actor, fmt.Sprintf("126.0.%d.1", 100+u))
				h.UserAgent = safari
				evs = append(evs, h)
			}
		}
	}
	slicesSortByTime(evs)
	require.Empty(t, run(t, DefaultConfig, asnLocator, evs))
}

func TestSnapshotKeepsProfiles(t *testing.T) {
	evs := append(habit(5, 5),
		ownerLogin(at(9*day1), "2001:db8::5", pyreq, "s-evil"),
		act(at(9*day1+time.Minute), shopguard.ActionAPIKeyCreate, "2001:db8::5", pyreq, "s-evil"),
		ownerLogin(at(9*day1+2*time.Minute), "126.0.1.1", safari, "s-2"),
		act(at(9*day1+time.Hour), shopguard.ActionOther, "2001:db8::7", curlUA, "s-2"),
	)
	for i := range 6 {
		evs = append(evs, fail(at(9*day1+2*time.Hour+time.Duration(i)*time.Second), "shop-1", "x", "45.95.147.9"))
	}
	evs = append(evs, ownerLogin(at(12*day1), "2001:db8::1", chrome, ""))
	want := run(t, DefaultConfig, asnLocator, evs)
	require.Equal(t, []string{shopguard.RuleUnfamiliarLogin, shopguard.RuleRiskyChange, shopguard.RuleSessionHijack,
		shopguard.RuleFailureBurst, shopguard.RuleUnfamiliarLogin}, rules(want))
	for cut := 1; cut < len(evs); cut++ {
		require.Equal(t, want, runCut(t, DefaultConfig, asnLocator, evs, cut), "cut %d", cut)
	}
}

func TestSnapshotFormat2Refused(t *testing.T) {
	e, err := New(DefaultConfig)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, e.Snapshot(&buf))
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b[4:8], 2)
	n := len(b) - 4
	binary.BigEndian.PutUint32(b[n:], crc32.Checksum(b[:n], castagnoli))
	err = e.Restore(bytes.NewReader(b))
	require.ErrorIs(t, err, ErrCheckpoint)
	require.ErrorContains(t, err, "format version 2 was written before account profiles existed")
}

func TestClassify(t *testing.T) {
	tests := []struct {
		ua   string
		kind clientKind
		fam  string
	}{
		{safari, clientBrowser, "safari on macos"},
		{iphone, clientBrowser, "safari on ios"},
		{chrome, clientBrowser, "chrome on windows"},
		{pyreq, clientScript, "python-requests"},
		{curlUA, clientScript, "curl"},
		{"Go-http-client/1.1", clientScript, "go-http-client"},
		{"Wget/1.21.4", clientScript, "wget"},
		{"okhttp/4.12.0", clientScript, "okhttp"},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36", clientHeadless, "headlesschrome"},
		{"Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1", clientHeadless, "phantomjs"},
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", clientBrowser, "edge on windows"},
		{"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", clientBrowser, "chrome on android"},
		{"", clientUnknown, "none"},
	}
	for _, tt := range tests {
		fam, kind := classify(tt.ua)
		require.Equal(t, tt.kind, kind, tt.ua)
		require.Equal(t, tt.fam, fam, tt.ua)
	}
}

// TestOwnerAfterTwoAttacksIsNotUnfamiliar: an account whose first login is
// an intruder's takeover, attacked again two days later, has only pending
// properties when its owner's clean logins end learning. The owner's own
// login from home is then not unfamiliar (nothing is trusted to compare
// with); once the owner's properties are trusted again, an intruder's
// login is judged and fires.
func TestOwnerAfterTwoAttacksIsNotUnfamiliar(t *testing.T) {
	var evs []shopguard.Event
	attack := func(start time.Duration, ip string, success bool) {
		for i := range 10 {
			ev := event(at(start+time.Duration(i)*10*time.Second), "shop-1", "owner", shopguard.ActionLoginFailure, ip)
			ev.UserAgent = pyreq
			evs = append(evs, ev)
		}
		if success {
			evs = append(evs, ownerLogin(at(start+2*time.Minute), ip, pyreq, ""))
		}
	}
	home := func(d time.Duration) { evs = append(evs, ownerLogin(at(d), "126.0.1.1", safari, "")) }
	attack(0, "18.184.0.1", true) // brute force, takeover
	home(time.Hour)               // tainted
	home(day1 + time.Hour)        // tainted (within 24 h)
	home(day1 + 3*time.Hour)      // clean: 1
	home(day1 + 4*time.Hour)      // clean: 2
	attack(2*day1, "3.8.0.1", false)
	home(2*day1 + time.Hour)   // tainted: the owner's pending properties start over
	home(3*day1 + 2*time.Hour) // clean: 3
	home(3*day1 + 3*time.Hour) // clean: 4
	home(4*day1 + time.Hour)   // clean: 5 on 3 days, learning ends
	home(4*day1 + 2*time.Hour) // judged, but nothing is trusted yet
	fs := run(t, DefaultConfig, asnLocator, evs)
	require.NotContains(t, rules(fs), shopguard.RuleUnfamiliarLogin)

	home(5*day1 + time.Hour) // Safari, JP and the home network seen on 3 clean days
	evs = append(evs, ownerLogin(at(6*day1), "95.216.1.1", curlUA, ""))
	fs = run(t, DefaultConfig, asnLocator, evs)
	require.Equal(t, shopguard.RuleUnfamiliarLogin, fs[len(fs)-1].Rule)
	require.Equal(t, at(6*day1), fs[len(fs)-1].Time)
}

// TestSessionHijackLastUse pins what the last-use table may skip: a
// session forgotten by its account (eight newer ones) is judged afresh
// when it comes back, and a new client at the address of the last use is
// not skipped.
func TestSessionHijackLastUse(t *testing.T) {
	evs := append(habit(5, 5), ownerLogin(at(9*day1), "126.0.1.1", safari, "s-1"))
	for i := 2; i <= 9; i++ {
		evs = append(evs, ownerLogin(at(9*day1+time.Duration(i)*time.Minute), "126.0.1.1", safari, fmt.Sprintf("s-%d", i)))
	}
	evs = append(evs,
		act(at(9*day1+20*time.Minute), shopguard.ActionOther, "126.0.1.1", safari, "s-1"), // forgotten: starts over here
		act(at(9*day1+30*time.Minute), shopguard.ActionOther, "95.216.7.7", curlUA, "s-1"),
	)
	fs := run(t, DefaultConfig, asnLocator, evs)
	require.Equal(t, []string{shopguard.RuleSessionHijack}, rules(fs))
	require.Equal(t, at(9*day1+30*time.Minute), fs[0].Time)

	evs = append(habit(5, 5),
		ownerLogin(at(9*day1), "126.0.1.1", safari, "s-1"),
		act(at(9*day1+time.Minute), shopguard.ActionOther, "61.200.0.1", safari, "s-1"), // another network, same client
		act(at(9*day1+2*time.Minute), shopguard.ActionOther, "61.200.0.1", safari, "s-1"),
		act(at(9*day1+3*time.Minute), shopguard.ActionOther, "61.200.0.1", curlUA, "s-1"), // and now another client
	)
	fs = run(t, DefaultConfig, asnLocator, evs)
	require.Equal(t, []string{shopguard.RuleSessionHijack}, rules(fs))
	require.Equal(t, at(9*day1+3*time.Minute), fs[0].Time)
}
