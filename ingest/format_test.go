package ingest

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

var testNginx = NginxConfig{
	LogFormat: `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" shop=$host admin=$upstream_http_x_admin_login rows=$upstream_http_x_export_rows sid=$cookie_sid`,
	Fields: map[string]string{"ip": "$remote_addr", "time": "$time_local", "shop_id": "$host",
		"actor": "$upstream_http_x_admin_login", "user_agent": "$http_user_agent",
		"records": "$upstream_http_x_export_rows", "session_id": "$cookie_sid"},
	Routes: []NginxRoute{
		{Method: "POST", Path: "^/admin/login$", Status: []string{"302"}, Action: "login.success"},
		{Method: "POST", Path: "^/admin/login$", Status: []string{"200", "401", "403"}, Action: "login.failure"},
		{Method: "GET", Path: "^/admin/customers/export", Status: []string{"2xx"}, Action: "customers.export"},
	},
}

var testMapping = MappingConfig{Time: "ts", TimeLayout: "unix_ms", ShopID: "tenant.id", Actor: "who.login",
	Action: "what", IP: "client.address", UserAgent: "client.ua", SessionID: "sess", Reason: "why",
	Records: "rows", Resource: "obj", ID: "uid"}

func mustDecoder(t *testing.T, c InputConfig) DecodeFunc {
	t.Helper()
	d, err := NewDecoder(c)
	require.NoError(t, err)
	return d
}

func TestFormatFields(t *testing.T) {
	t0 := time.Date(2026, 1, 7, 9, 0, 1, 0, time.UTC)
	full := shopguard.Event{Time: t0, ShopID: "shop-1", Actor: "owner@example.jp", Action: shopguard.ActionCustomersExport,
		IP: netip.MustParseAddr("45.95.147.9"), UserAgent: "curl/8.5", SessionID: "s1", Reason: "bad_password",
		Resource: "/admin/customers/export", ID: "e1", Records: 1200}
	tests := []struct {
		name   string
		cfg    InputConfig
		line   string
		want   shopguard.Event
		reason Reason // 0: valid
		field  string
	}{
		{"ecs every field", InputConfig{Format: FormatECS},
			`{"@timestamp":"2026-01-07T09:00:01Z","event":{"action":"export_customers","id":"e1","reason":"bad_password"},"source":{"ip":"45.95.147.9"},"user":{"name":"owner@example.jp"},"organization":{"id":"shop-1"},"user_agent":{"original":"curl/8.5"},"session":{"id":"s1"},"labels":{"records":"1200"},"url":{"path":"/admin/customers/export"}}`,
			full, 0, ""},
		{"ecs flat dotted keys, labels.shop_id fallback, auth outcome", InputConfig{Format: FormatECS},
			`{"@timestamp":"2026-01-07T09:00:01Z","event.category":["session","authentication"],"event.outcome":"failure","event.action":"user_login","source.ip":"::ffff:10.0.0.1","user.name":"a","labels.shop_id":"s"}`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionLoginFailure, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"ecs success outcome", InputConfig{Format: FormatECS},
			`{"@timestamp":"2026-01-07T09:00:01Z","event":{"category":"authentication","outcome":"success"},"source":{"ip":"10.0.0.1"},"user":{"name":"a"},"organization":{"id":"s"}}`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionLoginSuccess, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"ecs logout kept despite authentication", InputConfig{Format: FormatECS},
			`{"@timestamp":"2026-01-07T09:00:01Z","event":{"action":"logout","category":["authentication"],"outcome":"success"},"source":{"ip":"10.0.0.1"},"user":{"name":"a"},"organization":{"id":"s"}}`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionLogout, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"ecs missing source.ip", InputConfig{Format: FormatECS},
			`{"@timestamp":"2026-01-07T09:00:01Z","event":{"action":"login"},"user":{"name":"a"},"organization":{"id":"s"}}`,
			shopguard.Event{}, ReasonMissingField, "source.ip"},
		{"ecs missing shop", InputConfig{Format: FormatECS},
			`{"@timestamp":"2026-01-07T09:00:01Z","event":{"action":"login"},"source":{"ip":"10.0.0.1"},"user":{"name":"a"}}`,
			shopguard.Event{}, ReasonMissingField, "labels.shop_id"},
		{"ecs bad time", InputConfig{Format: FormatECS},
			`{"@timestamp":"yesterday","event":{"action":"login"},"source":{"ip":"10.0.0.1"},"user":{"name":"a"},"organization":{"id":"s"}}`,
			shopguard.Event{}, ReasonBadTime, "@timestamp"},
		{"ecs not json", InputConfig{Format: FormatECS}, `{"@timestamp":`, shopguard.Event{}, ReasonNotJSON, ""},
		{"ocsf every field", InputConfig{Format: FormatOCSF},
			`{"class_uid":3002,"activity_id":1,"status_id":2,"time":1767776401000,"user":{"name":"owner@example.jp","org":{"uid":"shop-1"}},"src_endpoint":{"ip":"45.95.147.9"},"http_request":{"user_agent":"curl/8.5"},"session":{"uid":"s1"},"status_detail":"bad_password","metadata":{"uid":"e1"},"unmapped":{"records":1200}}`,
			shopguard.Event{Time: t0, ShopID: "shop-1", Actor: "owner@example.jp", Action: shopguard.ActionLoginFailure,
				IP: netip.MustParseAddr("45.95.147.9"), UserAgent: "curl/8.5", SessionID: "s1", Reason: "bad_password", ID: "e1", Records: 1200}, 0, ""},
		{"ocsf account change mfa disable, tenant fallback", InputConfig{Format: FormatOCSF},
			`{"class_uid":3001,"activity_id":11,"time":1767776401000,"user":{"name":"a"},"metadata":{"tenant_uid":"s"},"src_endpoint":{"ip":"10.0.0.1"}}`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionMFADisable, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"ocsf logoff", InputConfig{Format: FormatOCSF},
			`{"class_uid":3002,"activity_id":2,"status_id":1,"time":1767776401000,"user":{"name":"a","org":{"uid":"s"}},"src_endpoint":{"ip":"10.0.0.1"}}`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionLogout, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"ocsf other class by activity_name", InputConfig{Format: FormatOCSF, Actions: map[string]string{"Export Customers": "customers.export"}},
			`{"class_uid":6003,"activity_name":"Export Customers","time":1767776401000,"user":{"name":"a","org":{"uid":"s"}},"src_endpoint":{"ip":"10.0.0.1"}}`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionCustomersExport, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"ocsf time as string is bad", InputConfig{Format: FormatOCSF},
			`{"class_uid":3002,"activity_id":1,"status_id":1,"time":"2026-01-07","user":{"name":"a","org":{"uid":"s"}},"src_endpoint":{"ip":"10.0.0.1"}}`,
			shopguard.Event{}, ReasonBadTime, "time"},
		{"ocsf bad ip", InputConfig{Format: FormatOCSF},
			`{"class_uid":3002,"activity_id":1,"status_id":1,"time":1767776401000,"user":{"name":"a","org":{"uid":"s"}},"src_endpoint":{"ip":"999.1.1.1"}}`,
			shopguard.Event{}, ReasonBadIP, "src_endpoint.ip"},
		{"mapping every field", InputConfig{Format: FormatMapping, Mapping: testMapping, Actions: map[string]string{"CUST_EXPORT": "customers.export"}},
			`{"ts":1767776401000,"tenant":{"id":"shop-1"},"who":{"login":"owner@example.jp"},"what":"CUST_EXPORT","client":{"address":"45.95.147.9","ua":"curl/8.5"},"sess":"s1","why":"bad_password","rows":1200,"obj":"/admin/customers/export","uid":"e1","extra":[1,{"x":null}]}`,
			full, 0, ""},
		{"mapping unix seconds with fraction", InputConfig{Format: FormatMapping, Mapping: MappingConfig{Time: "t", TimeLayout: "unix", ShopID: "s", Actor: "a", Action: "x", IP: "i"}},
			`{"t":"1767776401.5","s":"s","a":"a","x":"login.success","i":"10.0.0.1"}`,
			shopguard.Event{Time: t0.Add(500 * time.Millisecond), ShopID: "s", Actor: "a", Action: shopguard.ActionLoginSuccess, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"mapping go layout", InputConfig{Format: FormatMapping, Mapping: MappingConfig{Time: "t", TimeLayout: "2006-01-02 15:04:05", ShopID: "s", Actor: "a", Action: "x", IP: "i"}},
			`{"t":"2026-01-07 09:00:01","s":"s","a":"a","x":"nope","i":"10.0.0.1"}`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionOther, IP: netip.MustParseAddr("10.0.0.1")}, 0, ""},
		{"mapping negative records", InputConfig{Format: FormatMapping, Mapping: testMapping},
			`{"ts":1767776401000,"tenant":{"id":"s"},"who":{"login":"a"},"what":"login","client":{"address":"10.0.0.1"},"rows":-3}`,
			shopguard.Event{}, ReasonBadField, "rows"},
		{"mapping actor too long", InputConfig{Format: FormatMapping, Mapping: testMapping},
			`{"ts":1767776401000,"tenant":{"id":"s"},"who":{"login":"` + strings.Repeat("a", 257) + `"},"what":"login","client":{"address":"10.0.0.1"}}`,
			shopguard.Event{}, ReasonBadField, "who.login"},
		{"mapping action number", InputConfig{Format: FormatMapping, Mapping: testMapping},
			`{"ts":1767776401000,"tenant":{"id":"s"},"who":{"login":"a"},"what":3,"client":{"address":"10.0.0.1"}}`,
			shopguard.Event{}, ReasonBadField, "what"},
		{"nginx every field", InputConfig{Format: FormatNginx, Nginx: testNginx},
			`45.95.147.9 - - [07/Jan/2026:18:00:01 +0900] "GET /admin/customers/export?fmt=csv HTTP/1.1" 200 5120 "-" "curl/8.5" shop=shop-1 admin=owner@example.jp rows=1200 sid=s1`,
			shopguard.Event{Time: t0, ShopID: "shop-1", Actor: "owner@example.jp", Action: shopguard.ActionCustomersExport,
				IP: netip.MustParseAddr("45.95.147.9"), UserAgent: "curl/8.5", SessionID: "s1", Records: 1200}, 0, ""},
		{"nginx failure, escaped agent, absent rows", InputConfig{Format: FormatNginx, Nginx: testNginx},
			`2001:db8::1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 401 12 "-" "Mozilla \x22x\x22" shop=s admin=a rows=- sid=-`,
			shopguard.Event{Time: t0, ShopID: "s", Actor: "a", Action: shopguard.ActionLoginFailure, IP: netip.MustParseAddr("2001:db8::1"), UserAgent: `Mozilla "x"`}, 0, ""},
		{"nginx missing actor is missing", InputConfig{Format: FormatNginx, Nginx: testNginx},
			`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 302 0 "-" "ua" shop=s admin=- rows=- sid=-`,
			shopguard.Event{}, ReasonMissingField, "$upstream_http_x_admin_login"},
		{"nginx bad date", InputConfig{Format: FormatNginx, Nginx: testNginx},
			`10.0.0.1 - - [32/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 302 0 "-" "ua" shop=s admin=a rows=- sid=-`,
			shopguard.Event{}, ReasonBadTime, "$time_local"},
		{"nginx unbalanced quotes", InputConfig{Format: FormatNginx, Nginx: testNginx},
			`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1 302 0 "-" "ua shop=s admin=a rows=- sid=-`,
			shopguard.Event{}, ReasonNotJSON, ""},
		{"nginx missing variable (line cut short)", InputConfig{Format: FormatNginx, Nginx: testNginx},
			`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 302`,
			shopguard.Event{}, ReasonNotJSON, ""},
		{"nginx 64 KiB request line", InputConfig{Format: FormatNginx, Nginx: testNginx},
			`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "GET /` + strings.Repeat("a", 64<<10) + ` HTTP/1.1" 200 0 "-" "ua" shop=s admin=a rows=- sid=-`,
			shopguard.Event{}, ReasonTooLarge, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dec := mustDecoder(t, tt.cfg)
			var ev shopguard.Event
			err := dec([]byte(tt.line), &ev)
			if tt.reason == 0 {
				require.NoError(t, err)
				require.Equal(t, tt.want, ev)
				return
			}
			var derr *DecodeError
			require.ErrorAs(t, err, &derr)
			require.ErrorIs(t, err, ErrMalformed)
			require.Equal(t, tt.reason, derr.Reason, "%v", err)
			require.Equal(t, tt.field, derr.Field, "%v", err)
			require.Equal(t, shopguard.Event{}, ev)
		})
	}
}

func TestNginxUnmatched(t *testing.T) {
	dec := mustDecoder(t, InputConfig{Format: FormatNginx, Nginx: testNginx})
	var ev shopguard.Event
	for _, line := range []string{
		// static asset, no route; no admin header either: unmatched, not invalid
		`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "GET /assets/app.js HTTP/1.1" 200 10 "-" "ua" shop=s admin=- rows=- sid=-`,
		// route path matches but the status (500) is in none of its lists
		`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 500 0 "-" "ua" shop=s admin=a rows=- sid=-`,
		// method differs
		`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "GET /admin/login HTTP/1.1" 302 0 "-" "ua" shop=s admin=a rows=- sid=-`,
		// the path regexp is anchored: a query string is stripped but a suffix is not
		`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login/x HTTP/1.1" 302 0 "-" "ua" shop=s admin=a rows=- sid=-`,
	} {
		require.ErrorIs(t, dec([]byte(line), &ev), ErrUnmatched, line)
		require.NotErrorIs(t, dec([]byte(line), &ev), ErrMalformed)
	}
	// ...while the same login with a query string matches.
	require.NoError(t, dec([]byte(`10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login?next=/ HTTP/1.1" 302 0 "-" "ua" shop=s admin=a rows=- sid=-`), &ev))
	require.Equal(t, shopguard.ActionLoginSuccess, ev.Action)
}

func TestNginxTimeFormats(t *testing.T) {
	for _, tt := range []struct {
		v, layout string
		want      time.Time
		ok        bool
	}{
		{"time_local", "07/Jan/2026:18:00:01 +0900", time.Date(2026, 1, 7, 9, 0, 1, 0, time.UTC), true},
		{"time_local", "29/Feb/2025:00:00:00 +0000", time.Time{}, false},
		{"time_local", "07/Foo/2026:18:00:01 +0900", time.Time{}, false},
		{"time_local", "07/Jan/2026:18:00:01 0900", time.Time{}, false},
		{"time_iso8601", "2026-01-07T18:00:01+09:00", time.Date(2026, 1, 7, 9, 0, 1, 0, time.UTC), true},
		{"msec", "1767776401.250", time.Date(2026, 1, 7, 9, 0, 1, 250e6, time.UTC), true},
	} {
		c := NginxConfig{LogFormat: "$remote_addr [$" + tt.v + "] $host $remote_user $status",
			Fields: map[string]string{"ip": "$remote_addr", "time": "$" + tt.v, "shop_id": "$host", "actor": "$remote_user"},
			Routes: []NginxRoute{{Status: []string{"2xx"}, Action: "login.success"}}}
		dec := mustDecoder(t, InputConfig{Format: FormatNginx, Nginx: c})
		var ev shopguard.Event
		err := dec([]byte("10.0.0.1 ["+tt.layout+"] s a 200"), &ev)
		if !tt.ok {
			require.Error(t, err, tt.layout)
			continue
		}
		require.NoError(t, err, tt.layout)
		require.Equal(t, tt.want, ev.Time)
	}
}

func TestInputConfigErrors(t *testing.T) {
	bad := testNginx
	bad.Fields = map[string]string{"ip": "$remote_addr", "time": "$time_local", "shop_id": "$host", "actor": "$foo", "colour": "$host"}
	bad.Routes = []NginxRoute{
		{Method: "POST", Path: "^/admin/(login$", Status: []string{"302"}, Action: "login.success"},
		{Status: []string{"6xx", "99"}, Action: "login.failure"},
		{Path: "^/x", Action: "nonsense"},
	}
	err := InputConfig{Format: FormatNginx, Nginx: bad, Actions: map[string]string{"x": "y.z"}}.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"input.nginx.fields.actor: unknown variable $foo",
		"input.nginx.fields.colour: not an event field",
		"input.nginx.routes[0].path: \"^/admin/(login$\" is not a regular expression",
		"input.nginx.routes[1].status[0]: \"6xx\" is not a status code",
		"input.nginx.routes[1].status[1]: \"99\"",
		"input.nginx.routes[2].action: \"nonsense\" is not an action",
		"input.actions.x: \"y.z\" is not an action",
	} {
		require.Contains(t, err.Error(), want)
	}
	err = InputConfig{Format: FormatNginx, Nginx: NginxConfig{LogFormat: "$remote_addr$status"}}.Validate()
	require.ErrorContains(t, err, "input.nginx.log_format: $status follows $remote_addr with nothing between them")
	require.ErrorContains(t, err, "input.nginx.fields.ip: is required")
	require.ErrorContains(t, err, "input.nginx.routes: at least one route is required")
	err = InputConfig{Format: FormatMapping, Mapping: MappingConfig{Time: "a..b", TimeLayout: "epoch"}}.Validate()
	require.ErrorContains(t, err, "input.mapping.ip: a path is required")
	require.ErrorContains(t, err, `input.mapping.time: "a..b" is not a dotted path`)
	require.ErrorContains(t, err, `input.mapping.time_layout: "epoch"`)
	require.ErrorContains(t, InputConfig{Format: "csv"}.Validate(), `input.format: "csv" is not one of`)
	require.NoError(t, InputConfig{Format: FormatNginx, Nginx: testNginx}.Validate())
	require.NoError(t, DefaultInputConfig.Validate())
}

func TestActionTable(t *testing.T) {
	acts := newActionTable(map[string]string{"login": "login.failure", "ZAHLUNG": "payout.change"})
	require.Equal(t, shopguard.ActionLoginFailure, acts.lookup("login"), "the user's table overrides the defaults")
	require.Equal(t, shopguard.ActionPasswordReset, acts.lookup("password.reset"), "a §1 name is kept")
	require.Equal(t, shopguard.ActionMFADisable, acts.lookup("2fa_disabled"))
	require.Equal(t, shopguard.ActionOther, acts.lookup("something"))
	require.Zero(t, testing.AllocsPerRun(100, func() { acts.lookup("user_login") }))
}

func TestFormatDecodeAllocs(t *testing.T) {
	lines := map[string]struct {
		cfg  InputConfig
		line string
	}{
		"ecs":     {InputConfig{Format: FormatECS}, `{"@timestamp":"2026-01-07T09:00:01Z","event":{"action":"user_login","category":["authentication"],"outcome":"failure"},"source":{"ip":"45.95.147.9"},"user":{"name":"a"},"organization":{"id":"s"}}`},
		"ocsf":    {InputConfig{Format: FormatOCSF}, `{"class_uid":3002,"activity_id":1,"status_id":2,"time":1767776401000,"user":{"name":"a","org":{"uid":"s"}},"src_endpoint":{"ip":"10.0.0.1"}}`},
		"mapping": {InputConfig{Format: FormatMapping, Mapping: testMapping}, `{"ts":1767776401000,"tenant":{"id":"s"},"who":{"login":"a"},"what":"login","client":{"address":"10.0.0.1"},"rows":3}`},
		"nginx":   {InputConfig{Format: FormatNginx, Nginx: testNginx}, `10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 302 0 "-" "ua" shop=s admin=a rows=- sid=-`},
	}
	for name, l := range lines {
		dec := mustDecoder(t, l.cfg)
		b := []byte(l.line)
		var ev shopguard.Event
		require.NoError(t, dec(b, &ev), name)
		require.Zero(t, testing.AllocsPerRun(100, func() { _ = dec(b, &ev) }), name)
	}
}

// TestFileSourceFormat reads an nginx log through FileSource: events in
// order, the unmatched line counted and skipped (in Strict mode too), the
// bad line rejected with its file:line.
func TestFileSourceFormat(t *testing.T) {
	dec := mustDecoder(t, InputConfig{Format: FormatNginx, Nginx: testNginx})
	ok := `10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 302 0 "-" "ua" shop=s admin=a rows=- sid=-`
	miss := `10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "GET /assets/x.js HTTP/1.1" 200 0 "-" "ua" shop=s admin=- rows=- sid=-`
	bad := `10.0.0.1 - - [07/Jan/2026:09:00:01 +0000] "POST /admin/login HTTP/1.1" 302 0 "-" "ua" shop=s admin=- rows=- sid=-`
	p := writeFile(t, t.TempDir(), "access.log", []byte(ok+"\n"+miss+"\n"+bad+"\n"+ok+"\n"))
	m := NewMetrics(nil)
	bs, err := run(t, &FileSource{Paths: []string{p}, Metrics: m, Rejects: &Rejects{Metrics: m}, Decode: dec})
	require.NoError(t, err)
	require.Len(t, bs, 1)
	require.Len(t, bs[0].Events, 2)
	require.Equal(t, shopguard.ActionLoginSuccess, bs[0].Events[1].Action)
	require.Equal(t, Stats{Events: 2, Unmatched: 1, Invalid: map[string]int64{"missing_field": 1}}, m.Stats())

	m = NewMetrics(nil)
	_, err = run(t, &FileSource{Paths: []string{p}, Metrics: m, Strict: true, Decode: dec})
	require.ErrorContains(t, err, "access.log:3: missing_field")
	require.Equal(t, int64(1), m.Stats().Unmatched)
}

// TestJSONPathsKeyOrder decodes one event written with its keys in
// different orders, flattened, escaped and repeated, one after the other
// and from several goroutines: the key order that object learns from one
// document must never change what the next one decodes to.
func TestJSONPathsKeyOrder(t *testing.T) {
	dec, err := NewDecoder(InputConfig{Format: FormatECS})
	if err != nil {
		t.Fatal(err)
	}
	docs := []string{
		`{"@timestamp":"2026-12-05T10:00:00Z","event":{"action":"login.success"},"source":{"ip":"192.0.2.1"},"user":{"name":"owner"},"organization":{"id":"shop-1"}}`,
		`{"organization":{"id":"shop-1"},"user":{"name":"owner"},"source":{"ip":"192.0.2.1"},"event":{"action":"login.success"},"@timestamp":"2026-12-05T10:00:00Z"}`,
		`{"@timestamp":"2026-12-05T10:00:00Z","event.action":"login.success","source.ip":"192.0.2.1","user.name":"owner","organization.id":"shop-1"}`,
		`{"@timestamp":"2026-12-05T10:00:00Z","event":{"action":"login.success"},"source":{"ip":"192.0.2.1"},"\u0075ser":{"nam\u0065":"owner"},"organization":{"id":"shop-1"}}`,
		`{"@timestamp":"2026-12-05T10:00:00Z","x":1,"event":{"x":{"action":"no"},"action":"login.success"},"source":{"ip":"192.0.2.9"},"source":{"ip":"192.0.2.1"},"user":{"name":"owner"},"organization":{"id":"shop-1"}}`,
		`{"@timestamp" : "2026-12-05T10:00:00Z" , "event" : { "action" : "login.success" } , "source":{"ip":"192.0.2.1"},"user":{"name":"owner"},"organization":{"id":"shop-1"}}`,
	}
	// A key that is a prefix of the learned one must not match it.
	near := `{"@timestamp":"2026-12-05T10:00:00Z","event":{"action":"login.success"},"source":{"ip":"192.0.2.1"},"user":{"name":"owner","names":"other"},"organization":{"id":"shop-1","idx":"shop-2"}}`
	want := shopguard.Event{Time: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC), ShopID: "shop-1", Actor: "owner",
		Action: shopguard.ActionLoginSuccess, IP: netip.MustParseAddr("192.0.2.1")}
	check := func(doc string) error {
		var ev shopguard.Event
		if err := dec([]byte(doc), &ev); err != nil {
			return fmt.Errorf("%s: %v", doc, err)
		}
		if ev != want {
			return fmt.Errorf("%s:\n got %+v\nwant %+v", doc, ev, want)
		}
		return nil
	}
	for range 3 {
		for _, doc := range append(docs, near) {
			if err := check(doc); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				if err := check(docs[(i+g)%len(docs)]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
