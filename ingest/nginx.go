package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shopguard/shopguard"
)

// maxNginxVars bounds the variables of a log_format; values live on the
// stack.
const maxNginxVars = 64

// nginxToken is one variable of the log_format and the literal after it.
type nginxToken struct {
	name string // variable name without '$'
	slot int    // index of the value kept, or -1 if unused
	sep  string // literal up to the next variable; "" for the last
}

// nginxRoute is a compiled route.
type nginxRoute struct {
	method string
	path   *regexp.Regexp
	status [][2]int // inclusive ranges
	action shopguard.Action
}

// nginxDecoder matches access-log lines of one log_format. The format is
// compiled once into literal separators and variables: a line is split
// with bytes.Index on the separators, no regular expression.
type nginxDecoder struct {
	prefix string
	toks   []nginxToken
	// slots of the values read; -1 when not in the format or not mapped.
	request, method, uri, status                                      int
	time, ip, shop, actor, ua, session, reason, resource, id, records int
	timeVar                                                           string
	names                                                             []string // variable of each slot, for errors
	routes                                                            []nginxRoute
}

// nginxFields are the event fields input.nginx.fields may map.
var nginxFields = []string{"ip", "time", "shop_id", "actor", "user_agent", "session_id", "reason", "resource", "id", "records"}

// compileNginx validates c and compiles it. Every error names its key.
// Routes name §1 actions directly, so the action table is not used.
func compileNginx(c NginxConfig, _ actionTable) (*nginxDecoder, error) {
	var errs []error
	n := &nginxDecoder{request: -1, method: -1, uri: -1, status: -1, time: -1, ip: -1, shop: -1,
		actor: -1, ua: -1, session: -1, reason: -1, resource: -1, id: -1, records: -1}
	if c.LogFormat == "" {
		errs = append(errs, errors.New("input.nginx.log_format: is required"))
	}
	// Tokenize.
	s := c.LogFormat
	var lit strings.Builder
	first := true
	for i := 0; i < len(s); {
		if s[i] != '$' {
			lit.WriteByte(s[i])
			i++
			continue
		}
		j, name := i+1, ""
		if j < len(s) && s[j] == '{' {
			k := strings.IndexByte(s[j:], '}')
			if k < 0 {
				errs = append(errs, fmt.Errorf("input.nginx.log_format: unclosed ${ at byte %d", i))
				break
			}
			name, j = s[j+1:j+k], j+k+1
		} else {
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			name = s[i+1 : j]
		}
		if name == "" {
			errs = append(errs, fmt.Errorf("input.nginx.log_format: '$' without a variable name at byte %d", i))
			i = j
			continue
		}
		if first {
			n.prefix = lit.String()
			first = false
		} else {
			if lit.Len() == 0 {
				errs = append(errs, fmt.Errorf("input.nginx.log_format: $%s follows $%s with nothing between them, so they cannot be told apart", name, n.toks[len(n.toks)-1].name))
			}
			n.toks[len(n.toks)-1].sep = lit.String()
		}
		lit.Reset()
		n.toks = append(n.toks, nginxToken{name: name, slot: -1})
		i = j
	}
	if first {
		if c.LogFormat != "" {
			errs = append(errs, errors.New("input.nginx.log_format: has no variables"))
		}
	} else if lit.Len() > 0 {
		// A trailing literal: the last variable ends before it.
		n.toks[len(n.toks)-1].sep = lit.String()
	}
	if len(n.toks) > maxNginxVars {
		errs = append(errs, fmt.Errorf("input.nginx.log_format: %d variables, at most %d", len(n.toks), maxNginxVars))
	}
	has := func(v string) bool {
		return slices.ContainsFunc(n.toks, func(t nginxToken) bool { return t.name == v })
	}
	// slotOf keeps the value of variable v and returns its slot.
	slotOf := func(v string) int {
		for i := range n.toks {
			if n.toks[i].name == v {
				if n.toks[i].slot < 0 {
					n.toks[i].slot = len(n.names)
					n.names = append(n.names, "$"+v)
				}
				return n.toks[i].slot
			}
		}
		return -1
	}

	// Fields.
	for _, k := range slices.Sorted(mapKeys(c.Fields)) {
		v := c.Fields[k]
		if !slices.Contains(nginxFields, k) {
			errs = append(errs, fmt.Errorf("input.nginx.fields.%s: not an event field (one of %s)", k, strings.Join(nginxFields, ", ")))
			continue
		}
		name, ok := strings.CutPrefix(v, "$")
		name = strings.TrimSuffix(strings.TrimPrefix(name, "{"), "}")
		if !ok || name == "" {
			errs = append(errs, fmt.Errorf("input.nginx.fields.%s: %q is not a variable ($name)", k, v))
			continue
		}
		if !has(name) {
			errs = append(errs, fmt.Errorf("input.nginx.fields.%s: unknown variable $%s (not in input.nginx.log_format)", k, name))
			continue
		}
		slot := slotOf(name)
		switch k {
		case "ip":
			n.ip = slot
		case "time":
			if name != "time_local" && name != "time_iso8601" && name != "msec" {
				errs = append(errs, fmt.Errorf("input.nginx.fields.time: $%s is not $time_local, $time_iso8601 or $msec", name))
			}
			n.time, n.timeVar = slot, name
		case "shop_id":
			n.shop = slot
		case "actor":
			n.actor = slot
		case "user_agent":
			n.ua = slot
		case "session_id":
			n.session = slot
		case "reason":
			n.reason = slot
		case "resource":
			n.resource = slot
		case "id":
			n.id = slot
		case "records":
			n.records = slot
		}
	}
	for _, k := range []string{"ip", "time", "shop_id", "actor"} {
		if _, ok := c.Fields[k]; !ok {
			errs = append(errs, fmt.Errorf("input.nginx.fields.%s: is required", k))
		}
	}

	// Request parts.
	if has("request") {
		n.request = slotOf("request")
	}
	if has("request_method") {
		n.method = slotOf("request_method")
	}
	switch {
	case has("uri"):
		n.uri = slotOf("uri")
	case has("request_uri"):
		n.uri = slotOf("request_uri")
	}
	if has("status") {
		n.status = slotOf("status")
	}

	// Routes.
	if len(c.Routes) == 0 {
		errs = append(errs, errors.New("input.nginx.routes: at least one route is required"))
	}
	for i, r := range c.Routes {
		key := "input.nginx.routes[" + strconv.Itoa(i) + "]"
		cr := nginxRoute{method: strings.ToUpper(r.Method)}
		if r.Method != "" && n.method < 0 && n.request < 0 {
			errs = append(errs, fmt.Errorf("%s.method: the log_format has neither $request nor $request_method", key))
		}
		if r.Path != "" {
			re, err := regexp.Compile(r.Path)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.path: %q is not a regular expression: %w", key, r.Path, err))
			}
			cr.path = re
			if n.uri < 0 && n.request < 0 {
				errs = append(errs, fmt.Errorf("%s.path: the log_format has none of $request, $uri, $request_uri", key))
			}
		}
		for k, st := range r.Status {
			rg, ok := parseStatusSpec(st)
			if !ok {
				errs = append(errs, fmt.Errorf("%s.status[%d]: %q is not a status code (100-599) or class (1xx-5xx)", key, k, st))
			}
			cr.status = append(cr.status, rg)
		}
		if len(r.Status) > 0 && n.status < 0 {
			errs = append(errs, fmt.Errorf("%s.status: the log_format has no $status", key))
		}
		if r.Action == "" {
			errs = append(errs, fmt.Errorf("%s.action: is required", key))
		} else if !isSpecAction(r.Action) {
			errs = append(errs, fmt.Errorf("%s.action: %q is not an action of SPEC §1", key, r.Action))
		}
		cr.action = shopguard.ParseAction(r.Action)
		n.routes = append(n.routes, cr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return n, nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// parseStatusSpec parses 302 or 4xx.
func parseStatusSpec(s string) ([2]int, bool) {
	s = strings.TrimSpace(s)
	if len(s) != 3 {
		return [2]int{}, false
	}
	if s[1] == 'x' && s[2] == 'x' || s[1] == 'X' && s[2] == 'X' {
		if s[0] < '1' || s[0] > '5' {
			return [2]int{}, false
		}
		c := int(s[0]-'0') * 100
		return [2]int{c, c + 99}, true
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 100 || v > 599 {
		return [2]int{}, false
	}
	return [2]int{v, v}, true
}

// errNoFormat is the invalid-line error of a line that does not fit the
// log_format. Its reason is not_json, the reason of input that is not in
// the input format at all.
func errNoFormat(after string) *DecodeError {
	return &DecodeError{Reason: ReasonNotJSON, Msg: "does not match input.nginx.log_format " + after}
}

// indexSep finds sep in b. A separator starting with '"' does not match a
// quote escaped with a backslash (escape=json).
func indexSep(b []byte, sep string) int {
	if len(sep) == 1 {
		i := bytes.IndexByte(b, sep[0])
		if sep[0] != '"' {
			return i
		}
		off := 0
		for i >= 0 {
			if !escapedAt(b, off+i) {
				return off + i
			}
			off += i + 1
			i = bytes.IndexByte(b[off:], '"')
		}
		return -1
	}
	i := bytes.Index(b, bstrBytes(sep))
	if sep[0] != '"' {
		return i
	}
	off := 0
	for i >= 0 {
		if !escapedAt(b, off+i) {
			return off + i
		}
		off += i + 1
		i = bytes.Index(b[off:], bstrBytes(sep))
	}
	return -1
}

func escapedAt(b []byte, i int) bool {
	n := 0
	for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
		n++
	}
	return n%2 == 1
}

// bstrBytes views s as bytes without copying; the result is read only.
func bstrBytes(s string) []byte { return []byte(s) }

// decode maps one access-log line. A line that fits the log_format but
// matches no route is ErrUnmatched; routes are matched on method, status
// and the path without its query string, in order.
func (n *nginxDecoder) decode(line []byte, ev *shopguard.Event) error {
	*ev = shopguard.Event{}
	if len(line) > MaxEventSize {
		return tooLargeError(len(line))
	}
	var vals [maxNginxVars][]byte
	rest := line
	if !bytes.HasPrefix(rest, bstrBytes(n.prefix)) {
		return errNoFormat("(the line does not start with " + quoteValue(n.prefix) + ")")
	}
	rest = rest[len(n.prefix):]
	for i := range n.toks {
		t := &n.toks[i]
		var v []byte
		if t.sep == "" {
			v, rest = rest, nil
		} else {
			k := indexSep(rest, t.sep)
			if k < 0 {
				return errNoFormat("(no " + quoteValue(t.sep) + " after $" + t.name + ")")
			}
			v, rest = rest[:k], rest[k+len(t.sep):]
			if i == len(n.toks)-1 && len(rest) > 0 {
				return errNoFormat("(data after the last literal)")
			}
		}
		if t.slot >= 0 && !(len(v) == 1 && v[0] == '-') {
			vals[t.slot] = v
		}
	}

	// Route.
	var method, path []byte
	if n.request >= 0 {
		r := vals[n.request]
		if sp := bytes.IndexByte(r, ' '); sp >= 0 {
			method, path = r[:sp], r[sp+1:]
			if sp2 := bytes.IndexByte(path, ' '); sp2 >= 0 {
				path = path[:sp2]
			}
		}
	}
	if n.method >= 0 {
		method = vals[n.method]
	}
	if n.uri >= 0 {
		path = vals[n.uri]
	}
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		path = path[:q]
	}
	status := -1
	if n.status >= 0 {
		if st := vals[n.status]; len(st) == 3 {
			if v, ok := parseDigits(st); ok {
				status = v
			}
		}
	}
	matched := false
	for i := range n.routes {
		r := &n.routes[i]
		if r.method != "" && r.method != bstr(method) {
			continue
		}
		if len(r.status) > 0 && !inRanges(r.status, status) {
			continue
		}
		if r.path != nil && !r.path.Match(path) {
			continue
		}
		ev.Action = r.action
		matched = true
		break
	}
	if !matched {
		return ErrUnmatched
	}
	if err := n.fill(&vals, ev); err != nil {
		*ev = shopguard.Event{}
		return err
	}
	return nil
}

func inRanges(rs [][2]int, v int) bool {
	for _, r := range rs {
		if v >= r[0] && v <= r[1] {
			return true
		}
	}
	return false
}

// fill sets the mapped fields of ev from vals and validates them as §1
// does.
func (n *nginxDecoder) fill(vals *[maxNginxVars][]byte, ev *shopguard.Event) *DecodeError {
	tb := vals[n.time]
	if tb == nil {
		return namedErr(ReasonMissingField, n.names[n.time], "is required")
	}
	var ok bool
	switch n.timeVar {
	case "time_local":
		ev.Time, ok = parseTimeLocal(tb)
	case "time_iso8601":
		ev.Time, ok = parseRFC3339(tb)
	default:
		ev.Time, ok = parseUnix(tb, false)
	}
	if !ok {
		return namedErr(ReasonBadTime, n.names[n.time], quoteValue(string(tb))+" is not a $"+n.timeVar+" time")
	}
	str := func(slot int) string {
		if slot < 0 {
			return ""
		}
		return nginxUnescape(vals[slot])
	}
	ev.ShopID, ev.Actor = str(n.shop), str(n.actor)
	ev.UserAgent, ev.SessionID, ev.Reason = str(n.ua), str(n.session), str(n.reason)
	ev.Resource, ev.ID = str(n.resource), str(n.id)
	if err := checkEvent(ev, n.names[n.time], n.names[n.shop], n.names[n.actor]); err != nil {
		return err
	}
	var err *DecodeError
	if ev.IP, err = parseIPField(n.names[n.ip], str(n.ip)); err != nil {
		return err
	}
	if n.records >= 0 && vals[n.records] != nil {
		if ev.Records, err = parseRecordsText(n.names[n.records], vals[n.records]); err != nil {
			return err
		}
	}
	return nil
}

// nginxUnescape returns v with nginx's \xHH escapes (escape=default) and
// \" and \\ (escape=json) decoded. Values without a backslash alias v.
func nginxUnescape(v []byte) string {
	if bytes.IndexByte(v, '\\') < 0 {
		return bstr(v)
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\\' && i+3 < len(v) && v[i+1] == 'x' && hexVal(v[i+2]) >= 0 && hexVal(v[i+3]) >= 0 {
			out = append(out, byte(hexVal(v[i+2])<<4|hexVal(v[i+3])))
			i += 3
			continue
		}
		if c == '\\' && i+1 < len(v) && (v[i+1] == '"' || v[i+1] == '\\') {
			out = append(out, v[i+1])
			i++
			continue
		}
		out = append(out, c)
	}
	return bstr(out)
}

var monthAbbr = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseTimeLocal parses nginx's $time_local, 02/Jan/2006:15:04:05 -0700,
// without allocating.
func parseTimeLocal(b []byte) (time.Time, bool) {
	if len(b) != 26 || b[2] != '/' || b[6] != '/' || b[11] != ':' || b[14] != ':' || b[17] != ':' || b[20] != ' ' ||
		(b[21] != '+' && b[21] != '-') {
		return time.Time{}, false
	}
	day, ok1 := parseDigits(b[0:2])
	year, ok2 := parseDigits(b[7:11])
	hour, ok3 := parseDigits(b[12:14])
	minute, ok4 := parseDigits(b[15:17])
	sec, ok5 := parseDigits(b[18:20])
	oh, ok6 := parseDigits(b[22:24])
	om, ok7 := parseDigits(b[24:26])
	month := 0
	for i, m := range monthAbbr {
		if string(b[3:6]) == m {
			month = i + 1
		}
	}
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || month == 0 || day < 1 || day > daysInMonth(month, year) ||
		hour > 23 || minute > 59 || sec > 59 || oh > 23 || om > 59 {
		return time.Time{}, false
	}
	off := int64(oh*3600 + om*60)
	if b[21] == '-' {
		off = -off
	}
	return time.Unix(daysSinceEpoch(year, month, day)*86400+int64(hour*3600+minute*60+sec)-off, 0).UTC(), true
}
