package alert

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/shopguard/shopguard"
)

// PseudonymizeConfig turns on pseudonymization of actors in the findings
// given to the listed sinks (`sinks.pseudonymize`).
type PseudonymizeConfig struct {
	// The HMAC key, at least 16 bytes, from a file or an environment
	// variable. Keep it: with it, an analyst can map a known actor to its
	// pseudonym; without it, pseudonyms cannot be reversed or guessed.
	KeyFile string `yaml:"key_file,omitempty"`
	KeyEnv  string `yaml:"key_env,omitempty"`
	// Sinks are the sinks whose findings are pseudonymized. By default the
	// external ones, alertmanager and webhook; the record sinks keep the
	// real actor, because analysts act on them.
	Sinks []string `yaml:"sinks"`
}

// DefaultPseudonymizeConfig is pseudonymization unless configured.
var DefaultPseudonymizeConfig = PseudonymizeConfig{Sinks: []string{sinkAlertmanager, sinkWebhook}}

// UnmarshalYAML fills the fields the YAML leaves out from
// DefaultPseudonymizeConfig, keeping the decoder strict.
func (c *PseudonymizeConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultPseudonymizeConfig
	c.Sinks = slices.Clone(c.Sinks)
	type plain PseudonymizeConfig
	return unmarshal((*plain)(c))
}

// Validate reports every problem of the config, naming its key.
func (c PseudonymizeConfig) Validate() error { return c.validate(configKey + ".pseudonymize").err() }

func (c PseudonymizeConfig) validate(key string) problems {
	var p problems
	secretRef(&p, key+".key", c.KeyFile, c.KeyEnv, true)
	for i, s := range c.Sinks {
		oneOf(&p, fmt.Sprintf("%s.sinks[%d]", key, i), s, sinkNames...)
	}
	return p
}

// minKeyLen is the shortest pseudonymization key accepted: shorter keys
// could be brute-forced, and with them every pseudonym reversed.
const minKeyLen = 16

// Pseudonymizer is a Sink that replaces actors with keyed pseudonyms before
// handing findings on: the finding's actor, the actors of the accounts in
// its evidence, and any occurrence of those actors in its summary. The same
// key maps the same account to the same pseudonym everywhere, so alerts
// still group and inhibit per account, while a receiver without the key
// learns nothing about who the actor is.
type Pseudonymizer struct {
	next shopguard.Sink
	key  []byte
}

var _ shopguard.Sink = (*Pseudonymizer)(nil)

// NewPseudonymizer wraps next. key must be at least 16 bytes.
func NewPseudonymizer(next shopguard.Sink, key []byte) (*Pseudonymizer, error) {
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("pseudonymization key is %d bytes, want at least %d", len(key), minKeyLen)
	}
	return &Pseudonymizer{next: next, key: slices.Clone(key)}, nil
}

// Pseudonym returns the pseudonym of an account: "hmac:" and the first 16
// hex digits (64 bits) of HMAC-SHA256(key, shopID + "\x00" + actor). The
// shop is part of it because an actor is only unique within its shop. An
// empty actor stays empty.
//
// The construction is plain on purpose, so that an analyst holding the key
// can find an account's alerts without shopguard:
//
//	printf 'shop-17\0owner@example.jp' | openssl dgst -sha256 -hmac "$KEY" -r | cut -c1-16
//
// (The NUL separator is unambiguous as long as shop ids contain no NUL;
// shop ids are assigned by the platform, not typed in by attackers.)
func (p *Pseudonymizer) Pseudonym(shopID, actor string) string {
	if actor == "" {
		return ""
	}
	mac := hmac.New(sha256.New, p.key)
	mac.Write([]byte(shopID))
	mac.Write([]byte{0})
	mac.Write([]byte(actor))
	var sum [sha256.Size]byte
	return "hmac:" + hex.EncodeToString(mac.Sum(sum[:0])[:8])
}

// Send pseudonymizes copies of fs and hands them to the wrapped sink; fs
// itself is not modified.
func (p *Pseudonymizer) Send(ctx context.Context, fs ...shopguard.Finding) error {
	out := make([]shopguard.Finding, len(fs))
	for i := range fs {
		out[i] = p.apply(&fs[i])
	}
	return p.next.Send(ctx, out...)
}

// Run runs the wrapped sink's delivery loop, if it has one.
func (p *Pseudonymizer) Run(ctx context.Context) error {
	if r, ok := p.next.(runner); ok {
		return r.Run(ctx)
	}
	return nil
}

// Ready reports the wrapped sink's readiness, if it has any.
func (p *Pseudonymizer) Ready() error {
	if r, ok := p.next.(readier); ok {
		return r.Ready()
	}
	return nil
}

// Close closes the wrapped sink, if it needs closing.
func (p *Pseudonymizer) Close() error {
	if c, ok := p.next.(closer); ok {
		return c.Close()
	}
	return nil
}

func (p *Pseudonymizer) apply(f *shopguard.Finding) shopguard.Finding {
	c := *f
	// Replace longer actors first, so that an actor that is part of another
	// one does not leave the rest of the longer one readable.
	var repl []string
	if f.Actor != "" {
		c.Actor = p.Pseudonym(f.ShopID, f.Actor)
		repl = append(repl, f.Actor, c.Actor)
	}
	if len(f.Evidence.Accounts) > 0 {
		c.Evidence.Accounts = make([]shopguard.Account, len(f.Evidence.Accounts))
		for i, a := range f.Evidence.Accounts {
			c.Evidence.Accounts[i] = shopguard.Account{ShopID: a.ShopID, Actor: p.Pseudonym(a.ShopID, a.Actor)}
			if a.Actor != "" {
				repl = append(repl, a.Actor, c.Evidence.Accounts[i].Actor)
			}
		}
	}
	if len(repl) > 0 {
		c.Summary = replaceLongestFirst(f.Summary, repl)
	}
	return c
}

// replaceLongestFirst replaces every old of the old/new pairs in s, trying
// longer olds first at each position.
func replaceLongestFirst(s string, pairs []string) string {
	type pair struct{ old, new string }
	ps := make([]pair, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		ps = append(ps, pair{pairs[i], pairs[i+1]})
	}
	slices.SortStableFunc(ps, func(a, b pair) int { return len(b.old) - len(a.old) })
	flat := make([]string, 0, len(pairs))
	for _, p := range ps {
		flat = append(flat, p.old, p.new)
	}
	// strings.Replacer compares olds in argument order at each position.
	return strings.NewReplacer(flat...).Replace(s)
}
