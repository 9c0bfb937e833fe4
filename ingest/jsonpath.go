package ingest

import (
	"strings"
	"time"

	"github.com/shopguard/shopguard"
)

// pathNode is one level of a set of compiled dotted JSON paths. A path
// a.b.c matches nested objects ({"a":{"b":{"c":…}}}) and flattened dotted
// keys ({"a.b.c":…} or {"a":{"b.c":…}}), as Elasticsearch accepts both.
type pathNode struct {
	slot int // the value's slot, or -1
	// children are few (a dozen at the root of an ECS document): a linear
	// scan comparing lengths first beats hashing every key of the document.
	children []pathChild
}

type pathChild struct {
	key  string
	node *pathNode
}

// child returns the child for key k, or nil.
func (n *pathNode) child(k []byte) *pathNode {
	for i := range n.children {
		if c := &n.children[i]; len(c.key) == len(k) && c.key == string(k) {
			return c.node
		}
	}
	return nil
}

// maxSlots bounds the paths of one format; values live on the stack.
const maxSlots = 16

// jsonPaths extracts the values of up to maxSlots paths from a JSON object
// in one pass, validating its syntax as Decode does, without building maps.
type jsonPaths struct {
	root  *pathNode
	names []string // the path of each slot, for error messages
}

func newJSONPaths(paths ...string) *jsonPaths {
	p := &jsonPaths{root: &pathNode{slot: -1}, names: paths}
	for i, path := range paths {
		if path != "" {
			p.insert(p.root, strings.Split(path, "."), i)
		}
	}
	return p
}

func (p *jsonPaths) insert(n *pathNode, segs []string, slot int) {
	for k := 1; k <= len(segs); k++ {
		key := strings.Join(segs[:k], ".")
		c := n.child([]byte(key))
		if c == nil {
			c = &pathNode{slot: -1}
			n.children = append(n.children, pathChild{key, c})
		}
		if k == len(segs) {
			c.slot = slot
		} else {
			p.insert(c, segs[k:], slot)
		}
	}
}

// scan validates line as one JSON object and records the value of each
// path in vals (the last occurrence wins). d is left usable for str.
func (p *jsonPaths) scan(d *eventDecoder, vals *[maxSlots]fieldValue) *DecodeError {
	if len(d.data) > MaxEventSize {
		return tooLargeError(len(d.data))
	}
	d.skipSpace()
	if d.pos >= len(d.data) {
		return jsonSyntaxError("empty input", d.pos)
	}
	if d.data[d.pos] != '{' {
		return jsonSyntaxError("not a JSON object: starts with "+quoteChar(d.data[d.pos]), d.pos)
	}
	if err := p.object(d, p.root, vals, 1); err != nil {
		return err
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return jsonSyntaxError("data after the object", d.pos)
	}
	return nil
}

// object scans the object at d.pos for the children of n.
func (p *jsonPaths) object(d *eventDecoder, n *pathNode, vals *[maxSlots]fieldValue, depth int) *DecodeError {
	if depth > maxJSONDepth {
		return jsonSyntaxError("nesting deeper than 10000", d.pos)
	}
	d.pos++ // '{'
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return nil
	}
	for {
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return d.errAt("looking for the beginning of a key")
		}
		ks, ke, kesc, _, err := d.scanString()
		if err != nil {
			return err
		}
		var c *pathNode
		if n.children != nil {
			if !kesc {
				c = n.child(d.data[ks:ke])
			} else {
				var buf [64]byte
				if k, ok := unquoteBounded(buf[:0], d.data[ks:ke], len(buf)); ok {
					c = n.child(k)
				}
			}
		}
		d.skipSpace()
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			return d.errAt("after a key")
		}
		d.pos++
		d.skipSpace()
		if err := p.value(d, c, vals, depth); err != nil {
			return err
		}
		d.skipSpace()
		if d.pos >= len(d.data) {
			return d.errAt("after a value")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
			d.skipSpace()
		case '}':
			d.pos++
			return nil
		default:
			return d.errAt("after a value")
		}
	}
}

// value scans one value, recording it if c is a path's end and descending
// if c has children.
func (p *jsonPaths) value(d *eventDecoder, c *pathNode, vals *[maxSlots]fieldValue, depth int) *DecodeError {
	if d.pos >= len(d.data) {
		return d.errAt("looking for the beginning of a value")
	}
	start := d.pos
	var v fieldValue
	switch ch := d.data[d.pos]; {
	case c != nil && c.children != nil && ch == '{':
		if err := p.object(d, c, vals, depth+1); err != nil {
			return err
		}
		v = fieldValue{kind: kOther, start: start, end: d.pos}
	case ch == '"':
		s, e, esc, na, err := d.scanString()
		if err != nil {
			return err
		}
		v = fieldValue{kind: kString, start: s, end: e, escaped: esc, nonASCII: na}
	case ch == '-' || (ch >= '0' && ch <= '9'):
		if err := d.scanNumber(); err != nil {
			return err
		}
		v = fieldValue{kind: kNumber, start: start, end: d.pos}
	case ch == 'n':
		if err := d.scanLiteral("null"); err != nil {
			return err
		}
		v.kind = kNull
	default:
		if err := d.skipValue(depth + 1); err != nil {
			return err
		}
		v = fieldValue{kind: kOther, start: start, end: d.pos}
	}
	if c != nil && c.slot >= 0 {
		vals[c.slot] = v
	}
	return nil
}

// docView reads typed values of the slots of one scanned document.
type docView struct {
	d     *eventDecoder
	vals  *[maxSlots]fieldValue
	names []string
}

// str returns slot i as a string ("" when absent or null).
func (j docView) str(i int) (string, *DecodeError) {
	switch v := j.vals[i]; v.kind {
	case kAbsent, kNull:
		return "", nil
	case kString:
		return j.d.str(v), nil
	default:
		return "", namedErr(ReasonBadField, j.names[i], "must be a string, not "+valueKindNames[v.kind])
	}
}

// text returns slot i's string contents or number literal, nil if absent.
func (j docView) text(i int) []byte {
	switch v := j.vals[i]; v.kind {
	case kString:
		if v.escaped || v.nonASCII {
			return []byte(j.d.str(v))
		}
		return j.d.data[v.start:v.end]
	case kNumber:
		return j.d.data[v.start:v.end]
	}
	return nil
}

// present reports whether slot i has a non-null value.
func (j docView) present(i int) bool { k := j.vals[i].kind; return k != kAbsent && k != kNull }

// contains reports whether slot i is the string s or an array holding it.
func (j docView) contains(i int, s string) bool {
	v := j.vals[i]
	switch v.kind {
	case kString:
		return j.d.str(v) == s
	case kOther:
		a := eventDecoder{data: j.d.data[:v.end], pos: v.start}
		if a.data[a.pos] != '[' {
			return false
		}
		a.pos++
		for a.pos < len(a.data) {
			a.skipSpace()
			if a.pos < len(a.data) && a.data[a.pos] == '"' {
				st, e, esc, na, err := a.scanString()
				if err != nil {
					return false
				}
				if a.str(fieldValue{kind: kString, start: st, end: e, escaped: esc, nonASCII: na}) == s {
					return true
				}
			} else if a.skipValue(2) != nil {
				return false
			}
			a.skipSpace()
			if a.pos < len(a.data) && a.data[a.pos] == ',' {
				a.pos++
				continue
			}
			return false
		}
	}
	return false
}

// records returns slot i as records: a number or a string of digits.
func (j docView) records(i int) (int64, *DecodeError) {
	switch v := j.vals[i]; v.kind {
	case kAbsent, kNull:
		return 0, nil
	case kNumber:
		n, err := parseRecords(j.d.data[v.start:v.end])
		if err != nil {
			err.Field = j.names[i]
		}
		return n, err
	case kString:
		return parseRecordsText(j.names[i], j.text(i))
	default:
		return 0, namedErr(ReasonBadField, j.names[i], "must be an integer, not "+valueKindNames[v.kind])
	}
}

// timeLayout is how a format writes its time.
type timeLayout struct {
	kind   uint8 // 0 rfc3339, 1 unix, 2 unix_ms, 3 Go layout
	layout string
}

func parseTimeLayout(s string) timeLayout {
	switch s {
	case "", "rfc3339":
		return timeLayout{}
	case "unix":
		return timeLayout{kind: 1}
	case "unix_ms":
		return timeLayout{kind: 2}
	}
	return timeLayout{kind: 3, layout: s}
}

// time parses slot i with layout l.
func (j docView) time(i int, l timeLayout) (time.Time, *DecodeError) {
	if !j.present(i) {
		return time.Time{}, namedErr(ReasonMissingField, j.names[i], "is required")
	}
	b := j.text(i)
	if b == nil {
		return time.Time{}, namedErr(ReasonBadTime, j.names[i], "must be a string or a number")
	}
	var t time.Time
	ok := false
	switch l.kind {
	case 0:
		t, ok = parseRFC3339(b)
	case 1, 2:
		t, ok = parseUnix(b, l.kind == 2)
	default:
		var err error
		t, err = time.Parse(l.layout, string(b))
		ok, t = err == nil, t.UTC()
	}
	if !ok {
		return time.Time{}, namedErr(ReasonBadTime, j.names[i], quoteValue(string(b))+" is not a time in the configured layout")
	}
	return t, nil
}

// fillCommon sets the required and optional string fields from their
// slots (-1: not mapped) and validates them; ev.Time and ev.Action are
// the caller's.
func (j docView) fillCommon(ev *shopguard.Event, shop, actor, ip, ua, sess, reason, resource, id, records int) *DecodeError {
	var err *DecodeError
	for _, f := range [...]struct {
		slot int
		dst  *string
	}{{shop, &ev.ShopID}, {actor, &ev.Actor}, {ua, &ev.UserAgent}, {sess, &ev.SessionID},
		{reason, &ev.Reason}, {resource, &ev.Resource}, {id, &ev.ID}} {
		if f.slot < 0 {
			continue
		}
		if *f.dst, err = j.str(f.slot); err != nil {
			return err
		}
	}
	if !j.present(ip) {
		return namedErr(ReasonMissingField, j.names[ip], "is required")
	}
	s, err := j.str(ip)
	if err != nil {
		return err
	}
	if ev.IP, err = parseIPField(j.names[ip], s); err != nil {
		return err
	}
	if records >= 0 {
		if ev.Records, err = j.records(records); err != nil {
			return err
		}
	}
	return nil
}
