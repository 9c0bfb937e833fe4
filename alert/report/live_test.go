package report

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestLivePagesEscapeAndLink(t *testing.T) {
	const hostile = `<script>alert(1)</script>`
	l := NewLive(LiveConfig{}, nil)
	scenario(&liveFeed{l}, hostile)
	mux := http.NewServeMux()
	l.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	code, page := get(t, srv.URL+"/incidents")
	require.Equal(t, http.StatusOK, code)
	require.False(t, strings.Contains(page, hostile), "the actor name is escaped")
	require.True(t, strings.Contains(page, `href="findings/ato%2F1%3Fx%23y"`))

	code, page = get(t, srv.URL+"/findings/ato%2F1%3Fx%23y")
	require.Equal(t, http.StatusOK, code)
	require.False(t, strings.Contains(page, hostile))
	require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
	require.Contains(t, page, "credential_stuffing", "the evidence names the cause")
	require.Contains(t, page, "password.change", "the account's timeline")
	require.Contains(t, page, `href="../incidents#INC-001"`)

	code, _ = get(t, srv.URL+"/findings/nope")
	require.Equal(t, http.StatusNotFound, code)
}

func TestLiveForgetsOldIncidents(t *testing.T) {
	l := NewLive(LiveConfig{Window: time.Hour, MaxFindings: 100}, nil)
	scenario(&liveFeed{l}, "mallory")
	// Two hours later, one more event: the first incident's last finding
	// is more than the window behind.
	e := ev(3*3600, 2, "shop-x", "y", "192.0.2.1")
	l.Observe(&e, nil)
	rep := l.Report(t0)
	require.Len(t, rep.Incidents, 0, "both incidents are over an hour old")
}

// liveFeed lets scenario feed a Live.
type liveFeed struct{ l *Live }
