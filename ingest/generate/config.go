package generate

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config configures a Generator. Start from DefaultConfig; New fills a zero
// Shops, Start, EventsPerSecond or Mix with the default, while a zero
// AttackRate means no attacks and a zero Events means no end.
type Config struct {
	// Seed makes the output reproducible: the same Config gives
	// byte-identical events and labels (on one CPU architecture; the
	// floating-point functions behind distances may differ in the last
	// bit between architectures).
	Seed int64 `yaml:"seed"`
	// Shops is how many tenants the platform has. Each has an owner and
	// zero to five staff accounts.
	Shops int `yaml:"shops"`
	// Start is the event time of the first event.
	Start time.Time `yaml:"start"`
	// EventsPerSecond is the mean rate of benign events in event time over
	// a day. The instantaneous rate follows a Japanese business day (low at
	// night, highest late morning and afternoon JST). Attack events come on
	// top of it.
	EventsPerSecond float64 `yaml:"events_per_second"`
	// AttackRate is how many attack episodes start per 10,000 benign
	// events, on average.
	AttackRate float64 `yaml:"attack_rate"`
	// Events, when positive, ends the stream after that many events; Next
	// then reports false. Near the end, attacks that would not be fully
	// emitted within Events are not started, so every label's events are
	// in the output.
	Events int64 `yaml:"events"`
	// Mix weighs the kinds of attack against each other.
	Mix AttackMix `yaml:"mix"`
}

// AttackMix holds the relative weights of the attack kinds; a kind with
// weight 0 never occurs. The weights need not sum to 1. In YAML, an absent
// key keeps its default weight, so name every kind to change the mix
// entirely.
type AttackMix struct {
	Stuffing   float64 `yaml:"stuffing"`       // AttackStuffing
	BruteForce float64 `yaml:"brute_force"`    // AttackBruteForce
	Hijack     float64 `yaml:"hijack"`         // AttackHijack
	RotationV4 float64 `yaml:"rotation_v4"`    // AttackRotationV4
	RotationV6 float64 `yaml:"rotation_v6"`    // AttackRotationV6
	Insider    float64 `yaml:"insider"`        // AttackInsider
	Quiet      float64 `yaml:"quiet_takeover"` // AttackQuietTakeover
	Theft      float64 `yaml:"session_theft"`  // AttackSessionTheft
	Burst      float64 `yaml:"failure_burst"`  // AttackBurst
	// The campaign attacks (campaign.go), 0 by default.
	ListWave     float64 `yaml:"list_wave"`      // AttackListWave
	UnknownSpray float64 `yaml:"unknown_spray"`  // AttackUnknownSpray
	RotationV6W  float64 `yaml:"rotation_v6_48"` // AttackRotationV6W
}

// DefaultConfig is the configuration the demo and `shopguard generate` use,
// and what an absent YAML key means.
var DefaultConfig = Config{
	Seed:            1,
	Shops:           500,
	Start:           time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), // a Monday, 09:00 JST
	EventsPerSecond: 50,
	AttackRate:      5,
	Mix: AttackMix{
		Stuffing:   2,
		BruteForce: 2,
		Hijack:     1.5,
		RotationV4: 1,
		RotationV6: 1,
		Insider:    1.5,
		Quiet:      1.5,
		Theft:      1,
		Burst:      1,
	},
}

// UnmarshalYAML fills absent keys from DefaultConfig. It uses the callback
// form so that a strict decoder (KnownFields) stays strict inside.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Config
	p := plain(DefaultConfig)
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = Config(p)
	return nil
}

// Limits on Config values: beyond them the model stops making sense (or
// memory use grows without purpose).
const (
	maxShops      = 100_000 // about 270,000 accounts
	maxRate       = 10_000_000
	maxAttackRate = 1_000 // per 10,000 events: one episode every 10 events
)

// Validate reports every problem of c at once, naming the YAML key.
func (c Config) Validate() error {
	var errs []error
	if c.Shops < 1 || c.Shops > maxShops {
		errs = append(errs, fmt.Errorf("shops: %d is not within [1, %d]", c.Shops, maxShops))
	}
	if c.Start.IsZero() {
		errs = append(errs, errors.New("start: must be set"))
	}
	if !(c.EventsPerSecond > 0 && c.EventsPerSecond <= maxRate) {
		errs = append(errs, fmt.Errorf("events_per_second: %g is not within (0, %d]", c.EventsPerSecond, maxRate))
	}
	if !(c.AttackRate >= 0 && c.AttackRate <= maxAttackRate) {
		errs = append(errs, fmt.Errorf("attack_rate: %g is not within [0, %d] (episodes per 10,000 events)", c.AttackRate, maxAttackRate))
	}
	if c.Events < 0 {
		errs = append(errs, fmt.Errorf("events: %d is negative (0 means no end)", c.Events))
	}
	var sum float64
	for _, w := range []struct {
		key string
		v   float64
	}{
		{"stuffing", c.Mix.Stuffing}, {"brute_force", c.Mix.BruteForce}, {"hijack", c.Mix.Hijack},
		{"rotation_v4", c.Mix.RotationV4}, {"rotation_v6", c.Mix.RotationV6}, {"insider", c.Mix.Insider},
		{"quiet_takeover", c.Mix.Quiet}, {"session_theft", c.Mix.Theft}, {"failure_burst", c.Mix.Burst},
		{"list_wave", c.Mix.ListWave}, {"unknown_spray", c.Mix.UnknownSpray}, {"rotation_v6_48", c.Mix.RotationV6W},
	} {
		if !(w.v >= 0) || math.IsInf(w.v, 0) {
			errs = append(errs, fmt.Errorf("mix.%s: %g is not a finite weight ≥ 0", w.key, w.v))
			continue
		}
		sum += w.v
	}
	if c.AttackRate > 0 && sum == 0 {
		errs = append(errs, errors.New("mix: all weights are 0 but attack_rate is positive"))
	}
	return errors.Join(errs...)
}

// withDefaults fills the fields whose zero value is never meaningful.
func (c Config) withDefaults() Config {
	if c.Shops == 0 {
		c.Shops = DefaultConfig.Shops
	}
	if c.Start.IsZero() {
		c.Start = DefaultConfig.Start
	}
	if c.EventsPerSecond == 0 {
		c.EventsPerSecond = DefaultConfig.EventsPerSecond
	}
	if c.Mix == (AttackMix{}) {
		c.Mix = DefaultConfig.Mix
	}
	return c
}
