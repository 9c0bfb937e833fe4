package geoip_test

import (
	"bytes"
	"crypto/rand"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/geodemo"
	"github.com/shopguard/shopguard/ingest/geoip"
)

// geoDB writes a demo City database of the named geodemo cities and returns
// its path.
func geoDB(t testing.TB, names ...string) string {
	t.Helper()
	cities := geodemo.Cities
	if len(names) > 0 {
		cities = nil
		for _, n := range names {
			c, ok := geodemo.Lookup(n)
			require.True(t, ok, n)
			cities = append(cities, c)
		}
	}
	path := filepath.Join(t.TempDir(), "city.mmdb")
	require.NoError(t, geodemo.Write(path, cities))
	return path
}

// geoRawDB writes a database of the given type with one record per network,
// for the shapes geodemo does not write.
func geoRawDB(t *testing.T, typ, description string, records map[string]mmdbtype.Map) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: typ, Description: map[string]string{"en": description}})
	require.NoError(t, err)
	for cidr, rec := range records {
		_, n, err := net.ParseCIDR(cidr)
		require.NoError(t, err)
		require.NoError(t, tree.Insert(n, rec))
	}
	path := filepath.Join(t.TempDir(), "raw.mmdb")
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = tree.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return path
}

func openGeo(t testing.TB, path string, cacheBytes int, reg prometheus.Registerer, log *slog.Logger) *geoip.DB {
	t.Helper()
	g, err := geoip.Open(geoip.Config{Path: path, CacheBytes: cacheBytes}, reg, log)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, g.Close()) })
	return g
}

// geoMetrics gathers reg into "name" or "name{label=value}" → value.
func geoMetrics(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func geoCity(t *testing.T, name string) geodemo.City {
	t.Helper()
	c, ok := geodemo.Lookup(name)
	require.True(t, ok, name)
	return c
}

func TestGeoIPLocate(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := openGeo(t, geoDB(t, "Tokyo", "Frankfurt"), geoip.DefaultConfig.CacheBytes, reg, nil)

	tokyo := shopguard.Geo{Lat: 35.6895, Lon: 139.6917, RadiusKM: 20, Country: "JP", City: "Tokyo"}
	frankfurt := shopguard.Geo{Lat: 50.1109, Lon: 8.6821, RadiusKM: 20, Country: "DE", City: "Frankfurt"}
	tests := []struct {
		ip   string
		want shopguard.Geo
		ok   bool
	}{
		{ip: geoCity(t, "Tokyo").Addr(0).String(), want: tokyo, ok: true},
		{ip: "219.117.194.77", want: tokyo, ok: true},
		{ip: "2400:4050:2a40:17::5", want: tokyo, ok: true},
		{ip: "240b:10:8c0:ffff:1:2:3:4", want: tokyo, ok: true},
		{ip: "18.184.0.1", want: frankfurt, ok: true},
		{ip: "::ffff:84.153.44.9", want: frankfurt, ok: true}, // IPv4-mapped
		{ip: "2a02:810d:4b40::1", want: frankfurt, ok: true},
		{ip: "8.8.8.8"},            // outside every block
		{ip: "2606:4700::1111"},    // outside every block
		{ip: "153.156.80.1"},       // just past Tokyo's /20
		{ip: "2400:4050:2a41::1"},  // just past Tokyo's /48
		{ip: "219.117.195.1"},      // next /24
		{ip: "18.184.1.1"},         // next /24
		{ip: "84.153.43.255"},      // previous /24
		{ip: "2a02:810d:4b3f::ff"}, // previous /48
	}
	located, unlocated := 0, 0
	for _, tt := range tests {
		for pass := range 2 { // the second pass is answered by the cache
			got, ok := g.Locate(netip.MustParseAddr(tt.ip))
			require.Equal(t, tt.ok, ok, "%s pass %d", tt.ip, pass)
			require.Equal(t, tt.want, got, "%s pass %d", tt.ip, pass)
			if ok {
				located++
			} else {
				unlocated++
			}
		}
	}

	m := geoMetrics(t, reg)
	require.Equal(t, float64(located), m["shopguard_geoip_lookups_total{result=located}"])
	require.Equal(t, float64(unlocated), m["shopguard_geoip_lookups_total{result=unlocated}"])
	require.Zero(t, m["shopguard_geoip_lookups_total{result=skipped}"])
	require.Equal(t, float64(len(tests)), m["shopguard_geoip_cache_misses_total"])
	require.Equal(t, float64(len(tests)), m["shopguard_geoip_cache_hits_total"])
	// ::ffff:84.153.44.9 and 84.153.44.9 would share an entry; all of these differ.
	require.Equal(t, float64(len(tests)), m["shopguard_geoip_cache_entries"])
	require.Positive(t, m["shopguard_geoip_cache_bytes"])

	// The mapped and plain forms share a cache entry.
	_, ok := g.Locate(netip.MustParseAddr("84.153.44.9"))
	require.True(t, ok)
	m = geoMetrics(t, reg)
	require.Equal(t, float64(len(tests)+1), m["shopguard_geoip_cache_hits_total"])
}

func TestGeoIPSkipsUnlocatable(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := openGeo(t, geoDB(t, "Tokyo"), geoip.DefaultConfig.CacheBytes, reg, nil)
	addrs := []string{
		"10.1.2.3", "172.16.5.4", "192.168.1.1", "100.64.1.1", "100.127.255.254", "192.0.2.1", "198.51.100.7",
		"203.0.113.9", "198.18.0.1", "127.0.0.1", "169.254.1.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
		"::ffff:10.0.0.1", "::1", "::", "fe80::1", "fd00::1", "2001:db8::1", "ff02::1",
	}
	for _, s := range addrs {
		geo, ok := g.Locate(netip.MustParseAddr(s))
		require.False(t, ok, s)
		require.Zero(t, geo, s)
	}
	m := geoMetrics(t, reg)
	require.Equal(t, float64(len(addrs)), m["shopguard_geoip_lookups_total{result=skipped}"])
	require.Zero(t, m["shopguard_geoip_lookups_total{result=located}"])
	require.Zero(t, m["shopguard_geoip_lookups_total{result=unlocated}"])
	require.Zero(t, m["shopguard_geoip_cache_misses_total"], "skipped addresses never reach the cache")
	require.Zero(t, m["shopguard_geoip_cache_hits_total"])
	require.Zero(t, m["shopguard_geoip_cache_entries"])
}

// TestGeoIPDemoWorld locates every block of every demo city, which also
// shows that every demo block is Locatable.
func TestGeoIPDemoWorld(t *testing.T) {
	g := openGeo(t, geoDB(t), 0, nil, nil)
	for _, c := range geodemo.Cities {
		want := shopguard.Geo{Lat: c.Lat, Lon: c.Lon, RadiusKM: c.RadiusKM, Country: c.Country, City: c.Name}
		for i := range uint32(600) {
			ip := c.Addr(i * 7)
			require.True(t, geoip.Locatable(ip), "%s %s", c.Name, ip)
			got, ok := g.Locate(ip)
			require.True(t, ok, "%s %s", c.Name, ip)
			require.Equal(t, want, got, ip.String())
		}
		for i := range uint64(50) {
			ip := c.Addr6(i * 65537)
			got, ok := g.Locate(ip)
			require.True(t, ok, "%s %s", c.Name, ip)
			require.Equal(t, want, got, ip.String())
		}
	}
}

func TestGeoIPUnlocatedRecords(t *testing.T) {
	path := geoRawDB(t, "GeoLite2-City", "GeoLite2City database", map[string]mmdbtype.Map{
		// A country-level record without coordinates.
		"45.95.147.0/24": {"country": mmdbtype.Map{"iso_code": mmdbtype.String("NL")}},
		// Coordinates without names: located, names empty.
		"45.95.148.0/24": {"location": mmdbtype.Map{
			"latitude": mmdbtype.Float64(52.37), "longitude": mmdbtype.Float64(4.89), "accuracy_radius": mmdbtype.Uint16(100),
		}},
	})
	reg := prometheus.NewRegistry()
	g := openGeo(t, path, geoip.DefaultConfig.CacheBytes, reg, nil)
	for range 3 {
		_, ok := g.Locate(netip.MustParseAddr("45.95.147.10"))
		require.False(t, ok)
		geo, ok := g.Locate(netip.MustParseAddr("45.95.148.10"))
		require.True(t, ok)
		require.Equal(t, shopguard.Geo{Lat: 52.37, Lon: 4.89, RadiusKM: 100}, geo)
	}
	m := geoMetrics(t, reg)
	require.Equal(t, 3.0, m["shopguard_geoip_lookups_total{result=unlocated}"])
	require.Equal(t, 3.0, m["shopguard_geoip_lookups_total{result=located}"])
	require.Equal(t, 2.0, m["shopguard_geoip_cache_misses_total"], "the unlocated result is cached too")
	require.Equal(t, 4.0, m["shopguard_geoip_cache_hits_total"])
}

func TestGeoIPWithoutCache(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := openGeo(t, geoDB(t, "Osaka"), 0, reg, nil)
	osaka := geoCity(t, "Osaka")
	for i := range uint32(3) {
		geo, ok := g.Locate(osaka.Addr(i))
		require.True(t, ok)
		require.Equal(t, "Osaka", geo.City)
	}
	m := geoMetrics(t, reg)
	require.Equal(t, 3.0, m["shopguard_geoip_lookups_total{result=located}"])
	require.Zero(t, m["shopguard_geoip_cache_hits_total"])
	require.Zero(t, m["shopguard_geoip_cache_misses_total"])
	require.Zero(t, m["shopguard_geoip_cache_entries"])
}

func TestGeoIPCacheHitDoesNotAllocate(t *testing.T) {
	g := openGeo(t, geoDB(t, "Tokyo", "São Paulo"), geoip.DefaultConfig.CacheBytes, prometheus.NewRegistry(), nil)
	for _, s := range []string{
		geoCity(t, "Tokyo").Addr(3).String(), geoCity(t, "São Paulo").Addr6(9).String(),
		"8.8.8.8",  // cached as unlocated
		"10.0.0.1", // skipped before the cache
	} {
		ip := netip.MustParseAddr(s)
		want, wantOK := g.Locate(ip) // fills the cache
		allocs := testing.AllocsPerRun(1000, func() {
			got, ok := g.Locate(ip)
			if ok != wantOK || got != want {
				t.Fatalf("Locate(%s) = %v, %v; want %v, %v", ip, got, ok, want, wantOK)
			}
		})
		require.Zero(t, allocs, s)
	}
}

func TestGeoIPCachedStringsAreShared(t *testing.T) {
	g := openGeo(t, geoDB(t, "Tokyo"), geoip.DefaultConfig.CacheBytes, nil, nil)
	tokyo := geoCity(t, "Tokyo")
	a, ok := g.Locate(tokyo.Addr(1)) // from the database
	require.True(t, ok)
	b, ok := g.Locate(tokyo.Addr(1)) // from the cache
	require.True(t, ok)
	c, ok := g.Locate(tokyo.Addr(2)) // another address of the same place
	require.True(t, ok)
	require.Equal(t, a, b)
	require.Same(t, unsafeStringData(a.City), unsafeStringData(b.City))
	require.Same(t, unsafeStringData(a.City), unsafeStringData(c.City))
	require.Same(t, unsafeStringData(a.Country), unsafeStringData(c.Country))
}

// unsafeStringData is where s's bytes are, to tell shared strings apart
// from equal copies.
func unsafeStringData(s string) *byte { return unsafe.StringData(s) }

func TestGeoIPConcurrent(t *testing.T) {
	g := openGeo(t, geoDB(t, "Tokyo", "Frankfurt"), geoip.DefaultConfig.CacheBytes, prometheus.NewRegistry(), nil)
	tokyo, fra := geoCity(t, "Tokyo"), geoCity(t, "Frankfurt")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range uint32(2000) {
				c := tokyo
				if (i+uint32(w))%2 == 0 {
					c = fra
				}
				geo, ok := g.Locate(c.Addr(i % 300))
				if !ok || geo.City != c.Name {
					t.Errorf("Locate(%s) = %v, %v", c.Addr(i%300), geo, ok)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestGeoIPClose(t *testing.T) {
	reg := prometheus.NewRegistry()
	path := geoDB(t, "Tokyo")
	g, err := geoip.Open(geoip.Config{Path: path, CacheBytes: geoip.DefaultConfig.CacheBytes}, reg, nil)
	require.NoError(t, err)
	ip := geoCity(t, "Tokyo").Addr(1)
	_, ok := g.Locate(ip)
	require.True(t, ok)

	// A second locator cannot register the same metrics…
	_, err = geoip.Open(geoip.Config{Path: path}, reg, nil)
	require.ErrorContains(t, err, "register metrics")

	require.NoError(t, g.Close())
	require.NoError(t, g.Close(), "Close is idempotent")
	_, ok = g.Locate(ip)
	require.False(t, ok, "a closed locator locates nothing")

	// …until the first is closed.
	g2 := openGeo(t, path, 0, reg, nil)
	_, ok = g2.Locate(ip)
	require.True(t, ok)
}

func TestOpenGeoIPErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope", "GeoLite2-City.mmdb")
	_, err := geoip.Open(geoip.Config{Path: missing}, nil, nil)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, missing)

	corrupt := filepath.Join(dir, "corrupt.mmdb")
	junk := make([]byte, 4096)
	_, _ = rand.Read(junk)
	require.NoError(t, os.WriteFile(corrupt, junk, 0o644))
	_, err = geoip.Open(geoip.Config{Path: corrupt}, nil, nil)
	require.ErrorContains(t, err, corrupt)

	empty := filepath.Join(dir, "empty.mmdb")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, err = geoip.Open(geoip.Config{Path: empty}, nil, nil)
	require.ErrorContains(t, err, empty)

	// A database cut short inside its metadata (at the end of the file).
	good, err := os.ReadFile(geoDB(t, "Tokyo"))
	require.NoError(t, err)
	truncated := filepath.Join(dir, "truncated.mmdb")
	require.NoError(t, os.WriteFile(truncated, good[:len(good)-40], 0o644))
	_, err = geoip.Open(geoip.Config{Path: truncated}, nil, nil)
	require.ErrorContains(t, err, truncated)

	_, err = geoip.Open(geoip.Config{Path: dir}, nil, nil)
	require.ErrorContains(t, err, dir, "a directory")

	_, err = geoip.Open(geoip.Config{}, nil, nil)
	require.ErrorContains(t, err, "geoip.path")

	_, err = geoip.Open(geoip.Config{Path: geoDB(t, "Tokyo"), CacheBytes: 1 << 20}, nil, nil)
	require.ErrorContains(t, err, "geoip.cache_bytes")

	rec := map[string]mmdbtype.Map{"45.95.147.0/24": {"autonomous_system_number": mmdbtype.Uint32(64500)}}
	for typ, want := range map[string]string{
		"GeoLite2-ASN":        "not a City database", // geoip2 opens it but refuses City lookups
		"GeoLite2-Country":    "no city coordinates", // geoip2 allows City lookups, without coordinates
		"shopguard-Demo-City": "not a City database", // geoip2 does not know the type at all
	} {
		path := geoRawDB(t, typ, "", rec)
		_, err := geoip.Open(geoip.Config{Path: path}, nil, nil)
		require.ErrorContains(t, err, path, typ)
		require.ErrorContains(t, err, want, typ)
		require.ErrorContains(t, err, typ, typ)
	}
}

func TestGeoIPDemoWarning(t *testing.T) {
	open := func(path string) string {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		g := openGeo(t, path, 0, nil, log)
		_, _ = g.Locate(netip.MustParseAddr("45.95.147.1"))
		_, _ = g.Locate(netip.MustParseAddr("45.95.147.2"))
		return buf.String()
	}

	out := open(geoDB(t, "Tokyo"))
	require.Equal(t, 1, strings.Count(out, "level=WARN"), out)
	require.Contains(t, out, "DEMO")
	require.Contains(t, out, "production")

	real := geoRawDB(t, "GeoLite2-City", "GeoLite2City database", map[string]mmdbtype.Map{
		"45.95.147.0/24": {"location": mmdbtype.Map{"latitude": mmdbtype.Float64(52.37), "longitude": mmdbtype.Float64(4.89)}},
	})
	out = open(real)
	require.NotContains(t, out, "level=WARN", out)
	require.Contains(t, out, "GeoIP database opened")
}

func TestGeoIPConfigValidate(t *testing.T) {
	require.NoError(t, geoip.DefaultConfig.Validate())
	require.NoError(t, geoip.Config{}.Validate(), "no path and no cache is valid")
	require.NoError(t, geoip.Config{Path: "/var/lib/GeoIP/GeoLite2-City.mmdb", CacheBytes: 256 << 20}.Validate())

	err := geoip.Config{Path: " x.mmdb", CacheBytes: -1}.Validate()
	require.ErrorContains(t, err, "geoip.cache_bytes")
	require.ErrorContains(t, err, "geoip.path")
	require.ErrorContains(t, geoip.Config{CacheBytes: 1 << 20}.Validate(), "geoip.cache_bytes")
	require.ErrorContains(t, geoip.Config{CacheBytes: 1 << 40}.Validate(), "geoip.cache_bytes")
}

func TestLocatable(t *testing.T) {
	public := []string{
		"1.1.1.1", "8.8.8.8", "18.184.0.1", "45.95.147.9", "100.63.255.255", "100.128.0.0", "172.15.255.255",
		"172.32.0.1", "192.0.3.1", "192.167.255.255", "198.17.255.255", "198.20.0.1", "203.0.112.255",
		"223.255.255.254", "::ffff:8.8.8.8", "2400:4050:2a40::1", "2a02:810d:4b40::1", "2001:200::1",
		"2002:c000:201::1", "2606:4700::1111",
	}
	for _, s := range public {
		require.True(t, geoip.Locatable(netip.MustParseAddr(s)), s)
	}
	special := []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.0", "100.127.255.255", "127.0.0.1",
		"169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.9", "192.0.2.1", "192.88.99.1",
		"192.168.0.1", "198.18.0.1", "198.19.255.255", "198.51.100.1", "203.0.113.255", "224.0.0.1",
		"239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::ffff:10.0.0.1", "::ffff:100.64.1.1", "::ffff:192.0.2.1", "::ffff:127.0.0.1", "::ffff:169.254.1.1",
		"::", "::1", "::8.8.8.8", "64:ff9b::808:808", "100::1", "2001::1", "2001:0:4136:e378::1",
		"2001:db8::1", "2001:db8:ffff::1", "3fff::1", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0",
		"fec0::1", "ff02::1", "ff0e::1",
	}
	for _, s := range special {
		require.False(t, geoip.Locatable(netip.MustParseAddr(s)), s)
	}
	require.False(t, geoip.Locatable(netip.Addr{}))
}

// geoASNDB writes the demo ASN database of the named geodemo cities.
func geoASNDB(t testing.TB, names ...string) string {
	t.Helper()
	var cities []geodemo.City
	for _, n := range names {
		c, ok := geodemo.Lookup(n)
		require.True(t, ok, n)
		cities = append(cities, c)
	}
	path := filepath.Join(t.TempDir(), "asn.mmdb")
	require.NoError(t, geodemo.WriteASN(path, cities))
	return path
}

func TestGeoIPWithASN(t *testing.T) {
	for _, cacheBytes := range []int{0, geoip.DefaultConfig.CacheBytes} {
		g, err := geoip.Open(geoip.Config{Path: geoDB(t, "Tokyo", "Frankfurt", "Kyoto"), ASNPath: geoASNDB(t, "Tokyo", "Frankfurt"),
			CacheBytes: cacheBytes}, nil, nil)
		require.NoError(t, err)
		tokyo := geoCity(t, "Tokyo").Addr(3)
		for range 2 { // a miss, then (with the cache) a hit
			geo, ok := g.Locate(tokyo)
			require.True(t, ok)
			require.Equal(t, "JP", geo.Country)
			require.Equal(t, uint32(4713), geo.ASN)
			require.Equal(t, "NTT Communications Corporation", geo.ASOrg)
			geo, ok = g.Locate(geoCity(t, "Frankfurt").Addr6(5))
			require.True(t, ok)
			require.Equal(t, uint32(24940), geo.ASN, "a data-centre city")
			// Kyoto has a city record but no ASN record: located, no network.
			geo, ok = g.Locate(geoCity(t, "Kyoto").Addr(1))
			require.True(t, ok)
			require.Equal(t, "Kyoto", geo.City)
			require.Zero(t, geo.ASN)
			require.Empty(t, geo.ASOrg)
		}
		if cacheBytes > 0 {
			allocs := testing.AllocsPerRun(1000, func() { _, _ = g.Locate(tokyo) })
			require.Zero(t, allocs, "a cache hit with an ASN does not allocate")
		}
		require.NoError(t, g.Close())
		_, ok := g.Locate(tokyo)
		require.False(t, ok, "after Close")
	}
}

func TestOpenASNErrors(t *testing.T) {
	city := geoDB(t, "Tokyo")
	missing := filepath.Join(t.TempDir(), "GeoLite2-ASN.mmdb")
	_, err := geoip.Open(geoip.Config{Path: city, ASNPath: missing}, nil, nil)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, "ASN database "+missing)

	// A City database given as the ASN one.
	_, err = geoip.Open(geoip.Config{Path: city, ASNPath: city}, nil, nil)
	require.ErrorContains(t, err, "ASN database "+city)
	require.ErrorContains(t, err, "not an ASN database")

	require.ErrorContains(t, geoip.Config{ASNPath: "/x/GeoLite2-ASN.mmdb"}.Validate(), "geoip.asn_path")
	require.ErrorContains(t, geoip.Config{Path: city, ASNPath: "x.mmdb "}.Validate(), "geoip.asn_path")
}
