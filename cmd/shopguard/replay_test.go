package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// rtMain runs the command line in-process and returns status, stdout and
// stderr.
func rtMain(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestReplayCommandLine(t *testing.T) {
	dir := t.TempDir()
	sample := filepath.Join("..", "..", "examples", "audit-sample.jsonl")
	b, err := os.ReadFile(sample)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")

	withBad := filepath.Join(dir, "with-bad.jsonl")
	bad := append([]string{}, lines[:10]...)
	bad = append(bad, `{"time":"2026-01-07T00:00:00Z","shop_id":"s","actor":"a","action":"login.success","ip":"999.1.1.1"}`, `not json`)
	bad = append(bad, lines[10:]...)
	require.NoError(t, os.WriteFile(withBad, []byte(strings.Join(bad, "\n")+"\n"), 0o644))

	gz := filepath.Join(dir, "sample.jsonl.gz")
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write(b)
	require.NoError(t, zw.Close())
	require.NoError(t, os.WriteFile(gz, zb.Bytes(), 0o644))

	badConfig := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(badConfig, []byte("detect:\n  brute_force:\n    treshold: 5\n"), 0o644))
	badValue := filepath.Join(dir, "bad-value.yml")
	require.NoError(t, os.WriteFile(badValue, []byte("detect:\n  brute_force:\n    threshold: 0\n"), 0o644))

	t.Run("findings and summary", func(t *testing.T) {
		code, out, errs := rtMain(t, "", "replay", "--geoip", "demo", sample)
		require.Equal(t, 0, code, errs)
		require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 8)
		require.Contains(t, errs, "events: 207 read, 207 valid, 0 invalid")
		require.Regexp(t, regexp.MustCompile(`time: .*, \d+ events/s`), errs)
		require.Contains(t, errs, "findings: 8 (credential_stuffing 1, brute_force 1, account_takeover 3, impossible_travel 1, bulk_export 2)")
		// Twice, the same ids; from stdin and gzip, the same output.
		_, again, _ := rtMain(t, "", "replay", "--geoip", "demo", sample)
		require.Equal(t, out, again)
		_, fromStdin, _ := rtMain(t, string(b), "replay", "--geoip", "demo", "-")
		require.Equal(t, out, fromStdin)
		_, fromGz, _ := rtMain(t, "", "replay", "--geoip", "demo", gz)
		require.Equal(t, out, fromGz)
	})
	t.Run("bad lines are counted and skipped", func(t *testing.T) {
		code, out, errs := rtMain(t, "", "replay", "--geoip", "demo", withBad)
		require.Equal(t, 0, code, errs)
		require.Contains(t, errs, "events: 209 read, 207 valid, 2 invalid (bad_ip 1, not_json 1)")
		require.Contains(t, errs, "with-bad.jsonl:11")
		require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 8, "the good lines around the bad ones are kept")
	})
	t.Run("strict stops at the first bad line", func(t *testing.T) {
		code, _, errs := rtMain(t, "", "replay", "--strict", withBad)
		require.Equal(t, 1, code)
		require.Contains(t, errs, "with-bad.jsonl:11")
		require.Contains(t, errs, "bad_ip")
	})
	t.Run("exit statuses", func(t *testing.T) {
		code, _, errs := rtMain(t, "", "replay", filepath.Join(dir, "missing.jsonl"))
		require.Equal(t, 1, code)
		require.Contains(t, errs, "missing.jsonl")
		code, _, errs = rtMain(t, "", "replay", "--no-such-flag", sample)
		require.Equal(t, 2, code)
		require.Contains(t, errs, "no-such-flag")
		code, _, errs = rtMain(t, "", "replay")
		require.Equal(t, 2, code)
		require.Contains(t, errs, "no input")
		code, _, errs = rtMain(t, "", "replay", "--config", badConfig, sample)
		require.Equal(t, 2, code)
		require.Contains(t, errs, "treshold")
		code, _, errs = rtMain(t, "", "replay", "--config", badValue, sample)
		require.Equal(t, 2, code)
		require.Contains(t, errs, "detect.brute_force.threshold")
		code, _, errs = rtMain(t, "", "replay", "--geoip", filepath.Join(dir, "nope.mmdb"), sample)
		require.Equal(t, 1, code)
		require.Contains(t, errs, "nope.mmdb")
		code, _, _ = rtMain(t, "", "frobnicate")
		require.Equal(t, 2, code)
	})
	t.Run("help documents the flags", func(t *testing.T) {
		code, _, errs := rtMain(t, "", "replay", "--help")
		require.Equal(t, 0, code)
		for _, flag := range []string{"-geoip", "-out", "-strict", "-config", "-dead-letter", "-brokers", "-since", "-until"} {
			require.Contains(t, errs, flag)
		}
	})
	t.Run("without GeoIP travel is not judged, and the log says so", func(t *testing.T) {
		code, out, errs := rtMain(t, "", "replay", sample)
		require.Equal(t, 0, code)
		require.NotContains(t, out, "impossible_travel")
		require.Contains(t, errs, "no GeoIP database")
	})
}

// TestGenerateReplayEval scores a generated run against its ground truth.
func TestGenerateReplayEval(t *testing.T) {
	dir := t.TempDir()
	labels, events, findings := filepath.Join(dir, "labels.jsonl"), filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "findings.jsonl")
	code, out, errs := rtMain(t, "", "generate", "--events", "200000", "--labels", labels)
	require.Equal(t, 0, code, errs)
	require.NoError(t, os.WriteFile(events, []byte(out), 0o644))
	code, _, errs = rtMain(t, "", "replay", "--geoip", "demo", "--out", findings, events)
	require.Equal(t, 0, code, errs)
	code, table, errs := rtMain(t, "", "eval", "--labels", labels, findings)
	require.Equal(t, 0, code, errs)
	t.Log("\n" + table)
	for _, rule := range []string{"credential_stuffing", "brute_force", "account_takeover", "bulk_export", "all"} {
		row := regexp.MustCompile(`(?m)^\s*` + rule + `\s.*$`).FindString(table)
		require.NotEmpty(t, row, rule)
		require.True(t, strings.HasSuffix(strings.TrimSpace(row), "100.0%"), "recall of %s: %s", rule, row)
	}
}
