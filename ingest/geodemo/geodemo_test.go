package geodemo_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard/ingest/geodemo"
)

// TestWriteReadBack writes the demo world and reads every city back through
// geoip2-golang v2's City lookup, the way shopguard reads it.
func TestWriteReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.mmdb")
	require.NoError(t, geodemo.Write(path, geodemo.Cities))

	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")

	db, err := geoip2.Open(path)
	require.NoError(t, err)
	defer db.Close()
	md := db.Metadata()
	require.Equal(t, geodemo.DatabaseType, md.DatabaseType)
	require.Contains(t, md.Description["en"], "DEMO")

	for _, c := range geodemo.Cities {
		last := uint32(0)
		for _, p := range c.V4 {
			last += 1<<(32-p.Bits()) - 2
		}
		for _, ip := range []netip.Addr{c.Addr(0), c.Addr(last - 1), c.Addr6(0), c.Addr6(1), c.Addr6(1 << 20)} {
			rec, err := db.City(ip)
			require.NoError(t, err, "%s %s", c.Name, ip)
			require.Equal(t, c.Name, rec.City.Names.English, ip.String())
			require.Equal(t, c.Country, rec.Country.ISOCode, ip.String())
			require.NotEmpty(t, rec.Country.Names.English, ip.String())
			require.True(t, rec.Location.HasCoordinates(), ip.String())
			require.Equal(t, c.Lat, *rec.Location.Latitude, ip.String())
			require.Equal(t, c.Lon, *rec.Location.Longitude, ip.String())
			require.Equal(t, c.RadiusKM, rec.Location.AccuracyRadius, ip.String())
		}
	}

	// IPv4-mapped IPv6 resolves through the IPv4 tree.
	tokyo, ok := geodemo.Lookup("tokyo")
	require.True(t, ok)
	rec, err := db.City(netip.AddrFrom16(tokyo.Addr(7).As16()))
	require.NoError(t, err)
	require.Equal(t, "Tokyo", rec.City.Names.English)

	// Outside every block there is no record.
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "2606:4700::1111"} {
		rec, err := db.City(netip.MustParseAddr(s))
		require.NoError(t, err)
		require.False(t, rec.HasData(), s)
	}
}

func TestCities(t *testing.T) {
	require.GreaterOrEqual(t, len(geodemo.Cities), 40)
	names := map[string]bool{}
	japan := 0
	for _, c := range geodemo.Cities {
		require.False(t, names[strings.ToLower(c.Name)], "duplicate city %s", c.Name)
		names[strings.ToLower(c.Name)] = true
		require.NotEmpty(t, c.V4, c.Name)
		require.NotEmpty(t, c.V6, c.Name)
		require.NotZero(t, c.RadiusKM, c.Name)
		if c.Country == "JP" {
			japan++
		}
	}
	require.GreaterOrEqual(t, japan, 15)

	for _, name := range []string{"Tokyo", "OSAKA", "naha", "São Paulo", "Frankfurt", "Ashburn"} {
		c, ok := geodemo.Lookup(name)
		require.True(t, ok, name)
		require.True(t, strings.EqualFold(c.Name, name))
	}
	_, ok := geodemo.Lookup("Atlantis")
	require.False(t, ok)

	// The SPEC's example address is in Frankfurt.
	fra, _ := geodemo.Lookup("Frankfurt")
	require.True(t, slicesContain(fra.V4, netip.MustParseAddr("18.184.0.1")))
}

func slicesContain(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func TestAddr(t *testing.T) {
	c := geodemo.City{Name: "X", Country: "JP", V4: []netip.Prefix{
		netip.MustParsePrefix("153.156.64.0/23"), netip.MustParsePrefix("126.23.102.0/24"),
	}}
	const total = 510 + 254
	seen := map[netip.Addr]bool{}
	for i := range uint32(total) {
		ip := c.Addr(i)
		require.True(t, slicesContain(c.V4, ip), ip.String())
		require.False(t, seen[ip], "Addr(%d)=%s repeats", i, ip)
		seen[ip] = true
		for _, p := range c.V4 {
			first := p.Addr()
			bcast := p.Addr().As4()
			bcast[2] |= byte(0xff >> (p.Bits() - 16))
			bcast[3] = 0xff
			require.NotEqual(t, first, ip)
			require.NotEqual(t, netip.AddrFrom4(bcast), ip)
		}
	}
	require.Equal(t, netip.MustParseAddr("153.156.64.1"), c.Addr(0))
	require.Equal(t, netip.MustParseAddr("153.156.65.254"), c.Addr(509))
	require.Equal(t, netip.MustParseAddr("126.23.102.1"), c.Addr(510))
	require.Equal(t, c.Addr(0), c.Addr(total), "wraps")
	require.Equal(t, c.Addr(5), c.Addr(total+5), "wraps")
	require.False(t, geodemo.City{}.Addr(3).IsValid())
}

func TestAddr6(t *testing.T) {
	c := geodemo.City{Name: "X", Country: "JP", V6: []netip.Prefix{
		netip.MustParsePrefix("2400:4050:2a40::/48"), netip.MustParsePrefix("240b:10:8c0::/48"),
	}}
	slash64 := func(ip netip.Addr) netip.Prefix { return netip.PrefixFrom(ip, 64).Masked() }
	seen := map[netip.Prefix]bool{}
	for i := range uint64(1000) {
		ip := c.Addr6(i)
		require.True(t, slicesContain(c.V6, ip), ip.String())
		require.True(t, c.V6[i%2].Contains(ip), "blocks are taken in turn")
		require.False(t, seen[slash64(ip)], "consecutive addresses get their own /64")
		seen[slash64(ip)] = true
		require.NotEqual(t, slash64(ip).Addr(), ip, "interface id is never zero")
	}
	require.Equal(t, netip.MustParseAddr("2400:4050:2a40::1"), c.Addr6(0))
	require.Equal(t, netip.MustParseAddr("240b:10:8c0::1"), c.Addr6(1))
	require.Equal(t, netip.MustParseAddr("2400:4050:2a40:1::1"), c.Addr6(2))
	// Same /64, next interface id, after cycling through every subnet.
	k := c.Addr6(3 + 2*65536)
	require.Equal(t, slash64(c.Addr6(3)), slash64(k))
	require.NotEqual(t, c.Addr6(3), k)
	require.False(t, geodemo.City{}.Addr6(3).IsValid())
}

func TestWriteRejects(t *testing.T) {
	bad := []geodemo.City{
		{Name: "A", Country: "JP", V4: []netip.Prefix{netip.MustParsePrefix("153.156.64.0/20")}},
		{Name: "B", Country: "JP", V4: []netip.Prefix{netip.MustParsePrefix("153.156.70.0/24")}},   // inside A
		{Name: "C", Country: "JP", V4: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}},    // private
		{Name: "D", Country: "JP", V4: []netip.Prefix{netip.MustParsePrefix("100.64.3.0/24")}},     // CGNAT
		{Name: "E", Country: "JP", V4: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},    // documentation
		{Name: "F", Country: "JP", V6: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}},   // documentation
		{Name: "G", Country: "JP", V6: []netip.Prefix{netip.MustParsePrefix("153.157.0.0/24")}},    // wrong family
		{Name: "H", Country: "Japan", V4: []netip.Prefix{netip.MustParsePrefix("153.158.0.0/24")}}, // not ISO
	}
	path := filepath.Join(t.TempDir(), "bad.mmdb")
	err := geodemo.Write(path, bad)
	require.Error(t, err)
	for _, want := range []string{
		path, "153.156.64.0/20 (A) overlaps block 153.156.70.0/24 (B)", "192.168.1.0/24", "100.64.3.0/24",
		"203.0.113.0/24", "2001:db8:1::/48", "G: V6 block 153.157.0.0/24", `"Japan"`,
	} {
		require.ErrorContains(t, err, want)
	}
	_, statErr := os.Stat(path)
	require.ErrorIs(t, statErr, os.ErrNotExist)
}

// TestWriteReplaces checks that Write replaces an existing database whole.
func TestWriteReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.mmdb")
	tokyo, _ := geodemo.Lookup("Tokyo")
	osaka, _ := geodemo.Lookup("Osaka")
	require.NoError(t, geodemo.Write(path, []geodemo.City{tokyo}))
	require.NoError(t, geodemo.Write(path, []geodemo.City{osaka}))

	db, err := geoip2.Open(path)
	require.NoError(t, err)
	defer db.Close()
	rec, err := db.City(osaka.Addr(1))
	require.NoError(t, err)
	require.Equal(t, "Osaka", rec.City.Names.English)
	rec, err = db.City(tokyo.Addr(1))
	require.NoError(t, err)
	require.False(t, rec.HasData())
}
