package report

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shopguard/shopguard"
)

// LiveConfig bounds the live incident pages' memory.
type LiveConfig struct {
	// Window is how long an incident stays after its last finding (event
	// time). Default 24h.
	Window time.Duration
	// MaxFindings caps the findings held; the oldest incidents go first.
	// Default 10,000.
	MaxFindings int
}

// Live serves the incidents of the last Window of findings over HTTP:
// /incidents and /findings/{id}. Observe feeds it from the engine
// goroutine; the handlers read it concurrently, under a mutex.
type Live struct {
	cfg       LiveConfig
	mu        sync.Mutex
	b         *Builder
	lastPrune int64
}

// NewLive returns an empty live view. loc may be nil.
func NewLive(cfg LiveConfig, loc shopguard.Locator) *Live {
	if cfg.Window <= 0 {
		cfg.Window = 24 * time.Hour
	}
	if cfg.MaxFindings <= 0 {
		cfg.MaxFindings = 10_000
	}
	return &Live{cfg: cfg, b: New(Options{Locator: loc})}
}

// Observe takes one event and its findings, as Builder.Observe, and prunes
// what is older than the window once a minute of event time.
func (l *Live) Observe(ev *shopguard.Event, fs []shopguard.Finding) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Observe(ev, fs)
	if l.b.mark-l.lastPrune >= int64(time.Minute) || len(fs) > 0 && len(l.b.findings) > l.cfg.MaxFindings {
		l.lastPrune = l.b.mark
		l.b.Prune(time.Unix(0, l.b.mark).Add(-l.cfg.Window), l.cfg.MaxFindings)
	}
}

// Report returns the incidents held now.
func (l *Live) Report(now time.Time) *Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Report(now)
}

// Register adds the pages to mux: GET /incidents (HTML; ?format=json for
// incidents.json) and GET /findings/{id}.
func (l *Live) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /incidents", l.incidents)
	mux.HandleFunc("GET /findings/{id}", l.finding)
}

func headers(w http.ResponseWriter, ctype string) {
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// The page's own inline script and style only; nothing from elsewhere.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; frame-ancestors 'none'")
}

func (l *Live) incidents(w http.ResponseWriter, r *http.Request) {
	rep := l.Report(time.Now())
	if r.URL.Query().Get("format") == "json" {
		headers(w, "application/json")
		_ = rep.WriteJSON(w)
		return
	}
	headers(w, "text/html; charset=utf-8")
	_ = rep.WriteHTML(w, PageOptions{FindingHref: "findings/", Live: true, Title: "shopguard: incidents of the last " + human(l.cfg.Window)})
}

func human(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	return strings.TrimSuffix(s, "0m")
}

// TimelineEvent is one recent event of an account, on its finding page.
type TimelineEvent struct {
	Time    time.Time
	Action  string
	IP      string
	Records int64
}

var findingPage = template.Must(template.New("finding").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Finding {{.F.ID}}</title>
<style>body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:0 auto;padding:1em 1.5em}table{border-collapse:collapse}td,th{text-align:left;padding:.2em .6em;border-bottom:1px solid #e3e5ea}pre{background:#f3f4f7;padding:.8em;overflow:auto}</style></head><body>
<p><a href="../incidents">← incidents</a></p>
<h1>{{.F.Rule}} ({{.F.Severity}})</h1>
<p id="summary">{{.F.Summary}}</p>
<table>
<tr><th>id<td><code>{{.F.ID}}</code></tr>
<tr><th>time<td>{{t .F.Time}}</tr>
<tr><th>account<td id="account">{{if .F.Actor}}{{.F.ShopID}} / {{.F.Actor}}{{else}}– (keyed by source){{end}}</tr>
<tr><th>source<td><code>{{.F.IP}}</code></tr>
<tr><th>incident<td>{{if .Incident}}<a href="../incidents#{{.Incident}}">{{.Incident}}</a>{{end}}</tr>
</table>
<h2>Evidence</h2>
<pre>{{.Evidence}}</pre>
{{if .F.Actor}}<h2>The account's recent timeline</h2>
{{if .Timeline}}<table><tr><th>time<th>action<th>address<th>records</tr>
{{range .Timeline}}<tr><td>{{t .Time}}<td>{{.Action}}<td><code>{{.IP}}</code><td>{{if .Records}}{{.Records}}{{end}}</tr>
{{end}}</table>{{else}}<p>No events of the account are held any more (the last hour of event time is).</p>{{end}}{{end}}
</body></html>`))

func (l *Live) finding(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	l.mu.Lock()
	var f *shopguard.Finding
	incident := ""
	if n := l.b.findings[id]; n != nil {
		for _, x := range n.root().inc.findings {
			if x.ID == id {
				c := *x
				f = &c
			}
		}
	}
	var tl []TimelineEvent
	if f != nil && f.Actor != "" {
		k := acctKey(f.ShopID, f.Actor)
		for i := l.b.head; i < len(l.b.ring); i++ {
			if rc := &l.b.ring[i]; string(l.b.name(rc)) == k {
				tl = append(tl, TimelineEvent{Time: ts(rc.t), Action: actionName(rc), IP: rc.addr().String(), Records: rc.recs})
			}
		}
		if len(tl) > 200 {
			tl = tl[len(tl)-200:]
		}
	}
	l.mu.Unlock()
	if f == nil {
		http.Error(w, "no such finding held (the live view keeps the last findings only)", http.StatusNotFound)
		return
	}
	// Which incident: the report numbers them, so find it there.
	rep := l.Report(time.Now())
	for _, in := range rep.Incidents {
		for _, x := range in.Findings {
			if x.ID == id {
				incident = in.ID
			}
		}
	}
	ev, _ := json.MarshalIndent(f.Evidence, "", "  ")
	if r.URL.Query().Get("format") == "json" {
		headers(w, "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"finding": f, "incident": incident, "timeline": tl})
		return
	}
	headers(w, "text/html; charset=utf-8")
	_ = findingPage.Execute(w, map[string]any{"F": f, "Evidence": string(ev), "Timeline": tl, "Incident": incident})
}

func actionName(r *rec) string {
	if r.act == shopguard.ActionOther && r.kind == kindChange {
		return "sensitive change"
	}
	return r.act.String()
}
