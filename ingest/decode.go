package ingest

import (
	"errors"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/shopguard/shopguard"
)

// MaxEventSize is the largest event, in bytes, that Decode accepts (SPEC §1).
// For a line of a file it excludes the line terminator.
const MaxEventSize = 64 << 10

// Reason classifies why an event was rejected. Its String is the value of
// the reason label of shopguard_events_invalid_total.
type Reason uint8

// The reasons an event is rejected.
const (
	ReasonNotJSON      Reason = iota + 1 // not a single, syntactically valid JSON object
	ReasonMissingField                   // a required field is absent or null
	ReasonBadTime                        // time is not an RFC 3339 date-time
	ReasonBadIP                          // ip is not an IPv4 or IPv6 address, or has a zone
	ReasonBadField                       // a known field has the wrong JSON type or is out of range
	ReasonTooLarge                       // over MaxEventSize bytes
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNotJSON:      "not_json",
	ReasonMissingField: "missing_field",
	ReasonBadTime:      "bad_time",
	ReasonBadIP:        "bad_ip",
	ReasonBadField:     "bad_field",
	ReasonTooLarge:     "too_large",
}

// String returns the reason's metric label, e.g. "not_json", or "unknown"
// for a value that is not one of the Reason constants.
func (r Reason) String() string {
	if r == 0 || r >= numReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// Reasons lists every Reason in declaration order. Metrics use it to
// pre-create their label series.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := ReasonNotJSON; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// ErrMalformed is matched, with errors.Is, by every error Decode returns.
var ErrMalformed = errors.New("malformed event")

// DecodeError says what was wrong with one line or message. Decode returns
// only errors of this type, and errors.Is(err, ErrMalformed) holds for them.
type DecodeError struct {
	Reason Reason
	Field  string // the JSON field at fault, empty for not_json and too_large
	Msg    string // what was wrong; values in it are quoted and truncated
}

// Error returns the reason label, the field and the message, e.g.
// `bad_ip: field "ip": "999.1.1.1" is not an IPv4 or IPv6 address`.
func (e *DecodeError) Error() string {
	if e.Field != "" {
		return e.Reason.String() + ": field " + strconv.Quote(e.Field) + ": " + e.Msg
	}
	return e.Reason.String() + ": " + e.Msg
}

// Unwrap returns ErrMalformed.
func (e *DecodeError) Unwrap() error { return ErrMalformed }

// Limits of SPEC §1 and of the JSON scanner.
const (
	maxShopID = 128
	maxActor  = 256
	// maxJSONDepth is the deepest nesting of objects and arrays accepted, the
	// top-level object included; encoding/json uses the same limit.
	maxJSONDepth = 10000
	// maxQuoted bounds how much of an offending value an error message
	// repeats, so that a flood of bad input cannot produce huge logs.
	maxQuoted = 64
)

// evField identifies the known fields of an event.
type evField uint8

const (
	fTime evField = iota
	fShopID
	fActor
	fAction
	fIP
	fUserAgent
	fSessionID
	fReason
	fResource
	fID
	fRecords
	numFields
)

var fieldNames = [numFields]string{
	fTime:      "time",
	fShopID:    "shop_id",
	fActor:     "actor",
	fAction:    "action",
	fIP:        "ip",
	fUserAgent: "user_agent",
	fSessionID: "session_id",
	fReason:    "reason",
	fResource:  "resource",
	fID:        "id",
	fRecords:   "records",
}

// lookupField maps a key to its field, or numFields for an unknown key. The
// switch on string(k) does not allocate.
func lookupField(k []byte) evField {
	switch string(k) {
	case "time":
		return fTime
	case "shop_id":
		return fShopID
	case "actor":
		return fActor
	case "action":
		return fAction
	case "ip":
		return fIP
	case "user_agent":
		return fUserAgent
	case "session_id":
		return fSessionID
	case "reason":
		return fReason
	case "resource":
		return fResource
	case "id":
		return fID
	case "records":
		return fRecords
	}
	return numFields
}

// valueKind is the JSON type of a field's value as far as validation cares.
type valueKind uint8

const (
	kAbsent valueKind = iota
	kNull
	kString
	kNumber
	kOther // true, false, object or array
)

var valueKindNames = [...]string{kAbsent: "absent", kNull: "null", kString: "a string", kNumber: "a number", kOther: "a boolean, object or array"}

// fieldValue records where the last occurrence of a known field's value is.
type fieldValue struct {
	start, end int32 // string contents without quotes, or the number literal (MaxEventSize fits)
	kind       valueKind
	escaped    bool // the string has escapes and must be decoded
	nonASCII   bool // the string has bytes >= 0x80 (UTF-8 still unchecked)
}

// scanner reads JSON from data at pos; the decoders of every format share it.
type scanner struct {
	data []byte
	pos  int
}

// eventDecoder is the state of one Decode call. It lives on Decode's stack.
type eventDecoder struct {
	scanner
	vals [numFields]fieldValue
}

// Decode parses one JSON event (SPEC §1) into ev, overwriting every field
// of ev; on error ev is zeroed.
//
// The strings of ev alias line wherever that is possible: the caller must
// not modify line while ev is in use, and must copy any field it keeps
// longer (see shopguard.Event). Strings with JSON escapes or invalid UTF-8
// are decoded into new memory (invalid bytes become U+FFFD, as with
// encoding/json); a typical event makes no allocation.
//
// Validation follows SPEC §1. Unknown fields, whatever their value, are
// skipped; for a repeated key the last occurrence wins. A null optional
// field counts as absent, a null required field as missing. The time is
// returned in UTC (the offset it was written with is applied, not kept).
// An IPv4-mapped IPv6 address is returned as IPv4. action values that
// shopguard does not know become shopguard.ActionOther. The error, always a
// *DecodeError, classifies the first problem found: size, then syntax, then
// missing required fields, then each field in the order of the SPEC table.
func Decode(line []byte, ev *shopguard.Event) error {
	if len(line) > MaxEventSize {
		*ev = shopguard.Event{}
		return tooLargeError(len(line))
	}
	d := eventDecoder{scanner: scanner{data: line}}
	err := d.parseObject()
	if err == nil {
		err = d.build(ev)
	}
	if err != nil {
		*ev = shopguard.Event{}
		return err
	}
	return nil
}

// tooLargeError is the error for an input of size bytes.
func tooLargeError(size int) *DecodeError {
	return &DecodeError{Reason: ReasonTooLarge,
		Msg: strconv.Itoa(size) + " bytes is over the limit of " + strconv.Itoa(MaxEventSize)}
}

// syntaxError reports a JSON syntax problem at byte offset off.
func jsonSyntaxError(msg string, off int) *DecodeError {
	return &DecodeError{Reason: ReasonNotJSON, Msg: msg + " at byte " + strconv.Itoa(off)}
}

// errAt reports the byte at d.pos as unexpected, or the end of input.
func (d *scanner) errAt(context string) *DecodeError {
	if d.pos >= len(d.data) {
		return jsonSyntaxError("unexpected end of input "+context, d.pos)
	}
	return jsonSyntaxError("invalid character "+quoteChar(d.data[d.pos])+" "+context, d.pos)
}

// quoteChar formats a byte for an error message.
func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c >= 0x20 && c < 0x7f:
		return "'" + string(rune(c)) + "'"
	}
	const hex = "0123456789abcdef"
	return "0x" + string([]byte{hex[c>>4], hex[c&0xf]})
}

// isSpace reports whether c is JSON whitespace.
func isJSONSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

func (d *scanner) skipSpace() {
	for d.pos < len(d.data) && d.data[d.pos] <= ' ' && isJSONSpace(d.data[d.pos]) {
		d.pos++
	}
}

// parseObject scans the whole input, which must be one JSON object and
// nothing else but whitespace, recording the values of known fields.
func (d *eventDecoder) parseObject() *DecodeError {
	d.skipSpace()
	if d.pos >= len(d.data) {
		return jsonSyntaxError("empty input", d.pos)
	}
	if d.data[d.pos] != '{' {
		return jsonSyntaxError("not a JSON object: starts with "+quoteChar(d.data[d.pos]), d.pos)
	}
	d.pos++
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
	} else {
		for {
			if d.pos >= len(d.data) || d.data[d.pos] != '"' {
				return d.errAt("looking for the beginning of a key")
			}
			ks, ke, kesc, _, err := d.scanString()
			if err != nil {
				return err
			}
			f := d.keyField(ks, ke, kesc)
			d.skipSpace()
			if d.pos >= len(d.data) || d.data[d.pos] != ':' {
				return d.errAt("after a key")
			}
			d.pos++
			d.skipSpace()
			if err := d.parseValue(f); err != nil {
				return err
			}
			d.skipSpace()
			if d.pos >= len(d.data) {
				return d.errAt("after a value")
			}
			c := d.data[d.pos]
			d.pos++
			if c == '}' {
				break
			}
			if c != ',' {
				d.pos--
				return d.errAt("after a value")
			}
			d.skipSpace()
		}
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return jsonSyntaxError("data after the object", d.pos)
	}
	return nil
}

// keyField identifies the key whose contents are d.data[start:end].
func (d *eventDecoder) keyField(start, end int, escaped bool) evField {
	if !escaped {
		return lookupField(d.data[start:end])
	}
	// Escaped keys are rare; the longest known key is 10 bytes, so a key
	// that unescapes to more than the buffer is unknown anyway.
	var buf [16]byte
	k, ok := unquoteBounded(buf[:0], d.data[start:end], len(buf))
	if !ok {
		return numFields
	}
	return lookupField(k)
}

// parseValue scans the value at d.pos, the value of field f (numFields for
// an unknown key).
func (d *eventDecoder) parseValue(f evField) *DecodeError {
	if d.pos >= len(d.data) {
		return d.errAt("looking for the beginning of a value")
	}
	var v fieldValue
	switch c := d.data[d.pos]; {
	case c == '"':
		start, end, escaped, nonASCII, err := d.scanString()
		if err != nil {
			return err
		}
		v = fieldValue{kind: kString, start: int32(start), end: int32(end), escaped: escaped, nonASCII: nonASCII}
	case c == '-' || (c >= '0' && c <= '9'):
		start := d.pos
		if err := d.scanNumber(); err != nil {
			return err
		}
		v = fieldValue{kind: kNumber, start: int32(start), end: int32(d.pos)}
	case c == 'n':
		if err := d.scanLiteral("null"); err != nil {
			return err
		}
		v.kind = kNull
	default:
		if err := d.skipValue(2); err != nil {
			return err
		}
		v.kind = kOther
	}
	if f < numFields {
		d.vals[f] = v
	}
	return nil
}

// skipValue scans any JSON value at d.pos nested at depth (the top-level
// object being depth 1) without recording it.
func (d *scanner) skipValue(depth int) *DecodeError {
	if d.pos >= len(d.data) {
		return d.errAt("looking for the beginning of a value")
	}
	switch c := d.data[d.pos]; c {
	case '"':
		_, _, _, _, err := d.scanString()
		return err
	case 't':
		return d.scanLiteral("true")
	case 'f':
		return d.scanLiteral("false")
	case 'n':
		return d.scanLiteral("null")
	case '{', '[':
		if depth > maxJSONDepth {
			return jsonSyntaxError("nesting deeper than "+strconv.Itoa(maxJSONDepth), d.pos)
		}
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		d.pos++
		d.skipSpace()
		if d.pos < len(d.data) && d.data[d.pos] == closing {
			d.pos++
			return nil
		}
		for {
			if c == '{' {
				if d.pos >= len(d.data) || d.data[d.pos] != '"' {
					return d.errAt("looking for the beginning of a key")
				}
				if _, _, _, _, err := d.scanString(); err != nil {
					return err
				}
				d.skipSpace()
				if d.pos >= len(d.data) || d.data[d.pos] != ':' {
					return d.errAt("after a key")
				}
				d.pos++
				d.skipSpace()
			}
			if err := d.skipValue(depth + 1); err != nil {
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
			case closing:
				d.pos++
				return nil
			default:
				return d.errAt("after a value")
			}
		}
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return d.scanNumber()
		}
		return d.errAt("looking for the beginning of a value")
	}
}

// scanLiteral consumes lit (true, false or null) at d.pos.
func (d *scanner) scanLiteral(lit string) *DecodeError {
	for i := 0; i < len(lit); i++ {
		if d.pos >= len(d.data) || d.data[d.pos] != lit[i] {
			return d.errAt("in literal " + lit)
		}
		d.pos++
	}
	return nil
}

func isDecDigit(c byte) bool { return c >= '0' && c <= '9' }

// scanNumber consumes a JSON number at d.pos.
func (d *scanner) scanNumber() *DecodeError {
	if d.data[d.pos] == '-' {
		d.pos++
	}
	switch {
	case d.pos < len(d.data) && d.data[d.pos] == '0':
		d.pos++
	case d.pos < len(d.data) && d.data[d.pos] >= '1' && d.data[d.pos] <= '9':
		for d.pos < len(d.data) && isDecDigit(d.data[d.pos]) {
			d.pos++
		}
	default:
		return d.errAt("in numeric literal")
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if d.pos >= len(d.data) || !isDecDigit(d.data[d.pos]) {
			return d.errAt("after decimal point in numeric literal")
		}
		for d.pos < len(d.data) && isDecDigit(d.data[d.pos]) {
			d.pos++
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if d.pos >= len(d.data) || !isDecDigit(d.data[d.pos]) {
			return d.errAt("in exponent of numeric literal")
		}
		for d.pos < len(d.data) && isDecDigit(d.data[d.pos]) {
			d.pos++
		}
	}
	return nil
}

// plainByte marks the bytes that may appear in a JSON string as they are and
// need no further thought: everything but '"', '\\', control characters and
// non-ASCII bytes.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString consumes the JSON string at d.pos (which is '"') and returns
// the offsets of its contents, whether it has escapes, and whether it has
// non-ASCII bytes. Escapes are validated here; UTF-8 is not, since only the
// strings that are kept need it.
func (d *scanner) scanString() (start, end int, escaped, nonASCII bool, err *DecodeError) {
	data := d.data
	i := d.pos + 1
	start = i
	for {
		for i < len(data) && plainByte[data[i]] {
			i++
		}
		if i >= len(data) {
			d.pos = i
			return 0, 0, false, false, d.errAt("in string literal")
		}
		switch c := data[i]; {
		case c == '"':
			d.pos = i + 1
			return start, i, escaped, nonASCII, nil
		case c == '\\':
			escaped = true
			i++
			if i >= len(data) {
				d.pos = i
				return 0, 0, false, false, d.errAt("in string escape")
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				for k := 1; k <= 4; k++ {
					if i+k >= len(data) || hexVal(data[i+k]) < 0 {
						d.pos = i + k
						return 0, 0, false, false, d.errAt("in \\u hexadecimal character escape")
					}
				}
				i += 5
			default:
				d.pos = i
				return 0, 0, false, false, d.errAt("in string escape")
			}
		case c < 0x20:
			d.pos = i
			return 0, 0, false, false, d.errAt("in string literal")
		default:
			nonASCII = true
			i++
		}
	}
}

// hexVal returns the value of a hexadecimal digit, or -1.
func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// getu4 decodes the \uXXXX escape at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		v := hexVal(c)
		if v < 0 {
			return -1
		}
		r = r<<4 | rune(v)
	}
	return r
}

// unquoteBounded appends the decoded contents of a JSON string (already
// validated by scanString) to dst, replacing invalid UTF-8 and unpaired
// surrogates with U+FFFD exactly as encoding/json does. It stops and
// reports false once the result would exceed limit bytes.
func unquoteBounded(dst, s []byte, limit int) ([]byte, bool) {
	for r := 0; r < len(s); {
		if len(dst) > limit {
			return dst, false
		}
		c := s[r]
		switch {
		case c == '\\':
			switch s[r+1] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, getu4(s[r:])); dec != utf8.RuneError {
						r += 6
						dst = utf8.AppendRune(dst, dec)
						continue
					}
					rr = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, rr)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, s[r+1])
			}
			r += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			dst = utf8.AppendRune(dst, rr)
		}
	}
	return dst, len(dst) <= limit
}

// str returns the string value v, aliasing d.data when its bytes are
// usable as they are.
func (d *scanner) str(v fieldValue) string {
	b := d.data[v.start:v.end]
	if !v.escaped && (!v.nonASCII || utf8.Valid(b)) {
		if len(b) == 0 {
			return ""
		}
		return unsafe.String(&b[0], len(b))
	}
	out, _ := unquoteBounded(make([]byte, 0, len(b)+8), b, MaxEventSize*3)
	return unsafe.String(unsafe.SliceData(out), len(out))
}

// fieldError builds the error for field f.
func fieldError(r Reason, f evField, msg string) *DecodeError {
	return &DecodeError{Reason: r, Field: fieldNames[f], Msg: msg}
}

// quote quotes s for an error message, truncating it to maxQuoted bytes.
func quoteValue(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// wrongType is the error for a known field whose value has the wrong type.
func wrongType(f evField, want string, got valueKind) *DecodeError {
	return fieldError(ReasonBadField, f, "must be "+want+", not "+valueKindNames[got])
}

// requiredFields are checked for presence, in this order, before any value
// is validated.
var requiredFields = [...]evField{fTime, fShopID, fActor, fAction, fIP}

// build validates the recorded values and fills ev.
func (d *eventDecoder) build(ev *shopguard.Event) *DecodeError {
	for _, f := range requiredFields {
		if k := d.vals[f].kind; k == kAbsent || k == kNull {
			return fieldError(ReasonMissingField, f, "is required")
		}
	}
	var e shopguard.Event

	// time
	v := d.vals[fTime]
	if v.kind != kString {
		return wrongType(fTime, "a string", v.kind)
	}
	raw := d.data[v.start:v.end]
	var ok bool
	if v.escaped || v.nonASCII {
		// A time has no business with escapes or non-ASCII, but JSON allows
		// writing "\u0032026-…"; decode it first.
		raw = []byte(d.str(v))
	}
	if e.Time, ok = parseRFC3339(raw); !ok {
		return fieldError(ReasonBadTime, fTime, quoteValue(string(raw))+" is not an RFC 3339 date-time")
	}
	if e.Time.IsZero() {
		// Everything downstream reads the zero time as "unknown".
		return fieldError(ReasonBadTime, fTime, quoteValue(string(raw))+" is the zero time")
	}

	// shop_id, actor
	var err *DecodeError
	if e.ShopID, err = d.boundedString(fShopID, maxShopID); err != nil {
		return err
	}
	if e.Actor, err = d.boundedString(fActor, maxActor); err != nil {
		return err
	}

	// action
	v = d.vals[fAction]
	if v.kind != kString {
		return wrongType(fAction, "a string", v.kind)
	}
	e.Action = shopguard.ParseAction(d.str(v))

	// ip
	v = d.vals[fIP]
	if v.kind != kString {
		return wrongType(fIP, "a string", v.kind)
	}
	s := d.str(v)
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			// netip would accept and intern the zone; an audit log has no
			// use for one, and shopguard.Event promises none.
			return fieldError(ReasonBadIP, fIP, quoteValue(s)+" has a zone, which is not allowed")
		}
	}
	ip, perr := netip.ParseAddr(s)
	if perr != nil {
		return fieldError(ReasonBadIP, fIP, quoteValue(s)+" is not an IPv4 or IPv6 address")
	}
	e.IP = ip.Unmap()

	// optional strings
	if e.UserAgent, err = d.optString(fUserAgent); err != nil {
		return err
	}
	if e.SessionID, err = d.optString(fSessionID); err != nil {
		return err
	}
	if e.Reason, err = d.optString(fReason); err != nil {
		return err
	}
	if e.Resource, err = d.optString(fResource); err != nil {
		return err
	}
	if e.ID, err = d.optString(fID); err != nil {
		return err
	}

	// records
	switch v = d.vals[fRecords]; v.kind {
	case kAbsent, kNull:
	case kNumber:
		if e.Records, err = parseRecords(d.data[v.start:v.end]); err != nil {
			return err
		}
	default:
		return wrongType(fRecords, "an integer", v.kind)
	}

	*ev = e
	return nil
}

// boundedString returns the required string field f, 1 to limit bytes long.
func (d *eventDecoder) boundedString(f evField, limit int) (string, *DecodeError) {
	v := d.vals[f]
	if v.kind != kString {
		return "", wrongType(f, "a string", v.kind)
	}
	s := d.str(v)
	if len(s) == 0 || len(s) > limit {
		return "", fieldError(ReasonBadField, f,
			"is "+strconv.Itoa(len(s))+" bytes long, must be 1 to "+strconv.Itoa(limit))
	}
	return s, nil
}

// optString returns the optional string field f, "" if absent or null.
func (d *eventDecoder) optString(f evField) (string, *DecodeError) {
	switch v := d.vals[f]; v.kind {
	case kAbsent, kNull:
		return "", nil
	case kString:
		return d.str(v), nil
	default:
		return "", wrongType(f, "a string", v.kind)
	}
}

// parseRecords parses a JSON number literal as records, an integer ≥ 0.
// "-0" is 0; fractions and exponents are rejected even when the value is
// whole, as encoding/json does for integer fields.
func parseRecords(lit []byte) (int64, *DecodeError) {
	neg := lit[0] == '-'
	digits := lit
	if neg {
		digits = lit[1:]
	}
	var n int64
	for _, c := range digits {
		if !isDecDigit(c) {
			return 0, fieldError(ReasonBadField, fRecords, quoteValue(string(lit))+" is not an integer")
		}
		if n > (1<<63-1-int64(c-'0'))/10 {
			return 0, fieldError(ReasonBadField, fRecords, quoteValue(string(lit))+" is out of range")
		}
		n = n*10 + int64(c-'0')
	}
	if neg && n != 0 {
		return 0, fieldError(ReasonBadField, fRecords, quoteValue(string(lit))+" is negative")
	}
	return n, nil
}

// parseRFC3339 parses an RFC 3339 date-time ("2006-01-02T15:04:05Z",
// optionally with a fraction of a second of any length, of which the first 9
// digits count, and "Z" or a "±hh:mm" offset) and returns the instant in
// UTC. Unlike time.Parse it never allocates: an offset is applied, not kept
// as a time.FixedZone (which time.Parse allocates for any offset but the
// local one). It accepts what time.Parse(time.RFC3339Nano, s) accepts for
// that grammar, plus the lower-case "t" and "z" that RFC 3339 §5.6 allows,
// and rejects what RFC 3339 does but time.Parse lets through: offsets past
// ±23:59 and a ',' before the fraction. Leap seconds (:60) are rejected, as
// by time.Parse.
func parseRFC3339(s []byte) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05Z") ||
		s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := parseDigits(s[0:4])
	month, ok2 := parseDigits(s[5:7])
	day, ok3 := parseDigits(s[8:10])
	hour, ok4 := parseDigits(s[11:13])
	minute, ok5 := parseDigits(s[14:16])
	sec, ok6 := parseDigits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		month < 1 || month > 12 || day < 1 || day > daysInMonth(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	s = s[19:]

	var nsec int64
	if s[0] == '.' {
		n := 1
		for n < len(s) && isDecDigit(s[n]) {
			n++
		}
		if n == 1 {
			return time.Time{}, false
		}
		scale := int64(1e9)
		for _, c := range s[1:min(n, 10)] {
			scale /= 10
			nsec += int64(c-'0') * scale
		}
		s = s[n:]
	}

	var offset int64
	switch {
	case len(s) == 1 && (s[0] == 'Z' || s[0] == 'z'):
	case len(s) == 6 && (s[0] == '+' || s[0] == '-') && s[3] == ':':
		oh, ok1 := parseDigits(s[1:3])
		om, ok2 := parseDigits(s[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = int64(oh*3600 + om*60)
		if s[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	unix := daysSinceEpoch(year, month, day)*86400 + int64(hour*3600+minute*60+sec) - offset
	return time.Unix(unix, nsec).UTC(), true
}

// digits parses a short run of decimal digits.
func parseDigits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if !isDecDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// daysIn returns the number of days in month of year (proleptic Gregorian).
func daysInMonth(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysSinceEpoch returns the days from 1970-01-01 to the given date in the
// proleptic Gregorian calendar (H. Hinnant's days_from_civil), valid for
// years 0 to 9999.
func daysSinceEpoch(year, month, day int) int64 {
	y := int64(year)
	if month <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400 // [0, 399]
	m := int64(month)
	if m > 2 {
		m -= 3
	} else {
		m += 9
	}
	doy := (153*m+2)/5 + int64(day) - 1    // [0, 365]
	doe := yoe*365 + yoe/4 - yoe/100 + doy // [0, 146096]
	return era*146097 + doe - 719468
}
