package kafka

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// groupTestConfig is cfg for a group reader on c's admin-audit.
func groupTestConfig(brokers []string, group string) Config {
	cfg := DefaultConfig
	cfg.Brokers = brokers
	cfg.Topic, cfg.Group = "admin-audit", group
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.SessionTimeout = 6 * time.Second // kfake's minimum
	cfg.RetryBackoff, cfg.RetryBackoffMax = 10*time.Millisecond, 100*time.Millisecond
	return cfg
}

// readAll fetches n messages from r and checks that they are offsets 0 to
// n-1 with the values want gives.
func readAll(t *testing.T, r *groupReader, n int, want func(i int) []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got [][]byte
	for i := range n {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err)
		require.EqualValues(t, i, m.Offset)
		got = append(got, m.Value)
	}
	// Checked after all were read: a value must not change when later
	// ones are read into the rest of its buffer.
	for i, v := range got {
		require.True(t, bytes.Equal(want(i), v), "value %d changed", i)
	}
}

// TestGroupReaderValuesOfEverySize: values from 100 bytes to 900 KiB, far
// above the 16 KiB a value is first given room for, arrive whole and in
// order, and stay as they were while later ones are read.
func TestGroupReaderValuesOfEverySize(t *testing.T) {
	value := func(i int) []byte {
		n := 100
		switch {
		case i%50 == 0:
			n = 900 << 10
		case i%7 == 5:
			n = 300 << 10
		case i%7 == 3:
			n = minValueRoom + 1
		}
		return append(fmt.Appendf(nil, "%06d", i), bytes.Repeat([]byte{byte('a' + i%26)}, n)...)
	}
	c := kafkatest.New(t, map[string]int32{"admin-audit": 1})
	const n = 400
	for i := range n {
		c.Produce(t, "admin-audit", kafkatest.ToPartition(0, kafkago.Message{Value: value(i)}))
	}
	cfg := groupTestConfig(c.Addrs(), "g-sizes")
	d, err := cfg.Dialer("kafka")
	require.NoError(t, err)
	r, err := newGroupReader(cfg, d, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer r.Close()
	readAll(t, r, n, value)
	require.Zero(t, r.errors.Load())
}

// TestGroupReaderSlowConsumer: a Source that takes no chunk for longer
// than max_wait + dial_timeout (a busy engine) while a fetch holds more
// chunks than the queue does not make the fetch time out (kafka-go's
// Reader renewed the deadline for every message).
func TestGroupReaderSlowConsumer(t *testing.T) {
	c := kafkatest.New(t, map[string]int32{"admin-audit": 1})
	pad := strings.Repeat("x", 2000)
	msgs := make([]kafkago.Message, 4000) // 8 MB: more than 16 chunks of 128 KiB
	for i := range msgs {
		msgs[i] = kafkatest.ToPartition(0, kafkago.Message{Value: fmt.Appendf(nil, "%06d%s", i, pad)})
	}
	for i := 0; i < len(msgs); i += 200 {
		c.Produce(t, "admin-audit", msgs[i:i+200]...)
	}
	cfg := groupTestConfig(c.Addrs(), "g-slow")
	cfg.MaxWait, cfg.DialTimeout = 500*time.Millisecond, 500*time.Millisecond
	d, err := cfg.Dialer("kafka")
	require.NoError(t, err)
	r, err := newGroupReader(cfg, d, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer r.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := r.FetchMessage(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 0, m.Offset)
	time.Sleep(2 * time.Second) // twice max_wait + dial_timeout
	for next := int64(1); next < int64(len(msgs)); next++ {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err)
		require.Equal(t, next, m.Offset)
		require.Equal(t, fmt.Sprintf("%06d", next), string(m.Value[:6]))
	}
	require.Zero(t, r.errors.Load(), "the partition reader failed and reconnected")
}

// TestGroupReaderTLS: the connections' read buffer sits below TLS.
func TestGroupReaderTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "admin-audit"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}))
	require.NoError(t, err)
	defer kc.Close()
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	clientTLS := &tls.Config{RootCAs: pool}

	value := func(i int) []byte { return fmt.Appendf(nil, "%06d%s", i, strings.Repeat("y", 3000)) }
	const n = 3000
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DialTLSConfig(clientTLS), kgo.DefaultProduceTopic("admin-audit"))
	require.NoError(t, err)
	for i := range n {
		cl.Produce(context.Background(), &kgo.Record{Value: value(i)}, nil)
	}
	require.NoError(t, cl.Flush(context.Background()))
	cl.Close()

	cfg := groupTestConfig(kc.ListenAddrs(), "g-tls")
	r, err := newGroupReader(cfg, &kafkago.Dialer{Timeout: 5 * time.Second, TLS: clientTLS}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer r.Close()
	readAll(t, r, n, value)
	require.Zero(t, r.errors.Load())
}

// TestGroupReaderBrokerClosingIsNotClose: a partition whose leader keeps
// closing the connection (io.EOF) is an error to retry, not the end of
// the reader, which is what io.EOF from FetchMessage says.
func TestGroupReaderBrokerClosingIsNotClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Read the client's first request whole before closing: a
			// close with unread bytes is a reset (ECONNRESET), not the
			// orderly close (io.EOF) this test is about.
			var size [4]byte
			if _, err := io.ReadFull(c, size[:]); err == nil {
				_, _ = io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(size[:])))
			}
			c.Close()
		}
	}()
	cfg := groupTestConfig([]string{ln.Addr().String()}, "g-eof")
	r := &groupReader{cfg: cfg, dialer: bufferedDialer(&kafkago.Dialer{Timeout: time.Second}),
		chunks: make(chan *chunk, 1), errs: make(chan error, 1), done: make(chan struct{})}
	_, _, err = r.dial(t.Context(), 0, 0)
	require.ErrorIs(t, err, io.EOF, "the broker's close, as kafka-go reports it")
	r.report(fmt.Errorf("partition %d: %w", 0, err)) // as readPartition does after max_retries

	opts := SourceOptions{}
	opts.fill()
	s := &Source{cfg: cfg, opts: opts, log: opts.Logger, commitDone: make(chan struct{}), fetch: r.FetchMessage}
	s.acks.init(cfg.Topic)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	require.NoError(t, s.Run(ctx, make(chan shopguard.Batch)), "one partition's error ended Run")
	require.EqualValues(t, 1, s.opts.Kafka.fetchErrors.Load(), "counted as a failed fetch")
}

// chunkSource is a Source reading from a group reader without a group:
// the test sends it chunks (up to 100 unread), merged when cfg has a
// lateness, with no grace for a start.
func chunkSource(cfg Config, opts SourceOptions) (*Source, *groupReader) {
	opts.fill()
	s := &Source{cfg: cfg, opts: opts, log: opts.Logger, commitDone: make(chan struct{}), lagGauges: map[int]prometheus.Gauge{}}
	s.acks.init(cfg.Topic)
	if cfg.Lateness > 0 {
		s.merge = newMerger(cfg, opts.Kafka)
		s.merge.grace = 0
	}
	r := &groupReader{cfg: cfg, chunks: make(chan *chunk, 100), errs: make(chan error, 1), done: make(chan struct{})}
	s.fetch, s.clock = r.FetchMessage, r.now
	return s, r
}

// chunkOf is a chunk of partition p holding events at offsets from to
// to-1, at mergeT0 + sec(offset) seconds.
func chunkOf(p int, from, to, hwm int64, sec func(int64) int) *chunk {
	c := &chunk{partition: p, hwm: hwm}
	for off := from; off < to; off++ {
		v := fmt.Sprintf(`{"time":%q,"shop_id":"s","actor":"a%d","action":"login.failure","ip":"192.0.2.1","id":"p%d-%d"}`,
			mergeT0.Add(time.Duration(sec(off))*time.Second).Format(time.RFC3339), p, p, off)
		f := len(c.buf)
		c.buf = append(c.buf, v...)
		c.msgs = append(c.msgs, chunkMsg{offset: off, from: int32(f), to: int32(len(c.buf))})
	}
	return c
}

// TestGroupReaderClockStallsOnTime: with the group reader's clock (the
// time a chunk was taken), a partition that is behind and silent is still
// given up on one lateness after the others stop holding anything back,
// however busy the engine was before: the time the merge credits to a busy
// engine is the time it waited to hand a batch over, not the time since
// the chunk was taken (that was 6 s here with a lateness of 0.5 s).
func TestGroupReaderClockStallsOnTime(t *testing.T) {
	const lateness = 500 * time.Millisecond
	cfg := DefaultConfig
	cfg.Topic, cfg.Lateness, cfg.BatchSize, cfg.BatchLinger = "admin-audit", lateness, 10, time.Millisecond
	cfg.MaxBuffered = 1 << 20
	s, r := chunkSource(cfg, SourceOptions{})
	// Partition 0: one event far ahead, then nothing.
	r.chunks <- chunkOf(0, 0, 1, 100, func(int64) int { return 10000 })
	// Partition 1: 2,000 events before it in chunks of 250, then one after
	// it that reads partition 1 to its end and waits for partition 0.
	for from := int64(0); from < 2000; from += 250 {
		r.chunks <- chunkOf(1, from, from+250, 10000, func(o int64) int { return int(o) })
	}
	r.chunks <- chunkOf(1, 2000, 2001, 2001, func(int64) int { return 20000 })

	out := make(chan shopguard.Batch)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, out) }()
	var streamed time.Time
	for n := 0; n < 2002; {
		select {
		case b := <-out:
			n += len(b.Events)
			if n < 2001 {
				time.Sleep(2 * time.Millisecond) // a busy engine
			}
			b.Done()
			if n >= 2001 && streamed.IsZero() {
				streamed = time.Now() // only the last event waits now
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d events in 30 s", n)
		}
	}
	waited := time.Since(streamed)
	cancel()
	require.NoError(t, <-done)
	require.Less(t, waited, lateness+time.Second, "the stalled partition held the last event back for %s", waited)
}

// slowDeadLetter takes d to write each dead letter.
type slowDeadLetter struct{ d time.Duration }

func (s slowDeadLetter) DeadLetter(context.Context, string, []byte, *ingest.DecodeError) error {
	time.Sleep(s.d)
	return nil
}

// TestGroupReaderSlowDeadLetters: an event fetched before invalid
// messages whose dead letters are slow to write is still sent one batch
// linger (and, merged, one lateness) after it was fetched, not only when
// the chunk's messages run out: the clock the Source reads during a chunk
// is the time the chunk was taken, and a dead letter moves it on.
func TestGroupReaderSlowDeadLetters(t *testing.T) {
	const invalid, each = 10, 150 * time.Millisecond // 1.5 s of dead letters
	for _, lateness := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(fmt.Sprint("lateness=", lateness), func(t *testing.T) {
			cfg := DefaultConfig
			cfg.Topic, cfg.Lateness, cfg.BatchSize, cfg.BatchLinger = "admin-audit", lateness, 100, 50*time.Millisecond
			s, r := chunkSource(cfg, SourceOptions{Rejects: &ingest.Rejects{DeadLetter: slowDeadLetter{each}}})
			c := chunkOf(0, 0, 1, 1+invalid, func(int64) int { return 0 })
			for off := int64(1); off <= invalid; off++ {
				f := len(c.buf)
				c.buf = append(c.buf, "not json"...)
				c.msgs = append(c.msgs, chunkMsg{offset: off, from: int32(f), to: int32(len(c.buf))})
			}
			r.chunks <- c

			out := make(chan shopguard.Batch)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- s.Run(ctx, out) }()
			var b shopguard.Batch
			select {
			case b = <-out:
			case <-time.After(10 * time.Second):
				t.Fatal("no batch in 10 s")
			}
			waited := time.Since(start)
			t.Logf("first batch after %s", waited)
			require.Len(t, b.Events, 1)
			b.Done()
			cancel()
			require.NoError(t, <-done)
			require.Less(t, waited, lateness+cfg.BatchLinger+2*each+200*time.Millisecond,
				"the event waited %s behind %s of dead letters", waited, invalid*each)
		})
	}
}
