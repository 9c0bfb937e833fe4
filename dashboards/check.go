// Package dashboards holds shopguard's Grafana dashboards (grafana/*.json)
// and Prometheus rules (prometheus/*.yml, with their promtool tests), embeds
// them in FS, and checks them with Check: every dashboard is valid JSON with
// a title and a description on each panel, and every PromQL expression in a
// dashboard or a rule parses and names only metrics shopguard registers, and
// every rule reads only recordings made before it in its own group.
//
// It does not evaluate PromQL (promtool test rules does, against
// prometheus/shopguard-rules.test.yml), does not talk to Grafana or
// Prometheus, and does not build the metric registry: the caller passes the
// names it registers, so the check follows the code and not a copy of it.
package dashboards

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// FS holds the dashboards and the rule files, laid out as in this directory:
// grafana/*.json and prometheus/*.yml (the rules and their promtool tests).
//
//go:embed grafana/*.json prometheus/*.yml
var FS embed.FS

// The kinds of problem Check reports; test for them with errors.Is.
var (
	// ErrInvalid marks a file that is not well-formed: bad JSON or YAML, a
	// panel without title or description, a rule without expr or severity.
	ErrInvalid = errors.New("invalid")
	// ErrPromQL marks an expression the PromQL parser rejects.
	ErrPromQL = errors.New("PromQL does not parse")
	// ErrUnknownMetric marks a selector naming a metric that is neither
	// registered, recorded by a rule, nor a standard series.
	ErrUnknownMetric = errors.New("metric not registered")
	// ErrRuleOrder marks a rule that reads a recording made in another
	// group, or later in its own. Prometheus evaluates the rules of a group
	// one after another at the same timestamp, but groups independently of
	// each other, so such a rule sees the current or the previous
	// evaluation's value depending on which ran first.
	ErrRuleOrder = errors.New("reads a recording not made before it in its group")
)

// Check checks the dashboards and rules in fsys, which is laid out like FS,
// against registered, the metric family names shopguard registers (as
// gathered: counters with their _total suffix, histograms by base name).
//
// A metric name is known when it is registered; when it is a histogram's
// _bucket, _sum or _count series of a registered name; when a recording rule
// in prometheus/*.yml defines it (names with ':'); or when it is a standard
// series: go_* and process_* from the Go and process collectors, up, and
// ALERTS / ALERTS_FOR_STATE, which Prometheus writes for alerting rules.
//
// A rule that reads a recorded name must follow a rule recording it in the
// same group and file; dashboards may read any recording. This holds even
// where an offset would make the order harmless: one rule is easier to keep
// than its exceptions.
//
// Row panels need a title but no description: Grafana does not show one.
// Grafana's interval variables ($__rate_interval, $__interval, $__range and
// their _s/_ms forms) are replaced by a duration before parsing; any other
// variable must sit inside a label matcher's string.
//
// Check returns every problem it finds, joined with errors.Join, each
// naming the file and the panel or rule; nil means all is well.
func Check(fsys fs.FS, registered map[string]bool) error {
	c := &checker{
		registered: registered,
		recorded:   map[string]bool{},
		recordedAt: map[string][]rulePos{},
		parser:     parser.NewParser(parser.Options{}),
	}

	ruleFiles, err := fs.Glob(fsys, "prometheus/*.yml")
	if err != nil {
		return fmt.Errorf("list rule files: %w", err)
	}
	// prometheus/*.test.yml are promtool tests, not rules.
	ruleFiles = slices.DeleteFunc(ruleFiles, func(name string) bool { return strings.HasSuffix(name, ".test.yml") })
	dashFiles, err := fs.Glob(fsys, "grafana/*.json")
	if err != nil {
		return fmt.Errorf("list dashboards: %w", err)
	}
	if len(ruleFiles) == 0 {
		c.errorf("prometheus/*.yml: %w: no rule file", ErrInvalid)
	}
	if len(dashFiles) == 0 {
		c.errorf("grafana/*.json: %w: no dashboard", ErrInvalid)
	}

	// Read the rules first: their recording rules define names that other
	// rules and the dashboards may use, in any order.
	for _, name := range ruleFiles {
		c.readRules(fsys, name)
	}
	for _, e := range c.exprs {
		c.checkExpr(e)
	}
	c.exprs = nil

	uids := map[string]string{}
	for _, name := range dashFiles {
		c.readDashboard(fsys, name, uids)
	}
	for _, e := range c.exprs {
		c.checkExpr(e)
	}
	return errors.Join(c.errs...)
}

// checker accumulates the expressions found and the problems seen.
type checker struct {
	registered map[string]bool
	recorded   map[string]bool
	recordedAt map[string][]rulePos // where each recorded name is recorded
	parser     parser.Parser
	exprs      []located
	errs       []error
}

// located is a PromQL expression and where it was found, for messages.
type located struct {
	where string // e.g. `grafana/overview.json: panel "Events/s" (id 3) target A`
	expr  string
	rule  *rulePos // nil for a dashboard
}

// rulePos is a rule's place: its file, its group, its index in the group.
type rulePos struct {
	file, group string
	index       int
}

// before reports whether p comes earlier than q in the same group.
func (p rulePos) before(q rulePos) bool {
	return p.file == q.file && p.group == q.group && p.index < q.index
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// ruleFile is the part of a Prometheus rule file that Check reads. It is
// decoded strictly, as Prometheus does, so a misspelt key is reported.
type ruleFile struct {
	Groups []struct {
		Name        string            `yaml:"name"`
		Interval    string            `yaml:"interval"`
		QueryOffset string            `yaml:"query_offset"`
		Limit       int               `yaml:"limit"`
		Labels      map[string]string `yaml:"labels"`
		Rules       []struct {
			Record        string            `yaml:"record"`
			Alert         string            `yaml:"alert"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// severities are the values an alert's severity label may take: the scale
// findings use, so one Alertmanager routing tree serves both.
var severities = map[string]bool{"critical": true, "high": true, "medium": true, "low": true}

func (c *checker) readRules(fsys fs.FS, name string) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		c.errorf("%s: %w", name, err)
		return
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		c.errorf("%s: %w: %w", name, ErrInvalid, err)
		return
	}
	for _, g := range rf.Groups {
		for i, r := range g.Rules {
			where := fmt.Sprintf("%s: group %q: rule %d", name, g.Name, i+1)
			switch {
			case r.Record != "" && r.Alert != "":
				c.errorf("%s: %w: both record and alert", where, ErrInvalid)
				continue
			case r.Record != "":
				where = fmt.Sprintf("%s: group %q: record %q", name, g.Name, r.Record)
				c.recorded[r.Record] = true
				c.recordedAt[r.Record] = append(c.recordedAt[r.Record], rulePos{name, g.Name, i})
			case r.Alert != "":
				where = fmt.Sprintf("%s: group %q: alert %q", name, g.Name, r.Alert)
				if !severities[r.Labels["severity"]] {
					c.errorf("%s: %w: severity label %q is not one of critical, high, medium, low", where, ErrInvalid, r.Labels["severity"])
				}
				for _, a := range []string{"summary", "description"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						c.errorf("%s: %w: no %s annotation", where, ErrInvalid, a)
					}
				}
			default:
				c.errorf("%s: %w: neither record nor alert", where, ErrInvalid)
				continue
			}
			if strings.TrimSpace(r.Expr) == "" {
				c.errorf("%s: %w: no expr", where, ErrInvalid)
				continue
			}
			c.exprs = append(c.exprs, located{where: where, expr: r.Expr, rule: &rulePos{name, g.Name, i}})
		}
	}
}

// panel is the part of a Grafana panel that Check reads. Rows hold their
// panels in Panels when collapsed.
type panel struct {
	ID          int     `json:"id"`
	Type        string  `json:"type"`
	Title       string  `json:"title"`
	Description string  `json:"description"`
	Targets     []query `json:"targets"`
	Panels      []panel `json:"panels"`
}

// query is a panel's target; Prometheus targets carry expr.
type query struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

// dashboard is the part of a Grafana dashboard that Check reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func (c *checker) readDashboard(fsys fs.FS, name string, uids map[string]string) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		c.errorf("%s: %w", name, err)
		return
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		c.errorf("%s: %w: JSON: %w", name, ErrInvalid, err)
		return
	}
	if d.UID == "" || d.Title == "" {
		c.errorf("%s: %w: dashboard needs a uid and a title", name, ErrInvalid)
	}
	if other, ok := uids[d.UID]; ok && d.UID != "" {
		c.errorf("%s: %w: uid %q is also used by %s", name, ErrInvalid, d.UID, other)
	}
	uids[d.UID] = name
	c.readPanels(name, d.Panels)

	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if expr, ok := variableExpr(v.Query); ok {
			c.exprs = append(c.exprs, located{where: fmt.Sprintf("%s: variable %q", name, v.Name), expr: expr})
		}
	}
}

func (c *checker) readPanels(file string, panels []panel) {
	for _, p := range panels {
		where := fmt.Sprintf("%s: panel %q (id %d)", file, p.Title, p.ID)
		if strings.TrimSpace(p.Title) == "" {
			c.errorf("%s: %w: no title", where, ErrInvalid)
		}
		if p.Type != "row" && strings.TrimSpace(p.Description) == "" {
			c.errorf("%s: %w: no description", where, ErrInvalid)
		}
		for _, t := range p.Targets {
			tw := fmt.Sprintf("%s target %s", where, t.RefID)
			if strings.TrimSpace(t.Expr) == "" {
				c.errorf("%s: %w: no expr", tw, ErrInvalid)
				continue
			}
			c.exprs = append(c.exprs, located{where: tw, expr: t.Expr})
		}
		c.readPanels(file, p.Panels)
	}
}

// variableExpr returns the PromQL inside a Grafana Prometheus query
// variable: the selector of label_values(selector, label), or the expression
// of query_result(expr). Other forms (label_names(), metrics(regex),
// label_values(label)) hold no selector and give false.
func variableExpr(raw json.RawMessage) (string, bool) {
	var q string
	if err := json.Unmarshal(raw, &q); err != nil {
		var obj struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(raw, &obj) != nil {
			return "", false
		}
		q = obj.Query
	}
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "query_result("); ok {
		return strings.TrimSuffix(inner, ")"), true
	}
	inner, ok := strings.CutPrefix(q, "label_values(")
	if !ok {
		return "", false
	}
	inner = strings.TrimSuffix(inner, ")")
	i := strings.LastIndexByte(inner, ',')
	if i < 0 {
		return "", false
	}
	return strings.TrimSpace(inner[:i]), true
}

// grafanaIntervals matches Grafana's built-in interval variables, which
// stand for a duration (or a number, for _s and _ms) where PromQL needs one.
var grafanaIntervals = regexp.MustCompile(`\$\{?__(rate_interval_ms|rate_interval|interval_ms|interval|range_ms|range_s|range)\}?`)

func expandGrafana(expr string) string {
	return grafanaIntervals.ReplaceAllStringFunc(expr, func(v string) string {
		switch {
		case strings.Contains(v, "_ms"):
			return "300000"
		case strings.Contains(v, "_s"):
			return "300"
		default:
			return "5m"
		}
	})
}

func (c *checker) checkExpr(e located) {
	expr, err := c.parser.ParseExpr(expandGrafana(e.expr))
	if err != nil {
		c.errorf("%s: %w: %q: %w", e.where, ErrPromQL, e.expr, err)
		return
	}
	seen := map[string]bool{}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := selectorName(vs)
		switch {
		case name == "":
			c.errorf("%s: %w: selector %s names no metric", e.where, ErrUnknownMetric, vs)
		case seen[name]:
		case strings.Contains(name, ":") && !c.recorded[name]:
			c.errorf("%s: %w: %s looks recorded, but no recording rule defines it", e.where, ErrUnknownMetric, name)
		case !c.known(name):
			c.errorf("%s: %w: %s", e.where, ErrUnknownMetric, name)
		case e.rule != nil && c.recorded[name] && !c.recordedBefore(name, *e.rule):
			c.errorf("%s: %w: %s; record it earlier in group %q", e.where, ErrRuleOrder, name, e.rule.group)
		}
		seen[name] = true
		return nil
	})
}

// recordedBefore reports whether a rule earlier in at's group records name.
func (c *checker) recordedBefore(name string, at rulePos) bool {
	return slices.ContainsFunc(c.recordedAt[name], func(p rulePos) bool { return p.before(at) })
}

// selectorName returns the metric name a selector asks for, or "" when it
// selects by a __name__ regular expression or not by name at all.
func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// standard are series that exist without shopguard registering them.
var standard = map[string]bool{"up": true, "ALERTS": true, "ALERTS_FOR_STATE": true}

func (c *checker) known(name string) bool {
	if c.registered[name] || c.recorded[name] || standard[name] {
		return true
	}
	if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && c.registered[base] {
			return true
		}
	}
	return false
}
