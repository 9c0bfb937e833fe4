package detect

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopguard/shopguard"
)

// benchEvents is a steady-state mix: 10,000 accounts logging in from their
// home cities, with failures, exports and a few attacks' worth of sources.
func benchEvents(n int) []shopguard.Event {
	homes := []string{"126.0.%d.%d", "61.200.%d.%d"}
	evs := make([]shopguard.Event, n)
	for i := range evs {
		acct := i % 10_000
		ip := netip.MustParseAddr(fmt.Sprintf(homes[acct%2], acct/250, 1+acct%250))
		a := shopguard.ActionLoginSuccess
		switch i % 10 {
		case 1, 2:
			a = shopguard.ActionLoginFailure
		case 3:
			a = shopguard.ActionLogout
		case 4:
			a = shopguard.ActionCustomersExport
		}
		evs[i] = shopguard.Event{Time: t0.Add(time.Duration(i) * 10 * time.Millisecond), ShopID: fmt.Sprintf("shop-%d", acct),
			Actor: "owner@example.jp", Action: a, IP: ip, Records: 10}
	}
	return evs
}

func benchEngine(b *testing.B, cfg Config, evs []shopguard.Event) {
	e, err := New(cfg, WithLocator(testLocator), WithMetrics(NewMetrics(prometheus.NewRegistry())))
	if err != nil {
		b.Fatal(err)
	}
	var fs []shopguard.Finding
	for i := range evs { // warm up: create every account's state
		fs = e.Process(fs[:0], &evs[i])
	}
	// Replay the same events shifted in time, so state stays warm and the
	// windows slide as in production.
	shift := evs[len(evs)-1].Time.Sub(evs[0].Time) + time.Second
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		ev := &evs[n%len(evs)]
		if n%len(evs) == 0 {
			for i := range evs {
				evs[i].Time = evs[i].Time.Add(shift)
			}
		}
		fs = e.Process(fs[:0], ev)
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEngine runs all five rules over the steady-state mix.
func BenchmarkEngine(b *testing.B) { benchEngine(b, DefaultConfig, benchEvents(100_000)) }

// BenchmarkRule runs one rule at a time over the same mix.
func BenchmarkRule(b *testing.B) {
	for _, rule := range shopguard.Rules() {
		b.Run(rule, func(b *testing.B) {
			cfg := DefaultConfig
			cfg.ImpossibleTravel.Enabled = rule == shopguard.RuleImpossibleTravel
			cfg.BruteForce.Enabled = rule == shopguard.RuleBruteForce
			cfg.CredentialStuffing.Enabled = rule == shopguard.RuleCredentialStuffing
			cfg.AccountTakeover.Enabled = rule == shopguard.RuleAccountTakeover
			cfg.BulkExport.Enabled = rule == shopguard.RuleBulkExport
			benchEngine(b, cfg, benchEvents(100_000))
		})
	}
}

// BenchmarkLogin measures the common actions alone: they must not allocate
// once an account's state exists.
func BenchmarkLogin(b *testing.B) {
	for _, a := range []shopguard.Action{shopguard.ActionLoginSuccess, shopguard.ActionLoginFailure} {
		b.Run(a.String(), func(b *testing.B) {
			evs := benchEvents(20_000)
			for i := range evs {
				evs[i].Action = a
			}
			benchEngine(b, DefaultConfig, evs)
		})
	}
}

// BenchmarkSnapshot writes and restores the state of 200,000 accounts,
// each with a located login and a failure, and their sources.
func BenchmarkSnapshot(b *testing.B) {
	e, err := New(DefaultConfig, WithLocator(testLocator))
	if err != nil {
		b.Fatal(err)
	}
	var fs []shopguard.Finding
	for i := range 200_000 {
		ip := netip.AddrFrom4([4]byte{126, 0, byte(i >> 8), byte(i)})
		for _, a := range []shopguard.Action{shopguard.ActionLoginFailure, shopguard.ActionLoginSuccess} {
			ev := shopguard.Event{Time: t0.Add(time.Duration(i) * 100 * time.Millisecond), ShopID: fmt.Sprintf("shop-%d", i),
				Actor: "owner@example.jp", Action: a, IP: ip}
			fs = e.Process(fs[:0], &ev)
		}
	}
	var buf bytes.Buffer
	b.Run("write", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			if err := e.Snapshot(&buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(buf.Len()), "bytes")
		b.ReportMetric(float64(e.Stats().Accounts+e.Stats().Sources), "entries")
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			f, _ := New(DefaultConfig)
			if err := f.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
	})
}
