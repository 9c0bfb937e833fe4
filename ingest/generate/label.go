package generate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shopguard/shopguard"
)

// The attack kinds a Label names.
const (
	// AttackStuffing is a credential stuffing campaign from one address
	// with a leaked list of 40–80 accounts, of which 2–4 (occasionally
	// fewer) work; one of those then exports 20,000–60,000 customers.
	AttackStuffing = "credential_stuffing_campaign"
	// AttackBruteForce is 10–30 failed logins on one account from one
	// address within 10 minutes, sometimes ending in a success (and then
	// sometimes an export).
	AttackBruteForce = "brute_force"
	// AttackHijack is a session hijack: the owner logs in at home, and
	// 30–90 minutes later the same account logs in from a far city and
	// exports customers.
	AttackHijack = "session_hijack"
	// AttackRotationV4 is a stuffing campaign of 25–60 accounts rotating
	// through the addresses of one IPv4 /24, one address per attempt.
	AttackRotationV4 = "rotation_ipv4"
	// AttackRotationV6 is the same inside one IPv6 /64.
	AttackRotationV6 = "rotation_ipv6"
	// AttackInsider is a legitimate user exporting 12,000–30,000 records
	// in several exports within an hour, with no other signal.
	AttackInsider = "insider_export"
	// AttackQuietTakeover is a login with the right password and no
	// failure into an owner's account out of learning, from a new country,
	// network and client (a script), usually followed by credential or
	// payout changes and sometimes an export.
	AttackQuietTakeover = "quiet_takeover"
	// AttackSessionTheft is an owner's session used hours later from
	// another country by a script, which exports customers.
	AttackSessionTheft = "session_theft"
	// AttackBurst is 5–7 failed logins from one address within a minute
	// against two or three accounts.
	AttackBurst = "failure_burst"
)

// Attacks lists the attack kinds.
func Attacks() []string {
	return []string{AttackStuffing, AttackBruteForce, AttackHijack, AttackRotationV4, AttackRotationV6, AttackInsider,
		AttackQuietTakeover, AttackSessionTheft, AttackBurst}
}

// Label is the ground truth of one attack episode.
//
// A finding matches a label (see Evaluate) when its rule is in Rules, its
// key matches — for credential_stuffing its ip against Sources, for the
// other rules its account against ShopID/Actor and Accounts — and its time
// lies within [Start, End+MatchSlack].
type Label struct {
	// ID is unique within a generated stream and deterministic for a seed.
	ID string `json:"id"`
	// Attack is one of the Attack* kinds.
	Attack string `json:"attack"`
	// Rules are the rules expected to fire on the episode, in the order of
	// shopguard.Rules.
	Rules []string `json:"rules"`
	// ShopID and Actor name the attacked account when the episode is about
	// one account (brute force, hijack, insider); they are empty otherwise.
	ShopID string `json:"shop_id,omitempty"`
	Actor  string `json:"actor,omitempty"`
	// Accounts are the accounts the episode is about: those the attacker
	// logged into (and, for brute force, the one attacked), or the
	// insider's own. Accounts a stuffing list merely tried are not listed;
	// Targets counts them.
	Accounts []shopguard.Account `json:"accounts,omitempty"`
	// Sources are the attacker's addresses, or the CIDR block a rotation
	// used (e.g. "45.95.147.0/24", "2a02:6b8:1:2::/64").
	Sources []string `json:"sources"`
	// Targets is how many distinct accounts the episode tried to log into.
	Targets int `json:"targets,omitempty"`
	// Events is how many events the episode added to the stream.
	Events int `json:"events"`
	// Start and End are the event times of its first and last event.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// WriteLabels writes labels as JSON Lines, one label per line.
func WriteLabels(w io.Writer, labels []Label) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range labels {
		if err := enc.Encode(&labels[i]); err != nil {
			return fmt.Errorf("encode label %s: %w", labels[i].ID, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write labels: %w", err)
	}
	return nil
}

// ReadLabels reads labels written by WriteLabels (JSON Lines); a single JSON
// array of labels is accepted too. Unknown fields are ignored.
func ReadLabels(r io.Reader) ([]Label, error) {
	br := bufio.NewReader(r)
	first, err := peekNonSpace(br)
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read labels: %w", err)
	}
	dec := json.NewDecoder(br)
	var out []Label
	if first == '[' {
		if err := dec.Decode(&out); err != nil {
			return nil, fmt.Errorf("decode label array: %w", err)
		}
		return out, nil
	}
	for {
		var l Label
		err := dec.Decode(&l)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode label %d: %w", len(out)+1, err)
		}
		out = append(out, l)
	}
}

// peekNonSpace skips leading white space and returns the next byte without
// consuming it.
func peekNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.Peek(1)
		if err != nil {
			return 0, err
		}
		if !bytes.ContainsAny(b, " \t\r\n") {
			return b[0], nil
		}
		if _, err := br.ReadByte(); err != nil {
			return 0, err
		}
	}
}
