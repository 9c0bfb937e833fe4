// Package kafkaconf is the one definition of how shopguard connects to Kafka:
// brokers, client id, dial timeout, TLS and SASL. The consumer-group source,
// the range replay, the producers, the dead-letter writer, the scale-out
// runtime and alert's findings-topic sink all embed or use Client, so a
// setting means the same thing, is validated by the same rules and is read
// from the same files wherever it appears.
//
// It does not consume or produce anything, and it knows nothing of topics,
// groups or events: those belong to the packages that use it. It lives under
// internal/ so that alert and ingest/kafka can share it without importing
// each other.
package kafkaconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// The SASL mechanisms shopguard supports. Matching is case-insensitive, so
// scram-sha-512 works as well.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Client is the connection part of a Kafka configuration. It is inlined into
// the YAML sections that use it, so its keys sit next to theirs (kafka.brokers,
// kafka.tls.ca_file, sinks.kafka.sasl.username).
type Client struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// ClientID names shopguard in the brokers' logs and quotas.
	ClientID string `yaml:"client_id"`
	// DialTimeout bounds connecting to a broker, TLS and SASL included.
	DialTimeout time.Duration `yaml:"dial_timeout"`

	TLS  TLS  `yaml:"tls"`
	SASL SASL `yaml:"sasl"`
}

// TLS is the client side of a TLS connection. alert's HTTP sinks use the
// same settings for their receivers (and ignore Enabled: they use TLS exactly
// when the URL is https).
type TLS struct {
	// Enabled turns TLS on for Kafka connections.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that authenticate clients by certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name the server certificate is checked for.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off certificate verification. Only for
	// tests.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASL is SASL authentication to Kafka. An empty Mechanism means none. The
// password is read from PasswordFile or the environment variable PasswordEnv
// when a connection is configured; it is never logged.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN only
	// together with TLS, since it sends the password as is).
	Mechanism    string `yaml:"mechanism"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file,omitempty"`
	PasswordEnv  string `yaml:"password_env,omitempty"`
}

// Problems lists configuration errors, each naming its full key.
type Problems []error

// Addf records a problem of key.
func (p *Problems) Addf(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// Validate returns every problem of c, each naming its key below prefix
// (e.g. "kafka" gives "kafka.brokers[0]"). With needBrokers an empty broker
// list is a problem; alert's sink lets the program fill its brokers in
// later. A zero DialTimeout is left for the caller to judge.
func (c Client) Validate(prefix string, needBrokers bool) Problems {
	var p Problems
	if needBrokers && len(c.Brokers) == 0 {
		p.Addf(prefix+".brokers", "at least one broker (host:port) is required")
	}
	for i, b := range c.Brokers {
		if host, port, err := net.SplitHostPort(b); err != nil || host == "" || port == "" {
			p.Addf(fmt.Sprintf("%s.brokers[%d]", prefix, i), "%q is not host:port", b)
		}
	}
	p = append(p, c.TLS.Validate(prefix+".tls")...)
	if !c.TLS.Enabled && c.TLS != (TLS{}) {
		p.Addf(prefix+".tls.enabled", "TLS options are set but enabled is false")
	}
	if s := c.SASL; s != (SASL{}) {
		switch strings.ToUpper(s.Mechanism) {
		case SASLPlain:
			if !c.TLS.Enabled {
				p.Addf(prefix+".sasl.mechanism", "PLAIN sends the password in clear text; enable %s.tls or use SCRAM-SHA-512", prefix)
			}
		case SASLScramSHA256, SASLScramSHA512:
		default:
			p.Addf(prefix+".sasl.mechanism", "%q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
		}
		if s.Username == "" {
			p.Addf(prefix+".sasl.username", "required")
		}
		switch {
		case s.PasswordFile == "" && s.PasswordEnv == "":
			p.Addf(prefix+".sasl.password_file", "one of password_file and password_env is required")
		case s.PasswordFile != "" && s.PasswordEnv != "":
			p.Addf(prefix+".sasl.password_file", "password_file and password_env are exclusive")
		}
	}
	return p
}

// Validate returns the problems of t's own fields, naming keys below key.
func (t TLS) Validate(key string) Problems {
	var p Problems
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.Addf(key+".cert_file", "cert_file and key_file go together")
	}
	return p
}

// Build loads the files t names and returns the tls.Config; errors name the
// key below key.
func (t TLS) Build(key string) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // explicit opt-in, for tests
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", key, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file: no PEM certificates in %s", key, t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file: %w", key, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Build reads the password and returns the SASL mechanism, or nil when s
// is empty. Errors name the key below key and the file or variable, never
// the password.
func (s SASL) Build(key string) (sasl.Mechanism, error) {
	if s == (SASL{}) {
		return nil, nil
	}
	var password string
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("%s.password_file: %w", key, err)
		}
		password = strings.TrimSpace(string(b))
		if password == "" {
			return nil, fmt.Errorf("%s.password_file: %s is empty", key, s.PasswordFile)
		}
	} else {
		password = strings.TrimSpace(os.Getenv(s.PasswordEnv))
		if password == "" {
			return nil, fmt.Errorf("%s.password_env: environment variable %s is empty or unset", key, s.PasswordEnv)
		}
	}
	var (
		m   sasl.Mechanism
		err error
	)
	switch strings.ToUpper(s.Mechanism) {
	case SASLPlain:
		m = plain.Mechanism{Username: s.Username, Password: password}
	case SASLScramSHA256:
		m, err = scram.Mechanism(scram.SHA256, s.Username, password)
	case SASLScramSHA512:
		m, err = scram.Mechanism(scram.SHA512, s.Username, password)
	default:
		err = fmt.Errorf("unknown mechanism %q", s.Mechanism)
	}
	if err != nil { // scram's errors name the user name at most, never the password
		return nil, fmt.Errorf("%s.mechanism: %w", key, err)
	}
	return m, nil
}

// security loads the TLS files and the SASL password c names.
func (c Client) security(prefix string) (*tls.Config, sasl.Mechanism, error) {
	var tc *tls.Config
	if c.TLS.Enabled {
		var err error
		if tc, err = c.TLS.Build(prefix + ".tls"); err != nil {
			return nil, nil, err
		}
	}
	m, err := c.SASL.Build(prefix + ".sasl")
	if err != nil {
		return nil, nil, err
	}
	return tc, m, nil
}

// Transport returns a kafka-go transport for Writers and Clients. Errors
// name the key below prefix whose file or secret could not be read.
func (c Client) Transport(prefix string) (*kafka.Transport, error) {
	tc, mech, err := c.security(prefix)
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{ClientID: c.ClientID, DialTimeout: c.DialTimeout, TLS: tc, SASL: mech}, nil
}

// Dialer returns a kafka-go dialer for Readers.
func (c Client) Dialer(prefix string) (*kafka.Dialer, error) {
	tc, mech, err := c.security(prefix)
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{ClientID: c.ClientID, Timeout: c.DialTimeout, DualStack: true, TLS: tc, SASLMechanism: mech}, nil
}
