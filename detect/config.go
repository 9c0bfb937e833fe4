package detect

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/shopguard/shopguard"
)

// Config holds every threshold and window of the rules. The zero value is
// not useful: start from DefaultConfig, which is what an absent key means.
type Config struct {
	ImpossibleTravel   TravelConfig     `yaml:"impossible_travel"`
	BruteForce         BruteForceConfig `yaml:"brute_force"`
	CredentialStuffing StuffingConfig   `yaml:"credential_stuffing"`
	AccountTakeover    TakeoverConfig   `yaml:"account_takeover"`
	BulkExport         ExportConfig     `yaml:"bulk_export"`
	Profile            ProfileConfig    `yaml:"profile"`
	UnfamiliarLogin    UnfamiliarConfig `yaml:"unfamiliar_login"`
	SessionHijack      HijackConfig     `yaml:"session_hijack"`
	RiskyChange        RiskyConfig      `yaml:"risky_change"`
	FailureBurst       BurstConfig      `yaml:"failure_burst"`
	// Campaign rules (SPEC §3.2): wave.go, watchlist.go.
	StuffingWave WaveConfig      `yaml:"stuffing_wave"`
	Watchlist    WatchlistConfig `yaml:"watchlist"`
	// LeakedCredentialUse configures leaked_credential_use (leaked.go).
	LeakedCredentialUse LeakedConfig `yaml:"leaked_credential_use"`
	// Allowlist names networks (office VPNs, the platform's own ranges)
	// whose logins never count for impossible_travel.
	Allowlist []Network `yaml:"allowlist"`
	// MaxAccounts and MaxSources cap the number of tracked accounts and
	// sources (addresses and blocks). Past the cap the oldest generation
	// of entries is evicted and counted.
	MaxAccounts int `yaml:"max_accounts"`
	MaxSources  int `yaml:"max_sources"`
	// HotAccounts is how many accounts are kept decoded between events
	// (accounts.go); 0 is 65,536. Not a setting: a scaled-out instance
	// divides it among its tasks, as it divides the caps.
	HotAccounts int `yaml:"-"`
}

// TravelConfig configures impossible_travel.
type TravelConfig struct {
	Enabled  bool               `yaml:"enabled"`
	Severity shopguard.Severity `yaml:"severity"`
	// MaxSpeedKMH is the fastest plausible travel; faster is impossible.
	MaxSpeedKMH float64 `yaml:"max_speed_kmh"`
	// MinDistanceKM is the least distance, after subtracting both accuracy
	// radii, that can count at all.
	MinDistanceKM float64 `yaml:"min_distance_km"`
	// Suppress is how long after a finding the same account stays quiet.
	Suppress time.Duration `yaml:"suppress"`
}

// BruteForceConfig configures brute_force.
type BruteForceConfig struct {
	Enabled   bool               `yaml:"enabled"`
	Severity  shopguard.Severity `yaml:"severity"`
	Threshold int                `yaml:"threshold"` // failed logins for one account
	Window    time.Duration      `yaml:"window"`
}

// StuffingConfig configures credential_stuffing.
type StuffingConfig struct {
	Enabled   bool               `yaml:"enabled"`
	Severity  shopguard.Severity `yaml:"severity"`
	Threshold int                `yaml:"threshold"` // distinct accounts failed from one source
	Window    time.Duration      `yaml:"window"`
	// IPv4Prefix and IPv6Prefix are the blocks an address is grouped into,
	// so that rotating addresses inside a block does not evade the rule.
	IPv4Prefix int `yaml:"ipv4_prefix"`
	IPv6Prefix int `yaml:"ipv6_prefix"`
	// IPv6WidePrefix is a second, wider IPv6 block (SPEC §3.2: the /48),
	// with the same threshold; 0 turns it off (stuffing48.go).
	IPv6WidePrefix int `yaml:"ipv6_wide_prefix"`
	// ASNThreshold and ASNHostingThreshold are the distinct accounts
	// failed from one autonomous system within Window, for a hosting ASN
	// (unfamiliar_login.hosting_asns) and any other; they need an ASN
	// database, and 0 turns the level off (stuffingasn.go).
	ASNThreshold        int `yaml:"asn_threshold"`
	ASNHostingThreshold int `yaml:"asn_hosting_threshold"`
}

// TakeoverConfig configures account_takeover.
type TakeoverConfig struct {
	Enabled  bool               `yaml:"enabled"`
	Severity shopguard.Severity `yaml:"severity"`
	// Failures is how many failed logins on the account from the same
	// address within Window make its next success a takeover.
	Failures int           `yaml:"failures"`
	Window   time.Duration `yaml:"window"`
	// AfterStuffing makes a success from a source flagged for
	// credential_stuffing within Window a takeover too.
	AfterStuffing bool `yaml:"after_stuffing"`
}

// ExportConfig configures bulk_export.
type ExportConfig struct {
	Enabled   bool               `yaml:"enabled"`
	Severity  shopguard.Severity `yaml:"severity"`
	Threshold int64              `yaml:"threshold"` // records by one account within Window
	Window    time.Duration      `yaml:"window"`
	// AfterCompromise is how long after an impossible_travel or
	// account_takeover finding any export of that account is raised with
	// CompromiseSeverity.
	AfterCompromise    time.Duration      `yaml:"after_compromise"`
	CompromiseSeverity shopguard.Severity `yaml:"compromise_severity"`
}

// ProfileConfig configures the account profiles of SPEC §3.1.
type ProfileConfig struct {
	MaxEntries     int `yaml:"max_entries"`     // per property
	ForgetDays     int `yaml:"forget_days"`     // of event time unseen
	LearningLogins int `yaml:"learning_logins"` // successful logins to leave learning
	LearningDays   int `yaml:"learning_days"`   // distinct days to leave learning
	// TrustDays is on how many distinct days without a finding a property
	// first seen on a login under suspicion must be seen to become familiar.
	TrustDays int `yaml:"trust_days"`
	// OpenFinding is how long a finding keeps the account under suspicion.
	OpenFinding time.Duration `yaml:"open_finding"`
}

// UnfamiliarConfig configures unfamiliar_login.
type UnfamiliarConfig struct {
	Enabled  bool               `yaml:"enabled"`
	Severity shopguard.Severity `yaml:"severity"`
	// RiskySeverity applies when the network is a hosting ASN or the
	// client a script or headless browser.
	RiskySeverity shopguard.Severity `yaml:"risky_severity"`
	HostingASNs   []uint32           `yaml:"hosting_asns"`
}

// HijackConfig configures session_hijack.
type HijackConfig struct {
	Enabled  bool               `yaml:"enabled"`
	Severity shopguard.Severity `yaml:"severity"`
	Window   time.Duration      `yaml:"window"`
}

// RiskyConfig configures risky_change.
type RiskyConfig struct {
	Enabled  bool               `yaml:"enabled"`
	Severity shopguard.Severity `yaml:"severity"`
	Window   time.Duration      `yaml:"window"` // after the risky login; also the once-per-action window
}

// BurstConfig configures failure_burst.
type BurstConfig struct {
	Enabled   bool               `yaml:"enabled"`
	Severity  shopguard.Severity `yaml:"severity"`
	Threshold int                `yaml:"threshold"` // failed logins from one address
	Window    time.Duration      `yaml:"window"`
	Suppress  time.Duration      `yaml:"suppress"`
}

// DefaultHostingASNs are large clouds and VPS hosts.
var DefaultHostingASNs = []uint32{16509, 14618, 15169, 396982, 8075, 14061, 16276, 24940, 63949,
	20473, 45102, 132203, 31898, 51167, 12876, 9009, 60781}

// DefaultConfig holds the defaults of SPEC §3.
var DefaultConfig = Config{
	ImpossibleTravel: TravelConfig{Enabled: true, Severity: shopguard.SeverityHigh,
		MaxSpeedKMH: 1000, MinDistanceKM: 500, Suppress: time.Hour},
	BruteForce: BruteForceConfig{Enabled: true, Severity: shopguard.SeverityMedium,
		Threshold: 10, Window: 10 * time.Minute},
	CredentialStuffing: StuffingConfig{Enabled: true, Severity: shopguard.SeverityHigh,
		Threshold: 20, Window: 10 * time.Minute, IPv4Prefix: 24, IPv6Prefix: 64, IPv6WidePrefix: 48,
		ASNThreshold: 0, ASNHostingThreshold: 20}, // 0: see the README (Deviations)
	AccountTakeover: TakeoverConfig{Enabled: true, Severity: shopguard.SeverityCritical,
		Failures: 5, Window: time.Hour, AfterStuffing: true},
	BulkExport: ExportConfig{Enabled: true, Severity: shopguard.SeverityHigh,
		Threshold: 10000, Window: time.Hour, AfterCompromise: time.Hour,
		CompromiseSeverity: shopguard.SeverityCritical},
	Profile: ProfileConfig{MaxEntries: 20, ForgetDays: 90, LearningLogins: 5, LearningDays: 3,
		TrustDays: 3, OpenFinding: 24 * time.Hour},
	UnfamiliarLogin: UnfamiliarConfig{Enabled: true, Severity: shopguard.SeverityMedium,
		RiskySeverity: shopguard.SeverityHigh, HostingASNs: DefaultHostingASNs},
	SessionHijack: HijackConfig{Enabled: true, Severity: shopguard.SeverityHigh, Window: 24 * time.Hour},
	RiskyChange:   RiskyConfig{Enabled: true, Severity: shopguard.SeverityCritical, Window: time.Hour},
	FailureBurst: BurstConfig{Enabled: true, Severity: shopguard.SeverityMedium,
		Threshold: 5, Window: time.Minute, Suppress: time.Hour},
	MaxAccounts:         2_000_000,
	MaxSources:          2_000_000,
	StuffingWave:        DefaultWaveConfig,
	Watchlist:           DefaultWatchlistConfig,
	LeakedCredentialUse: LeakedConfig{Enabled: true, Severity: shopguard.SeverityCritical, Suppress: time.Hour},
}

// Limits that keep one key's state small whatever the configuration.
const (
	maxThreshold = 10_000
	maxWindow    = 7 * 24 * time.Hour
)

// Validate returns every problem of c at once, each naming its key below
// "detect." as it is spelled in the YAML file.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("detect.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	severity := func(key string, s shopguard.Severity) {
		if !s.Valid() {
			bad(key, "%q is not one of low, medium, high, critical", s)
		}
	}
	window := func(key string, d time.Duration) {
		if d <= 0 || d > maxWindow {
			bad(key, "must be a duration above 0 and at most %s, got %s", maxWindow, d)
		}
	}
	count := func(key string, n int64) {
		if n < 1 || n > maxThreshold {
			bad(key, "must be between 1 and %d, got %d", maxThreshold, n)
		}
	}

	t := c.ImpossibleTravel
	severity("impossible_travel.severity", t.Severity)
	// Written so that NaN fails too (YAML has .nan and .inf).
	if !(t.MaxSpeedKMH > 0) || math.IsInf(t.MaxSpeedKMH, 1) {
		bad("impossible_travel.max_speed_kmh", "must be a finite number above 0, got %g", t.MaxSpeedKMH)
	}
	if !(t.MinDistanceKM >= 0) || math.IsInf(t.MinDistanceKM, 1) {
		bad("impossible_travel.min_distance_km", "must be a finite number, not negative, got %g", t.MinDistanceKM)
	}
	window("impossible_travel.suppress", t.Suppress)

	b := c.BruteForce
	severity("brute_force.severity", b.Severity)
	count("brute_force.threshold", int64(b.Threshold))
	window("brute_force.window", b.Window)

	s := c.CredentialStuffing
	severity("credential_stuffing.severity", s.Severity)
	count("credential_stuffing.threshold", int64(s.Threshold))
	window("credential_stuffing.window", s.Window)
	if s.IPv4Prefix < 8 || s.IPv4Prefix > 32 {
		bad("credential_stuffing.ipv4_prefix", "must be between 8 and 32, got %d", s.IPv4Prefix)
	}
	if s.IPv6Prefix < 16 || s.IPv6Prefix > 128 {
		bad("credential_stuffing.ipv6_prefix", "must be between 16 and 128, got %d", s.IPv6Prefix)
	}

	a := c.AccountTakeover
	severity("account_takeover.severity", a.Severity)
	count("account_takeover.failures", int64(a.Failures))
	window("account_takeover.window", a.Window)

	e := c.BulkExport
	severity("bulk_export.severity", e.Severity)
	severity("bulk_export.compromise_severity", e.CompromiseSeverity)
	if e.Threshold < 1 {
		bad("bulk_export.threshold", "must be at least 1, got %d", e.Threshold)
	}
	window("bulk_export.window", e.Window)
	window("bulk_export.after_compromise", e.AfterCompromise)

	p := c.Profile
	if p.MaxEntries < 1 || p.MaxEntries > 64 {
		bad("profile.max_entries", "must be between 1 and 64, got %d", p.MaxEntries)
	}
	if p.ForgetDays < 1 || p.ForgetDays > 3650 {
		bad("profile.forget_days", "must be between 1 and 3650, got %d", p.ForgetDays)
	}
	count("profile.learning_logins", int64(p.LearningLogins))
	if p.LearningDays < 1 || p.LearningDays > 255 {
		bad("profile.learning_days", "must be between 1 and 255, got %d", p.LearningDays)
	}
	if p.TrustDays < 1 || p.TrustDays > 255 {
		bad("profile.trust_days", "must be between 1 and 255, got %d", p.TrustDays)
	}
	window("profile.open_finding", p.OpenFinding)
	severity("unfamiliar_login.severity", c.UnfamiliarLogin.Severity)
	severity("unfamiliar_login.risky_severity", c.UnfamiliarLogin.RiskySeverity)
	severity("session_hijack.severity", c.SessionHijack.Severity)
	window("session_hijack.window", c.SessionHijack.Window)
	severity("risky_change.severity", c.RiskyChange.Severity)
	window("risky_change.window", c.RiskyChange.Window)
	fb := c.FailureBurst
	severity("failure_burst.severity", fb.Severity)
	count("failure_burst.threshold", int64(fb.Threshold))
	window("failure_burst.window", fb.Window)
	window("failure_burst.suppress", fb.Suppress)
	c.StuffingWave.validate(bad)
	c.Watchlist.validate(bad)
	severity("leaked_credential_use.severity", c.LeakedCredentialUse.Severity)
	window("leaked_credential_use.suppress", c.LeakedCredentialUse.Suppress)
	c.CredentialStuffing.validateCampaign(bad)

	if c.MaxAccounts < 1 {
		bad("max_accounts", "must be at least 1, got %d", c.MaxAccounts)
	}
	if c.MaxSources < 1 {
		bad("max_sources", "must be at least 1, got %d", c.MaxSources)
	}
	for i, n := range c.Allowlist {
		if !n.IsValid() {
			bad(fmt.Sprintf("allowlist[%d]", i), "is not a network")
		}
	}
	return errors.Join(errs...)
}

// Network is an allowlisted network: CIDR notation, or a bare address for
// a single host.
type Network struct{ netip.Prefix }

// UnmarshalText parses "10.8.0.0/16", "2001:db8::/32" or "203.0.113.9".
func (n *Network) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%q is neither a CIDR network nor an address", s)
		}
		n.Prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		return nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("%q is neither a CIDR network nor an address", s)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	n.Prefix = p.Masked()
	return nil
}

// MarshalText writes the network in CIDR notation.
func (n Network) MarshalText() ([]byte, error) { return []byte(n.String()), nil }
