package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// evJSON builds a JSON event from required values plus extra raw members.
func evJSON(time, shop, actor, action, ip string, extra ...string) string {
	var b strings.Builder
	b.WriteString(`{"time":` + strconv.Quote(time) + `,"shop_id":` + strconv.Quote(shop) +
		`,"actor":` + strconv.Quote(actor) + `,"action":` + strconv.Quote(action) + `,"ip":` + strconv.Quote(ip))
	for _, e := range extra {
		b.WriteString("," + e)
	}
	b.WriteString("}")
	return b.String()
}

// okJSON is a valid event with the given extra members.
func okJSON(extra ...string) string {
	return evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "login.success", "203.0.113.7", extra...)
}

// base is the event okJSON() decodes to.
func base() shopguard.Event {
	return shopguard.Event{
		Time:   time.Date(2026, 1, 7, 9, 30, 0, 0, time.UTC),
		ShopID: "shop-17",
		Actor:  "owner@example.jp",
		Action: shopguard.ActionLoginSuccess,
		IP:     netip.MustParseAddr("203.0.113.7"),
	}
}

// with returns base() changed by f.
func with(f func(e *shopguard.Event)) shopguard.Event {
	e := base()
	f(&e)
	return e
}

// nestedArrays returns an unknown member whose value nests depth arrays.
func nestedArrays(depth int) string {
	return `"deep":` + strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

// sized returns a valid event padded with an unknown member to exactly n
// bytes.
func sized(n int) string {
	s := okJSON(`"pad":""`)
	return s[:len(s)-2] + strings.Repeat("x", n-len(s)) + `"}`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   shopguard.Event // when reason is 0
		reason Reason
		field  string
	}{
		// valid events
		{name: "minimal", in: okJSON(), want: base()},
		{name: "all fields", in: okJSON(`"user_agent":"curl/8.5"`, `"session_id":"s1"`, `"reason":"bad_password"`,
			`"records":42`, `"resource":"customers/all"`, `"id":"evt-1"`),
			want: with(func(e *shopguard.Event) {
				e.UserAgent, e.SessionID, e.Reason, e.Records, e.Resource, e.ID = "curl/8.5", "s1", "bad_password", 42, "customers/all", "evt-1"
			})},
		{name: "every action", in: evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "orders.export", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Action = shopguard.ActionOrdersExport })},
		{name: "unknown action is other", in: evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "login.SUCCESS", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Action = shopguard.ActionOther })},
		{name: "empty action is other", in: evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Action = shopguard.ActionOther })},
		{name: "fraction .5", in: evJSON("2026-01-07T09:30:00.5Z", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Time = e.Time.Add(500 * time.Millisecond) })},
		{name: "fraction 9 digits", in: evJSON("2026-01-07T09:30:00.123456789Z", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Time = e.Time.Add(123456789) })},
		{name: "fraction beyond ns truncated", in: evJSON("2026-01-07T09:30:00.1234567899Z", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Time = e.Time.Add(123456789) })},
		{name: "offset +09:00 honoured", in: evJSON("2026-01-07T18:30:00+09:00", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: base()},
		{name: "offset -05:30 honoured", in: evJSON("2026-01-07T04:00:00-05:30", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: base()},
		{name: "offset crosses a year", in: evJSON("2025-12-31T23:30:00-10:00", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Time = time.Date(2026, 1, 1, 9, 30, 0, 0, time.UTC) })},
		{name: "offset -00:00", in: evJSON("2026-01-07T09:30:00-00:00", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: base()},
		{name: "lower-case t and z", in: evJSON("2026-01-07t09:30:00z", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: base()},
		{name: "leap day", in: evJSON("2024-02-29T09:30:00Z", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Time = time.Date(2024, 2, 29, 9, 30, 0, 0, time.UTC) })},
		{name: "leap day 2000", in: evJSON("2000-02-29T00:00:00Z", "shop-17", "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Time = time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC) })},
		{name: "shop_id 128 bytes", in: evJSON("2026-01-07T09:30:00Z", strings.Repeat("s", 128), "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.ShopID = strings.Repeat("s", 128) })},
		{name: "shop_id 1 byte", in: evJSON("2026-01-07T09:30:00Z", "s", "owner@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.ShopID = "s" })},
		{name: "actor 256 bytes", in: evJSON("2026-01-07T09:30:00Z", "shop-17", strings.Repeat("a", 256), "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.Actor = strings.Repeat("a", 256) })},
		{name: "actor 256 bytes after unescaping", in: `{"time":"2026-01-07T09:30:00Z","shop_id":"shop-17","actor":"` +
			strings.Repeat(`\u00e9`, 128) + `","action":"login.success","ip":"203.0.113.7"}`,
			want: with(func(e *shopguard.Event) { e.Actor = strings.Repeat("é", 128) })},
		{name: "records 0", in: okJSON(`"records":0`), want: base()},
		{name: "records -0", in: okJSON(`"records":-0`), want: base()},
		{name: "records max int64", in: okJSON(`"records":9223372036854775807`),
			want: with(func(e *shopguard.Event) { e.Records = 1<<63 - 1 })},
		{name: "escapes", in: okJSON(`"user_agent":"q\" b\\ s\/ \b\f\n\r\t e\u00e9 cart\ud83d\uded2"`),
			want: with(func(e *shopguard.Event) { e.UserAgent = "q\" b\\ s/ \b\f\n\r\t eé cart🛒" })},
		{name: "escaped upper-case hex", in: okJSON(`"id":"\u00C9\u00c9"`),
			want: with(func(e *shopguard.Event) { e.ID = "ÉÉ" })},
		{name: "lone surrogate becomes U+FFFD", in: okJSON(`"id":"a\ud800b\udc00c\ud800\u0041"`),
			want: with(func(e *shopguard.Event) { e.ID = "a\uFFFDb\uFFFDc\uFFFDA" })},
		{name: "invalid UTF-8 becomes U+FFFD", in: okJSON("\"user_agent\":\"a\xffb\xed\xa0\x80\""),
			want: with(func(e *shopguard.Event) { e.UserAgent = "a\uFFFDb\uFFFD\uFFFD\uFFFD" })},
		{name: "unicode unescaped", in: evJSON("2026-01-07T09:30:00Z", "ショップ", "店長@example.jp", "login.success", "203.0.113.7"),
			want: with(func(e *shopguard.Event) { e.ShopID, e.Actor = "ショップ", "店長@example.jp" })},
		{name: "NUL escape kept", in: okJSON(`"id":"a\u0000b"`),
			want: with(func(e *shopguard.Event) { e.ID = "a\x00b" })},
		{name: "IPv6", in: evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "login.success", "2001:db8:1:2::17"),
			want: with(func(e *shopguard.Event) { e.IP = netip.MustParseAddr("2001:db8:1:2::17") })},
		{name: "IPv6 long form", in: evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "login.success", "2001:0db8:0000:0000:0000:0000:0000:0001"),
			want: with(func(e *shopguard.Event) { e.IP = netip.MustParseAddr("2001:db8::1") })},
		{name: "IPv4-mapped IPv6 unmapped", in: evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "login.success", "::ffff:203.0.113.7"),
			want: base()},
		{name: "IPv4-mapped IPv6 in hex unmapped", in: evJSON("2026-01-07T09:30:00Z", "shop-17", "owner@example.jp", "login.success", "::ffff:cb00:7107"),
			want: base()},
		{name: "unknown fields of every type skipped", in: okJSON(`"s":"x\"}"`, `"n":-1.5e+10`, `"t":true`, `"f":false`, `"z":null`,
			`"o":{"a":{"b":[1,{"c":"}"}]},"d":[]}`, `"a":[[],{},"",0,-0.0,1E5]`),
			want: base()},
		{name: "unknown nested value named like a field", in: okJSON(`"x":{"ip":"999.1.1.1","time":5}`), want: base()},
		{name: "whitespace everywhere", in: " \t\r\n{ \"time\" :\t\"2026-01-07T09:30:00Z\" ,\n\"shop_id\"\r:\"shop-17\", \"actor\":\"owner@example.jp\",\"action\":\"login.success\",\"ip\":\"203.0.113.7\" , \"x\" : [ 1 , { } ] } \r\n\t",
			want: base()},
		{name: "duplicate key last wins", in: okJSON(`"ip":"198.51.100.1"`, `"ip":"203.0.113.8"`),
			want: with(func(e *shopguard.Event) { e.IP = netip.MustParseAddr("203.0.113.8") })},
		{name: "duplicate key overrides bad value", in: `{"ip":"999","time":5,` + okJSON()[1:], want: base()},
		{name: "escaped key matches", in: okJSON(`"\u0069d":"evt-1"`),
			want: with(func(e *shopguard.Event) { e.ID = "evt-1" })},
		{name: "escaped long key is unknown", in: okJSON(`"\u0069d_and_some_more_text":5`), want: base()},
		{name: "null optionals are absent", in: okJSON(`"user_agent":null`, `"records":null`, `"id":null`), want: base()},
		{name: "nesting 10000 deep", in: okJSON(nestedArrays(9999)), want: base()},
		{name: "exactly MaxEventSize", in: sized(MaxEventSize), want: base()},

		// not_json
		{name: "empty", in: "", reason: ReasonNotJSON},
		{name: "blank", in: " \t", reason: ReasonNotJSON},
		{name: "null", in: "null", reason: ReasonNotJSON},
		{name: "array", in: `[{"time":"2026-01-07T09:30:00Z"}]`, reason: ReasonNotJSON},
		{name: "string", in: `"{}"`, reason: ReasonNotJSON},
		{name: "plain text", in: "login ok user=admin", reason: ReasonNotJSON},
		{name: "truncated", in: okJSON()[:40], reason: ReasonNotJSON},
		{name: "unterminated string", in: `{"time":"2026`, reason: ReasonNotJSON},
		{name: "trailing garbage", in: okJSON() + "x", reason: ReasonNotJSON},
		{name: "two objects", in: okJSON() + okJSON(), reason: ReasonNotJSON},
		{name: "trailing comma", in: okJSON()[:len(okJSON())-1] + ",}", reason: ReasonNotJSON},
		{name: "missing colon", in: `{"time" "x"}`, reason: ReasonNotJSON},
		{name: "missing comma", in: `{"a":1 "b":2}`, reason: ReasonNotJSON},
		{name: "single quotes", in: `{'time':'x'}`, reason: ReasonNotJSON},
		{name: "unquoted key", in: `{time:"x"}`, reason: ReasonNotJSON},
		{name: "control character in string", in: okJSON("\"id\":\"a\nb\""), reason: ReasonNotJSON},
		{name: "bad escape", in: okJSON(`"id":"\x41"`), reason: ReasonNotJSON},
		{name: "short unicode escape", in: okJSON(`"id":"\u12"`), reason: ReasonNotJSON},
		{name: "non-hex unicode escape", in: okJSON(`"id":"\u12g4"`), reason: ReasonNotJSON},
		{name: "leading zero", in: okJSON(`"x":01`), reason: ReasonNotJSON},
		{name: "bare minus", in: okJSON(`"x":-`), reason: ReasonNotJSON},
		{name: "dot without digits", in: okJSON(`"x":1.`), reason: ReasonNotJSON},
		{name: "exponent without digits", in: okJSON(`"x":1e+`), reason: ReasonNotJSON},
		{name: "plus sign", in: okJSON(`"x":+1`), reason: ReasonNotJSON},
		{name: "bad literal", in: okJSON(`"x":tru`), reason: ReasonNotJSON},
		{name: "NaN", in: okJSON(`"x":NaN`), reason: ReasonNotJSON},
		{name: "unclosed nested", in: okJSON(`"x":[1,{"a":2}`), reason: ReasonNotJSON},
		{name: "mismatched brackets", in: okJSON(`"x":[}`), reason: ReasonNotJSON},
		{name: "nesting 10001 deep", in: okJSON(nestedArrays(10000)), reason: ReasonNotJSON},
		{name: "byte order mark", in: "\xef\xbb\xbf" + okJSON(), reason: ReasonNotJSON},

		// missing_field
		{name: "no time", in: `{"shop_id":"s","actor":"a","action":"logout","ip":"192.0.2.1"}`, reason: ReasonMissingField, field: "time"},
		{name: "no shop_id", in: `{"time":"2026-01-07T09:30:00Z","actor":"a","action":"logout","ip":"192.0.2.1"}`, reason: ReasonMissingField, field: "shop_id"},
		{name: "no actor", in: `{"time":"2026-01-07T09:30:00Z","shop_id":"s","action":"logout","ip":"192.0.2.1"}`, reason: ReasonMissingField, field: "actor"},
		{name: "no action", in: `{"time":"2026-01-07T09:30:00Z","shop_id":"s","actor":"a","ip":"192.0.2.1"}`, reason: ReasonMissingField, field: "action"},
		{name: "no ip", in: `{"time":"2026-01-07T09:30:00Z","shop_id":"s","actor":"a","action":"logout"}`, reason: ReasonMissingField, field: "ip"},
		{name: "null ip", in: okJSON(`"ip":null`), reason: ReasonMissingField, field: "ip"},
		{name: "empty object", in: `{}`, reason: ReasonMissingField, field: "time"},
		{name: "missing before wrong type", in: `{"time":5}`, reason: ReasonMissingField, field: "shop_id"},
		{name: "field only nested", in: `{"x":{"time":"2026-01-07T09:30:00Z"}}`, reason: ReasonMissingField, field: "time"},
		{name: "key differs in case", in: `{"TIME":"2026-01-07T09:30:00Z","shop_id":"s","actor":"a","action":"logout","ip":"192.0.2.1"}`, reason: ReasonMissingField, field: "time"},

		// bad_time
		{name: "space separator", in: evJSON("2026-01-07 09:30:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "no zone", in: evJSON("2026-01-07T09:30:00", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "date only", in: evJSON("2026-01-07", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "empty time", in: evJSON("", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "unix seconds as string", in: evJSON("1767778200", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "February 30", in: evJSON("2026-02-30T09:30:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "February 29 in non-leap year", in: evJSON("2026-02-29T09:30:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "February 29 in 1900", in: evJSON("1900-02-29T09:30:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "month 13", in: evJSON("2026-13-07T09:30:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "hour 24", in: evJSON("2026-01-07T24:00:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "leap second", in: evJSON("2016-12-31T23:59:60Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "single-digit hour", in: evJSON("2026-01-07T9:30:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "dot without fraction", in: evJSON("2026-01-07T09:30:00.Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "comma fraction", in: evJSON("2026-01-07T09:30:00,5Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "offset hour 24", in: evJSON("2026-01-07T09:30:00+24:00", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "offset minute 60", in: evJSON("2026-01-07T09:30:00+09:60", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "offset without colon", in: evJSON("2026-01-07T09:30:00+0900", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "zone name", in: evJSON("2026-01-07T09:30:00 JST", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "zero time", in: evJSON("0001-01-01T00:00:00Z", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},
		{name: "zero time via offset", in: evJSON("0001-01-01T09:00:00+09:00", "s", "a", "logout", "192.0.2.1"), reason: ReasonBadTime, field: "time"},

		// bad_ip
		{name: "IPv4 out of range", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "999.1.1.1"), reason: ReasonBadIP, field: "ip"},
		{name: "IPv4 leading zero", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "01.2.3.4"), reason: ReasonBadIP, field: "ip"},
		{name: "IPv4 three parts", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "1.2.3"), reason: ReasonBadIP, field: "ip"},
		{name: "IP with port", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "192.0.2.1:443"), reason: ReasonBadIP, field: "ip"},
		{name: "IP with space", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", " 192.0.2.1"), reason: ReasonBadIP, field: "ip"},
		{name: "CIDR", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "192.0.2.0/24"), reason: ReasonBadIP, field: "ip"},
		{name: "empty IP", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", ""), reason: ReasonBadIP, field: "ip"},
		{name: "IPv6 zone rejected", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "fe80::1%eth0"), reason: ReasonBadIP, field: "ip"},
		{name: "mapped IPv6 zone rejected", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "::ffff:192.0.2.1%1"), reason: ReasonBadIP, field: "ip"},
		{name: "hostname", in: evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "localhost"), reason: ReasonBadIP, field: "ip"},

		// bad_field
		{name: "shop_id empty", in: evJSON("2026-01-07T09:30:00Z", "", "a", "logout", "192.0.2.1"), reason: ReasonBadField, field: "shop_id"},
		{name: "shop_id 129 bytes", in: evJSON("2026-01-07T09:30:00Z", strings.Repeat("s", 129), "a", "logout", "192.0.2.1"), reason: ReasonBadField, field: "shop_id"},
		{name: "actor empty", in: evJSON("2026-01-07T09:30:00Z", "s", "", "logout", "192.0.2.1"), reason: ReasonBadField, field: "actor"},
		{name: "actor 257 bytes", in: evJSON("2026-01-07T09:30:00Z", "s", strings.Repeat("a", 257), "logout", "192.0.2.1"), reason: ReasonBadField, field: "actor"},
		{name: "time is a number", in: okJSON(`"time":1767778200`), reason: ReasonBadField, field: "time"},
		{name: "shop_id is a number", in: okJSON(`"shop_id":17`), reason: ReasonBadField, field: "shop_id"},
		{name: "actor is an object", in: okJSON(`"actor":{"id":"a"}`), reason: ReasonBadField, field: "actor"},
		{name: "action is a number", in: okJSON(`"action":7`), reason: ReasonBadField, field: "action"},
		{name: "ip is an array", in: okJSON(`"ip":[192,0,2,1]`), reason: ReasonBadField, field: "ip"},
		{name: "ip is true", in: okJSON(`"ip":true`), reason: ReasonBadField, field: "ip"},
		{name: "user_agent is a number", in: okJSON(`"user_agent":5`), reason: ReasonBadField, field: "user_agent"},
		{name: "session_id is false", in: okJSON(`"session_id":false`), reason: ReasonBadField, field: "session_id"},
		{name: "reason is an object", in: okJSON(`"reason":{}`), reason: ReasonBadField, field: "reason"},
		{name: "resource is an array", in: okJSON(`"resource":[]`), reason: ReasonBadField, field: "resource"},
		{name: "id is a number", in: okJSON(`"id":12345`), reason: ReasonBadField, field: "id"},
		{name: "records -1", in: okJSON(`"records":-1`), reason: ReasonBadField, field: "records"},
		{name: "records fraction", in: okJSON(`"records":1.5`), reason: ReasonBadField, field: "records"},
		{name: "records whole with fraction", in: okJSON(`"records":10.0`), reason: ReasonBadField, field: "records"},
		{name: "records exponent", in: okJSON(`"records":1e3`), reason: ReasonBadField, field: "records"},
		{name: "records string", in: okJSON(`"records":"5"`), reason: ReasonBadField, field: "records"},
		{name: "records overflow", in: okJSON(`"records":9223372036854775808`), reason: ReasonBadField, field: "records"},
		{name: "records bool", in: okJSON(`"records":true`), reason: ReasonBadField, field: "records"},

		// too_large
		{name: "MaxEventSize+1", in: sized(MaxEventSize + 1), reason: ReasonTooLarge},
		{name: "too large garbage", in: strings.Repeat("x", MaxEventSize+1), reason: ReasonTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev shopguard.Event
			err := Decode([]byte(tt.in), &ev)
			if tt.reason == 0 {
				require.NoError(t, err)
				requireEventEqual(t, tt.want, ev)
			} else {
				require.Error(t, err)
				var derr *DecodeError
				require.ErrorAs(t, err, &derr)
				require.Equal(t, tt.reason.String(), derr.Reason.String(), "error: %v", err)
				require.Equal(t, tt.field, derr.Field, "error: %v", err)
				require.ErrorIs(t, err, ErrMalformed)
				require.Equal(t, shopguard.Event{}, ev, "a failed Decode zeroes ev")
			}
			checkAgainstReference(t, []byte(tt.in))
		})
	}
}

// requireEventEqual compares events, times as instants in UTC.
func requireEventEqual(t testing.TB, want, got shopguard.Event) {
	t.Helper()
	require.True(t, want.Time.Equal(got.Time), "time: want %v, got %v", want.Time, got.Time)
	require.Equal(t, time.UTC, got.Time.Location(), "time is in UTC")
	want.Time, got.Time = time.Time{}, time.Time{}
	require.Equal(t, want, got)
}

func TestDecodeErrorText(t *testing.T) {
	var ev shopguard.Event
	err := Decode([]byte(evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "999.1.1.1")), &ev)
	require.EqualError(t, err, `bad_ip: field "ip": "999.1.1.1" is not an IPv4 or IPv6 address`)

	err = Decode([]byte(`{"time":"2026-01-07T09:30:00Z"} x`), &ev)
	require.EqualError(t, err, `not_json: data after the object at byte 32`)

	err = Decode([]byte(`{"a":tru}`), &ev)
	require.EqualError(t, err, `not_json: invalid character '}' in literal true at byte 8`)

	// A long offending value is truncated in the message.
	long := strings.Repeat("9", 1000)
	err = Decode([]byte(evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", long)), &ev)
	require.ErrorContains(t, err, "… (1000 bytes)")
	require.Less(t, len(err.Error()), 200)

	err = Decode(bytes.Repeat([]byte(" "), MaxEventSize+1), &ev)
	require.EqualError(t, err, "too_large: 65537 bytes is over the limit of 65536")

	require.Equal(t, "unknown", Reason(0).String())
	require.Equal(t, "unknown", Reason(200).String())
}

func TestReasons(t *testing.T) {
	var names []string
	for _, r := range Reasons() {
		names = append(names, r.String())
	}
	require.Equal(t, []string{"not_json", "missing_field", "bad_time", "bad_ip", "bad_field", "too_large"}, names)
}

// TestDecodeAliasesLine shows that plain strings are not copied, and
// escaped ones are.
func TestDecodeAliasesLine(t *testing.T) {
	line := []byte(okJSON(`"user_agent":"a\tb"`, `"id":"evt-1"`))
	var ev shopguard.Event
	require.NoError(t, Decode(line, &ev))
	inLine := func(s string) bool {
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		lo := uintptr(unsafe.Pointer(&line[0]))
		return p >= lo && p < lo+uintptr(len(line))
	}
	require.True(t, inLine(ev.ShopID))
	require.True(t, inLine(ev.Actor))
	require.True(t, inLine(ev.ID))
	require.False(t, inLine(ev.UserAgent))
	require.Equal(t, "a\tb", ev.UserAgent)
}

func TestDecodeOverwritesEvent(t *testing.T) {
	ev := shopguard.Event{UserAgent: "stale", SessionID: "stale", Reason: "stale", Resource: "stale", ID: "stale", Records: 9}
	require.NoError(t, Decode([]byte(okJSON()), &ev))
	requireEventEqual(t, base(), ev)

	ev.UserAgent = "stale"
	require.Error(t, Decode([]byte(`{}`), &ev))
	require.Equal(t, shopguard.Event{}, ev)
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	lines := readLines(t, filepath.Join("testdata", "events.jsonl"))
	var ev shopguard.Event
	for _, line := range lines {
		if bytes.IndexByte(line, '\\') >= 0 {
			continue // escapes are decoded into new memory
		}
		n := testing.AllocsPerRun(100, func() {
			if err := Decode(line, &ev); err != nil {
				t.Fatal(err)
			}
		})
		require.Zero(t, n, "allocations decoding %s", line)
	}
}

// readLines returns the non-empty lines of a file.
func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var lines [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	require.NoError(t, sc.Err())
	return lines
}

// TestDecodeTestdata checks the sample files: every line of events.jsonl
// is valid, every line of invalid.jsonl is not, and both agree with the
// encoding/json reference.
func TestDecodeTestdata(t *testing.T) {
	var ev shopguard.Event
	for _, line := range readLines(t, filepath.Join("testdata", "events.jsonl")) {
		require.NoError(t, Decode(line, &ev), "%s", line)
		checkAgainstReference(t, line)
	}
	var reasons []string
	for _, line := range readLines(t, filepath.Join("testdata", "invalid.jsonl")) {
		err := Decode(line, &ev)
		var derr *DecodeError
		require.ErrorAs(t, err, &derr, "%s", line)
		reasons = append(reasons, derr.Reason.String())
		checkAgainstReference(t, line)
	}
	require.Equal(t, []string{"not_json", "not_json", "missing_field", "bad_time", "bad_ip", "bad_ip",
		"bad_field", "bad_field", "bad_field", "not_json", "bad_time"}, reasons)
}

// TestParseRFC3339MatchesTimeParse compares the fast time parser with
// time.Parse on random instants written with random offsets and precisions,
// and on every day of some years around the calendar's corner cases.
func TestParseRFC3339MatchesTimeParse(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	layouts := []string{time.RFC3339, time.RFC3339Nano, "2006-01-02T15:04:05.000Z07:00", "2006-01-02T15:04:05.000000Z07:00"}
	check := func(s string) {
		want, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err, s)
		got, ok := parseRFC3339([]byte(s))
		require.True(t, ok, s)
		require.True(t, want.Equal(got), "%s: want %v, got %v", s, want, got)
		require.Equal(t, time.UTC, got.Location())
	}
	lo := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix() + 86400
	hi := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC).Unix()
	for range 20000 {
		sec := lo + rng.Int64N(hi-lo)
		off := (rng.IntN(2*1439+1) - 1439) * 60 // within ±23:59
		tm := time.Unix(sec, rng.Int64N(1e9)).In(time.FixedZone("", off))
		check(tm.Format(layouts[rng.IntN(len(layouts))]))
	}
	for _, year := range []int{0, 4, 100, 400, 1900, 1970, 1999, 2000, 2024, 2100, 9999} {
		for d := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() == year; d = d.AddDate(0, 0, 1) {
			check(d.Add(23*time.Hour + 59*time.Minute + 59*time.Second).Format(time.RFC3339))
			check(d.Format(time.RFC3339))
		}
	}
}

// rfc3339Shape is RFC 3339's date-time grammar (§5.6) without the value
// ranges, which time.Parse checks.
var rfc3339Shape = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$`)

// integerLiteral is a JSON number without fraction or exponent.
var integerLiteral = regexp.MustCompile(`^-?\d+$`)

// refDecode is the reference for Decode: SPEC §1 written the slow and
// obvious way on top of encoding/json, time.Parse and netip. It returns the
// event, or the reason and field of the first problem, checked in the
// order Decode documents.
func refDecode(line []byte) (ev shopguard.Event, reason Reason, field string) {
	if len(line) > MaxEventSize {
		return ev, ReasonTooLarge, ""
	}
	if !json.Valid(line) {
		return ev, ReasonNotJSON, ""
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var top any
	if err := dec.Decode(&top); err != nil {
		panic(err) // json.Valid said otherwise
	}
	m, ok := top.(map[string]any)
	if !ok {
		return ev, ReasonNotJSON, ""
	}
	for _, k := range []string{"time", "shop_id", "actor", "action", "ip"} {
		if m[k] == nil {
			return ev, ReasonMissingField, k
		}
	}
	str := func(k string) (string, bool) {
		s, ok := m[k].(string)
		return s, ok
	}

	ts, ok := str("time")
	if !ok {
		return ev, ReasonBadField, "time"
	}
	sm := rfc3339Shape.FindStringSubmatch(ts)
	if sm == nil || (sm[3] != "" && (sm[3] > "23" || sm[4] > "59")) {
		return ev, ReasonBadTime, "time"
	}
	norm := []byte(ts)
	norm[10] = 'T'
	if norm[len(norm)-1] == 'z' {
		norm[len(norm)-1] = 'Z'
	}
	tm, err := time.Parse(time.RFC3339Nano, string(norm))
	if err != nil || tm.IsZero() {
		return ev, ReasonBadTime, "time"
	}
	ev.Time = tm.UTC()

	for _, f := range []struct {
		k   string
		max int
		dst *string
	}{{"shop_id", 128, &ev.ShopID}, {"actor", 256, &ev.Actor}} {
		s, ok := str(f.k)
		if !ok || len(s) < 1 || len(s) > f.max {
			return shopguard.Event{}, ReasonBadField, f.k
		}
		*f.dst = s
	}
	as, ok := str("action")
	if !ok {
		return shopguard.Event{}, ReasonBadField, "action"
	}
	ev.Action = shopguard.ParseAction(as)
	is, ok := str("ip")
	if !ok {
		return shopguard.Event{}, ReasonBadField, "ip"
	}
	ip, err := netip.ParseAddr(is)
	if err != nil || ip.Zone() != "" {
		return shopguard.Event{}, ReasonBadIP, "ip"
	}
	ev.IP = ip.Unmap()
	for _, f := range []struct {
		k   string
		dst *string
	}{{"user_agent", &ev.UserAgent}, {"session_id", &ev.SessionID}, {"reason", &ev.Reason}, {"resource", &ev.Resource}, {"id", &ev.ID}} {
		if m[f.k] == nil {
			continue
		}
		s, ok := str(f.k)
		if !ok {
			return shopguard.Event{}, ReasonBadField, f.k
		}
		*f.dst = s
	}
	if m["records"] != nil {
		n, ok := m["records"].(json.Number)
		if !ok || !integerLiteral.MatchString(string(n)) {
			return shopguard.Event{}, ReasonBadField, "records"
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || v < 0 {
			return shopguard.Event{}, ReasonBadField, "records"
		}
		ev.Records = v
	}
	return ev, 0, ""
}

// checkAgainstReference requires Decode and refDecode to agree on line.
func checkAgainstReference(t testing.TB, line []byte) {
	t.Helper()
	want, reason, field := refDecode(line)
	var got shopguard.Event
	err := Decode(line, &got)
	if reason != 0 {
		var derr *DecodeError
		require.True(t, errors.As(err, &derr), "reference rejects %q as %s %s, Decode accepts it", line, reason, field)
		require.Equal(t, reason.String()+" "+field, derr.Reason.String()+" "+derr.Field, "input %q: %v", line, err)
		return
	}
	require.NoError(t, err, "reference accepts %q", line)
	requireEventEqual(t, want, got)
}
