// Package geodemo is the demo world of shopguard: a few dozen real cities
// with synthetic address blocks, and writers that turn them into
// MaxMind-format City and ASN databases, so that `shopguard demo` and the
// tests can judge impossible travel and account profiles without a
// GeoLite2 licence.
//
// The coordinates and accuracy radii are real; the address blocks are not:
// they look like the public space of the right regional registry but say
// nothing about where those addresses really are. A database written here is
// marked as demo data in its metadata, and shopguard warns when it opens one.
//
// Non-goals: geodemo does not read databases (ingest does), does not model
// networks below city level (one autonomous system per city, see ASOf; no
// subdivisions), and is not a general mmdb authoring tool.
package geodemo

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// DatabaseType is the metadata database_type of a database Write produces.
// It is the GeoLite2-City type because geoip2-golang v2 performs City lookups
// only on database types it knows by name (it rejects, say,
// "shopguard-Demo-City" when opening), and the records have exactly the
// GeoLite2-City shape. The demo marker is in Description instead.
const DatabaseType = "GeoLite2-City"

// Description is the English metadata description of a database Write
// produces. Readers recognise demo data by the word "DEMO" in it.
const Description = "shopguard DEMO data, not for production: synthetic address blocks mapped to real city coordinates"

// City is one place in the demo world: real coordinates and a realistic
// accuracy radius, with the synthetic address blocks that locate there.
type City struct {
	Name     string  // English name, as in city.names.en
	Country  string  // ISO 3166-1 alpha-2 code, e.g. "JP"
	Lat, Lon float64 // degrees
	RadiusKM uint16  // accuracy radius in kilometres
	V4       []netip.Prefix
	V6       []netip.Prefix
}

// Lookup returns the city of Cities whose name matches name, ignoring case.
func Lookup(name string) (City, bool) {
	for _, c := range Cities {
		if strings.EqualFold(c.Name, name) {
			return c, true
		}
	}
	return City{}, false
}

// Addr returns the i-th usable address of the city's IPv4 blocks, taken in
// order and wrapping around after the last one. It never returns a block's
// network or broadcast address; consecutive i walk through one block before
// moving on to the next. It returns the zero Addr when the city has no IPv4
// block of /30 or wider.
func (c City) Addr(i uint32) netip.Addr {
	var total uint64
	for _, p := range c.V4 {
		total += usable4(p)
	}
	if total == 0 {
		return netip.Addr{}
	}
	k := uint64(i) % total
	for _, p := range c.V4 {
		n := usable4(p)
		if k >= n {
			k -= n
			continue
		}
		a := p.Masked().Addr().As4()
		var out [4]byte
		binary.BigEndian.PutUint32(out[:], binary.BigEndian.Uint32(a[:])+1+uint32(k))
		return netip.AddrFrom4(out)
	}
	return netip.Addr{} // not reached: k < total
}

// usable4 is how many host addresses an IPv4 block has besides its network
// and broadcast addresses.
func usable4(p netip.Prefix) uint64 {
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 {
		return 0
	}
	return 1<<(32-p.Bits()) - 2
}

// Addr6 returns the i-th address of the city's IPv6 blocks. Consecutive i
// take the blocks in turn and, inside a block, successive /64 subnets, the
// way households each get their own prefix: Addr6(i) and Addr6(i+1) are in
// different /64s unless the city has a single block of /64 or longer. The
// interface identifier is never zero. Addresses sharing a /64 with Addr6(i)
// are Addr6(i + k·len(V6)·2^(64−bits)) for a block of length bits. It returns
// the zero Addr when the city has no IPv6 block of /64 or wider.
func (c City) Addr6(i uint64) netip.Addr {
	var blocks []netip.Prefix
	for _, p := range c.V6 {
		if p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() && p.Bits() <= 64 {
			blocks = append(blocks, p)
		}
	}
	if len(blocks) == 0 {
		return netip.Addr{}
	}
	p := blocks[i%uint64(len(blocks))]
	j := i / uint64(len(blocks))
	var subnet, iid uint64
	if hostBits := 64 - p.Bits(); hostBits == 64 {
		subnet, iid = j, 1 // a /0 block: unreachable for public blocks
	} else {
		subnets := uint64(1) << hostBits
		subnet, iid = j%subnets, j/subnets+1
	}
	if iid == 0 {
		iid = 1
	}
	a := p.Masked().Addr().As16()
	var out [16]byte
	binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(a[:8])|subnet)
	binary.BigEndian.PutUint64(out[8:], iid)
	return netip.AddrFrom16(out)
}

// Write writes a MaxMind-format City database holding cities to path,
// atomically: it writes a temporary file in the same directory and renames
// it over path. Each record has the GeoLite2-City fields shopguard reads
// (city.names.en, country.iso_code, country.names.en, location.latitude,
// location.longitude, location.accuracy_radius); the metadata carries
// DatabaseType and Description. Write checks cities first and returns every
// problem at once: a block that overlaps another, is not public unicast
// space, is of the wrong family, or is too narrow to hand out addresses.
// Addresses outside all blocks have no record.
func Write(path string, cities []City) error {
	return writeDB("demo GeoIP database "+path, path, DatabaseType, []string{"en"}, cities, record)
}

// writeDB checks cities and writes a database of type typ to path with
// rec(city) under every block of each city; what names it in errors.
func writeDB(what, path, typ string, languages []string, cities []City, rec func(City) mmdbtype.Map) error {
	if err := check(cities); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: typ,
		Description:  map[string]string{"en": Description},
		Languages:    languages,
		IPVersion:    6,
		RecordSize:   24,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, c := range cities {
		r := rec(c)
		for _, p := range slices.Concat(c.V4, c.V6) {
			p = p.Masked()
			n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
			if err := tree.Insert(n, r); err != nil {
				return fmt.Errorf("%s: insert %s (%s): %w", what, p, c.Name, err)
			}
		}
	}
	return writeAtomic(path, tree)
}

// record is the GeoLite2-City shaped record of c.
func record(c City) mmdbtype.Map {
	country := mmdbtype.Map{"iso_code": mmdbtype.String(c.Country)}
	if name, ok := countryNames[c.Country]; ok {
		country["names"] = mmdbtype.Map{"en": mmdbtype.String(name)}
	}
	return mmdbtype.Map{
		"city":    mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(c.Name)}},
		"country": country,
		"location": mmdbtype.Map{
			"latitude":        mmdbtype.Float64(c.Lat),
			"longitude":       mmdbtype.Float64(c.Lon),
			"accuracy_radius": mmdbtype.Uint16(c.RadiusKM),
		},
	}
}

// writeAtomic writes tree to a temporary file next to path and renames it
// into place, so a reader never sees a half-written database.
func writeAtomic(path string, tree *mmdbwriter.Tree) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("demo GeoIP database %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tree.WriteTo(tmp); err != nil {
		return fmt.Errorf("demo GeoIP database %s: write: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("demo GeoIP database %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("demo GeoIP database %s: sync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("demo GeoIP database %s: close: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("demo GeoIP database %s: %w", path, err)
	}
	return nil
}

// check returns every problem with cities at once.
func check(cities []City) error {
	var errs []error
	type block struct {
		p    netip.Prefix
		city string
	}
	var all []block
	for _, c := range cities {
		if c.Name == "" {
			errs = append(errs, errors.New("a city has no name"))
		}
		if len(c.Country) != 2 || strings.ToUpper(c.Country) != c.Country {
			errs = append(errs, fmt.Errorf("%s: country %q is not an upper-case ISO 3166-1 alpha-2 code", c.Name, c.Country))
		}
		if c.Lat < -90 || c.Lat > 90 || c.Lon < -180 || c.Lon > 180 {
			errs = append(errs, fmt.Errorf("%s: coordinates %g,%g out of range", c.Name, c.Lat, c.Lon))
		}
		for _, p := range c.V4 {
			if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 {
				errs = append(errs, fmt.Errorf("%s: V4 block %s is not an IPv4 prefix of /30 or wider", c.Name, p))
				continue
			}
			all = append(all, block{p.Masked(), c.Name})
		}
		for _, p := range c.V6 {
			if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() > 64 {
				errs = append(errs, fmt.Errorf("%s: V6 block %s is not an IPv6 prefix of /64 or wider", c.Name, p))
				continue
			}
			all = append(all, block{p.Masked(), c.Name})
		}
	}
	for _, b := range all {
		for _, r := range nonPublic {
			if b.p.Overlaps(r) {
				errs = append(errs, fmt.Errorf("%s: block %s overlaps non-public range %s", b.city, b.p, r))
				break
			}
		}
	}
	// Prefixes are either nested or disjoint, so after sorting by first
	// address any overlap shows between neighbours.
	slices.SortFunc(all, func(a, b block) int {
		return cmp.Or(a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()))
	})
	for i := 1; i < len(all); i++ {
		if a, b := all[i-1], all[i]; a.p.Overlaps(b.p) {
			errs = append(errs, fmt.Errorf("block %s (%s) overlaps block %s (%s)", a.p, a.city, b.p, b.city))
		}
	}
	return errors.Join(errs...)
}

// nonPublic lists the address space a demo block must stay out of: private,
// shared (CGNAT), loopback, link-local, documentation, benchmarking,
// multicast, reserved, the IPv4 aliases inside IPv6 (IPv4-mapped, Teredo,
// 6to4 — a database resolves those through its IPv4 tree) and the IETF
// special-purpose blocks.
var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
		"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/8", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
		"2002::/16", "3fff::/20", "fc00::/7", "fe80::/10", "ff00::/8",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// countryNames are the English country names of the GeoLite2 databases for
// the countries of Cities and a few more. A city of another country gets a
// record without country.names.
var countryNames = map[string]string{
	"AU": "Australia", "BR": "Brazil", "CA": "Canada", "CN": "China", "DE": "Germany",
	"ES": "Spain", "FR": "France", "GB": "United Kingdom", "HK": "Hong Kong", "ID": "Indonesia",
	"IN": "India", "IT": "Italy", "JP": "Japan", "KE": "Kenya", "KR": "South Korea",
	"MX": "Mexico", "MY": "Malaysia", "NG": "Nigeria", "NL": "Netherlands", "PH": "Philippines",
	"PL": "Poland", "RU": "Russia", "SE": "Sweden", "SG": "Singapore", "TH": "Thailand",
	"TW": "Taiwan", "UA": "Ukraine", "US": "United States", "VN": "Vietnam", "ZA": "South Africa",
}
