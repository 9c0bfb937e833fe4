package alert

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// userAgent identifies shopguard to HTTP receivers.
const userAgent = "shopguard-alert"

// newHTTPClient returns a client for one HTTP sink: its own transport (so
// TLS settings and idle connections are not shared with anything else), the
// per-request timeout, and TLS from cfg for https URLs.
func newHTTPClient(key string, cfg TLSConfig, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc, err := cfg.Build(key)
	if err != nil {
		return nil, err
	}
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// endpoint is a receiver URL, the form of it that may be logged, and the
// secrets that must not reach a log through it.
type endpoint struct {
	url     string
	display string
	// secrets are removed from the answers quoted in errors, in case a
	// receiver or a proxy echoes the request back.
	secrets []string
}

// newEndpoint keeps u and, for logs, either all of it or, when the path
// may carry a secret token (webhook URLs), only scheme and host. secrets
// are further values to keep out of error messages.
func newEndpoint(u *url.URL, pathIsSecret bool, secrets ...string) endpoint {
	ep := endpoint{url: u.String(), display: u.Redacted()}
	if pathIsSecret {
		ep.display = u.Scheme + "://" + u.Host
		secrets = append(secrets, u.EscapedPath(), u.Path, u.RawQuery)
	}
	for _, s := range secrets {
		if len(s) >= 4 {
			ep.secrets = append(ep.secrets, s)
		}
	}
	return ep
}

// redact replaces the endpoint's secrets and the credentials of the
// request header in s.
func (ep endpoint) redact(s string, header http.Header) string {
	for _, secret := range ep.secrets {
		s = strings.ReplaceAll(s, secret, "<redacted>")
	}
	for _, v := range header.Values("Authorization") {
		_, cred, _ := strings.Cut(v, " ")
		for _, secret := range []string{v, cred} {
			if len(secret) >= 4 {
				s = strings.ReplaceAll(s, secret, "<redacted>")
			}
		}
	}
	return s
}

// post sends body to ep and reads the answer. Any 2xx is success; another
// status is a *statusError carrying a short escaped prefix of the answer.
// Errors name ep in its loggable form only.
func post(ctx context.Context, client *http.Client, ep endpoint, body []byte, header http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.url, bytes.NewReader(body))
	if err != nil {
		return &permanentError{fmt.Errorf("post to %s: %w", ep.display, stripURL(err))}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %w", ep.display, stripURL(err))
	}
	defer resp.Body.Close()
	// Read a little of the answer for the error message, and drain the
	// rest (up to a bound) so the connection can be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		quoted := ep.redact(string(bytes.TrimSpace(snippet)), header)
		return fmt.Errorf("post to %s: %w", ep.display,
			&statusError{code: resp.StatusCode, body: truncate(escapeText(quoted), 256)})
	}
	return nil
}
