package geoip_test

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/geoip"
)

// geoBenchAddrs returns n addresses spread over every demo city, IPv4 and
// IPv6 alternating.
func geoBenchAddrs(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for i := 0; len(out) < n; i++ {
		c := geodemo.Cities[i%len(geodemo.Cities)]
		j := i / len(geodemo.Cities)
		if i%2 == 0 {
			out = append(out, c.Addr(uint32(j)))
		} else {
			out = append(out, c.Addr6(uint64(j)))
		}
	}
	return out
}

// BenchmarkLocateCached measures the hot path: every address is in the
// cache.
func BenchmarkLocateCached(b *testing.B) {
	g := openGeo(b, geoDB(b), geoip.DefaultConfig.CacheBytes, prometheus.NewRegistry(), nil)
	addrs := geoBenchAddrs(4096)
	for _, ip := range addrs {
		if _, ok := g.Locate(ip); !ok {
			b.Fatalf("%s not located", ip)
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		g.Locate(addrs[n%len(addrs)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLocateCachedParallel is the hot path from every core at once,
// which is where the name table's lock would show.
func BenchmarkLocateCachedParallel(b *testing.B) {
	g := openGeo(b, geoDB(b), geoip.DefaultConfig.CacheBytes, prometheus.NewRegistry(), nil)
	addrs := geoBenchAddrs(4096)
	for _, ip := range addrs {
		g.Locate(ip)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			g.Locate(addrs[i%len(addrs)])
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLocateUncached measures a database lookup: the cache is off.
func BenchmarkLocateUncached(b *testing.B) {
	g := openGeo(b, geoDB(b), 0, prometheus.NewRegistry(), nil)
	addrs := geoBenchAddrs(4096)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		g.Locate(addrs[n%len(addrs)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLocateSkipped measures the private-address fast path.
func BenchmarkLocateSkipped(b *testing.B) {
	g := openGeo(b, geoDB(b, "Tokyo"), geoip.DefaultConfig.CacheBytes, prometheus.NewRegistry(), nil)
	ip := netip.MustParseAddr("192.168.10.20")
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		g.Locate(ip)
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
