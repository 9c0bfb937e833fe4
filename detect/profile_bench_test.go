package detect

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// fullProfile is a profile with MaxEntries entries of every property.
func fullProfile() *profile {
	c := DefaultConfig.Profile
	p := &profile{}
	for i := range c.MaxEntries {
		for k := range numProps {
			p.learn(k, uint32(i*7+int(k)), 20000, false, c)
		}
		p.countLogin(20000 + uint16(i))
	}
	return p
}

// lookup is what the engine does per successful login: classify the
// client, key the network, check all three properties and learn them.
func lookup(e *Engine, p *profile, ev *shopguard.Event) bool {
	e.propsOf = nil
	pr := e.props(ev)
	today, forget := uint16(20010), uint16(90)
	f := p.familiar(propCountry, pr.country, today, forget) || p.familiar(propNetwork, pr.network, today, forget) ||
		p.familiar(propClient, pr.client, today, forget)
	c := DefaultConfig.Profile
	p.learn(propCountry, pr.country, today, false, c)
	p.learn(propNetwork, pr.network, today, false, c)
	p.learn(propClient, pr.client, today, false, c)
	return f
}

func TestProfileLookupDoesNotAllocate(t *testing.T) {
	e, err := New(DefaultConfig, WithLocator(asnLocator))
	require.NoError(t, err)
	p := fullProfile()
	ev := ownerLogin(at(0), "126.0.1.1", safari, "")
	lookup(e, p, &ev) // the first sighting may grow the entries
	require.Zero(t, testing.AllocsPerRun(1000, func() { lookup(e, p, &ev) }))
	ev.IP = netip.MustParseAddr("2001:db8::1")
	ev.UserAgent = pyreq
	lookup(e, p, &ev)
	require.Zero(t, testing.AllocsPerRun(1000, func() { lookup(e, p, &ev) }))
	require.LessOrEqual(t, len(p.ents), int(numProps)*DefaultConfig.Profile.MaxEntries)
}

func BenchmarkProfileLookup(b *testing.B) {
	e, err := New(DefaultConfig, WithLocator(asnLocator))
	require.NoError(b, err)
	p := fullProfile()
	evs := []shopguard.Event{
		ownerLogin(at(0), "126.0.1.1", safari, ""),
		ownerLogin(at(0), "18.184.0.1", chrome, ""),
		ownerLogin(at(0), "2001:db8::1", pyreq, ""),
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		lookup(e, p, &evs[n%len(evs)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lookups/s")
}

func BenchmarkClassify(b *testing.B) {
	uas := []string{safari, iphone, chrome, pyreq, curlUA}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		classify(uas[n%len(uas)])
		n++
	}
}
