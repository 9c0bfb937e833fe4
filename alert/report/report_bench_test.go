package report

import (
	"io"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/shopguard/shopguard"
)

// stuffed returns a Builder holding one incident: accounts failed logins
// from one address, which a credential_stuffing finding names, and one
// takeover with an export.
func stuffed(tb testing.TB, accounts int) *Builder {
	tb.Helper()
	b := New(Options{})
	t0 := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
	ip := netip.MustParseAddr("45.95.147.9")
	for i := range accounts {
		ev := shopguard.Event{Time: t0.Add(time.Duration(i) * time.Millisecond), ShopID: "shop-" + strconv.Itoa(i%5000),
			Actor: "user" + strconv.Itoa(i) + "@example.com", Action: shopguard.ActionLoginFailure, IP: ip}
		var fs []shopguard.Finding
		if i == 19 {
			fs = []shopguard.Finding{{ID: "stuffing-1", Rule: shopguard.RuleCredentialStuffing, Severity: shopguard.SeverityHigh,
				Time: ev.Time, IP: ip.String()}}
		}
		b.Observe(&ev, fs)
	}
	t1 := t0.Add(time.Duration(accounts)*time.Millisecond + time.Second)
	win := shopguard.Event{Time: t1, ShopID: "shop-1", Actor: "user1@example.com", Action: shopguard.ActionLoginSuccess, IP: ip}
	b.Observe(&win, []shopguard.Finding{{ID: "takeover-1", Rule: shopguard.RuleAccountTakeover, Severity: shopguard.SeverityCritical,
		Time: t1, ShopID: win.ShopID, Actor: win.Actor, IP: ip.String(), Evidence: shopguard.Evidence{CauseID: "stuffing-1"}}})
	exp := win
	exp.Time, exp.Action, exp.Records = t1.Add(time.Minute), shopguard.ActionCustomersExport, 5000
	b.Observe(&exp, nil)
	return b
}

// BenchmarkObserve is the report's cost per replayed event: ordinary
// logins and admin actions of accounts outside any incident, with no
// incident and next to a 50,000-account one.
func BenchmarkObserve(b *testing.B) {
	for _, accounts := range []int{0, 50_000} {
		b.Run("incident_accounts="+strconv.Itoa(accounts), func(b *testing.B) {
			rb := stuffed(b, accounts)
			t0 := time.Date(2026, 1, 7, 12, 0, 0, 0, time.UTC)
			evs := make([]shopguard.Event, 1024)
			for i := range evs {
				a := shopguard.ActionOther
				if i%8 == 0 {
					a = shopguard.ActionLoginSuccess
				}
				evs[i] = shopguard.Event{ShopID: "shop-" + strconv.Itoa(i%97), Actor: "owner" + strconv.Itoa(i) + "@example.com",
					Action: a, IP: netip.AddrFrom4([4]byte{126, 0, byte(i >> 8), byte(i)})}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ev := &evs[i%len(evs)]
				ev.Time = t0.Add(time.Duration(i) * time.Millisecond)
				rb.Observe(ev, nil)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkWriteReport builds and writes report.html, accounts.csv and
// incidents.json for a 50,000-account incident.
func BenchmarkWriteReport(b *testing.B) {
	rb := stuffed(b, 50_000)
	now := time.Date(2026, 1, 8, 0, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		r := rb.Report(now)
		if err := r.WriteHTML(io.Discard, PageOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := r.WriteCSV(io.Discard); err != nil {
			b.Fatal(err)
		}
		if err := r.WriteJSON(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
