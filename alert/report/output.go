package report

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shopguard/shopguard"
)

// Report is the data of incidents.json, and what report.html shows.
type Report struct {
	Generated time.Time  `json:"generated"`
	Summary   Summary    `json:"summary"`
	Incidents []Incident `json:"incidents"`
}

// Summary is the top of the report, over every incident.
type Summary struct {
	Incidents         int       `json:"incidents"`
	Findings          int       `json:"findings"`
	AccountsTried     int       `json:"accounts_tried"`
	AccountsLoggedIn  int       `json:"accounts_logged_in"`
	AccountsChanged   int       `json:"accounts_changed_or_exported"`
	RowsExported      int64     `json:"rows_exported"`
	FirstAttackEvent  time.Time `json:"first_attack_event,omitzero"`
	LastAttackEvent   time.Time `json:"last_attack_event,omitzero"`
	CompromisedCount  int       `json:"compromised"`
	FailedLoginsTotal int64     `json:"failed_logins"`
}

// Incident is one group of findings.
type Incident struct {
	ID            string              `json:"id"`
	First         time.Time           `json:"first"`
	Last          time.Time           `json:"last"`
	Rules         map[string]int      `json:"rules"`
	Keys          []string            `json:"keys"` // sources and waves that group it
	FindingCount  int                 `json:"finding_count"`
	Findings      []shopguard.Finding `json:"findings"`
	Accounts      []AccountRow        `json:"accounts"`
	Sources       []SourceRow         `json:"sources"`
	Timeline      []Point             `json:"timeline"`
	Compromised   int                 `json:"compromised"`
	FailedLogins  int64               `json:"failed_logins"`
	RowsExported  int64               `json:"rows_exported"`
	SourcesListed int                 `json:"-"`
}

// AccountRow is one account touched by an incident: one line of
// accounts.csv.
type AccountRow struct {
	ShopID           string    `json:"shop_id"`
	Actor            string    `json:"actor"`
	Incident         string    `json:"incident"`
	FirstAttackTime  time.Time `json:"first_attack_time"`
	LastAttackTime   time.Time `json:"last_attack_time"`
	FailedLogins     int64     `json:"failed_logins"`
	Successes        int64     `json:"successful_logins"`
	Compromised      bool      `json:"compromised"`
	SensitiveChanges int64     `json:"sensitive_changes"`
	ExportedRecords  int64     `json:"exported_records"`
	FindingIDs       []string  `json:"finding_ids"`
}

// SourceRow is one address an incident's events came from.
type SourceRow struct {
	IP        string    `json:"ip"`
	Network   string    `json:"network"`
	Country   string    `json:"country,omitempty"`
	City      string    `json:"city,omitempty"`
	Failures  int64     `json:"failures"`
	Successes int64     `json:"successes"`
	Other     int64     `json:"other"`
	First     time.Time `json:"first,omitzero"`
	Last      time.Time `json:"last,omitzero"`
}

// Point is one step of an incident's timeline.
type Point struct {
	T         int64 `json:"t"` // unix seconds, start of the step
	Failures  int64 `json:"failures"`
	Successes int64 `json:"successes"`
	Findings  int64 `json:"findings"`
}

// maxTimelinePoints bounds each incident's chart.
const maxTimelinePoints = 150

// Report returns the incidents built so far. now stamps it.
func (b *Builder) Report(now time.Time) *Report {
	incs := b.incidents()
	rep := &Report{Generated: now.UTC()}
	type key struct{ shop, actor string }
	tried := map[key]bool{}
	logged := map[key]bool{}
	changed := map[key]bool{}
	for i, inc := range incs {
		in := b.incident(i+1, inc)
		for _, a := range in.Accounts {
			k := key{a.ShopID, a.Actor}
			tried[k] = true
			if a.Compromised || a.Successes > 0 {
				logged[k] = true
			}
			if a.SensitiveChanges > 0 || a.ExportedRecords > 0 {
				changed[k] = true
			}
		}
		s := &rep.Summary
		s.Findings += in.FindingCount
		s.RowsExported += in.RowsExported
		s.CompromisedCount += in.Compromised
		s.FailedLoginsTotal += in.FailedLogins
		if s.FirstAttackEvent.IsZero() || in.First.Before(s.FirstAttackEvent) {
			s.FirstAttackEvent = in.First
		}
		if in.Last.After(s.LastAttackEvent) {
			s.LastAttackEvent = in.Last
		}
		rep.Incidents = append(rep.Incidents, in)
	}
	rep.Summary.Incidents = len(rep.Incidents)
	rep.Summary.AccountsTried = len(tried)
	rep.Summary.AccountsLoggedIn = len(logged)
	rep.Summary.AccountsChanged = len(changed)
	return rep
}

func ts(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func (b *Builder) incident(n int, inc *incident) Incident {
	in := Incident{ID: fmt.Sprintf("INC-%03d", n), First: ts(inc.first), Last: ts(inc.last), Rules: map[string]int{}}
	fs := append([]*shopguard.Finding(nil), inc.findings...)
	sort.Slice(fs, func(i, j int) bool {
		if !fs[i].Time.Equal(fs[j].Time) {
			return fs[i].Time.Before(fs[j].Time)
		}
		return fs[i].ID < fs[j].ID
	})
	for _, f := range fs {
		in.Rules[f.Rule]++
		in.Findings = append(in.Findings, *f)
	}
	in.FindingCount = len(fs)
	for k := range inc.keys {
		in.Keys = append(in.Keys, k)
	}
	sort.Strings(in.Keys)
	for _, a := range inc.accounts {
		row := AccountRow{ShopID: a.shop, Actor: a.actor, Incident: in.ID,
			FirstAttackTime: ts(a.first), LastAttackTime: ts(a.last), FailedLogins: a.fails, Successes: a.successes,
			Compromised: a.compromised, SensitiveChanges: a.changes, ExportedRecords: a.exported,
			FindingIDs: slices.Sorted(slices.Values(a.findings))}
		if row.Compromised {
			in.Compromised++
		}
		in.FailedLogins += a.fails
		in.RowsExported += a.exported
		in.Accounts = append(in.Accounts, row)
	}
	sortAccounts(in.Accounts)
	for ip, s := range inc.sources {
		row := SourceRow{IP: ip.String(), Network: network(ip), Failures: s.fails, Successes: s.successes,
			Other: s.other, First: ts(s.first), Last: ts(s.last)}
		row.Country, row.City = b.place(ip, fs)
		in.Sources = append(in.Sources, row)
	}
	sort.Slice(in.Sources, func(i, j int) bool {
		x, y := in.Sources[i], in.Sources[j]
		if x.Failures+x.Successes != y.Failures+y.Successes {
			return x.Failures+x.Successes > y.Failures+y.Successes
		}
		return x.IP < y.IP
	})
	in.Timeline = timeline(inc)
	return in
}

// sortAccounts puts taken-over accounts first, then the most tried.
func sortAccounts(rows []AccountRow) {
	sort.Slice(rows, func(i, j int) bool {
		x, y := rows[i], rows[j]
		if x.Compromised != y.Compromised {
			return x.Compromised
		}
		if x.SensitiveChanges+x.ExportedRecords != y.SensitiveChanges+y.ExportedRecords {
			return x.SensitiveChanges+x.ExportedRecords > y.SensitiveChanges+y.ExportedRecords
		}
		if x.FailedLogins != y.FailedLogins {
			return x.FailedLogins > y.FailedLogins
		}
		if x.ShopID != y.ShopID {
			return x.ShopID < y.ShopID
		}
		return x.Actor < y.Actor
	})
}

// network names ip's block: the IPv4 /24 or the IPv6 /48.
func network(ip netip.Addr) string {
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ""
	}
	return p.String()
}

// place locates ip: with the Locator, else from travel evidence.
func (b *Builder) place(ip netip.Addr, fs []*shopguard.Finding) (country, city string) {
	if b.opt.Locator != nil {
		if g, ok := b.opt.Locator.Locate(ip); ok {
			return g.Country, g.City
		}
	}
	s := ip.String()
	for _, f := range fs {
		for _, l := range []*shopguard.Login{f.Evidence.From, f.Evidence.To} {
			if l != nil && l.IP == s {
				return l.Country, l.City
			}
		}
	}
	return "", ""
}

// steps are the chart resolutions, the finest that keeps the timeline
// under maxTimelinePoints is used.
var steps = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}

func timeline(inc *incident) []Point {
	if len(inc.buckets) == 0 {
		return nil
	}
	var lo, hi int64 = 1 << 62, -1 << 62
	for k := range inc.buckets {
		lo, hi = min(lo, k), max(hi, k)
	}
	step := int64(steps[len(steps)-1] / time.Minute)
	for _, s := range steps {
		if m := int64(s / time.Minute); (hi-lo)/m+1 <= maxTimelinePoints {
			step = m
			break
		}
	}
	// An empty step either side: the chart starts and ends at zero, and
	// an incident within one step is not a single point, which uPlot
	// spreads over years.
	lo = lo/step*step - step
	hi += step
	pts := make([]Point, (hi-lo)/step+1)
	for i := range pts {
		pts[i].T = (lo + int64(i)*step) * 60
	}
	for k, bk := range inc.buckets {
		p := &pts[(k-lo)/step]
		p.Failures += bk.fails
		p.Successes += bk.successes
		p.Findings += bk.findings
	}
	return pts
}

// CSVHeader is the header of accounts.csv (SPEC §8).
var CSVHeader = []string{"shop_id", "actor", "incident", "first_attack_time", "last_attack_time", "failed_logins", "compromised", "sensitive_changes", "exported_records", "finding_ids"}

// WriteCSV writes accounts.csv: one row per account per incident.
func (r *Report) WriteCSV(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	cw := csv.NewWriter(bw)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	for _, in := range r.Incidents {
		for _, a := range in.Accounts {
			if err := cw.Write(a.csv()); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

func (a AccountRow) csv() []string {
	return []string{csvSafe(a.ShopID), csvSafe(a.Actor), a.Incident, rfc(a.FirstAttackTime), rfc(a.LastAttackTime),
		strconv.FormatInt(a.FailedLogins, 10), strconv.FormatBool(a.Compromised),
		strconv.FormatInt(a.SensitiveChanges, 10), strconv.FormatInt(a.ExportedRecords, 10), strings.Join(a.FindingIDs, " ")}
}

// csvSafe defuses spreadsheet formulas in attacker-chosen fields: a cell
// starting with = + - @ (or a tab or CR) is prefixed with a quote.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func rfc(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// WriteJSON writes incidents.json: the Report as one JSON object, encoded
// one incident at a time so that a large report is never held twice in
// memory.
func (r *Report) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	head, err := json.Marshal(struct {
		Generated time.Time `json:"generated"`
		Summary   Summary   `json:"summary"`
	}{r.Generated, r.Summary})
	if err != nil {
		return err
	}
	bw.Write(head[:len(head)-1])
	bw.WriteString(`,"incidents":[`)
	enc := json.NewEncoder(bw)
	for i := range r.Incidents {
		if i > 0 {
			bw.WriteString(",")
		}
		if err := enc.Encode(&r.Incidents[i]); err != nil {
			return err
		}
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

// WriteDir writes report.html, accounts.csv and incidents.json into dir,
// creating it. Each file is written under a temporary name and renamed, so
// a reader never sees half a file.
func (r *Report) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report directory: %w", err)
	}
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"accounts.csv", r.WriteCSV},
		{"incidents.json", r.WriteJSON},
		{"report.html", func(w io.Writer) error { return r.WriteHTML(w, PageOptions{CSVHref: "accounts.csv"}) }},
	}
	// The three files only read r: write them at the same time.
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() { errs[i] = writeFile(filepath.Join(dir, f.name), f.write) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeFile writes path through a temporary file renamed into place, so
// that a reader never sees half a report.
func writeFile(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
