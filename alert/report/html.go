package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"
)

// The charting library, vendored from npm (uplot 1.6.32, MIT licence in
// assets/uPlot.LICENSE) and inlined into every page, so that a report opens
// offline.
var (
	//go:embed assets/uPlot.iife.min.js
	uplotJS string
	//go:embed assets/uPlot.min.css
	uplotCSS string
	//go:embed assets/uPlot.LICENSE
	uplotLicense string
	//go:embed page.html.tmpl
	pageTmpl string
)

// MaxTableRows is how many account rows a page embeds; accounts.csv has
// them all. It keeps report.html under about 1 MiB for a 10,000-account
// incident.
const MaxTableRows = 2000

// MaxDetailed is how many incidents a page shows in detail (chart,
// sources, findings): the most damaging first. MaxListed caps the incident
// list. incidents.json has them all.
const (
	MaxDetailed = 25
	MaxListed   = 300
)

// PageOptions adjusts a page for where it is shown.
type PageOptions struct {
	// CSVHref links the full accounts.csv ("accounts.csv" next to
	// report.html); empty leaves the link out.
	CSVHref string
	// FindingHref, if set, links each finding id to its page: the id,
	// path-escaped, is appended to it (the live pages use "findings/").
	FindingHref string
	// Live marks the page as the live view of the last incidents.
	Live  bool
	Title string
}

var funcs = template.FuncMap{
	"t": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"n": func(n any) string { return commas(fmt.Sprint(n)) },
	"rules": func(m map[string]int) string {
		var parts []string
		for _, k := range sortedKeys(m) {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
		return strings.Join(parts, ", ")
	},
	"href": func(base, id string) string { return base + url.PathEscape(id) },
	"join": strings.Join,
	"head": func(n int, rows []AccountRow) []AccountRow { return rows[:min(n, len(rows))] },
	"place": func(s SourceRow) string {
		switch {
		case s.City != "" && s.Country != "":
			return s.City + ", " + s.Country
		case s.Country != "":
			return s.Country
		}
		return "unknown"
	},
	"span": func(a, b time.Time) string { return b.Sub(a).Round(time.Second).String() },
}

func sortedKeys(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func commas(s string) string {
	if len(s) <= 3 || strings.ContainsAny(s, ".-e") {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

var page = template.Must(template.New("page").Funcs(funcs).Parse(pageTmpl))

// placeRow groups an incident's sources by place and network.
type placeRow struct {
	Place, Network      string
	Addresses           int
	Failures, Successes int64
}

func places(srcs []SourceRow) []placeRow {
	idx := map[[2]string]*placeRow{}
	var out []*placeRow
	for _, s := range srcs {
		p := funcs["place"].(func(SourceRow) string)(s)
		k := [2]string{p, s.Network}
		r := idx[k]
		if r == nil {
			r = &placeRow{Place: p, Network: s.Network}
			idx[k] = r
			out = append(out, r)
		}
		r.Addresses++
		r.Failures += s.Failures
		r.Successes += s.Successes
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].Failures+out[i].Successes > out[j].Failures+out[j].Successes
	})
	res := make([]placeRow, 0, min(len(out), 50))
	for _, r := range out[:min(len(out), 50)] {
		res = append(res, *r)
	}
	return res
}

// WriteHTML renders the report as one self-contained HTML page: the
// summary and the tables are server-side HTML, readable without
// JavaScript; the script draws the timelines and makes the accounts table
// sortable and filterable.
func (r *Report) WriteHTML(w io.Writer, opt PageOptions) error {
	type incView struct {
		Incident
		Places    []placeRow
		MoreFinds int
	}
	var rows []AccountRow
	total := 0
	order := make([]int, len(r.Incidents))
	for i, in := range r.Incidents {
		order[i] = i
		total += len(in.Accounts)
		rows = append(rows, in.Accounts...)
	}
	sortAccounts(rows)
	// The most damaging incidents first: taken-over accounts, then
	// accounts touched, then findings.
	sort.SliceStable(order, func(i, j int) bool {
		x, y := &r.Incidents[order[i]], &r.Incidents[order[j]]
		if x.Compromised != y.Compromised {
			return x.Compromised > y.Compromised
		}
		if len(x.Accounts) != len(y.Accounts) {
			return len(x.Accounts) > len(y.Accounts)
		}
		return x.FindingCount > y.FindingCount
	})
	var incs, detailed []incView
	for k, i := range order[:min(len(order), MaxListed)] {
		in := r.Incidents[i]
		v := incView{Incident: in}
		if k < MaxDetailed {
			v.Places = places(in.Sources)
			if len(v.Findings) > 50 {
				v.MoreFinds = len(v.Findings) - 50
				v.Findings = v.Findings[:50]
			}
			detailed = append(detailed, v)
		}
		incs = append(incs, v)
	}
	title := opt.Title
	if title == "" {
		title = "shopguard incident report"
	}
	return page.Execute(w, map[string]any{
		"Title": title, "R": r, "Incidents": incs, "Detailed": detailed, "MoreListed": len(r.Incidents) - len(incs),
		"MoreDetailed": len(r.Incidents) - len(detailed), "MaxDetailed": MaxDetailed, "Rows": rows[:min(len(rows), MaxTableRows)],
		"TotalRows": total, "Capped": total > MaxTableRows, "Max": MaxTableRows, "Opt": opt,
		"UPlotJS": template.JS(uplotJS), "UPlotCSS": template.CSS(uplotCSS), "License": uplotLicense,
	})
}
