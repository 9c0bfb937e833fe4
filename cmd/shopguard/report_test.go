package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReportHTTPConfig(t *testing.T) {
	cfg := defaultConfig()
	require.NoError(t, decodeConfig([]byte("http:\n  external_url: https://sg.example:9464/\n  incidents_window: 2h\n"), &cfg))
	require.Equal(t, "https://sg.example:9464/findings/{id}", generatorURL(cfg.HTTP.ExternalURL))
	require.Equal(t, 10_000, cfg.HTTP.IncidentsMaxFindings)
	cfg = defaultConfig()
	err := decodeConfig([]byte("http:\n  external_url: not-a-url\n  incidents_max_findings: 0\n"), &cfg)
	require.ErrorContains(t, err, "http.external_url")
	require.ErrorContains(t, err, "http.incidents_max_findings")
}

// TestReportReplay replays generated traffic with --report and checks the
// three files and the summary line.
func TestReportReplay(t *testing.T) {
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	var out, errb bytes.Buffer
	e := env{stdout: &out, stderr: &errb}
	require.Equal(t, exitOK, runGenerate(context.Background(), e, []string{"--events", "50000"}), errb.String())
	require.NoError(t, os.WriteFile(events, out.Bytes(), 0o644))
	out.Reset()
	errb.Reset()
	rep := filepath.Join(dir, "report")
	code := runReplay(context.Background(), e, []string{"--geoip", "demo", "--report", rep, events})
	require.Equal(t, exitOK, code, errb.String())
	require.Contains(t, errb.String(), "report: "+filepath.Join(rep, "report.html"))
	for _, f := range []string{"report.html", "accounts.csv", "incidents.json"} {
		st, err := os.Stat(filepath.Join(rep, f))
		require.NoError(t, err)
		require.Positive(t, st.Size(), f)
	}
	f, err := os.Open(filepath.Join(rep, "accounts.csv"))
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	require.Equal(t, "shop_id,actor,incident,first_attack_time,last_attack_time,failed_logins,compromised,sensitive_changes,exported_records,finding_ids", strings.Join(rows[0], ","))
	require.Greater(t, len(rows), 1)
}
