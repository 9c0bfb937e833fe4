// Package shopguard holds the vocabulary every part of shopguard shares: the
// audit Event read from a shop platform's admin log, the Finding raised when
// a login or an export looks like an attack, and the small interfaces that
// connect sources, the detection engine and sinks.
//
// It does no I/O and has no dependencies beyond the standard library. Sources
// and decoding live in ingest, rules in detect, delivery in alert; only
// cmd/shopguard wires them together.
package shopguard

import (
	"context"
	"net/netip"
	"time"
)

// Action is what an admin did. The zero value is ActionOther, which covers
// every action name shopguard does not know.
type Action uint8

// The actions of SPEC §1.
const (
	ActionOther Action = iota
	ActionLoginSuccess
	ActionLoginFailure
	ActionLogout
	ActionPasswordChange
	ActionPasswordReset
	ActionMFAEnable
	ActionMFADisable
	ActionEmailChange
	ActionAPIKeyCreate
	ActionCustomersExport
	ActionOrdersExport
	ActionPayoutChange // bank or payout account changed
	ActionStaffAdd     // another admin user invited
	ActionAppInstall   // a third-party or custom app granted access
	numActions
)

var actionNames = [numActions]string{
	ActionOther:           "other",
	ActionLoginSuccess:    "login.success",
	ActionLoginFailure:    "login.failure",
	ActionLogout:          "logout",
	ActionPasswordChange:  "password.change",
	ActionPasswordReset:   "password.reset",
	ActionMFAEnable:       "mfa.enable",
	ActionMFADisable:      "mfa.disable",
	ActionEmailChange:     "email.change",
	ActionAPIKeyCreate:    "apikey.create",
	ActionCustomersExport: "customers.export",
	ActionOrdersExport:    "orders.export",
	ActionPayoutChange:    "payout.change",
	ActionStaffAdd:        "staff.add",
	ActionAppInstall:      "app.install",
}

// String returns the action's wire name, e.g. "login.success".
func (a Action) String() string {
	if a >= numActions {
		return actionNames[ActionOther]
	}
	return actionNames[a]
}

// ParseAction maps a wire name to its Action; unknown names are ActionOther.
// It does not allocate.
func ParseAction(s string) Action {
	for i := ActionLoginSuccess; i < numActions; i++ {
		if actionNames[i] == s {
			return i
		}
	}
	return ActionOther
}

// Actions lists every Action, ActionOther first. Metrics use it to pre-create
// their label series.
func Actions() []Action {
	out := make([]Action, numActions)
	for i := range out {
		out[i] = Action(i)
	}
	return out
}

// IsExport reports whether the action exports data (customers or orders).
func (a Action) IsExport() bool {
	return a == ActionCustomersExport || a == ActionOrdersExport
}

// Sensitive reports whether the action is a sensitive change (SPEC §1):
// what an intruder does to keep an account or to cash in on it.
func (a Action) Sensitive() bool {
	switch a {
	case ActionPasswordChange, ActionPasswordReset, ActionMFADisable, ActionEmailChange,
		ActionAPIKeyCreate, ActionPayoutChange, ActionStaffAdd, ActionAppInstall:
		return true
	}
	return false
}

// Event is one admin audit log entry (SPEC §1).
//
// A decoded Event's strings may alias a buffer owned by the source that is
// reused for the next event: code that keeps any field beyond the call that
// handed it the event must copy it (strings.Clone). The detection rules do so
// only when they create state or a finding, which keeps the hot path free of
// allocations.
type Event struct {
	Time      time.Time  // event time, from the producer
	ShopID    string     // tenant, 1–128 bytes
	Actor     string     // login id of the admin user, 1–256 bytes
	Action    Action     // what happened
	IP        netip.Addr // client address as the admin panel saw it (never zoned)
	UserAgent string
	SessionID string
	Reason    string // for login.failure: bad_password, unknown_user, locked, mfa_failed
	Resource  string
	ID        string // the producer's event id, if any
	Records   int64  // for exports: rows exported
}

// Severity ranks a finding.
type Severity string

// The severities findings carry.
const (
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

// Severities lists the valid severities, least severe first.
func Severities() []Severity {
	return []Severity{SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical}
}

// Valid reports whether s is one of Severities.
func (s Severity) Valid() bool {
	switch s {
	case SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical:
		return true
	}
	return false
}

// The rule names of SPEC §3. They are stable and used as metric labels.
const (
	RuleImpossibleTravel   = "impossible_travel"
	RuleBruteForce         = "brute_force"
	RuleCredentialStuffing = "credential_stuffing"
	RuleAccountTakeover    = "account_takeover"
	RuleBulkExport         = "bulk_export"
	RuleUnfamiliarLogin    = "unfamiliar_login"
	RuleSessionHijack      = "session_hijack"
	RuleRiskyChange        = "risky_change"
	RuleFailureBurst       = "failure_burst"

	// Campaign rules (SPEC §3.2).
	RuleStuffingWave        = "stuffing_wave"
	RuleLeakedCredentialUse = "leaked_credential_use"
)

// Rules lists every rule name in the order the engine evaluates them.
func Rules() []string {
	return []string{RuleCredentialStuffing, RuleStuffingWave, RuleBruteForce, RuleFailureBurst, RuleAccountTakeover,
		RuleImpossibleTravel, RuleUnfamiliarLogin, RuleLeakedCredentialUse, RuleSessionHijack, RuleRiskyChange,
		RuleBulkExport}
}

// Finding is what shopguard raises (SPEC §2).
type Finding struct {
	// ID is deterministic: the same input yields the same id, live or
	// replayed, so sinks de-duplicate on it.
	ID       string   `json:"id"`
	Rule     string   `json:"rule"`
	Severity Severity `json:"severity"`
	// Time is the event time of the event that triggered the finding.
	Time   time.Time `json:"time"`
	ShopID string    `json:"shop_id"`
	// Actor is empty for rules keyed by source (credential_stuffing).
	Actor string `json:"actor"`
	// IP is the triggering event's address, or a CIDR block when only the
	// block crossed a source threshold.
	IP       string   `json:"ip"`
	Summary  string   `json:"summary"`
	Evidence Evidence `json:"evidence"`
}

// Evidence is what an analyst needs to act on a finding without re-querying.
// Which fields are set depends on the rule.
type Evidence struct {
	// impossible_travel
	From       *Login  `json:"from,omitempty"`
	To         *Login  `json:"to,omitempty"`
	DistanceKM float64 `json:"distance_km,omitempty"` // after subtracting both accuracy radii
	SpeedKMH   float64 `json:"speed_kmh,omitempty"`

	// counting rules
	Count     int64     `json:"count,omitempty"`     // failures, distinct accounts or records
	Threshold int64     `json:"threshold,omitempty"` // the configured threshold crossed
	Window    string    `json:"window,omitempty"`    // e.g. "10m0s"
	First     time.Time `json:"first,omitzero"`      // event time of the oldest event counted
	Accounts  []Account `json:"accounts,omitempty"`  // a sample (at most 20)
	Addresses []string  `json:"addresses,omitempty"` // a sample (at most 20)

	// account_takeover and critical bulk_export: what made it suspicious.
	Cause     string `json:"cause,omitempty"`      // e.g. "failures" or "credential_stuffing"
	CauseID   string `json:"cause_id,omitempty"`   // id of the finding it follows, if any
	CauseRule string `json:"cause_rule,omitempty"` // rule of that finding
	Records   int64  `json:"records,omitempty"`    // records of the triggering export

	// stuffing_wave (SPEC §3.2). WaveID is shared by every finding of one
	// wave and by the account_takeover findings it leads to.
	WaveID           string  `json:"wave_id,omitempty"`
	Baseline         float64 `json:"baseline,omitempty"`           // trailing hourly baseline
	UnknownUserShare float64 `json:"unknown_user_share,omitempty"` // share of accounts failing as unknown_user
	Sources          int64   `json:"sources,omitempty"`            // distinct addresses failing
	TopBlocks        []Tally `json:"top_blocks,omitempty"`         // IPv4 /16s (IPv6 /32s) by addresses
	Countries        []Tally `json:"countries,omitempty"`          // by addresses
	ASNs             []Tally `json:"asns,omitempty"`               // by addresses, with an ASN database
}

// Tally is one key with its count, in wave evidence.
type Tally struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

// Login is one located login, as impossible_travel evidence.
type Login struct {
	IP       string    `json:"ip"`
	Time     time.Time `json:"time"`
	City     string    `json:"city,omitempty"`
	Country  string    `json:"country,omitempty"`
	Lat      float64   `json:"lat"`
	Lon      float64   `json:"lon"`
	RadiusKM int       `json:"accuracy_radius_km"`
}

// Account names an admin account: the pair shop_id + actor.
type Account struct {
	ShopID string `json:"shop_id"`
	Actor  string `json:"actor"`
}

// Geo is where an address is, as far as the GeoIP database knows.
type Geo struct {
	Lat, Lon float64
	RadiusKM uint16 // accuracy radius
	Country  string // ISO 3166-1 alpha-2, e.g. "JP"
	City     string // English name, may be empty
	// ASN and ASOrg name the network, when an ASN database is given; 0 is
	// unknown.
	ASN   uint32
	ASOrg string
}

// Locator places an address on the map. It returns false for addresses that
// are private, reserved or not in its database. Implementations are safe for
// concurrent use.
type Locator interface {
	Locate(ip netip.Addr) (Geo, bool)
}

// Batch is a run of decoded events in source order.
type Batch struct {
	Events []Event
	// Received is the wall-clock time the source took in the batch's first
	// event; the engine measures processing latency from it. Zero means
	// unknown.
	Received time.Time
	// Done, when not nil, is called once every finding derived from Events
	// is held by the record sinks; a Kafka source commits offsets there. It
	// is called at most once, from the goroutine that processed the batch.
	// Events belongs to the source again after Done, which may reuse the
	// array for a later batch: nothing may read it afterwards.
	Done func()
}

// Source delivers batches of decoded events to out until its input ends or
// ctx is done. It returns nil on cancellation or at the end of its input,
// never closes out, and does not retry; the caller supervises restarts. Bad
// input is counted and skipped by the source itself (SPEC §1).
type Source interface {
	Run(ctx context.Context, out chan<- Batch) error
}

// Sink takes findings. A record sink (Kafka topic, file) returns only once
// they are durable, so offsets can be committed after it; a notification
// sink (Alertmanager, webhook) queues, retries, and counts what it drops.
// Send must not retain the slice after it returns.
type Sink interface {
	Send(ctx context.Context, fs ...Finding) error
}
