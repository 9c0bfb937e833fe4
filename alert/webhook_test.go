package alert

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// webhookRequest is one request a receiver got.
type webhookRequest struct {
	body      []byte
	signature string
	timestamp string
}

func newReceiver(t *testing.T, status int) (*httptest.Server, chan webhookRequest) {
	got := make(chan webhookRequest, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- webhookRequest{body: body, signature: r.Header.Get(SignatureHeader), timestamp: r.Header.Get(TimestampHeader)}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func receive(t *testing.T, got chan webhookRequest) webhookRequest {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the webhook")
		return webhookRequest{}
	}
}

// verify is what a receiver does: recompute the HMAC of the raw body with
// the shared secret and compare in constant time.
func verify(secret string, r webhookRequest) bool {
	hexSig, ok := strings.CutPrefix(r.signature, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(r.body)
	return hmac.Equal(sig, mac.Sum(nil))
}

func TestWebhookSignedJSON(t *testing.T) {
	srv, got := newReceiver(t, http.StatusNoContent)
	secretFile := writeFile(t, "secret", "webhook-secret\n")
	cfg := DefaultWebhookConfig
	cfg.URL = srv.URL + "/hooks/shopguard"
	cfg.SecretFile = secretFile
	sink, err := NewWebhook(cfg, nil, nil)
	require.NoError(t, err)
	runSink(t, sink)

	want := []shopguard.Finding{travelFinding("t1"), stuffingFinding("s1")}
	require.NoError(t, sink.Send(t.Context(), want...))
	r := receive(t, got)

	require.True(t, verify("webhook-secret", r), "signature %q does not verify", r.signature)
	require.False(t, verify("another-secret", r))
	tampered := r
	tampered.body = []byte(strings.Replace(string(r.body), "owner@example.jp", "other@example.jp", 1))
	require.False(t, verify("webhook-secret", tampered))

	var body struct {
		SentAt   time.Time           `json:"sent_at"`
		Findings []shopguard.Finding `json:"findings"`
	}
	require.NoError(t, json.Unmarshal(r.body, &body))
	require.Equal(t, want, body.Findings)
	ts, err := strconv.ParseInt(r.timestamp, 10, 64)
	require.NoError(t, err)
	require.Equal(t, body.SentAt.Unix(), ts, "the signed sent_at matches the timestamp header")
	require.WithinDuration(t, time.Now(), body.SentAt, time.Minute)
}

func TestWebhookSlackFormat(t *testing.T) {
	srv, got := newReceiver(t, http.StatusOK)
	cfg := DefaultWebhookConfig
	cfg.URL = srv.URL
	cfg.Format = FormatSlack
	sink, err := NewWebhook(cfg, nil, nil)
	require.NoError(t, err)
	runSink(t, sink)

	hostile := travelFinding("t2")
	hostile.Actor = "evil\n[CRITICAL] all clear <!channel> \x1b[2J\u202e"
	require.NoError(t, sink.Send(t.Context(), travelFinding("t1"), hostile))
	r := receive(t, got)
	require.Empty(t, r.signature, "no secret, no signature")

	var msg map[string]string
	require.NoError(t, json.Unmarshal(r.body, &msg))
	require.Len(t, msg, 1, "Slack-compatible: just text")
	lines := strings.Split(msg["text"], "\n")
	require.Len(t, lines, 2, "one line per finding; a newline in an actor cannot add one")
	require.Equal(t, "[HIGH] impossible_travel: login from Frankfurt, DE 8,340 km from Tokyo, JP within 30m "+
		"(shop shop-17, actor owner@example.jp, ip 18.184.0.1, id t1)", lines[0])
	require.Equal(t, "[HIGH] impossible_travel: login from Frankfurt, DE 8,340 km from Tokyo, JP within 30m "+
		`(shop shop-17, actor evil\n[CRITICAL] all clear &lt;!channel&gt; \u001b[2J\u202e, ip 18.184.0.1, id t2)`, lines[1])
}

func TestWebhookSecretsNeverLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const token = "T0000/B0000/XXXXXXXXXXXXXXXXXXXX"
		const secret = "hmac-secret-value"
		t.Setenv("SHOPGUARD_TEST_WEBHOOK_URL", "https://hooks.example.com/services/"+token)
		t.Setenv("SHOPGUARD_TEST_WEBHOOK_SECRET", secret)
		logger, logs := captureLogs()
		cfg := DefaultWebhookConfig
		cfg.URLEnv = "SHOPGUARD_TEST_WEBHOOK_URL"
		cfg.SecretEnv = "SHOPGUARD_TEST_WEBHOOK_SECRET"
		cfg.FlushTimeout = time.Second
		reg, m := newTestMetrics()
		sink, err := NewWebhook(cfg, m, logger)
		require.NoError(t, err)

		// The receiver fails in every way there is: transport errors (whose
		// messages net/http builds from the full URL), and answers echoing
		// the request.
		calls := 0
		sink.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
			calls++
			switch calls % 3 {
			case 0:
				return nil, io.ErrUnexpectedEOF
			case 1:
				echo := "bad gateway for " + r.URL.String()
				return &http.Response{StatusCode: 502, Body: io.NopCloser(strings.NewReader(echo)), Header: http.Header{}}, nil
			}
			return nil, context.DeadlineExceeded
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- sink.Run(ctx) }()
		require.NoError(t, sink.Send(ctx, travelFinding("x")))
		time.Sleep(2 * time.Minute)
		cancel()
		require.NoError(t, <-done)

		out := logs.String()
		require.Greater(t, calls, 3)
		require.Contains(t, out, "hooks.example.com", "logs say which receiver")
		require.NotContains(t, out, token)
		require.NotContains(t, out, "XXXXXXXX")
		require.NotContains(t, out, secret)
		require.Contains(t, out, "bad gateway for https://hooks.example.com<redacted>", "the echo was seen, and cleaned")
		require.Greater(t, metric(t, reg, "shopguard_sink_retries_total", "webhook"), 2.0)
		require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_dropped_total", "webhook"))
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestAlertmanagerPasswordNeverLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const password = "am-basic-auth-password"
		pwFile := writeFile(t, "pw", password+"\n")
		logger, logs := captureLogs()
		cfg := DefaultAlertmanagerConfig
		cfg.URLs = []string{"https://am-0.example:9093", "https://am-1.example:9093"}
		cfg.BasicAuth = &BasicAuth{Username: "shopguard", PasswordFile: pwFile}
		cfg.FlushTimeout = time.Second
		sink, err := NewAlertmanager(cfg, nil, logger)
		require.NoError(t, err)
		sink.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
			// An unhelpful proxy that echoes the request headers back.
			var b strings.Builder
			require.NoError(t, r.Header.Write(&b))
			return &http.Response{StatusCode: 503, Body: io.NopCloser(strings.NewReader(b.String())), Header: http.Header{}}, nil
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- sink.Run(ctx) }()
		require.NoError(t, sink.Send(ctx, travelFinding("x")))
		time.Sleep(time.Minute)
		cancel()
		require.NoError(t, <-done)

		out := logs.String()
		require.Contains(t, out, "http_5xx")
		require.NotContains(t, out, password)
		require.NotContains(t, out, "c2hvcGd1YXJkOmFtLWJhc2ljLWF1dGgtcGFzc3dvcmQ") // the header's base64
		require.Contains(t, out, "redacted", "the echo was seen, and cleaned")
	})
}
