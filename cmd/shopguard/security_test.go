package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// secBuffer is a goroutine-safe buffer for a running command's output.
type secBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *secBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *secBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// secProc is `shopguard run` running in-process.
type secProc struct {
	cancel context.CancelFunc
	done   chan int
	stderr *secBuffer
	addr   string // the bound HTTP address
}

var runningRE = regexp.MustCompile(`msg="shopguard running" listen=(\S+)`)

// secStart runs Main with args (which should include --listen
// 127.0.0.1:0) and waits until it serves HTTP.
func secStart(t *testing.T, args ...string) *secProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &secProc{cancel: cancel, done: make(chan int, 1), stderr: &secBuffer{}}
	go func() { p.done <- Main(ctx, args, strings.NewReader(""), io.Discard, p.stderr) }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := runningRE.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1]
			return p
		}
		select {
		case code := <-p.done:
			p.done <- code
			t.Fatalf("shopguard exited with %d before serving:\n%s", code, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("shopguard did not start serving:\n%s", p.stderr.String())
	return nil
}

// stop interrupts the process and returns its exit status.
func (p *secProc) stop(t *testing.T) int {
	t.Helper()
	p.cancel()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(15 * time.Second):
		t.Fatalf("shopguard did not stop:\n%s", p.stderr.String())
		return -1
	}
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key,
// and returns their paths and a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "shopguard test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile = writeFile(t, dir, "tls.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, dir, "tls.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestListenIsLoopbackByDefault(t *testing.T) {
	host, port, err := net.SplitHostPort(defaultConfig().Listen)
	require.NoError(t, err)
	require.Equal(t, "9464", port)
	require.True(t, netip.MustParseAddr(host).IsLoopback(), "the default listen address %s is not loopback", host)
	require.Equal(t, "127.0.0.1:9464", defaultConfig().Listen)
	// An empty file and `run` without --listen keep it.
	cfg, err := loadConfig(writeFile(t, t.TempDir(), "empty.yml", ""))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9464", cfg.Listen)
	// The demo too.
	var stderr bytes.Buffer
	require.Equal(t, exitOK, Main(t.Context(), []string{"demo", "--help"}, nil, io.Discard, &stderr))
	require.Regexp(t, `-listen address\s+HTTP address for /metrics[^\n]*\(default "127\.0\.0\.1:9464"\)`, stderr.String())
}

// TestMetricsTLSAndBasicAuth runs `run` against a kfake cluster with an
// exporter-toolkit web config: /metrics is served over TLS only, and only
// to the user with the bcrypt-hashed password.
func TestMetricsTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	const user, password = "prometheus", "scrape-pass-Zq7"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	webConfig := writeFile(t, dir, "web.yml", fmt.Sprintf(
		"tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  %s: %s\n", certFile, keyFile, user, hash))

	c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "admin-audit-dlq": 1})
	config := writeFile(t, dir, "shopguard.yml", fmt.Sprintf(
		"web_config_file: %s\nkafka:\n  brokers: [%s]\n", webConfig, c.Addrs()[0]))
	p := secStart(t, "run", "--config", config, "--listen", "127.0.0.1:0")

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(user, password string) (*http.Response, string) {
		req, err := http.NewRequest(http.MethodGet, "https://"+p.addr+"/metrics", nil)
		require.NoError(t, err)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}

	resp, body := get("", "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.NotContains(t, body, "shopguard_")
	resp, _ = get(user, "wrong")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = get("admin", password)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	resp, body = get(user, password)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, "shopguard_build_info")
	require.NotNil(t, resp.TLS)
	require.GreaterOrEqual(t, resp.TLS.Version, uint16(tls.VersionTLS12))
	require.Equal(t, "shopguard test", resp.TLS.PeerCertificates[0].Subject.CommonName)

	// Plain HTTP gets no metrics.
	plain, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.addr + "/metrics")
	if err == nil {
		b, _ := io.ReadAll(plain.Body)
		plain.Body.Close()
		require.NotEqual(t, http.StatusOK, plain.StatusCode)
		require.NotContains(t, string(b), "shopguard_")
	}
	require.Equal(t, exitOK, p.stop(t), p.stderr.String())
}

// amReceiver is an Alertmanager (or webhook receiver) that refuses the
// first request with an answer echoing its credentials and URL, and takes
// the rest.
type amReceiver struct {
	mu     sync.Mutex
	n      int
	bodies [][]byte
	heads  []http.Header
}

func (a *amReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	if a.n == 1 {
		http.Error(w, "denied: "+r.Header.Get("Authorization")+" at "+r.URL.String(), http.StatusInternalServerError)
		return
	}
	a.bodies = append(a.bodies, b)
	a.heads = append(a.heads, r.Header.Clone())
}

func (a *amReceiver) got() ([][]byte, []http.Header) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]byte(nil), a.bodies...), append([]http.Header(nil), a.heads...)
}

// bruteForce returns 12 failed logins of one account within two minutes.
func bruteForce(actor string) []shopguard.Event {
	t0 := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Second)
	evs := make([]shopguard.Event, 12)
	for i := range evs {
		evs[i] = shopguard.Event{Time: t0.Add(time.Duration(i) * 20 * time.Second), ShopID: "shop-1", Actor: actor,
			Action: shopguard.ActionLoginFailure, IP: netip.MustParseAddr("203.0.113.7"), Reason: "bad_password",
			ID: fmt.Sprintf("e%d", i)}
	}
	return evs
}

// TestSecretsNeverLoggedAndPseudonyms runs `run` at debug level with every
// secret there is: a SASL/SCRAM password for Kafka (from a file), basic
// auth for Alertmanager (from the environment), a webhook URL holding a
// token and a signing secret, and a pseudonymization key. The receivers
// first answer with an echo of the credentials. None of the secrets may
// appear in the logs. With pseudonymization on for the external sinks, the
// Alertmanager and webhook payloads carry the keyed pseudonym, and the
// JSONL file the real actor.
func TestSecretsNeverLoggedAndPseudonyms(t *testing.T) {
	const (
		kafkaPassword = "kafka-Pa55-8nX2"
		amPassword    = "am-Pa55-w0rd-77"
		hookToken     = "T0K3N-abcdef123456"
		hookSecret    = "hook-s1gning-secret"
		pseudoKey     = "pseudonym-key-0123456789abcdef"
		actor         = "owner@example.jp"
	)
	dir := t.TempDir()
	c := kafkatest.New(t, map[string]int32{"admin-audit": 1, "admin-audit-dlq": 1},
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "shopguard", kafkaPassword))
	mech, err := scram.Mechanism(scram.SHA512, "shopguard", kafkaPassword)
	require.NoError(t, err)
	c.UseSASL(mech)
	c.ProduceEvents(t, "admin-audit", bruteForce(actor)...)
	c.ProduceLines(t, "admin-audit", 1, "not json at all")

	am, hook := &amReceiver{}, &amReceiver{}
	amSrv, hookSrv := httptest.NewServer(am), httptest.NewServer(hook)
	t.Cleanup(amSrv.Close)
	t.Cleanup(hookSrv.Close)
	t.Setenv("SHOPGUARD_TEST_AM_PASSWORD", amPassword)
	t.Setenv("SHOPGUARD_TEST_HOOK_URL", hookSrv.URL+"/hooks/"+hookToken)
	findings := filepath.Join(dir, "findings.jsonl")
	config := writeFile(t, dir, "shopguard.yml", fmt.Sprintf(`
log_level: debug
kafka:
  brokers: [%s]
  sasl:
    mechanism: SCRAM-SHA-512
    username: shopguard
    password_file: %s
sinks:
  file: {path: %s}
  alertmanager:
    urls: [%s]
    basic_auth: {username: shopguard, password_env: SHOPGUARD_TEST_AM_PASSWORD}
    flush_timeout: 2s
  webhook:
    url_env: SHOPGUARD_TEST_HOOK_URL
    secret_file: %s
    flush_timeout: 2s
  pseudonymize:
    key_file: %s
    sinks: [alertmanager, webhook]
`, c.Addrs()[0], writeFile(t, dir, "kafka-password", kafkaPassword+"\n"), findings, amSrv.URL,
		writeFile(t, dir, "hook-secret", hookSecret), writeFile(t, dir, "pseudonym-key", pseudoKey)))

	p := secStart(t, "run", "--config", config, "--listen", "127.0.0.1:0")
	require.Eventually(t, func() bool {
		amBodies, _ := am.got()
		hookBodies, _ := hook.got()
		b, _ := os.ReadFile(findings)
		return len(amBodies) > 0 && len(hookBodies) > 0 && bytes.Count(b, []byte("\n")) > 0
	}, 30*time.Second, 50*time.Millisecond, "no findings delivered:\n%s", p.stderr.String())
	require.Equal(t, exitOK, p.stop(t))

	logs := p.stderr.String()
	require.Contains(t, logs, "level=DEBUG", "the logs are at debug level")
	require.Contains(t, logs, "invalid event skipped", "the bad message was logged")
	for name, secret := range map[string]string{
		"kafka password": kafkaPassword, "alertmanager password": amPassword,
		"alertmanager basic auth": base64.StdEncoding.EncodeToString([]byte("shopguard:" + amPassword)),
		"webhook token":           hookToken, "webhook secret": hookSecret, "pseudonymization key": pseudoKey,
	} {
		require.NotContains(t, logs, secret, "the logs hold the %s", name)
	}

	// The record sink keeps the real actor, the external ones get the
	// pseudonym: "hmac:" and 16 hex digits of HMAC-SHA256(key, shop NUL actor).
	mac := hmac.New(sha256.New, []byte(pseudoKey))
	mac.Write([]byte("shop-1\x00" + actor))
	pseudonym := "hmac:" + hex.EncodeToString(mac.Sum(nil)[:8])

	b, err := os.ReadFile(findings)
	require.NoError(t, err)
	// The failures are fast enough to be a failure_burst too (keyed by
	// address, no actor): the brute_force finding is the one to check.
	var f shopguard.Finding
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		require.NoError(t, json.Unmarshal(line, &f))
		if f.Rule == shopguard.RuleBruteForce {
			break
		}
	}
	require.Equal(t, shopguard.RuleBruteForce, f.Rule)
	require.Equal(t, actor, f.Actor)
	require.NotContains(t, string(b), "hmac:")

	amBodies, amHeads := am.got()
	var alerts []struct {
		Labels      map[string]string
		Annotations map[string]string
	}
	require.NoError(t, json.Unmarshal(amBodies[0], &alerts))
	require.Equal(t, pseudonym, alerts[0].Labels["actor"])
	require.NotContains(t, string(amBodies[0]), actor)
	user, pw, ok := (&http.Request{Header: amHeads[0]}).BasicAuth()
	require.True(t, ok)
	require.Equal(t, "shopguard", user)
	require.Equal(t, amPassword, pw, "the password was read from the environment")

	hookBodies, hookHeads := hook.got()
	require.Contains(t, string(hookBodies[0]), `"actor":"`+pseudonym+`"`)
	require.NotContains(t, string(hookBodies[0]), actor)
	sig := hmac.New(sha256.New, []byte(hookSecret))
	sig.Write(hookBodies[0])
	require.Equal(t, "sha256="+hex.EncodeToString(sig.Sum(nil)), hookHeads[0].Get("X-Shopguard-Signature"),
		"signed with the secret read from its file")
}

// hostile is an actor an attacker chose: ANSI escapes, CR/LF and a forged
// log record, bidi overrides, invalid UTF-8, NUL, DEL and C1 controls.
const hostile = "ev\x1b[31mil\x1b[2J\r\nlevel=ERROR msg=forged \u202eexe.txt\u202c\u2066\u200f\xff\x00\x7f\u0085\u009b"

// jsonEscape returns s as a JSON string literal escaping only what JSON
// requires, so bidi overrides and invalid UTF-8 stay raw on the line.
func jsonEscape(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// requireNoDangerousRunes fails if out is not valid UTF-8 or holds a
// control character other than newline, a bidi control, or a line or
// paragraph separator.
func requireNoDangerousRunes(t *testing.T, what string, out []byte) {
	t.Helper()
	require.True(t, utf8.Valid(out), "%s is not valid UTF-8", what)
	for i, r := range string(out) {
		if r != '\n' && (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029') {
			lo, hi := max(0, i-40), min(len(out), i+40)
			t.Fatalf("%s holds %U at byte %d: %q", what, r, i, out[lo:hi])
		}
	}
}

// TestReplayHostileActors replays a file whose actors and user agents are
// hostile and that has hostile invalid lines: findings are raised for them,
// the findings JSONL is valid JSON with every dangerous character escaped
// (and decodes to the actor as logged), and the log on stderr is inert.
func TestReplayHostileActors(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
	var lines []string
	add := func(at time.Duration, shop, actor, ip string) {
		lines = append(lines, fmt.Sprintf(`{"time":%q,"shop_id":%s,"actor":%s,"action":"login.failure","ip":%q,"user_agent":%s}`,
			t0.Add(at).Format(time.RFC3339), jsonEscape(shop), jsonEscape(actor), ip, jsonEscape(hostile)))
	}
	for i := range 12 { // brute force on the hostile account
		add(time.Duration(i)*10*time.Second, "shop-\u202e1", hostile, "203.0.113.7")
	}
	for i := range 25 { // stuffing with hostile actors from one address
		add(5*time.Minute+time.Duration(i)*time.Second, "shop-2", fmt.Sprintf("%s-%d", hostile, i), "45.95.147.9")
	}
	lines = append(lines,
		`{"time":"2026-01-07T09:30:00Z","shop_id":"s","actor":"`+strings.ReplaceAll(hostile, "\n", "")+`","action":"login.failure","ip":"192.0.2.1"}`,
		`{"time":"2026-01-07T09:30:00Z","shop_id":"s","actor":`+jsonEscape(hostile)+`,"action":"login.failure","ip":`+jsonEscape(hostile)+`}`)
	in := writeFile(t, dir, "hostile.jsonl", strings.Join(lines, "\n")+"\n")
	out := filepath.Join(dir, "findings.jsonl")

	var stdout, stderr bytes.Buffer
	code := Main(t.Context(), []string{"replay", "--log-level", "debug", "--out", out, in}, nil, &stdout, &stderr)
	require.Equal(t, exitOK, code, stderr.String())
	requireNoDangerousRunes(t, "stderr", stderr.Bytes())
	require.Contains(t, stderr.String(), "invalid event skipped")
	require.Contains(t, stderr.String(), "2 invalid")

	b, err := os.ReadFile(out)
	require.NoError(t, err)
	requireNoDangerousRunes(t, "findings.jsonl", b)
	rules := map[string]int{}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		require.True(t, json.Valid(line), "%s", line)
		var f shopguard.Finding
		require.NoError(t, json.Unmarshal(line, &f))
		rules[f.Rule]++
		switch f.Rule {
		case shopguard.RuleBruteForce:
			// Exact once decoded: the account as the platform logged it.
			require.Equal(t, strings.ToValidUTF8(hostile, "\uFFFD"), f.Actor)
			require.Equal(t, "shop-\u202e1", f.ShopID)
		case shopguard.RuleCredentialStuffing:
			require.NotEmpty(t, f.Evidence.Accounts)
			require.True(t, strings.HasPrefix(f.Evidence.Accounts[0].Actor, strings.ToValidUTF8(hostile, "\uFFFD")))
		}
	}
	require.Equal(t, 1, rules[shopguard.RuleBruteForce], "%v", rules)
	require.Equal(t, 1, rules[shopguard.RuleCredentialStuffing], "%v", rules)
	require.Contains(t, string(b), `\u202e`)
	require.Contains(t, string(b), `\u001b[31m`)
}

// TestReplayFieldLimits: at the command line, shop_id up to 128 bytes,
// actor up to 256 bytes and lines up to 64 KiB are events; one byte more
// is an invalid line, counted by reason, and --strict stops there naming
// it.
func TestReplayFieldLimits(t *testing.T) {
	line := func(shop, actor string, pad int) string {
		s := fmt.Sprintf(`{"time":"2026-01-07T09:00:00Z","shop_id":%q,"actor":%q,"action":"login.success","ip":"192.0.2.1","user_agent":"`, shop, actor)
		return s + strings.Repeat("a", max(0, pad-len(s)-2)) + `"}`
	}
	const maxLine = 64 << 10
	lines := []string{
		line(strings.Repeat("s", 128), "a", 0),
		line(strings.Repeat("s", 129), "a", 0),
		line("s", strings.Repeat("é", 128), 0), // 256 bytes
		line("s", strings.Repeat("a", 257), 0),
		line("s", "a", maxLine),
		line("s", "a", maxLine+1),
	}
	require.Len(t, lines[4], maxLine)
	require.Len(t, lines[5], maxLine+1)
	dir := t.TempDir()
	in := writeFile(t, dir, "limits.jsonl", strings.Join(lines, "\n")+"\n")

	var stdout, stderr bytes.Buffer
	code := Main(t.Context(), []string{"replay", "--out", filepath.Join(dir, "out.jsonl"), in}, nil, &stdout, &stderr)
	require.Equal(t, exitOK, code, stderr.String())
	require.Contains(t, stderr.String(), "events: 6 read, 3 valid, 3 invalid (bad_field 2, too_large 1)")
	for _, want := range []string{"limits.jsonl:2", "limits.jsonl:4", "limits.jsonl:6"} {
		require.Contains(t, stderr.String(), want)
	}
	require.Less(t, stderr.Len(), 8<<10, "a rejected line is not repeated whole in the log")

	stderr.Reset()
	code = Main(t.Context(), []string{"replay", "--strict", "--out", filepath.Join(dir, "out2.jsonl"), in}, nil, &stdout, &stderr)
	require.Equal(t, exitRuntime, code)
	require.Contains(t, stderr.String(), "limits.jsonl:2")
	require.Contains(t, stderr.String(), "shop_id")
}

// TestContainerRunsAsNonRoot: the image's final stage switches to an
// unprivileged user, and the compose stack publishes every port on
// loopback only.
func TestContainerRunsAsNonRoot(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	require.NoError(t, err)
	df := string(b)
	last := strings.LastIndex(df, "\nFROM ")
	require.Positive(t, last)
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df[last:], -1)
	require.NotEmpty(t, user, "the final stage sets no USER: the container would run as root")
	u := user[len(user)-1][1]
	name, _, _ := strings.Cut(u, ":")
	require.NotContains(t, []string{"root", "0"}, name)

	b, err = os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			User  string   `yaml:"user"`
			Ports []string `yaml:"ports"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(b, &compose))
	require.Contains(t, compose.Services, "shopguard")
	require.NotContains(t, []string{"root", "0", "0:0"}, compose.Services["shopguard"].User)
	for name, s := range compose.Services {
		for _, p := range s.Ports {
			require.True(t, strings.HasPrefix(p, "127.0.0.1:"), "service %s publishes %s beyond loopback", name, p)
		}
	}
}
