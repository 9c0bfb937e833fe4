package alert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"syscall"

	"github.com/segmentio/kafka-go"
)

// The values ClassifyError returns. Logs carry them as "class" next to the
// full error, so operators can filter without parsing messages.
const (
	ClassTimeout    = "timeout"
	ClassCanceled   = "canceled"
	ClassConnection = "connection"
	ClassTLS        = "tls"
	ClassHTTP4xx    = "http_4xx"
	ClassHTTP5xx    = "http_5xx"
	ClassKafka      = "kafka"
	ClassIO         = "io"
	ClassEncode     = "encode"
	ClassOther      = "other"
)

// ClassifyError maps a delivery error to one of a fixed set of values:
// ClassTimeout, ClassCanceled, ClassConnection, ClassTLS, ClassHTTP4xx,
// ClassHTTP5xx, ClassKafka, ClassIO, ClassEncode or ClassOther. The order of
// the checks matters: a TLS handshake error is also a net.OpError, and a
// timeout is also a connection problem, so the more specific class wins.
func ClassifyError(err error) string {
	if err == nil {
		return ClassOther
	}
	var (
		se       *statusError
		pe       *permanentError
		ne       net.Error
		ke       kafka.Error
		we       kafka.WriteErrors
		certErr  *tls.CertificateVerificationError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invErr   x509.CertificateInvalidError
		recErr   tls.RecordHeaderError
		alertErr tls.AlertError
		opErr    *net.OpError
		dnsErr   *net.DNSError
		pathErr  *fs.PathError
	)
	switch {
	case errors.As(err, &se):
		if se.code >= 500 {
			return ClassHTTP5xx
		}
		return ClassHTTP4xx
	case errors.As(err, &pe):
		return ClassEncode
	case errors.Is(err, context.Canceled):
		return ClassCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kafka.RequestTimedOut):
		return ClassTimeout
	case errors.As(err, &certErr), errors.As(err, &authErr), errors.As(err, &hostErr),
		errors.As(err, &invErr), errors.As(err, &recErr), errors.As(err, &alertErr):
		return ClassTLS
	case errors.As(err, &ne) && ne.Timeout():
		return ClassTimeout
	case errors.As(err, &ke):
		return ClassKafka
	case errors.As(err, &we):
		// WriteErrors holds one error per message; classify the first.
		for _, e := range we {
			if e != nil {
				return ClassifyError(e)
			}
		}
		return ClassKafka
	case errors.As(err, &opErr), errors.As(err, &dnsErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return ClassConnection
	case errors.As(err, &pathErr), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EIO):
		return ClassIO
	}
	return ClassOther
}

// statusError is a non-2xx answer of an HTTP receiver.
type statusError struct {
	code int
	body string // a short, escaped prefix of the response body
}

func (e *statusError) Error() string {
	if e.body == "" {
		return fmt.Sprintf("HTTP status %d", e.code)
	}
	return fmt.Sprintf("HTTP status %d: %s", e.code, e.body)
}

// permanentError marks an error that repeating the same delivery cannot fix,
// such as a finding that does not encode.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// retryable reports whether a notification delivery that failed with err is
// worth repeating: network trouble, timeouts, 5xx, 408 and 429 are; other
// 4xx answers and encoding errors are not, because the same request would be
// rejected again. A joined error (one per Alertmanager) is retryable when any
// part is. Record sinks do not ask: they retry everything, since giving up
// would lose findings.
func retryable(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if retryable(e) {
				return true
			}
		}
		return false
	}
	var pe *permanentError
	if errors.As(err, &pe) {
		return false
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.code >= 500 || se.code == 408 || se.code == 429
	}
	return true
}

// stripURL removes the *url.Error wrapper net/http puts around transport
// errors: its message repeats the full request URL, and a webhook URL (Slack
// and friends) carries its secret token in the path.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
