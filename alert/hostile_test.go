package alert_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/alert"
)

// hostileActor is a login id an attacker chose: ANSI colour and
// screen-clear, CR/LF and a forged line, Slack mention syntax, a
// right-to-left override and the other bidi controls, invalid UTF-8, NUL,
// DEL and C1 controls.
const hostileActor = "ev\x1b[31mil\x1b[2J\r\n[CRITICAL] all clear <!channel>\u202etxt.exe\u202c\u2066\u2069\u200e\xff\x00\x7f\u0085\u009b"

// hostileFindings are a finding keyed by account with the hostile actor in
// actor and summary, and one keyed by source with it among the evidence's
// accounts.
func hostileFindings() []shopguard.Finding {
	t := time.Date(2026, 1, 7, 9, 30, 0, 0, time.UTC)
	return []shopguard.Finding{{
		ID: "f-brute", Rule: shopguard.RuleBruteForce, Severity: shopguard.SeverityMedium,
		Time: t, ShopID: "shop-\u202e1", Actor: hostileActor, IP: "203.0.113.7",
		Summary: "11 failed logins for " + hostileActor + " within 10m",
		Evidence: shopguard.Evidence{Count: 11, Threshold: 10, Window: "10m0s",
			Addresses: []string{"203.0.113.7"}},
	}, {
		ID: "f-stuff", Rule: shopguard.RuleCredentialStuffing, Severity: shopguard.SeverityHigh,
		Time: t, ShopID: "shop-3", IP: "45.95.147.0/24",
		Summary: "failed logins against 21 accounts from 45.95.147.0/24 within 10m, e.g. " + hostileActor,
		Evidence: shopguard.Evidence{Count: 21, Threshold: 20, Window: "10m0s",
			Accounts: []shopguard.Account{{ShopID: "shop-3", Actor: hostileActor}, {ShopID: "shop-3", Actor: "bob"}}},
	}}
}

// dangerous reports runes a terminal, log viewer or chat client acts on, or
// that make text read differently than it is.
func dangerous(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) ||
		r == '\u2028' || r == '\u2029'
}

// requireInert fails unless out is valid UTF-8 without dangerous runes,
// newlines aside, and has exactly lines newlines.
func requireInert(t *testing.T, what string, out []byte, lines int) {
	t.Helper()
	require.True(t, utf8.Valid(out), "%s: invalid UTF-8: %q", what, out)
	for i, r := range string(out) {
		if r != '\n' && dangerous(r) {
			lo, hi := max(0, i-40), min(len(out), i+40)
			t.Fatalf("%s holds %U at byte %d: %q", what, r, i, out[lo:hi])
		}
	}
	require.Equal(t, lines, bytes.Count(out, []byte("\n")), "%s: %q", what, out)
}

// receiver is an httptest server that hands each request body to a channel.
func receiver(t *testing.T) (*httptest.Server, <-chan []byte) {
	t.Helper()
	got := make(chan []byte, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err == nil {
			got <- b
		}
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

// deliver sends fs through a notification sink and returns the body the
// receiver got.
func deliver(t *testing.T, sink interface {
	shopguard.Sink
	Run(context.Context) error
}, got <-chan []byte, fs []shopguard.Finding) []byte {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	require.NoError(t, sink.Send(ctx, fs...))
	var body []byte
	select {
	case body = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing delivered")
	}
	cancel()
	require.NoError(t, <-done)
	return body
}

func TestConsoleEscapesHostileActors(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, alert.NewConsole(&out).Send(t.Context(), hostileFindings()...))
	requireInert(t, "console", out.Bytes(), 2)
	require.Contains(t, out.String(), `\u202e`, "the override is shown, escaped")
	require.Contains(t, out.String(), `\u001b[31m`)
}

func TestWebhookSlackEscapesHostileActors(t *testing.T) {
	srv, got := receiver(t)
	cfg := alert.DefaultWebhookConfig
	cfg.URL, cfg.Format = srv.URL, alert.FormatSlack
	sink, err := alert.NewWebhook(cfg, nil, nil)
	require.NoError(t, err)
	body := deliver(t, sink, got, hostileFindings())
	requireInert(t, "slack body", body, 0)
	var msg struct{ Text string }
	require.NoError(t, json.Unmarshal(body, &msg))
	// One line per finding: the actor's CR/LF cannot add one.
	requireInert(t, "slack text", []byte(msg.Text+"\n"), 2)
	require.NotContains(t, msg.Text, "<!channel>", "no mention can be injected")
	require.Contains(t, msg.Text, "&lt;!channel&gt;")
}

func TestWebhookJSONEscapesHostileActors(t *testing.T) {
	srv, got := receiver(t)
	cfg := alert.DefaultWebhookConfig
	cfg.URL = srv.URL
	sink, err := alert.NewWebhook(cfg, nil, nil)
	require.NoError(t, err)
	body := deliver(t, sink, got, hostileFindings())
	requireInert(t, "webhook body", body, 0)
	// The JSON is exact: decoded, the receiver has the actor as it was
	// logged (invalid UTF-8 replaced), for de-duplication and lookup.
	var msg struct{ Findings []shopguard.Finding }
	require.NoError(t, json.Unmarshal(body, &msg))
	require.Len(t, msg.Findings, 2)
	require.Equal(t, strings.ToValidUTF8(hostileActor, "\uFFFD"), msg.Findings[0].Actor)
	require.Equal(t, strings.ToValidUTF8(hostileActor, "\uFFFD"), msg.Findings[1].Evidence.Accounts[0].Actor)
}

func TestAlertmanagerEscapesHostileActors(t *testing.T) {
	srv, got := receiver(t)
	cfg := alert.DefaultAlertmanagerConfig
	cfg.URLs = []string{srv.URL}
	sink, err := alert.NewAlertmanager(cfg, nil, nil)
	require.NoError(t, err)
	body := deliver(t, sink, got, hostileFindings())
	requireInert(t, "alertmanager body", body, 0)
	var alerts []struct {
		Labels      map[string]string
		Annotations map[string]string
	}
	require.NoError(t, json.Unmarshal(body, &alerts))
	require.Len(t, alerts, 2)
	for i, a := range alerts {
		// What templates render: every label and annotation value.
		for k, v := range a.Labels {
			requireInert(t, "label "+k, []byte(v), 0)
		}
		for k, v := range a.Annotations {
			requireInert(t, "annotation "+k, []byte(v), 0)
		}
		// The evidence annotation is JSON, and stays exact when parsed.
		var ev shopguard.Evidence
		require.NoError(t, json.Unmarshal([]byte(a.Annotations["evidence"]), &ev), "alert %d", i)
	}
	require.Contains(t, alerts[0].Labels["actor"], `\u202e`)
	var ev shopguard.Evidence
	require.NoError(t, json.Unmarshal([]byte(alerts[1].Annotations["evidence"]), &ev))
	require.Equal(t, strings.ToValidUTF8(hostileActor, "\uFFFD"), ev.Accounts[0].Actor)
}

func TestFileSinkEscapesHostileActors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "findings.jsonl")
	sink, err := alert.NewFile(alert.FileConfig{Path: path}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, sink.Send(t.Context(), hostileFindings()...))
	require.NoError(t, sink.Close())
	out, err := os.ReadFile(path)
	require.NoError(t, err)
	// cat findings.jsonl shows no raw escape sequence or override, and
	// each finding stays one line.
	requireInert(t, "findings.jsonl", out, 2)
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var v any
		require.NoError(t, json.Unmarshal(line, &v))
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal(line, &f))
		require.Contains(t, []string{"", strings.ToValidUTF8(hostileActor, "\uFFFD")}, f.Actor)
	}
	require.Contains(t, string(out), `\u202e`)
}
