package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/alecthomas/units"
	"go.yaml.in/yaml/v3"

	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest/geoip"
)

// StateConfig is the state section: one memory budget for all of
// shopguard's state (issue 17; README "Memory budget").
type StateConfig struct {
	// MemoryBytes, when set, is what the process may use: it sizes
	// detect.max_accounts, detect.max_sources and geoip.cache_bytes, which
	// must then not be set as well, and becomes Go's soft memory limit
	// (unless GOMEMLIMIT is set), so that the collector keeps the heap
	// within it instead of letting it grow to twice what is live. 0: the
	// caps as configured, and no limit.
	MemoryBytes byteSize `yaml:"memory_bytes"`
}

// byteSize is a size in bytes, written with a unit (512MiB, 2GiB; KB, MB
// and GB are powers of 1024 too, as in Prometheus) or as a plain count.
type byteSize int64

func (b *byteSize) UnmarshalYAML(n *yaml.Node) error {
	if v, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
		*b = byteSize(v)
		return nil
	}
	v, err := units.ParseBase2Bytes(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a size such as 2GiB, 512MiB or a number of bytes", n.Value)
	}
	*b = byteSize(v)
	return nil
}

// What the budget is made of (README "Memory budget"). Accounts and the
// GeoIP cache live outside the Go heap, in memory the collector neither
// scans nor counts: an account costs its record's slot and its index
// entry, about 190 bytes with a profile, two located logins and two
// sessions (bench --workload accounts: 232 bytes of peak RSS an account,
// with the hot set), planned as 250. The rest is Go heap: the runtime,
// buffers and the hot set of decoded accounts (stateFixedBytes), and the
// sources, about 150 bytes plus 48 per account failed against, planned as
// 250, of which only stateUsable is planned so that the collector has room
// to work under the limit.
const (
	minStateBudget   = 256 << 20
	stateFixedBytes  = 112 << 20 // runtime, read buffers, decoders, sinks, 65,536 hot accounts
	stateUsable      = 0.70
	stateAccountCost = 250
	stateSourceCost  = 250
	stateAccountPart = 0.85 // of what is left for entries; sources the rest
)

// stateCaps are the caps a budget gives, and the Go heap's share of it.
type stateCaps struct {
	MaxAccounts, MaxSources, CacheBytes int
	HeapBytes                           int64
}

// capsFor sizes the caps for a budget of b bytes: the GeoIP cache 1/64 of
// it (at least its 32 MiB minimum), the fixed part, and of the rest 85% for
// accounts and 15% for sources. The heap's share is what neither the cache
// nor the accounts take.
func capsFor(b int64) stateCaps {
	cache := max(int64(geoip.DefaultConfig.CacheBytes), b/64)
	rest := float64(b - stateFixedBytes - cache)
	accounts := int(max(rest*stateAccountPart/stateAccountCost, 1))
	return stateCaps{
		MaxAccounts: accounts,
		MaxSources:  int(max(rest*(1-stateAccountPart)*stateUsable/stateSourceCost, 1)),
		CacheBytes:  int(cache),
		HeapBytes:   b - cache - int64(accounts)*stateAccountCost,
	}
}

// applyState sizes the caps of cfg from state.memory_bytes, if set. A cap
// set beside it is an error naming both keys.
func (c *Config) applyState() error {
	b := int64(c.State.MemoryBytes)
	if b == 0 {
		return nil
	}
	if b < minStateBudget {
		return fmt.Errorf("state.memory_bytes: %d is below the minimum of 256MiB", b)
	}
	var errs []error
	if c.Detect.MaxAccounts != detect.DefaultConfig.MaxAccounts {
		errs = append(errs, errors.New("detect.max_accounts: state.memory_bytes sizes it; set one of the two"))
	}
	if c.Detect.MaxSources != detect.DefaultConfig.MaxSources {
		errs = append(errs, errors.New("detect.max_sources: state.memory_bytes sizes it; set one of the two"))
	}
	if c.GeoIP.CacheBytes != geoip.DefaultConfig.CacheBytes {
		errs = append(errs, errors.New("geoip.cache_bytes: state.memory_bytes sizes it; set one of the two"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	caps := capsFor(b)
	c.Detect.MaxAccounts, c.Detect.MaxSources, c.GeoIP.CacheBytes = caps.MaxAccounts, caps.MaxSources, caps.CacheBytes
	return nil
}

// applyMemoryLimit sets Go's soft memory limit to the heap's share of
// state.memory_bytes (what the GeoIP cache and the accounts, outside the
// heap, leave) unless GOMEMLIMIT sets one, and logs the budget.
func applyMemoryLimit(c Config, log *slog.Logger) {
	b := int64(c.State.MemoryBytes)
	if b == 0 {
		return
	}
	limit := "state.memory_bytes"
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(capsFor(b).HeapBytes)
	} else {
		limit = "GOMEMLIMIT"
	}
	log.Info("memory budget", "memory_bytes", b, "max_accounts", c.Detect.MaxAccounts,
		"max_sources", c.Detect.MaxSources, "geoip_cache_bytes", c.GeoIP.CacheBytes,
		"go_memory_limit", debug.SetMemoryLimit(-1), "go_memory_limit_from", limit)
}
