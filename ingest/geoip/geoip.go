// Package geoip places addresses on the map: a shopguard.Locator over a
// MaxMind-format City database (GeoLite2-City or GeoIP2-City), with a
// fastcache cache of answers in front of it so that a hot address costs no
// allocation and no database walk. Private, reserved and other
// non-public addresses are never looked up.
//
// It reads databases; it does not download or update them, and it judges
// nothing about a location.
package geoip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"unique"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/oschwald/geoip2-golang/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopguard/shopguard"
)

// Config configures the GeoIP locator (YAML section geoip).
type Config struct {
	// Path is a MaxMind-format City database (GeoLite2-City or
	// GeoIP2-City). Empty means no database: travel is not judged.
	Path string `yaml:"path"`
	// ASNPath is a MaxMind-format ASN database (GeoLite2-ASN), optional:
	// with it every located address also names its autonomous system,
	// which account profiles use as the network.
	ASNPath string `yaml:"asn_path"`
	// CacheBytes sizes the lookup cache. 0 turns it off; otherwise it must
	// be at least 32 MiB, the least fastcache allocates.
	CacheBytes int `yaml:"cache_bytes"`
}

// DefaultConfig is what an absent geoip section or key means.
var DefaultConfig = Config{CacheBytes: geoipMinCacheBytes}

const (
	geoipMinCacheBytes = 32 << 20 // fastcache's 512 buckets of one 64 KiB chunk
	geoipMaxCacheBytes = 16 << 30 // far beyond any database's worth of entries
)

// Validate reports every problem with c at once. An empty Path is valid
// (GeoIP off); Open is what requires one.
func (c Config) Validate() error {
	var errs []error
	if c.CacheBytes != 0 && (c.CacheBytes < geoipMinCacheBytes || c.CacheBytes > geoipMaxCacheBytes) {
		errs = append(errs, fmt.Errorf("geoip.cache_bytes: must be 0 (no cache) or between %d (32 MiB) and %d (16 GiB), got %d",
			geoipMinCacheBytes, int64(geoipMaxCacheBytes), c.CacheBytes))
	}
	if strings.TrimSpace(c.Path) != c.Path {
		errs = append(errs, fmt.Errorf("geoip.path: %q has leading or trailing white space", c.Path))
	}
	if strings.TrimSpace(c.ASNPath) != c.ASNPath {
		errs = append(errs, fmt.Errorf("geoip.asn_path: %q has leading or trailing white space", c.ASNPath))
	}
	if c.ASNPath != "" && c.Path == "" {
		errs = append(errs, errors.New("geoip.asn_path: an ASN database needs a City database (geoip.path) too"))
	}
	return errors.Join(errs...)
}

// DB implements shopguard.Locator over a MaxMind City database, with a
// fastcache cache in front of it keyed by the 16-byte address. Unlocated
// results are cached too, so an address without a record costs one database
// lookup per cache lifetime. Private and reserved addresses (see Locatable)
// are never looked up.
//
// A DB is safe for concurrent use. A cache hit does not allocate: the
// names of each place are interned, so every Geo for a place shares its
// strings, which callers may keep. Locate after Close reports every address
// as unlocated.
type DB struct {
	path   string
	log    *slog.Logger
	cache  *fastcache.Cache // nil when CacheBytes is 0
	places geoipPlaces

	mu  sync.RWMutex // guards db and asn against Close; lookups hold it for reading
	db  *geoip2.Reader
	asn *geoip2.Reader // nil without an ASN database

	reg                prometheus.Registerer
	lookups            *prometheus.CounterVec
	collector          prometheus.Collector
	located, unlocated prometheus.Counter
	skipped            prometheus.Counter
	loggedLookupErr    atomic.Bool
}

var _ shopguard.Locator = (*DB)(nil)

// Open opens the City database at cfg.Path and registers, on reg (nil
// means unregistered), shopguard_geoip_lookups_total{result} and the cache
// metrics shopguard_geoip_cache_hits_total, shopguard_geoip_cache_misses_total,
// shopguard_geoip_cache_entries and shopguard_geoip_cache_bytes, read from the
// cache at scrape time. Close unregisters them.
//
// A missing, unreadable or corrupt file, or a database that holds no city
// coordinates (ASN, Country, ISP, …), is an error naming the path. A
// database whose metadata marks it as demo data is opened with a warning.
func Open(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*DB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Path == "" {
		return nil, errors.New("geoip.path: no GeoIP database given")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db, err := openCityDB(cfg.Path)
	if err != nil {
		return nil, err
	}
	g := &DB{path: cfg.Path, log: logger, db: db, reg: reg}
	if cfg.ASNPath != "" {
		if g.asn, err = openASNDB(cfg.ASNPath); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	closeAll := func() {
		_ = db.Close()
		if g.asn != nil {
			_ = g.asn.Close()
		}
	}
	if cfg.CacheBytes > 0 {
		g.cache = fastcache.New(cfg.CacheBytes)
	}

	g.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shopguard_geoip_lookups_total",
		Help: "GeoIP locations asked for, by result: located, unlocated (no record or no coordinates), skipped (private or reserved, never looked up).",
	}, []string{"result"})
	g.located = g.lookups.WithLabelValues("located")
	g.unlocated = g.lookups.WithLabelValues("unlocated")
	g.skipped = g.lookups.WithLabelValues("skipped")
	g.collector = newGeoIPCacheCollector(g.cache)
	if reg != nil {
		if err := reg.Register(g.lookups); err != nil {
			closeAll()
			return nil, fmt.Errorf("GeoIP database %s: register metrics: %w", cfg.Path, err)
		}
		if err := reg.Register(g.collector); err != nil {
			reg.Unregister(g.lookups)
			closeAll()
			return nil, fmt.Errorf("GeoIP database %s: register metrics: %w", cfg.Path, err)
		}
	}

	md := db.Metadata()
	if isDemoDB(md.DatabaseType, md.Description) {
		logger.Warn("GeoIP database holds shopguard DEMO data: synthetic address blocks mapped to real cities; do not use it in production",
			"path", cfg.Path, "description", md.Description["en"])
	}
	logger.Info("GeoIP database opened", "path", cfg.Path, "type", md.DatabaseType,
		"built", md.BuildTime().UTC().Format("2006-01-02"), "cache_bytes", cfg.CacheBytes)
	if g.asn != nil {
		amd := g.asn.Metadata()
		if isDemoDB(amd.DatabaseType, amd.Description) {
			logger.Warn("ASN database holds shopguard DEMO data; do not use it in production", "path", cfg.ASNPath)
		}
		logger.Info("ASN database opened", "path", cfg.ASNPath, "type", amd.DatabaseType,
			"built", amd.BuildTime().UTC().Format("2006-01-02"))
	}
	return g, nil
}

// openASNDB opens path with geoip2 and makes sure ASN lookups work there.
func openASNDB(path string) (*geoip2.Reader, error) {
	db, err := geoip2.Open(path)
	if err != nil {
		var unknown geoip2.UnknownDatabaseTypeError
		if errors.As(err, &unknown) {
			if db != nil {
				_ = db.Close()
			}
			return nil, fmt.Errorf("ASN database %s: type %q is not an ASN database (want GeoLite2-ASN): %w", path, unknown.DatabaseType, err)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("ASN database %s: file does not exist: %w", path, err)
		}
		return nil, fmt.Errorf("ASN database %s: cannot read it as a MaxMind DB: %w", path, err)
	}
	if _, err := db.ASN(netip.IPv6Unspecified()); err != nil {
		typ := db.Metadata().DatabaseType
		_ = db.Close()
		var invalid geoip2.InvalidMethodError
		if errors.As(err, &invalid) {
			return nil, fmt.Errorf("ASN database %s: type %q is not an ASN database (want GeoLite2-ASN): %w", path, typ, err)
		}
		return nil, fmt.Errorf("ASN database %s: probe lookup: %w", path, err)
	}
	return db, nil
}

// openCityDB opens path with geoip2 and makes sure City lookups give
// coordinates there.
func openCityDB(path string) (*geoip2.Reader, error) {
	db, err := geoip2.Open(path)
	if err != nil {
		var unknown geoip2.UnknownDatabaseTypeError
		if errors.As(err, &unknown) {
			if db != nil {
				_ = db.Close() // geoip2 returns an open reader along with this error
			}
			return nil, fmt.Errorf("GeoIP database %s: type %q is not a City database (want GeoLite2-City or GeoIP2-City): %w",
				path, unknown.DatabaseType, err)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("GeoIP database %s: file does not exist: %w", path, err)
		}
		return nil, fmt.Errorf("GeoIP database %s: cannot read it as a MaxMind DB: %w", path, err)
	}
	typ := db.Metadata().DatabaseType
	// geoip2 allows City lookups on Country databases, which have no
	// coordinates at all: every address would be unlocated, silently.
	if strings.Contains(typ, "Country") {
		_ = db.Close()
		return nil, fmt.Errorf("GeoIP database %s: type %q has no city coordinates (want GeoLite2-City or GeoIP2-City)", path, typ)
	}
	if _, err := db.City(netip.IPv6Unspecified()); err != nil {
		_ = db.Close()
		var invalid geoip2.InvalidMethodError
		if errors.As(err, &invalid) {
			return nil, fmt.Errorf("GeoIP database %s: type %q is not a City database (want GeoLite2-City or GeoIP2-City): %w", path, typ, err)
		}
		return nil, fmt.Errorf("GeoIP database %s: probe lookup: %w", path, err)
	}
	return db, nil
}

// isDemoDB reports whether database metadata marks synthetic data, as
// ingest/geodemo writes it: "demo" in the type or a description.
func isDemoDB(typ string, description map[string]string) bool {
	if strings.Contains(strings.ToLower(typ), "demo") {
		return true
	}
	for _, d := range description {
		if strings.Contains(strings.ToLower(d), "demo") {
			return true
		}
	}
	return false
}

// Locate returns where ip is. It returns false, without a lookup, for
// addresses Locatable rejects, and false for addresses the database has no
// coordinates for. IPv4-mapped IPv6 addresses are located as IPv4.
func (g *DB) Locate(ip netip.Addr) (shopguard.Geo, bool) {
	ip = ip.Unmap()
	if !Locatable(ip) {
		g.skipped.Inc()
		return shopguard.Geo{}, false
	}
	key := ip.As16()
	if g.cache != nil {
		var buf [geoipValueBuf]byte
		if v := g.cache.Get(buf[:0], key[:]); len(v) > 0 {
			geo, ok := g.decodeGeo(v)
			g.count(ok)
			return geo, ok
		}
	}
	geo, ok, err := g.lookup(ip)
	if err != nil {
		// Not cached: the reader may have been closed, or one record is
		// bad; neither says the address has no location.
		if !errors.Is(err, errGeoIPClosed) && g.loggedLookupErr.CompareAndSwap(false, true) {
			g.log.Warn("GeoIP lookup error; such addresses count as unlocated (logged once)", "path", g.path, "ip", ip, "err", err)
		}
		g.unlocated.Inc()
		return shopguard.Geo{}, false
	}
	if g.cache != nil {
		var buf [geoipValueBuf]byte
		if v, cacheable := encodeGeo(buf[:0], geo, ok); cacheable {
			g.cache.Set(key[:], v)
		}
	}
	g.count(ok)
	return geo, ok
}

func (g *DB) count(located bool) {
	if located {
		g.located.Inc()
	} else {
		g.unlocated.Inc()
	}
}

var errGeoIPClosed = errors.New("GeoIP database closed")

// lookup asks the database. A record without coordinates is unlocated.
func (g *DB) lookup(ip netip.Addr) (shopguard.Geo, bool, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.db == nil {
		return shopguard.Geo{}, false, errGeoIPClosed
	}
	rec, err := g.db.City(ip)
	if err != nil {
		return shopguard.Geo{}, false, err
	}
	loc := rec.Location
	if !loc.HasCoordinates() || math.IsNaN(*loc.Latitude) || math.IsNaN(*loc.Longitude) {
		return shopguard.Geo{}, false, nil
	}
	geo := shopguard.Geo{Lat: *loc.Latitude, Lon: *loc.Longitude, RadiusKM: loc.AccuracyRadius}
	if country, city := rec.Country.ISOCode, rec.City.Names.English; len(country) <= math.MaxUint8 {
		geo.Country, geo.City = g.places.add(country, city)
	} else {
		geo.Country, geo.City = country, city // not cached either
	}
	if g.asn != nil {
		as, err := g.asn.ASN(ip)
		if err != nil {
			return shopguard.Geo{}, false, err
		}
		if as.AutonomousSystemNumber > 0 && as.AutonomousSystemNumber <= math.MaxUint32 {
			geo.ASN = uint32(as.AutonomousSystemNumber)
			geo.ASOrg = g.places.name(as.AutonomousSystemOrganization)
		}
	}
	return geo, true, nil
}

// Close releases the database and the cache and unregisters the metrics. It
// is idempotent.
func (g *DB) Close() error {
	g.mu.Lock()
	db, asn := g.db, g.asn
	g.db, g.asn = nil, nil
	g.mu.Unlock()
	if db == nil {
		return nil
	}
	if asn != nil {
		if err := asn.Close(); err != nil {
			_ = db.Close()
			return fmt.Errorf("close ASN database: %w", err)
		}
	}
	if g.reg != nil {
		g.reg.Unregister(g.collector)
		g.reg.Unregister(g.lookups)
	}
	if g.cache != nil {
		g.cache.Reset()
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close GeoIP database %s: %w", g.path, err)
	}
	return nil
}

// Cached values. A located address is
//
//	'L' lat(8) lon(8) radius(2) asn(4) len(place)(1) place org
//
// where place is len(country)(1) country city, asn 0 is none and org its
// organisation (interned like the place), with floats as IEEE 754 bits, little endian; an unlocated one is the single
// byte 'U'. Values are never empty, so an empty Get result is a cache miss.
const (
	geoipLocated   = 'L'
	geoipUnlocated = 'U'
	geoipHeader    = 1 + 8 + 8 + 2 + 4 + 1
	// geoipValueBuf holds the value of nearly every place on the stack;
	// a longer one still works, through an allocation.
	geoipValueBuf = 128
)

// encodeGeo appends the cache value for a lookup result to dst. It reports
// false when the place does not fit the format (then the result is not
// cached).
func encodeGeo(dst []byte, geo shopguard.Geo, located bool) ([]byte, bool) {
	if !located {
		return append(dst, geoipUnlocated), true
	}
	if 1+len(geo.Country)+len(geo.City) > math.MaxUint8 {
		return dst, false
	}
	dst = append(dst, geoipLocated)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(geo.Lat))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(geo.Lon))
	dst = binary.LittleEndian.AppendUint16(dst, geo.RadiusKM)
	dst = binary.LittleEndian.AppendUint32(dst, geo.ASN)
	dst = append(dst, byte(1+len(geo.Country)+len(geo.City)), byte(len(geo.Country)))
	dst = append(dst, geo.Country...)
	dst = append(dst, geo.City...)
	dst = append(dst, geo.ASOrg...)
	return dst, true
}

// decodeGeo reverses encodeGeo without allocating. A value it cannot read
// counts as unlocated.
func (g *DB) decodeGeo(v []byte) (shopguard.Geo, bool) {
	if v[0] != geoipLocated || len(v) < geoipHeader {
		return shopguard.Geo{}, false
	}
	end := geoipHeader + int(v[geoipHeader-1])
	if end > len(v) || end == geoipHeader || geoipHeader+1+int(v[geoipHeader]) > end {
		return shopguard.Geo{}, false
	}
	geo := shopguard.Geo{
		Lat:      math.Float64frombits(binary.LittleEndian.Uint64(v[1:9])),
		Lon:      math.Float64frombits(binary.LittleEndian.Uint64(v[9:17])),
		RadiusKM: binary.LittleEndian.Uint16(v[17:19]),
		ASN:      binary.LittleEndian.Uint32(v[19:23]),
	}
	geo.Country, geo.City = g.places.get(v[geoipHeader:end])
	if end < len(v) {
		geo.ASOrg = g.places.lookup(v[end:])
	}
	return geo, true
}

// geoipPlaces interns place names through package unique, whose lookups
// take no lock and, for a value already present, do not allocate. A place is
// interned whole, as its cache encoding len(country) country city, and its
// two names are substrings of that canonical string, so one lookup serves
// both. unique drops a value once no Handle to it is left, so the table
// keeps one Handle per place: a place seen once stays canonical and cache
// hits never copy it again. It grows to the number of distinct places the
// database returned, which a City database bounds (some 100,000).
type geoipPlaces struct {
	mu   sync.Mutex
	keep map[unique.Handle[string]]struct{}
}

// get returns the names encoded in b (len(country) country city) as
// canonical strings. The conversion string(b) does not allocate:
// unique.Make copies only what it inserts.
func (p *geoipPlaces) get(b []byte) (country, city string) {
	return splitPlace(p.lookup(b))
}

// lookup returns the canonical string of b, which add or name interned.
func (p *geoipPlaces) lookup(b []byte) string {
	return unique.Make(string(b)).Value()
}

// add interns the place of country and city and pins it. It runs on the
// database path only, where a map insert is cheap by comparison.
func (p *geoipPlaces) add(country, city string) (string, string) {
	var buf [geoipValueBuf]byte
	b := append(buf[:0], byte(len(country)))
	b = append(append(b, country...), city...)
	return splitPlace(p.name(string(b)))
}

// name interns s (a place's encoding, or an autonomous system's
// organisation) and pins it, so that later cache hits share it.
func (p *geoipPlaces) name(s string) string {
	if s == "" {
		return ""
	}
	h := unique.Make(s)
	p.mu.Lock()
	if p.keep == nil {
		p.keep = map[unique.Handle[string]]struct{}{}
	}
	p.keep[h] = struct{}{}
	p.mu.Unlock()
	return h.Value()
}

func splitPlace(s string) (country, city string) {
	n := int(s[0])
	return s[1 : 1+n], s[1+n:]
}

// geoipCacheCollector exports the GeoIP cache's own statistics, read from
// fastcache at scrape time. A disabled cache reports zeros.
type geoipCacheCollector struct {
	cache          *fastcache.Cache
	hits, misses   *prometheus.Desc
	entries, bytes *prometheus.Desc
}

func newGeoIPCacheCollector(c *fastcache.Cache) *geoipCacheCollector {
	return &geoipCacheCollector{
		cache:   c,
		hits:    prometheus.NewDesc("shopguard_geoip_cache_hits_total", "GeoIP cache lookups answered from the cache (located or unlocated).", nil, nil),
		misses:  prometheus.NewDesc("shopguard_geoip_cache_misses_total", "GeoIP cache lookups that went to the database.", nil, nil),
		entries: prometheus.NewDesc("shopguard_geoip_cache_entries", "Addresses held in the GeoIP cache.", nil, nil),
		bytes:   prometheus.NewDesc("shopguard_geoip_cache_bytes", "Bytes the GeoIP cache uses.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *geoipCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.hits
	ch <- c.misses
	ch <- c.entries
	ch <- c.bytes
}

// Collect implements prometheus.Collector.
func (c *geoipCacheCollector) Collect(ch chan<- prometheus.Metric) {
	var s fastcache.Stats
	if c.cache != nil {
		c.cache.UpdateStats(&s)
	}
	hits := s.GetCalls - min(s.Misses, s.GetCalls)
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(hits))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(s.EntriesCount))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.BytesSize))
}

// Locatable reports whether ip is a public unicast address, one a GeoIP
// database can meaningfully place. It is false for the invalid, unspecified,
// loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared CGNAT
// (100.64/10), link-local, multicast, documentation (192.0.2/24,
// 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20), benchmarking
// (198.18/15), "this network" (0/8), reserved (240/4 and the broadcast
// address) and IETF special-purpose (192.0.0/24, 2001::/23 including Teredo,
// ::/8, NAT64, discard-only, site-local) addresses, and for IPv4-mapped
// forms of any of them. The travel rule uses it to leave such addresses out.
func Locatable(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		// IsGlobalUnicast is false for unspecified, loopback, link-local
		// and multicast addresses and the IPv4 broadcast address.
		return false
	}
	list := unlocatable6
	if ip.Is4() {
		list = unlocatable4
	}
	for _, p := range list {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// The special-purpose ranges Locatable rejects beyond what the netip
// predicates cover (IANA IPv4 and IPv6 special-purpose address registries).
var (
	unlocatable4 = geoipPrefixes(
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24",
		"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
	)
	unlocatable6 = geoipPrefixes(
		"::/8", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
		"3fff::/20", "5f00::/16", "fec0::/10",
	)
)

func geoipPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// HasASN reports whether the DB was opened with an ASN database, so that
// Locate fills Geo.ASN.
func (g *DB) HasASN() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.asn != nil
}
