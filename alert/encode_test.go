package alert

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

func TestEscapeText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"owner@example.jp", "owner@example.jp"},
		{"東京 café", "東京 café"},
		{"a\nb\r\tc", `a\nb\r\tc`},
		{"bell\x07esc\x1b[31mdel\x7f", `bell\u0007esc\u001b[31mdel\u007f`},
		{"c1\u0085", `c1\u0085`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"admin\u202egnp.exe", `admin\u202egnp.exe`},
		{"iso\u2066late\u2069", `iso\u2066late\u2069`},
		{"", ""},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, escapeText(tt.in), "%q", tt.in)
	}
}

func TestTruncate(t *testing.T) {
	require.Equal(t, "abc", truncate("abc", 3))
	require.Equal(t, "ab…", truncate("abcd", 2))
	require.Equal(t, "…", truncate("東京", 2), "never splits a rune")
	require.Equal(t, "東…", truncate("東京", 4))
}

func TestFiniteCopiesOnlyWhenNeeded(t *testing.T) {
	f := travelFinding("a")
	require.Same(t, &f, finite(&f))
	f.Evidence.From.Lat = math.NaN()
	f.Evidence.SpeedKMH = math.Inf(-1)
	c := finite(&f)
	require.NotSame(t, &f, c)
	require.Zero(t, c.Evidence.From.Lat)
	require.Equal(t, -math.MaxFloat64, c.Evidence.SpeedKMH)
	require.True(t, math.IsNaN(f.Evidence.From.Lat), "the original is untouched")
	_, err := marshalFinding(&f)
	require.NoError(t, err)
}

func TestClassifyError(t *testing.T) {
	// A real refused connection: listen, note the address, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, refused := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, refused)

	tests := []struct {
		err  error
		want string
	}{
		{context.Canceled, ClassCanceled},
		{fmt.Errorf("post: %w", context.DeadlineExceeded), ClassTimeout},
		{fmt.Errorf("post to x: %w", &statusError{code: 503}), ClassHTTP5xx},
		{fmt.Errorf("post to x: %w", &statusError{code: 401}), ClassHTTP4xx},
		{errors.Join(&statusError{code: 500}, &statusError{code: 502}), ClassHTTP5xx},
		{fmt.Errorf("dial: %w", refused), ClassConnection},
		{x509.UnknownAuthorityError{}, ClassTLS},
		{fmt.Errorf("produce: %w", kafka.NotEnoughReplicas), ClassKafka},
		{kafka.WriteErrors{nil, kafka.LeaderNotAvailable}, ClassKafka},
		{kafka.RequestTimedOut, ClassTimeout},
		{&os.PathError{Op: "write", Path: "f", Err: errors.New("disk quota exceeded")}, ClassIO},
		{&permanentError{errors.New("json: unsupported value")}, ClassEncode},
		{errors.New("something else"), ClassOther},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, ClassifyError(tt.err), "%v", tt.err)
	}
}

func TestRetryable(t *testing.T) {
	require.True(t, retryable(&statusError{code: 500}))
	require.True(t, retryable(&statusError{code: 429}))
	require.True(t, retryable(&statusError{code: 408}))
	require.False(t, retryable(&statusError{code: 400}))
	require.False(t, retryable(&statusError{code: 401}))
	require.True(t, retryable(errors.New("connection reset")))
	require.False(t, retryable(&permanentError{errors.New("encode")}))
	require.True(t, retryable(errors.Join(&statusError{code: 400}, &statusError{code: 503})), "one HA member may recover")
	require.False(t, retryable(errors.Join(&statusError{code: 400}, &statusError{code: 422})))
}

func TestBackoffGrowsWithJitterUpToMax(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	seen := map[time.Duration]bool{}
	for attempt := range 40 {
		ceiling := min(b.min<<min(attempt, 30), b.max)
		for range 20 {
			d := b.delay(attempt)
			require.GreaterOrEqual(t, d, ceiling/2, "attempt %d", attempt)
			require.LessOrEqual(t, d, ceiling, "attempt %d", attempt)
			seen[d] = true
		}
	}
	require.Greater(t, len(seen), 100, "delays are jittered")
}
