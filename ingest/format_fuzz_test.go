package ingest

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shopguard/shopguard"
)

// exampleNginx is the config of examples/nginx, which wrote
// testdata/nginx.log.
var exampleNginx = NginxConfig{
	LogFormat: `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" shop=$host admin=$upstream_http_x_admin_login rows=$upstream_http_x_export_rows why=$upstream_http_x_login_failure`,
	Fields: map[string]string{"ip": "$remote_addr", "time": "$time_local", "shop_id": "$host", "actor": "$upstream_http_x_admin_login",
		"user_agent": "$http_user_agent", "records": "$upstream_http_x_export_rows", "reason": "$upstream_http_x_login_failure"},
	Routes: []NginxRoute{
		{Method: "POST", Path: "^/admin/login$", Status: []string{"302"}, Action: "login.success"},
		{Method: "POST", Path: "^/admin/login$", Status: []string{"200", "401", "403"}, Action: "login.failure"},
		{Method: "GET", Path: "^/admin/customers/export", Status: []string{"2xx"}, Action: "customers.export"},
	},
}

// exampleMapping is the config of examples/mapping, which wrote
// testdata/mapping.json.
var exampleMapping = InputConfig{Format: FormatMapping, Mapping: MappingConfig{Time: "occurred_at", TimeLayout: "unix_ms",
	ShopID: "tenant.slug", Actor: "principal.login", Action: "type", IP: "request.client_ip", UserAgent: "request.user_agent",
	SessionID: "request.session", Reason: "outcome.reason", Records: "payload.rows"},
	Actions: map[string]string{"LOGIN_OK": "login.success", "LOGIN_FAILED": "login.failure", "CUSTOMER_EXPORT": "customers.export"}}

func seedFile(f *testing.F, name string) {
	fh, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	n := 0
	for sc.Scan() {
		f.Add(append([]byte(nil), sc.Bytes()...))
		n++
	}
	if n == 0 {
		f.Fatalf("no seeds in %s", name)
	}
}

// checkDecoded is the invariant of every decoder: no panic, input not
// modified, and either ErrUnmatched, a *DecodeError with a reason, or an
// event within the limits of SPEC §1.
func checkDecoded(t *testing.T, dec DecodeFunc, line []byte) {
	orig := string(line)
	var ev shopguard.Event
	err := dec(line, &ev)
	if string(line) != orig {
		t.Fatal("decoder modified its input")
	}
	if errors.Is(err, ErrUnmatched) {
		return
	}
	if err != nil {
		var derr *DecodeError
		if !errors.As(err, &derr) || !errors.Is(err, ErrMalformed) || derr.Reason.String() == "unknown" {
			t.Fatalf("error %v (%T) is not a *DecodeError with a reason", err, err)
		}
		if ev != (shopguard.Event{}) {
			t.Fatalf("event not zeroed on error: %+v", ev)
		}
		return
	}
	if ev.Time.IsZero() || !ev.IP.IsValid() || ev.IP.Zone() != "" || ev.IP.Is4In6() ||
		len(ev.ShopID) < 1 || len(ev.ShopID) > maxShopID || len(ev.Actor) < 1 || len(ev.Actor) > maxActor || ev.Records < 0 {
		t.Fatalf("event out of §1 limits: %+v", ev)
	}
}

// FuzzNginx checks the nginx decoder of examples/nginx on arbitrary lines,
// seeded from testdata/nginx.log.
func FuzzNginx(f *testing.F) {
	seedFile(f, "nginx.log")
	f.Add([]byte(`1.2.3.4 - - [07/Jan/2026:18:00:00 +0900] "POST /admin/login HTTP/1.1 302 512 "-" "a\"b" shop=s admin=a rows=- why=-`))
	dec, err := NewDecoder(InputConfig{Format: FormatNginx, Nginx: exampleNginx})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, line []byte) { checkDecoded(t, dec, line) })
}

// FuzzMapping checks the mapping decoder of examples/mapping on arbitrary
// JSON, seeded from testdata/mapping.json.
func FuzzMapping(f *testing.F) {
	seedFile(f, "mapping.json")
	f.Add([]byte(`{"occurred_at":"1.5","tenant.slug":"s","principal":{"login":"\u0061"},"type":null,"request":{"client_ip":"::ffff:1.2.3.4"}}`))
	dec, err := NewDecoder(exampleMapping)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, line []byte) { checkDecoded(t, dec, line) })
}
