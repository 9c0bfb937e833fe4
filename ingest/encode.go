package ingest

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shopguard/shopguard"
)

// AppendJSON appends ev to dst as one SPEC §1 JSON object (without a
// newline) and returns the extended slice. The time is RFC 3339 in UTC with
// as many fractional digits as needed; optional fields are left out when
// empty, and records is written for exports (even when 0) and whenever it is
// not 0. It does not allocate beyond growing dst, so a producer can reuse
// one buffer per message.
func AppendJSON(dst []byte, ev *shopguard.Event) []byte {
	dst = append(dst, `{"time":"`...)
	dst = ev.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","shop_id":`...)
	dst = appendString(dst, ev.ShopID)
	dst = append(dst, `,"actor":`...)
	dst = appendString(dst, ev.Actor)
	dst = append(dst, `,"action":"`...)
	dst = append(dst, ev.Action.String()...) // wire names need no escaping
	dst = append(dst, `","ip":"`...)
	dst = ev.IP.AppendTo(dst)
	dst = append(dst, '"')
	dst = appendField(dst, "user_agent", ev.UserAgent)
	dst = appendField(dst, "session_id", ev.SessionID)
	dst = appendField(dst, "reason", ev.Reason)
	if ev.Records != 0 || ev.Action.IsExport() {
		dst = append(dst, `,"records":`...)
		dst = strconv.AppendInt(dst, ev.Records, 10)
	}
	dst = appendField(dst, "resource", ev.Resource)
	dst = appendField(dst, "id", ev.ID)
	return append(dst, '}')
}

// appendField appends `,"key":"value"` unless value is empty.
func appendField(dst []byte, key, value string) []byte {
	if value == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return appendString(dst, value)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Like encoding/json it escapes
// quotes, backslashes and control characters, and replaces invalid UTF-8
// with U+FFFD; unlike it, it leaves <, > and & alone.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b != '"' && b != '\\' && b < utf8.RuneSelf {
			i++
			continue
		}
		if b < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
