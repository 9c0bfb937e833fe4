package generate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shopguard/shopguard"
)

// MatchSlack is how long after a label's End a finding may still match it:
// a rule may fire on the last event of an episode plus its window (bulk
// exports count an hour back).
const MatchSlack = time.Hour

// Report is the outcome of Evaluate: one score per rule, in the order of
// shopguard.Rules followed by any other rule found, and their sum.
type Report struct {
	Rules []RuleScore
	Total RuleScore
}

// RuleScore counts, for one rule, how its findings compare with the labels.
type RuleScore struct {
	Rule string
	// Findings is how many findings the rule raised; Matched how many of
	// them match a label expecting the rule; the rest are false positives.
	Findings, Matched int
	// Labels is how many labels expect the rule; Detected how many of them
	// at least one finding of the rule matches; the rest were missed.
	Labels, Detected int
}

// FalsePositives is how many findings match no label.
func (s RuleScore) FalsePositives() int { return s.Findings - s.Matched }

// FalseNegatives is how many labels expecting the rule no finding matched.
func (s RuleScore) FalseNegatives() int { return s.Labels - s.Detected }

// Precision is Matched/Findings, NaN when the rule raised nothing.
func (s RuleScore) Precision() float64 { return ratio(s.Matched, s.Findings) }

// Recall is Detected/Labels, NaN when no label expects the rule.
func (s RuleScore) Recall() float64 { return ratio(s.Detected, s.Labels) }

func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// Evaluate scores findings against labels, per rule. A finding matches a
// label when
//
//   - its rule is among the label's Rules,
//   - its time lies within [Start, End+MatchSlack], both ends included, and
//   - its key matches: for credential_stuffing and failure_burst, the finding's ip (an
//     address or a CIDR block) equals, contains or lies inside one of the
//     label's Sources; for stuffing_wave, which is platform-wide, none
//     (the time alone); for every other rule, the finding's account
//     (shop_id + actor) is the label's own (ShopID, Actor) or one of its
//     Accounts.
//
// A stuffing_wave finding that no label expecting a wave matches is still
// explained, and matched, when the episodes running in the hour before it
// tried at least WaveAccounts accounts between them: several stuffing
// campaigns at once are a wave too, though no single one is labelled as
// one. It counts towards precision only; recall counts labels expecting
// the rule.
//
// A finding matching several labels counts once. Precision per rule is
// matched findings over findings; recall is labels with at least one
// matching finding over labels expecting the rule.
func Evaluate(labels []Label, findings []shopguard.Finding) Report {
	m := newMatcher(labels)

	// Rows: the known rules first, then any other, sorted.
	rows := map[string]*RuleScore{}
	var order []string
	row := func(rule string) *RuleScore {
		if s, ok := rows[rule]; ok {
			return s
		}
		rows[rule] = &RuleScore{Rule: rule}
		order = append(order, rule)
		return rows[rule]
	}
	for _, r := range shopguard.Rules() {
		row(r)
	}
	for i := range labels {
		for _, r := range labels[i].Rules {
			row(r).Labels++
		}
	}

	type ref struct {
		rule  string
		label int
	}
	detected := map[ref]bool{}
	var hits []int
	for i := range findings {
		f := &findings[i]
		s := row(f.Rule)
		s.Findings++
		hits = m.match(hits[:0], f)
		if len(hits) > 0 {
			s.Matched++
		}
		for _, li := range hits {
			if slices.Contains(labels[li].Rules, f.Rule) {
				detected[ref{rule: f.Rule, label: li}] = true
			}
		}
	}
	for k := range detected {
		row(k.rule).Detected++
	}

	known := len(shopguard.Rules())
	slices.Sort(order[known:])
	var r Report
	r.Total.Rule = "all"
	for _, name := range order {
		s := *rows[name]
		r.Rules = append(r.Rules, s)
		r.Total.Findings += s.Findings
		r.Total.Matched += s.Matched
		r.Total.Labels += s.Labels
		r.Total.Detected += s.Detected
	}
	return r
}

// matcher indexes labels for matching findings: by account for the
// account-keyed rules, and a list of the labels expecting
// credential_stuffing or failure_burst with their parsed sources.
type matcher struct {
	labels    []Label
	byAccount map[shopguard.Account][]int
	bySource  []int
	sources   [][]netip.Prefix
}

func newMatcher(labels []Label) *matcher {
	m := &matcher{labels: labels, byAccount: map[shopguard.Account][]int{}, sources: make([][]netip.Prefix, len(labels))}
	for i := range labels {
		l := &labels[i]
		add := func(a shopguard.Account) {
			if a.ShopID != "" && !slices.Contains(m.byAccount[a], i) {
				m.byAccount[a] = append(m.byAccount[a], i)
			}
		}
		add(shopguard.Account{ShopID: l.ShopID, Actor: l.Actor})
		for _, a := range l.Accounts {
			add(a)
		}
		if slices.Contains(l.Rules, shopguard.RuleCredentialStuffing) || slices.Contains(l.Rules, shopguard.RuleFailureBurst) {
			m.bySource = append(m.bySource, i)
			for _, s := range l.Sources {
				if p, ok := parsePrefix(s); ok {
					m.sources[i] = append(m.sources[i], p)
				}
			}
		}
	}
	return m
}

// match appends to dst the indexes of the labels f matches (see Evaluate).
func (m *matcher) match(dst []int, f *shopguard.Finding) []int {
	var cands []int
	if f.Rule == shopguard.RuleStuffingWave {
		// Platform-wide: no account or source to match, only the time
		// (campaign.go).
		for li := range m.labels {
			cands = append(cands, li)
		}
	} else if f.Rule == shopguard.RuleCredentialStuffing || f.Rule == shopguard.RuleFailureBurst {
		p, ok := parsePrefix(f.IP)
		if !ok {
			return dst
		}
		for _, li := range m.bySource {
			if slices.ContainsFunc(m.sources[li], p.Overlaps) {
				cands = append(cands, li)
			}
		}
	} else {
		cands = m.byAccount[shopguard.Account{ShopID: f.ShopID, Actor: f.Actor}]
	}
	from := len(dst)
	for _, li := range cands {
		l := &m.labels[li]
		if slices.Contains(l.Rules, f.Rule) && !f.Time.Before(l.Start) && !f.Time.After(l.End.Add(MatchSlack)) {
			dst = append(dst, li)
		}
	}
	if f.Rule == shopguard.RuleStuffingWave && len(dst) == from {
		// Explained by the hour's episodes together, or not at all.
		tried := 0
		for li := range m.labels {
			if l := &m.labels[li]; !l.Start.After(f.Time) && !l.End.Before(f.Time.Add(-time.Hour)) && l.Targets > 0 {
				tried += l.Targets
				dst = append(dst, li)
			}
		}
		if tried < WaveAccounts {
			dst = dst[:from]
		}
	}
	return dst
}

// WaveAccounts is the accounts an hour's episodes must have tried between
// them to explain a stuffing_wave no label expects: the wave's floor,
// detect's stuffing_wave.min_accounts default.
const WaveAccounts = 50

// parsePrefix reads an address ("45.95.147.3") or a CIDR block
// ("45.95.147.0/24") as a prefix; an address is a full-length prefix.
// IPv4-mapped IPv6 addresses are unmapped so that they compare as IPv4.
func parsePrefix(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), true
}

// WriteTable writes r as an aligned text table, one row per rule plus the
// total; precision or recall is "-" where it is undefined.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rule\tfindings\tmatched\tfalse pos\tprecision\tlabels\tdetected\tmissed\trecall\t")
	for _, s := range append(slices.Clip(r.Rules), r.Total) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%s\t\n", s.Rule,
			s.Findings, s.Matched, s.FalsePositives(), percent(s.Precision()),
			s.Labels, s.Detected, s.FalseNegatives(), percent(s.Recall()))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write eval table: %w", err)
	}
	return nil
}

func percent(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*x)
}

// ReadFindings reads findings as JSON Lines (what `shopguard replay`
// writes); blank lines are skipped. Errors name the line.
func ReadFindings(r io.Reader) ([]shopguard.Finding, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var out []shopguard.Finding
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var f shopguard.Finding
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("finding at line %d: %w", line, err)
		}
		out = append(out, f)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read findings: %w", err)
	}
	return out, nil
}
