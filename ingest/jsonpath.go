package ingest

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/shopguard/shopguard"
)

// pathNode is one level of a set of compiled dotted JSON paths. A path
// a.b.c matches nested objects ({"a":{"b":{"c":…}}}) and flattened dotted
// keys ({"a.b.c":…} or {"a":{"b.c":…}}), as Elasticsearch accepts both.
type pathNode struct {
	slot     int // the value's slot, or -1
	children []pathChild
	// table finds a key's child without comparing it to the others: an
	// open-addressed table of indexes into children (0 empty, i+1 for
	// children[i]), hashed on the key's length and three of its bytes, so
	// hashing costs the same for any key and a key no path names is
	// usually rejected without one string comparison. It is rebuilt after
	// every insert; paths are compiled once.
	table []uint8
	shift uint
	// first is the child (i+1, 0 none) that the last document scanned
	// began this object with. Producers write their keys in one order, so
	// object compares the next key with the child it predicts (first,
	// then each child's next) before scanning and hashing the key.
	first atomic.Uint32
}

type pathChild struct {
	key  string
	node *pathNode
	// quoted is key followed by its closing quote: the bytes of the key's
	// literal after the opening quote when it needs no escape. It is
	// empty when key has a byte that JSON must escape.
	quoted string
	next   atomic.Uint32 // the child (i+1) that followed this one last time
}

// keyHash mixes the length and the first, middle and last bytes of k.
func keyHash(k []byte) uint64 {
	if len(k) == 0 {
		return 0
	}
	h := uint64(len(k)) | uint64(k[0])<<8 | uint64(k[len(k)/2])<<16 | uint64(k[len(k)-1])<<24
	return h * 0x9e3779b97f4a7c15
}

// child returns the index of the child for key k, or -1.
func (n *pathNode) child(k []byte) int {
	if len(n.table) == 0 {
		return -1
	}
	mask := uint64(len(n.table) - 1)
	for i := keyHash(k) >> n.shift; ; i++ {
		e := n.table[i&mask]
		if e == 0 {
			return -1
		}
		if c := &n.children[e-1]; len(c.key) == len(k) && c.key == string(k) {
			return int(e - 1)
		}
	}
}

// add appends a child and rebuilds the table, at most a quarter full.
func (n *pathNode) add(key string, c *pathNode) {
	quoted := key + `"`
	for i := 0; i < len(key); i++ {
		if !plainByte[key[i]] {
			quoted = ""
		}
	}
	n.children = append(n.children, pathChild{key: key, node: c, quoted: quoted})
	if len(n.children) > 255 {
		panic("jsonPaths: more than 255 keys under one object")
	}
	bits := uint(2)
	for 1<<bits < 4*len(n.children) {
		bits++
	}
	n.table, n.shift = make([]uint8, 1<<bits), 64-bits
	mask := uint64(len(n.table) - 1)
	for ci := range n.children {
		i := keyHash([]byte(n.children[ci].key)) >> n.shift
		for n.table[i&mask] != 0 {
			i++
		}
		n.table[i&mask] = uint8(ci + 1)
	}
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
		var c *pathNode
		if i := n.child([]byte(key)); i >= 0 {
			c = n.children[i].node
		} else {
			c = &pathNode{slot: -1}
			n.add(key, c)
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
func (p *jsonPaths) scan(d *scanner, vals *[maxSlots]fieldValue) *DecodeError {
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
func (p *jsonPaths) object(d *scanner, n *pathNode, vals *[maxSlots]fieldValue, depth int) *DecodeError {
	if depth > maxJSONDepth {
		return jsonSyntaxError("nesting deeper than 10000", d.pos)
	}
	d.pos++ // '{'
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return nil
	}
	guess, prev := n.first.Load(), uint32(0)
	for {
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return d.errAt("looking for the beginning of a key")
		}
		var c *pathNode
		if g := int(guess) - 1; g >= 0 && n.children[g].quoted != "" && strings.HasPrefix(bstr(d.data[d.pos+1:]), n.children[g].quoted) {
			gc := &n.children[g]
			d.pos += 1 + len(gc.quoted)
			c, prev, guess = gc.node, guess, gc.next.Load()
		} else {
			ks, ke, kesc, _, err := d.scanString()
			if err != nil {
				return err
			}
			i := -1
			if n.children != nil {
				if !kesc {
					i = n.child(d.data[ks:ke])
				} else {
					var buf [64]byte
					if k, ok := unquoteBounded(buf[:0], d.data[ks:ke], len(buf)); ok {
						i = n.child(k)
					}
				}
			}
			if i >= 0 {
				// Learn the order: the next document likely has it too.
				if prev == 0 {
					n.first.Store(uint32(i + 1))
				} else {
					n.children[prev-1].next.Store(uint32(i + 1))
				}
				c, prev, guess = n.children[i].node, uint32(i+1), n.children[i].next.Load()
			}
		}
		// Whitespace is rare between tokens: look for the token first.
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			if d.skipSpace(); d.pos >= len(d.data) || d.data[d.pos] != ':' {
				return d.errAt("after a key")
			}
		}
		d.pos++
		if d.pos < len(d.data) && d.data[d.pos] <= ' ' {
			d.skipSpace()
		}
		if d.pos < len(d.data) && d.data[d.pos] == '"' {
			// Most values are strings: scan them here rather than in value.
			s, e, esc, na, err := d.scanString()
			if err != nil {
				return err
			}
			if c != nil && c.slot >= 0 {
				vals[c.slot] = fieldValue{kind: kString, start: int32(s), end: int32(e), escaped: esc, nonASCII: na}
			}
		} else if err := p.value(d, c, vals, depth); err != nil {
			return err
		}
		if d.pos < len(d.data) && d.data[d.pos] <= ' ' {
			d.skipSpace()
		}
		if d.pos >= len(d.data) {
			return d.errAt("after a value")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
			if d.pos < len(d.data) && d.data[d.pos] <= ' ' {
				d.skipSpace()
			}
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
func (p *jsonPaths) value(d *scanner, c *pathNode, vals *[maxSlots]fieldValue, depth int) *DecodeError {
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
		v = fieldValue{kind: kOther, start: int32(start), end: int32(d.pos)}
	case ch == '"':
		s, e, esc, na, err := d.scanString()
		if err != nil {
			return err
		}
		v = fieldValue{kind: kString, start: int32(s), end: int32(e), escaped: esc, nonASCII: na}
	case ch == '-' || (ch >= '0' && ch <= '9'):
		if err := d.scanNumber(); err != nil {
			return err
		}
		v = fieldValue{kind: kNumber, start: int32(start), end: int32(d.pos)}
	case ch == 'n':
		if err := d.scanLiteral("null"); err != nil {
			return err
		}
		v.kind = kNull
	default:
		if err := d.skipValue(depth + 1); err != nil {
			return err
		}
		v = fieldValue{kind: kOther, start: int32(start), end: int32(d.pos)}
	}
	if c != nil && c.slot >= 0 {
		vals[c.slot] = v
	}
	return nil
}

// docView reads typed values of the slots of one scanned document.
type docView struct {
	d     *scanner
	vals  *[maxSlots]fieldValue
	names []string
}

// str returns slot i as a string ("" when absent or null).
func (j docView) str(i int) (string, *DecodeError) {
	// The usual plain ASCII string first; the rest is strSlow's.
	if v := &j.vals[i]; v.kind == kString && !v.escaped && !v.nonASCII {
		return bstr(j.d.data[v.start:v.end]), nil
	}
	return j.strSlow(i)
}

func (j docView) strSlow(i int) (string, *DecodeError) {
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
	if v := &j.vals[i]; v.kind == kNumber || v.kind == kString && !v.escaped && !v.nonASCII {
		return j.d.data[v.start:v.end]
	}
	return j.textSlow(i)
}

func (j docView) textSlow(i int) []byte {
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
		a := scanner{data: j.d.data[:v.end], pos: int(v.start)}
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
				if a.str(fieldValue{kind: kString, start: int32(st), end: int32(e), escaped: esc, nonASCII: na}) == s {
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
// slots (-1: not mapped; shop too, for a format that reads it itself) and
// validates them; ev.Time and ev.Action are
// the caller's.
func (j docView) fillCommon(ev *shopguard.Event, shop, actor, ip, ua, sess, reason, resource, id, records int) *DecodeError {
	var err *DecodeError
	if shop >= 0 {
		if ev.ShopID, err = j.str(shop); err != nil {
			return err
		}
	}
	if ev.Actor, err = j.str(actor); err != nil {
		return err
	}
	// The optional fields, unrolled: this runs for every event.
	if ua >= 0 {
		if ev.UserAgent, err = j.str(ua); err != nil {
			return err
		}
	}
	if sess >= 0 {
		if ev.SessionID, err = j.str(sess); err != nil {
			return err
		}
	}
	if reason >= 0 {
		if ev.Reason, err = j.str(reason); err != nil {
			return err
		}
	}
	if resource >= 0 {
		if ev.Resource, err = j.str(resource); err != nil {
			return err
		}
	}
	if id >= 0 {
		if ev.ID, err = j.str(id); err != nil {
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
