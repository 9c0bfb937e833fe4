package ingest

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/shopguard/shopguard"
)

// DecodeFunc fills ev from one line of a file or one Kafka message value. It
// is the seam between the sources and the input formats of SPEC §7: every
// source calls one, whatever the format.
//
// It returns nil for an event, a *DecodeError (matching ErrMalformed) for
// input that is not a valid event, or ErrUnmatched for input that is well
// formed but describes no audit event (an nginx line that no route
// matches), which the source counts as unmatched and skips. ev's strings
// alias line as with Decode. A DecodeFunc is safe for concurrent use.
type DecodeFunc func(line []byte, ev *shopguard.Event) error

// ErrUnmatched is returned by a DecodeFunc for a line that is not an audit
// event of interest: counted in shopguard_events_unmatched_total, skipped,
// never invalid.
var ErrUnmatched = errors.New("unmatched: no route matches")

// The input formats of SPEC §7.
const (
	FormatShopguard = "shopguard"
	FormatECS       = "ecs"
	FormatOCSF      = "ocsf"
	FormatNginx     = "nginx"
	FormatMapping   = "mapping"
)

// InputConfig is the input section of the configuration (SPEC §7).
type InputConfig struct {
	// Format is shopguard (default), ecs, ocsf, nginx or mapping.
	Format string `yaml:"format"`
	// Actions maps the source's action names to SPEC §1 actions. It adds
	// to, and overrides, the built-in table of common names; a name that
	// already is a §1 action is kept.
	Actions map[string]string `yaml:"actions"`
	Nginx   NginxConfig       `yaml:"nginx"`
	Mapping MappingConfig     `yaml:"mapping"`
}

// NginxConfig describes nginx access-log lines.
type NginxConfig struct {
	// LogFormat is the log_format string in nginx syntax.
	LogFormat string `yaml:"log_format"`
	// Fields maps event fields (ip, time, shop_id, actor, user_agent,
	// session_id, reason, resource, id, records) to variables ($name).
	Fields map[string]string `yaml:"fields"`
	// Routes give the action; the first that matches wins.
	Routes []NginxRoute `yaml:"routes"`
}

// NginxRoute maps requests to an action. An empty method, path or status
// matches anything.
type NginxRoute struct {
	Method string   `yaml:"method"`
	Path   string   `yaml:"path"`   // regular expression on the path without query string
	Status []string `yaml:"status"` // codes (302) or classes (4xx)
	Action string   `yaml:"action"`
}

// MappingConfig names, for each SPEC §1 field, a dotted JSON path.
type MappingConfig struct {
	Time       string `yaml:"time"`
	TimeLayout string `yaml:"time_layout"` // rfc3339 (default), unix, unix_ms or a Go layout
	ShopID     string `yaml:"shop_id"`
	Actor      string `yaml:"actor"`
	Action     string `yaml:"action"`
	IP         string `yaml:"ip"`
	UserAgent  string `yaml:"user_agent"`
	SessionID  string `yaml:"session_id"`
	Reason     string `yaml:"reason"`
	Records    string `yaml:"records"`
	Resource   string `yaml:"resource"`
	ID         string `yaml:"id"`
}

// DefaultInputConfig is the native format.
var DefaultInputConfig = InputConfig{Format: FormatShopguard}

// specActions are the action names of SPEC §1.
var specActions = []string{"login.success", "login.failure", "logout", "password.change",
	"password.reset", "mfa.enable", "mfa.disable", "email.change", "apikey.create",
	"payout.change", "staff.add", "app.install", "customers.export", "orders.export", "other"}

func isSpecAction(s string) bool {
	for _, a := range specActions {
		if a == s {
			return true
		}
	}
	return false
}

// defaultActions are common names of the actions in audit logs, SIEM
// schemas and frameworks.
var defaultActions = map[string]string{
	"login": "login.success", "user_login": "login.success", "logged_in": "login.success",
	"login_success": "login.success", "logon": "login.success", "signin": "login.success", "sign_in": "login.success",
	"login_failed": "login.failure", "login_failure": "login.failure", "failed_login": "login.failure",
	"logon_failed": "login.failure", "user_login_failed": "login.failure", "signin_failed": "login.failure",
	"logoff": "logout", "user_logout": "logout", "logged_out": "logout", "signout": "logout", "sign_out": "logout",
	"password_change": "password.change", "change_password": "password.change", "password_changed": "password.change",
	"password_reset": "password.reset", "reset_password": "password.reset",
	"mfa_enable": "mfa.enable", "mfa_enabled": "mfa.enable", "2fa_enabled": "mfa.enable",
	"mfa_disable": "mfa.disable", "mfa_disabled": "mfa.disable", "2fa_disabled": "mfa.disable",
	"email_change": "email.change", "email_changed": "email.change", "change_email": "email.change",
	"api_key_created": "apikey.create", "apikey_create": "apikey.create", "create_api_key": "apikey.create",
	"payout_change": "payout.change", "bank_account_changed": "payout.change",
	"staff_add": "staff.add", "user_invited": "staff.add", "staff_invited": "staff.add",
	"app_install": "app.install", "app_installed": "app.install",
	"customers_export": "customers.export", "export_customers": "customers.export",
	"orders_export": "orders.export", "export_orders": "orders.export",
}

// actionTable maps source action names to actions.
type actionTable map[string]shopguard.Action

func newActionTable(user map[string]string) actionTable {
	t := actionTable{}
	for k, v := range defaultActions {
		t[k] = shopguard.ParseAction(v)
	}
	for k, v := range user {
		t[k] = shopguard.ParseAction(v)
	}
	return t
}

// lookup maps name; a §1 name is kept, anything else unknown is other. It
// does not allocate.
func (t actionTable) lookup(name string) shopguard.Action {
	if a, ok := t[name]; ok {
		return a
	}
	return shopguard.ParseAction(name)
}

// Validate returns every problem of the input section, each naming its key.
func (c InputConfig) Validate() error {
	var errs []error
	for k, v := range c.Actions {
		if !isSpecAction(v) {
			errs = append(errs, fmt.Errorf("input.actions.%s: %q is not an action of SPEC §1", k, v))
		}
	}
	switch c.Format {
	case "", FormatShopguard, FormatECS, FormatOCSF:
	case FormatNginx:
		if _, err := compileNginx(c.Nginx, nil); err != nil {
			errs = append(errs, err)
		}
	case FormatMapping:
		if _, err := compileMapping(c.Mapping, nil); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("input.format: %q is not one of shopguard, ecs, ocsf, nginx, mapping", c.Format))
	}
	return errors.Join(errs...)
}

// NewDecoder validates c and returns the decoder of its format.
func NewDecoder(c InputConfig) (DecodeFunc, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	acts := newActionTable(c.Actions)
	switch c.Format {
	case FormatECS:
		return newECS(acts).decode, nil
	case FormatOCSF:
		return newOCSF(acts).decode, nil
	case FormatNginx:
		n, err := compileNginx(c.Nginx, acts)
		if err != nil {
			return nil, err
		}
		return n.decode, nil
	case FormatMapping:
		m, err := compileMapping(c.Mapping, acts)
		if err != nil {
			return nil, err
		}
		return m.decode, nil
	}
	return Decode, nil
}

// bstr returns b as a string without copying.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// namedErr is a *DecodeError naming the source's field.
func namedErr(r Reason, field, msg string) *DecodeError {
	return &DecodeError{Reason: r, Field: field, Msg: msg}
}

// checkEvent validates the mapped event as Decode validates a native one;
// names are the source's names of the fields, in §1 order (time, shop_id,
// actor, ip). The caller has already set the fields.
func checkEvent(ev *shopguard.Event, tName, shopName, actorName string) *DecodeError {
	if ev.Time.IsZero() {
		return namedErr(ReasonBadTime, tName, "is the zero time")
	}
	if n := len(ev.ShopID); n == 0 {
		return namedErr(ReasonMissingField, shopName, "is required")
	} else if n > maxShopID {
		return namedErr(ReasonBadField, shopName, "is "+strconv.Itoa(n)+" bytes long, must be 1 to "+strconv.Itoa(maxShopID))
	}
	if n := len(ev.Actor); n == 0 {
		return namedErr(ReasonMissingField, actorName, "is required")
	} else if n > maxActor {
		return namedErr(ReasonBadField, actorName, "is "+strconv.Itoa(n)+" bytes long, must be 1 to "+strconv.Itoa(maxActor))
	}
	return nil
}

// parseIPField parses an address as Decode does (no zone, IPv4-mapped
// unmapped).
func parseIPField(name, s string) (netip.Addr, *DecodeError) {
	if s == "" {
		return netip.Addr{}, namedErr(ReasonMissingField, name, "is required")
	}
	if strings.IndexByte(s, '%') >= 0 {
		return netip.Addr{}, namedErr(ReasonBadIP, name, quoteValue(s)+" has a zone, which is not allowed")
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, namedErr(ReasonBadIP, name, quoteValue(s)+" is not an IPv4 or IPv6 address")
	}
	return ip.Unmap(), nil
}

// parseUnix parses decimal seconds (with an optional fraction) or, with
// ms, integer milliseconds since the epoch.
func parseUnix(b []byte, ms bool) (time.Time, bool) {
	if len(b) == 0 || len(b) > 30 {
		return time.Time{}, false
	}
	var sec, frac, scale int64 = 0, 0, 1e9
	i := 0
	for ; i < len(b) && isDecDigit(b[i]); i++ {
		if sec > 1e15 {
			return time.Time{}, false
		}
		sec = sec*10 + int64(b[i]-'0')
	}
	if i == 0 {
		return time.Time{}, false
	}
	if i < len(b) {
		if b[i] != '.' || i+1 == len(b) {
			return time.Time{}, false
		}
		for i++; i < len(b); i++ {
			if !isDecDigit(b[i]) {
				return time.Time{}, false
			}
			if scale > 1 {
				scale /= 10
				frac += int64(b[i]-'0') * scale
			}
		}
	}
	if ms {
		return time.Unix(sec/1000, (sec%1000)*1e6+frac/1000).UTC(), true
	}
	return time.Unix(sec, frac).UTC(), true
}

// parseRecordsText parses records given as decimal digits.
func parseRecordsText(name string, b []byte) (int64, *DecodeError) {
	if len(b) == 0 {
		return 0, namedErr(ReasonBadField, name, "is empty, must be an integer")
	}
	var n int64
	for _, c := range b {
		if !isDecDigit(c) {
			return 0, namedErr(ReasonBadField, name, quoteValue(string(b))+" is not an integer ≥ 0")
		}
		if n > (1<<63-1-int64(c-'0'))/10 {
			return 0, namedErr(ReasonBadField, name, quoteValue(string(b))+" is out of range")
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}
