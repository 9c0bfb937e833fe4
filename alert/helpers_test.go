package alert

import (
	"bytes"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// findingTime is the event time of the test findings.
var findingTime = time.Date(2026, 1, 7, 9, 30, 0, 0, time.UTC)

func travelFinding(id string) shopguard.Finding {
	return shopguard.Finding{
		ID: id, Rule: shopguard.RuleImpossibleTravel, Severity: shopguard.SeverityHigh,
		Time: findingTime, ShopID: "shop-17", Actor: "owner@example.jp", IP: "18.184.0.1",
		Summary: "login from Frankfurt, DE 8,340 km from Tokyo, JP within 30m",
		Evidence: shopguard.Evidence{
			From:       &shopguard.Login{IP: "1.0.16.1", Time: findingTime.Add(-30 * time.Minute), City: "Tokyo", Country: "JP", Lat: 35.68, Lon: 139.69, RadiusKM: 20},
			To:         &shopguard.Login{IP: "18.184.0.1", Time: findingTime, City: "Frankfurt", Country: "DE", Lat: 50.11, Lon: 8.68, RadiusKM: 20},
			DistanceKM: 8340, SpeedKMH: 16680,
		},
	}
}

func stuffingFinding(id string) shopguard.Finding {
	return shopguard.Finding{
		ID: id, Rule: shopguard.RuleCredentialStuffing, Severity: shopguard.SeverityHigh,
		Time: findingTime, ShopID: "shop-3", IP: "45.95.147.0/24",
		Summary: "failed logins against 21 accounts from 45.95.147.0/24 within 10m, e.g. alice@shop3.example",
		Evidence: shopguard.Evidence{
			Count: 21, Threshold: 20, Window: "10m0s", First: findingTime.Add(-9 * time.Minute),
			Accounts:  []shopguard.Account{{ShopID: "shop-3", Actor: "alice@shop3.example"}, {ShopID: "shop-9", Actor: "bob"}},
			Addresses: []string{"45.95.147.10", "45.95.147.11"},
		},
	}
}

// numbered returns n brute-force findings with ids f0, f1, ...
func numbered(n int) []shopguard.Finding {
	fs := make([]shopguard.Finding, n)
	for i := range fs {
		fs[i] = shopguard.Finding{
			ID: "f" + itoa(i), Rule: shopguard.RuleBruteForce, Severity: shopguard.SeverityMedium,
			Time: findingTime, ShopID: "shop-1", Actor: "staff" + itoa(i), IP: "203.0.113.7", Summary: "11 failed logins in 10m",
		}
	}
	return fs
}

func itoa(i int) string { return string(appendInt(nil, i)) }

func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}

// logBuffer is a goroutine-safe buffer for captured logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// captureLogs returns a debug-level logger writing into the returned buffer.
func captureLogs() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// handlerTransport serves requests in-process, so HTTP sinks can run inside
// a synctest bubble, where real sockets would stall the fake clock.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// writeFile writes content to a new file in the test's temp dir.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// metric returns the value of the series of the metric called name with
// the given sink label (and result, for deliveries), read the way a scrape
// reads it; a missing series fails the test.
func metric(t *testing.T, reg *prometheus.Registry, name, sink string, result ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "sink":
					if lp.GetValue() != sink {
						continue series
					}
				case "result":
					if len(result) == 0 || lp.GetValue() != result[0] {
						continue series
					}
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s{sink=%q,result=%v}", name, sink, result)
	return 0
}

// pemCert encodes a DER certificate as PEM.
func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// newTestMetrics returns a fresh registry and the sink metrics on it.
func newTestMetrics() (*prometheus.Registry, *Metrics) {
	reg := prometheus.NewRegistry()
	return reg, NewMetrics(reg)
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// newTestServer starts an httptest server for h whose own error log (TLS
// handshake noise) is discarded, and closes it when the test ends.
func newTestServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// newTestTLSServer is newTestServer with TLS.
func newTestTLSServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}
