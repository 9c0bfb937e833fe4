package ingest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopguard/shopguard"
)

// benchFormatLines returns the sample events of testdata/events.jsonl
// written in format name, with the decoder for it.
func benchFormatLines(b *testing.B, name string) ([][]byte, DecodeFunc, int64) {
	lines, _ := benchLines(b)
	var out [][]byte
	var size int
	var cfg InputConfig
	for _, l := range lines {
		var ev shopguard.Event
		if err := Decode(l, &ev); err != nil {
			b.Fatal(err)
		}
		var s string
		switch name {
		case FormatShopguard:
			s = string(l)
			cfg = DefaultInputConfig
		case FormatECS:
			cfg = InputConfig{Format: FormatECS}
			s = fmt.Sprintf(`{"@timestamp":%q,"event":{"action":%q,"category":["authentication"],"outcome":"success","reason":%q},"source":{"ip":%q},"user":{"name":%q},"organization":{"id":%q},"user_agent":{"original":%q},"session":{"id":%q},"labels":{"records":"%d"},"ecs":{"version":"8.11"}}`,
				ev.Time.Format(time.RFC3339Nano), ev.Action.String(), ev.Reason, ev.IP, ev.Actor, ev.ShopID, ev.UserAgent, ev.SessionID, ev.Records)
		case FormatOCSF:
			cfg = InputConfig{Format: FormatOCSF}
			s = fmt.Sprintf(`{"class_uid":3002,"activity_id":1,"status_id":1,"time":%d,"user":{"name":%q,"org":{"uid":%q}},"src_endpoint":{"ip":%q},"http_request":{"user_agent":%q},"session":{"uid":%q},"status_detail":%q,"metadata":{"version":"1.3.0"}}`,
				ev.Time.UnixMilli(), ev.Actor, ev.ShopID, ev.IP, ev.UserAgent, ev.SessionID, ev.Reason)
		case FormatMapping:
			cfg = exampleMapping
			s = fmt.Sprintf(`{"occurred_at":%d,"tenant":{"slug":%q},"principal":{"login":%q},"type":"LOGIN_OK","request":{"client_ip":%q,"user_agent":%q,"session":%q},"outcome":{"reason":%q},"payload":{"rows":%d}}`,
				ev.Time.UnixMilli(), ev.ShopID, ev.Actor, ev.IP, ev.UserAgent, ev.SessionID, ev.Reason, ev.Records)
		case FormatNginx:
			cfg = InputConfig{Format: FormatNginx, Nginx: exampleNginx}
			ua := ev.UserAgent
			if ua == "" {
				ua = "-"
			}
			s = fmt.Sprintf(`%s - - [%s] "POST /admin/login HTTP/1.1" 302 512 "-" "%s" shop=%s admin=%s rows=%s why=-`,
				ev.IP, ev.Time.Format("02/Jan/2006:15:04:05 -0700"), strings.ReplaceAll(ua, `"`, `\x22`), ev.ShopID, ev.Actor, strconv.FormatInt(ev.Records, 10))
		}
		out = append(out, []byte(s))
		size += len(s)
	}
	dec, err := NewDecoder(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return out, dec, int64(size / len(out))
}

// BenchmarkFormats decodes the same events in every format, side by side;
// one op is one event.
func BenchmarkFormats(b *testing.B) {
	for _, name := range []string{FormatShopguard, FormatECS, FormatOCSF, FormatMapping, FormatNginx} {
		b.Run(name, func(b *testing.B) {
			lines, dec, avg := benchFormatLines(b, name)
			b.SetBytes(avg)
			b.ReportAllocs()
			var ev shopguard.Event
			i := 0
			for b.Loop() {
				if err := dec(lines[i%len(lines)], &ev); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
