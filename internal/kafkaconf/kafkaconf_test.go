package kafkaconf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClientValidate(t *testing.T) {
	tests := []struct {
		name        string
		c           Client
		needBrokers bool
		want        []string // substrings, one per expected problem
	}{
		{name: "ok", c: Client{Brokers: []string{"k:9092"}}, needBrokers: true},
		{name: "no brokers needed", c: Client{}, needBrokers: false},
		{name: "no brokers", c: Client{}, needBrokers: true, want: []string{"k.brokers: at least one broker"}},
		{name: "bad broker", c: Client{Brokers: []string{"k:9092", "nohost"}}, want: []string{`k.brokers[1]: "nohost" is not host:port`}},
		{name: "tls off with options", c: Client{TLS: TLS{CAFile: "ca.pem"}}, want: []string{"k.tls.enabled: TLS options are set but enabled is false"}},
		{name: "cert without key", c: Client{TLS: TLS{Enabled: true, CertFile: "c.pem"}}, want: []string{"k.tls.cert_file: cert_file and key_file go together"}},
		{name: "plain without tls", c: Client{SASL: SASL{Mechanism: "plain", Username: "u", PasswordEnv: "P"}}, want: []string{"k.sasl.mechanism: PLAIN sends the password in clear text; enable k.tls"}},
		{name: "plain with tls", c: Client{TLS: TLS{Enabled: true}, SASL: SASL{Mechanism: "PLAIN", Username: "u", PasswordEnv: "P"}}},
		{name: "scram lower case", c: Client{SASL: SASL{Mechanism: "scram-sha-512", Username: "u", PasswordFile: "f"}}},
		{name: "unknown mechanism", c: Client{SASL: SASL{Mechanism: "GSSAPI", Username: "u", PasswordEnv: "P"}}, want: []string{`k.sasl.mechanism: "GSSAPI" is not PLAIN`}},
		{name: "no user, no password", c: Client{SASL: SASL{Mechanism: SASLScramSHA256}}, want: []string{"k.sasl.username: required", "k.sasl.password_file: one of password_file and password_env is required"}},
		{name: "both passwords", c: Client{SASL: SASL{Mechanism: SASLScramSHA256, Username: "u", PasswordFile: "f", PasswordEnv: "P"}}, want: []string{"k.sasl.password_file: password_file and password_env are exclusive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.c.Validate("k", tt.needBrokers)
			require.Len(t, got, len(tt.want), "%v", errors.Join(got...))
			for i, w := range tt.want {
				require.Contains(t, got[i].Error(), w)
			}
		})
	}
}

func TestBuildNamesKeyNotSecret(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	pw := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))

	_, err := Client{SASL: SASL{Mechanism: SASLScramSHA512, Username: "u", PasswordFile: empty}}.Dialer("k")
	require.ErrorContains(t, err, "k.sasl.password_file: "+empty+" is empty")
	t.Setenv("SG_TEST_EMPTY_PW", "")
	_, err = Client{SASL: SASL{Mechanism: SASLScramSHA512, Username: "u", PasswordEnv: "SG_TEST_EMPTY_PW"}}.Transport("k")
	require.ErrorContains(t, err, "k.sasl.password_env: environment variable SG_TEST_EMPTY_PW is empty or unset")
	_, err = Client{TLS: TLS{Enabled: true, CAFile: pw}}.Transport("k")
	require.ErrorContains(t, err, "k.tls.ca_file: no PEM certificates in "+pw)
	require.NotContains(t, err.Error(), "s3cret")

	tr, err := Client{ClientID: "sg", TLS: TLS{Enabled: true}, SASL: SASL{Mechanism: SASLPlain, Username: "u", PasswordFile: pw}}.Transport("k")
	require.NoError(t, err)
	require.Equal(t, "sg", tr.ClientID)
	require.NotNil(t, tr.TLS)
	require.Equal(t, "PLAIN", tr.SASL.Name())
	d, err := Client{}.Dialer("k")
	require.NoError(t, err)
	require.Nil(t, d.TLS)
	require.Nil(t, d.SASLMechanism)
}
