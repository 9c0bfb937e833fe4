package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// eventLine returns a valid event line whose id is "evt-<i>".
func eventLine(i int) string {
	actions := []string{"login.success", "login.failure", "customers.export", "logout"}
	return evJSON("2026-01-07T09:30:00Z", "shop-1", fmt.Sprintf("actor-%d", i%7), actions[i%len(actions)],
		fmt.Sprintf("192.0.2.%d", i%250), fmt.Sprintf(`"id":"evt-%d"`, i))
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, content, 0o600))
	return p
}

// gz compresses b.
func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, err := w.Write(b)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// run runs src to completion and returns what it sent.
func run(t *testing.T, src *FileSource) ([]shopguard.Batch, error) {
	t.Helper()
	out := make(chan shopguard.Batch)
	errc := make(chan error, 1)
	go func() { errc <- src.Run(t.Context(), out) }()
	var got []shopguard.Batch
	for {
		select {
		case b := <-out:
			got = append(got, b)
		case err := <-errc:
			return got, err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return")
		}
	}
}

// ids lists the ids of the events of batches, in order.
func ids(batches []shopguard.Batch) []string {
	var out []string
	for _, b := range batches {
		for _, ev := range b.Events {
			out = append(out, ev.ID)
		}
	}
	return out
}

// seq is "evt-from" … "evt-(to-1)".
func seq(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("evt-%d", i))
	}
	return out
}

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// messages returns the messages logged at Warn or above, with their attrs.
func (r *recorder) messages() []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.records {
		if rec.Level < slog.LevelWarn {
			continue
		}
		m := map[string]string{"msg": rec.Message}
		rec.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// readDeadLetters parses a FileDeadLetter's file.
func readDeadLetters(t *testing.T, path string) []deadLetterRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []deadLetterRecord
	for _, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var rec deadLetterRecord
		require.NoError(t, json.Unmarshal(line, &rec), "%s", line)
		out = append(out, rec)
	}
	return out
}

func TestFileSourceOrderWithParallelWorkers(t *testing.T) {
	dir := t.TempDir()
	const n = 30000
	var a, b bytes.Buffer
	for i := range n {
		w := &a
		if i >= n/2 {
			w = &b
		}
		w.WriteString(eventLine(i) + "\n")
		if i%997 == 0 {
			w.WriteString("garbage line\n") // invalid lines must not disturb the order
		}
	}
	pa := writeFile(t, dir, "a.jsonl", a.Bytes())
	pb := writeFile(t, dir, "b.jsonl.gz", gz(t, b.Bytes()))

	var sizes [][]int
	for _, workers := range []int{4, 1} {
		m := NewMetrics(prometheus.NewRegistry())
		batches, err := run(t, &FileSource{Paths: []string{pa, pb}, BatchSize: 64, Workers: workers, Metrics: m,
			Rejects: &Rejects{Metrics: m}})
		require.NoError(t, err)
		require.Equal(t, seq(0, n), ids(batches), "workers=%d", workers)
		var sz []int
		for _, bt := range batches {
			require.LessOrEqual(t, len(bt.Events), 64)
			require.False(t, bt.Received.IsZero())
			require.Nil(t, bt.Done)
			sz = append(sz, len(bt.Events))
		}
		sizes = append(sizes, sz)
		st := m.Stats()
		require.Equal(t, int64(n), st.Events)
		require.Equal(t, map[string]int64{"not_json": int64((n-1)/997 + 1)}, st.Invalid)
	}
	require.Equal(t, sizes[1], sizes[0], "batch boundaries do not depend on the number of workers")
}

func TestFileSourceGzip(t *testing.T) {
	dir := t.TempDir()
	plain := []byte(eventLine(0) + "\n" + eventLine(1) + "\n")
	two := append(gz(t, plain), gz(t, []byte(eventLine(2)+"\n"))...) // multi-member, as cat a.gz b.gz makes

	t.Run("by name", func(t *testing.T) {
		batches, err := run(t, &FileSource{Paths: []string{writeFile(t, dir, "a.jsonl.gz", gz(t, plain))}})
		require.NoError(t, err)
		require.Equal(t, seq(0, 2), ids(batches))
	})
	t.Run("by magic number", func(t *testing.T) {
		batches, err := run(t, &FileSource{Paths: []string{writeFile(t, dir, "b.log", gz(t, plain))}})
		require.NoError(t, err)
		require.Equal(t, seq(0, 2), ids(batches))
	})
	t.Run("multi-member", func(t *testing.T) {
		batches, err := run(t, &FileSource{Paths: []string{writeFile(t, dir, "c.jsonl.gz", two)}})
		require.NoError(t, err)
		require.Equal(t, seq(0, 3), ids(batches))
	})
	t.Run("stdin", func(t *testing.T) {
		batches, err := run(t, &FileSource{Paths: []string{"-"}, Stdin: bytes.NewReader(gz(t, plain))})
		require.NoError(t, err)
		require.Equal(t, seq(0, 2), ids(batches))
	})
	t.Run("not gzip despite the name", func(t *testing.T) {
		p := writeFile(t, dir, "d.jsonl.gz", plain)
		_, err := run(t, &FileSource{Paths: []string{p}})
		require.ErrorIs(t, err, gzip.ErrHeader)
		require.ErrorContains(t, err, p)
	})
	t.Run("truncated", func(t *testing.T) {
		var big bytes.Buffer
		for i := range 5000 {
			big.WriteString(eventLine(i) + "\n")
		}
		z := gz(t, big.Bytes())
		p := writeFile(t, dir, "e.jsonl.gz", z[:len(z)/2])
		_, err := run(t, &FileSource{Paths: []string{p}})
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		require.ErrorContains(t, err, p)
	})
	t.Run("corrupt checksum", func(t *testing.T) {
		z := gz(t, plain)
		z[len(z)-8] ^= 0xff // CRC-32 of the trailer
		p := writeFile(t, dir, "f.jsonl.gz", z)
		_, err := run(t, &FileSource{Paths: []string{p}})
		require.ErrorIs(t, err, gzip.ErrChecksum)
		require.ErrorContains(t, err, p)
	})
	t.Run("empty .gz file is empty input", func(t *testing.T) {
		batches, err := run(t, &FileSource{Paths: []string{writeFile(t, dir, "g.jsonl.gz", nil)}})
		require.NoError(t, err)
		require.Empty(t, batches)
	})
}

func TestFileSourceStdin(t *testing.T) {
	dir := t.TempDir()
	p1 := writeFile(t, dir, "1.jsonl", []byte(eventLine(0)+"\n"))
	p3 := writeFile(t, dir, "3.jsonl", []byte(eventLine(3)+"\n"))
	stdin := strings.NewReader(eventLine(1) + "\nnot json\n" + eventLine(2)) // no final newline
	dlPath := filepath.Join(dir, "dead.jsonl")
	dl, err := NewFileDeadLetter(dlPath)
	require.NoError(t, err)
	batches, err := run(t, &FileSource{Paths: []string{p1, "-", p3}, Stdin: stdin, Rejects: &Rejects{DeadLetter: dl}})
	require.NoError(t, err)
	require.NoError(t, dl.Close())
	require.Equal(t, seq(0, 4), ids(batches))
	recs := readDeadLetters(t, dlPath)
	require.Len(t, recs, 1)
	require.Equal(t, "stdin:2", recs[0].Pos)

	_, err = run(t, &FileSource{Paths: []string{"-"}})
	require.ErrorContains(t, err, "no Stdin")
}

// TestFileSourceStreamsStdin shows that lines arriving on a pipe are
// delivered without waiting for a full batch or the end of input.
func TestFileSourceStreamsStdin(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	out := make(chan shopguard.Batch, 1)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- (&FileSource{Paths: []string{"-"}, Stdin: pr}).Run(ctx, out) }()
	_, err := io.WriteString(pw, eventLine(0)+"\n")
	require.NoError(t, err)
	select {
	case b := <-out:
		require.Equal(t, seq(0, 1), ids([]shopguard.Batch{b}))
	case <-time.After(10 * time.Second):
		t.Fatal("line not delivered")
	}
	cancel() // the read in progress blocks; Run must return anyway
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return on cancellation")
	}
}

func TestFileSourceTooLarge(t *testing.T) {
	dir := t.TempDir()
	exact := sized(MaxEventSize) // valid, exactly at the limit
	var in bytes.Buffer
	in.WriteString(eventLine(0) + "\n")
	in.WriteString(sized(MaxEventSize+1) + "\n") // line 2: one byte over, whole in the buffer
	in.WriteString(eventLine(1) + "\n")
	in.WriteString(strings.Repeat("y", 3<<20) + "\r\n") // line 4: spans several buffers
	in.WriteString(eventLine(2) + "\n")
	in.WriteString(exact + "\r\n") // line 6: CR does not count
	in.WriteString(exact + "\n")
	in.WriteString(eventLine(3) + "\n")
	in.WriteString(strings.Repeat("z", MaxEventSize+2)) // line 9: at EOF without newline
	p := writeFile(t, dir, "big.jsonl", in.Bytes())

	dlPath := filepath.Join(dir, "dead.jsonl")
	dl, err := NewFileDeadLetter(dlPath)
	require.NoError(t, err)
	m := NewMetrics(prometheus.NewRegistry())
	batches, err := run(t, &FileSource{Paths: []string{p}, Metrics: m, Rejects: &Rejects{Metrics: m, DeadLetter: dl}})
	require.NoError(t, err)
	require.NoError(t, dl.Close())

	got := ids(batches)
	require.Equal(t, []string{"evt-0", "evt-1", "evt-2", "", "", "evt-3"}, got) // the padded events have no id
	require.Equal(t, map[string]int64{"too_large": 3}, m.Stats().Invalid)

	recs := readDeadLetters(t, dlPath)
	require.Len(t, recs, 3)
	var pos []string
	for _, r := range recs {
		pos = append(pos, r.Pos)
		require.Equal(t, "too_large", r.Reason)
		require.Len(t, r.Raw, MaxEventSize, "the dead letter holds the first MaxEventSize bytes")
	}
	require.Equal(t, []string{p + ":2", p + ":4", p + ":9"}, pos)
	require.Equal(t, fmt.Sprintf("too_large: %d bytes is over the limit of %d", 3<<20, MaxEventSize), recs[1].Error)
	require.Equal(t, fmt.Sprintf("too_large: %d bytes is over the limit of %d", MaxEventSize+2, MaxEventSize), recs[2].Error)
}

// endlessLine yields n bytes of 'x' and then a newline and a valid event,
// without holding them in memory.
type endlessLine struct{ n, sent int }

func (r *endlessLine) Read(p []byte) (int, error) {
	if r.sent >= r.n {
		tail := "\n" + eventLine(7) + "\n"
		k := copy(p, tail[r.sent-r.n:])
		r.sent += k
		if r.sent-r.n == len(tail) {
			return k, io.EOF
		}
		return k, nil
	}
	k := min(len(p), r.n-r.sent)
	for i := range k {
		p[i] = 'x'
	}
	r.sent += k
	return k, nil
}

// TestFileSourceTooLargeNotBuffered reads a 256 MiB line and checks that
// memory use stays far below it.
func TestFileSourceTooLargeNotBuffered(t *testing.T) {
	const n = 256 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := NewMetrics(nil)
	batches, err := run(t, &FileSource{Paths: []string{"-"}, Stdin: &endlessLine{n: n}, Metrics: m, Rejects: &Rejects{Metrics: m}})
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.Equal(t, []string{"evt-7"}, ids(batches))
	require.Equal(t, map[string]int64{"too_large": 1}, m.Stats().Invalid)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(n/16), "bytes allocated reading a %d-byte line", n)
}

func TestFileSourceStrict(t *testing.T) {
	dir := t.TempDir()
	content := eventLine(0) + "\n" + eventLine(1) + "\n\n" +
		evJSON("2026-01-07T09:30:00Z", "s", "a", "logout", "999.1.1.1") + "\n" + eventLine(2) + "\nnot json\n"
	p := writeFile(t, dir, "strict.jsonl", []byte(content))
	dlPath := filepath.Join(dir, "dead.jsonl")
	dl, err := NewFileDeadLetter(dlPath)
	require.NoError(t, err)
	m := NewMetrics(prometheus.NewRegistry())
	batches, err := run(t, &FileSource{Paths: []string{p}, Strict: true, Workers: 4, Metrics: m,
		Rejects: &Rejects{Metrics: m, DeadLetter: dl}})
	require.NoError(t, dl.Close())

	require.EqualError(t, err, p+`:4: bad_ip: field "ip": "999.1.1.1" is not an IPv4 or IPv6 address`)
	require.ErrorIs(t, err, ErrMalformed)
	var derr *DecodeError
	require.ErrorAs(t, err, &derr)
	require.Equal(t, ReasonBadIP, derr.Reason)
	require.Equal(t, seq(0, 2), ids(batches), "the events before the bad line are delivered")
	require.Equal(t, Stats{Events: 2, Invalid: map[string]int64{"bad_ip": 1}}, m.Stats())
	require.Empty(t, readDeadLetters(t, dlPath), "strict mode reports, it does not dead-letter")
}

func TestFileSourceMissingFile(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.jsonl", []byte(eventLine(0)+"\n"))
	missing := filepath.Join(dir, "missing.jsonl")
	batches, err := run(t, &FileSource{Paths: []string{good, missing}})
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, missing)
	require.Empty(t, batches, "inputs are checked before anything is read")

	_, err = run(t, &FileSource{Paths: []string{dir}})
	require.ErrorContains(t, err, dir, "a directory is not readable as a file")

	_, err = run(t, &FileSource{})
	require.Error(t, err)
}

func TestFileSourceLineHandling(t *testing.T) {
	dir := t.TempDir()
	content := "\xef\xbb\xbf" + eventLine(0) + "\r\n" + // BOM, CRLF
		"\r\n" + // 2: empty CRLF line
		"   \t \n" + // 3: whitespace only
		"\n" + // 4: empty
		"{\"bad\":\r\n" + // 5: bad, CRLF
		eventLine(1) + "\n" +
		"  " + eventLine(2) + "  \t\n" + // surrounding whitespace is JSON whitespace
		"{}\n" + // 8: bad
		eventLine(3) // last line without newline
	p := writeFile(t, dir, "lines.jsonl", []byte(content))
	dlPath := filepath.Join(dir, "dead.jsonl")
	dl, err := NewFileDeadLetter(dlPath)
	require.NoError(t, err)
	batches, err := run(t, &FileSource{Paths: []string{p}, Rejects: &Rejects{DeadLetter: dl}})
	require.NoError(t, err)
	require.NoError(t, dl.Close())
	require.Equal(t, seq(0, 4), ids(batches))

	recs := readDeadLetters(t, dlPath)
	require.Len(t, recs, 2)
	require.Equal(t, deadLetterRecord{Pos: p + ":5", Reason: "not_json",
		Error: "not_json: unexpected end of input looking for the beginning of a value at byte 7", Raw: `{"bad":`}, recs[0])
	require.Equal(t, deadLetterRecord{Pos: p + ":8", Reason: "missing_field", Error: `missing_field: field "time": is required`, Raw: "{}"}, recs[1])
}

func TestFileSourceCancel(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	for i := range 50000 {
		b.WriteString(eventLine(i) + "\n")
	}
	p := writeFile(t, dir, "many.jsonl", b.Bytes())
	ctx, cancel := context.WithCancel(t.Context())
	out := make(chan shopguard.Batch) // nobody reads after the first batch
	errc := make(chan error, 1)
	go func() { errc <- (&FileSource{Paths: []string{p}, BatchSize: 10, Workers: 3}).Run(ctx, out) }()
	<-out
	cancel()
	select {
	case err := <-errc:
		require.NoError(t, err, "cancellation is not an error")
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return on cancellation")
	}
}

func TestFileSourceRejectLoggingIsRateLimited(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	for i := range 1000 {
		fmt.Fprintf(&b, "bad line %d \x1b[31m\n", i)
		b.WriteString(eventLine(i) + "\n")
	}
	p := writeFile(t, dir, "flood.jsonl", b.Bytes())
	rec := &recorder{}
	log := slog.New(rec)
	batches, err := run(t, &FileSource{Paths: []string{p}, Logger: log, Rejects: &Rejects{Logger: log, LogBurst: 5}})
	require.NoError(t, err)
	require.Equal(t, seq(0, 1000), ids(batches))

	msgs := rec.messages()
	require.Len(t, msgs, 6, "5 rejects, then one line for the rest")
	for i, m := range msgs[:5] {
		require.Equal(t, "invalid event skipped", m["msg"])
		require.Equal(t, fmt.Sprintf("%s:%d", p, 2*i+1), m["pos"])
		require.Equal(t, "not_json", m["reason"])
		require.Contains(t, m["err"], "not_json: not a JSON object")
		require.Equal(t, fmt.Sprintf(`bad line %d \x1b[31m`, i), m["raw"], "control characters are escaped")
	}
	require.Equal(t, "995", msgs[5]["suppressed"])
}

func TestRejectsLogWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		r := &Rejects{Logger: slog.New(rec), LogBurst: 2, LogInterval: time.Minute}
		derr := &DecodeError{Reason: ReasonNotJSON, Msg: "x"}
		for range 5 {
			require.NoError(t, r.Reject(t.Context(), "f:1", []byte("x"), derr))
		}
		require.Len(t, rec.messages(), 2)
		time.Sleep(59 * time.Second)
		require.NoError(t, r.Reject(t.Context(), "f:2", []byte("x"), derr))
		require.Len(t, rec.messages(), 2, "still inside the window")
		time.Sleep(time.Second)
		require.NoError(t, r.Reject(t.Context(), "f:3", []byte("x"), derr))
		msgs := rec.messages()
		require.Len(t, msgs, 4)
		require.Equal(t, "4", msgs[2]["suppressed"], "the new window first reports what the old one suppressed")
		require.Equal(t, "f:3", msgs[3]["pos"])
		r.Flush()
		require.Len(t, rec.messages(), 4, "nothing suppressed, nothing to flush")
	})
}

func TestRejectsNil(t *testing.T) {
	var r *Rejects
	require.NoError(t, r.Reject(t.Context(), "p", nil, &DecodeError{Reason: ReasonBadIP}))
	r.Flush()
	// No logger, no dead letter: only counted.
	m := NewMetrics(nil)
	require.NoError(t, (&Rejects{Metrics: m}).Reject(t.Context(), "p", nil, &DecodeError{Reason: ReasonBadIP}))
	require.Equal(t, map[string]int64{"bad_ip": 1}, m.Stats().Invalid)
}

// failingDeadLetter refuses everything.
type failingDeadLetter struct{}

var errDiskFull = errors.New("disk full")

func (failingDeadLetter) DeadLetter(context.Context, string, []byte, *DecodeError) error {
	return errDiskFull
}

func TestFileSourceDeadLetterFailureStops(t *testing.T) {
	p := writeFile(t, t.TempDir(), "x.jsonl", []byte(eventLine(0)+"\nbad\n"+eventLine(1)+"\n"))
	_, err := run(t, &FileSource{Paths: []string{p}, Rejects: &Rejects{DeadLetter: failingDeadLetter{}}})
	require.ErrorIs(t, err, errDiskFull)
	require.ErrorContains(t, err, p+":2")
}

func TestFileDeadLetter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	dl, err := NewFileDeadLetter(path)
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, dl.DeadLetter(ctx, "a.jsonl:3", []byte(`{"ip":"x"}`), &DecodeError{Reason: ReasonBadIP, Field: "ip", Msg: `"x" is not an IPv4 or IPv6 address`}))
	require.NoError(t, dl.DeadLetter(ctx, "admin-audit/0/42", []byte("\xff\xfe{"), &DecodeError{Reason: ReasonNotJSON, Msg: "y"}))
	require.NoError(t, dl.Close())
	require.NoError(t, dl.Close(), "Close is idempotent")
	require.Error(t, dl.DeadLetter(ctx, "p", nil, &DecodeError{Reason: ReasonNotJSON}), "closed")

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Equal(t, []deadLetterRecord{
		{Pos: "a.jsonl:3", Reason: "bad_ip", Error: `bad_ip: field "ip": "x" is not an IPv4 or IPv6 address`, Raw: `{"ip":"x"}`},
		{Pos: "admin-audit/0/42", Reason: "not_json", Error: "not_json: y", RawBase64: base64.StdEncoding.EncodeToString([]byte("\xff\xfe{"))},
	}, readDeadLetters(t, path))

	// Reopening appends.
	dl, err = NewFileDeadLetter(path)
	require.NoError(t, err)
	require.NoError(t, dl.DeadLetter(ctx, "b:1", []byte("z"), &DecodeError{Reason: ReasonNotJSON, Msg: "z"}))
	require.NoError(t, dl.Close())
	require.Len(t, readDeadLetters(t, path), 3)

	_, err = NewFileDeadLetter(filepath.Join(t.TempDir(), "no", "such", "dir"))
	require.Error(t, err)
}

func TestSnippet(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":"b"}`, `{"a":"b"}`},
		{"a\nb\rc\td", `a\nb\rc\td`},
		{"esc\x1b[2J", `esc\x1b[2J`},
		{"bad\xffutf8", `bad\xffutf8`},
		{`back\slash`, `back\\slash`},
		{"日本語", "日本語"},
		{"line\u2028sep", `line\u2028sep`},
		{strings.Repeat("a", 20), strings.Repeat("a", 10) + "… (20 bytes)"},
		{"aaaaaaaaa日", "aaaaaaaaa… (12 bytes)"}, // never cuts inside a rune
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, Snippet([]byte(tt.in), 10), "%q", tt.in)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	require.Equal(t, len(shopguard.Actions()), testutil.CollectAndCount(reg, "shopguard_events_total"), "series pre-created")
	require.Equal(t, len(Reasons()), testutil.CollectAndCount(reg, "shopguard_events_invalid_total"))

	p := writeFile(t, t.TempDir(), "m.jsonl", []byte(eventLine(0)+"\n"+eventLine(1)+"\n"+eventLine(4)+"\n"+
		evJSON("2026-01-07T09:30:00Z", "s", "a", "brand.new", "192.0.2.1")+"\n{}\n[]\n"))
	_, err := run(t, &FileSource{Paths: []string{p}, Metrics: m, Rejects: &Rejects{Metrics: m}})
	require.NoError(t, err)
	m.Read(shopguard.ActionLogout)
	m.Invalid(Reason(99)) // out of range: counted as not_json

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP shopguard_events_invalid_total Input lines or messages rejected as invalid events and skipped, by reason.
# TYPE shopguard_events_invalid_total counter
shopguard_events_invalid_total{reason="bad_field"} 0
shopguard_events_invalid_total{reason="bad_ip"} 0
shopguard_events_invalid_total{reason="bad_time"} 0
shopguard_events_invalid_total{reason="missing_field"} 1
shopguard_events_invalid_total{reason="not_json"} 2
shopguard_events_invalid_total{reason="too_large"} 0
# HELP shopguard_events_total Valid audit events read, by action (unknown actions are "other").
# TYPE shopguard_events_total counter
shopguard_events_total{action="apikey.create"} 0
shopguard_events_total{action="app.install"} 0
shopguard_events_total{action="customers.export"} 0
shopguard_events_total{action="email.change"} 0
shopguard_events_total{action="login.failure"} 1
shopguard_events_total{action="login.success"} 2
shopguard_events_total{action="logout"} 1
shopguard_events_total{action="mfa.disable"} 0
shopguard_events_total{action="mfa.enable"} 0
shopguard_events_total{action="orders.export"} 0
shopguard_events_total{action="other"} 1
shopguard_events_total{action="password.change"} 0
shopguard_events_total{action="password.reset"} 0
shopguard_events_total{action="payout.change"} 0
shopguard_events_total{action="staff.add"} 0
# HELP shopguard_events_unmatched_total Well-formed input lines that describe no audit event (nginx lines no route matches), skipped.
# TYPE shopguard_events_unmatched_total counter
shopguard_events_unmatched_total 0
`)))
	st := m.Stats()
	require.Equal(t, Stats{Events: 5, Invalid: map[string]int64{"missing_field": 1, "not_json": 2}}, st)
	require.Equal(t, int64(3), st.InvalidTotal())

	var nilM *Metrics
	nilM.Read(shopguard.ActionLogout)
	nilM.ReadEvents([]shopguard.Event{{}})
	nilM.Invalid(ReasonBadIP)
	require.Equal(t, Stats{Invalid: map[string]int64{}}, nilM.Stats())
}

// TestFileSourceAllocatesPerBatchNotPerEvent guards the hot path: reading
// 20,000 events costs a few allocations per batch, none per event.
func TestFileSourceAllocatesPerBatchNotPerEvent(t *testing.T) {
	var b bytes.Buffer
	const n = 20000
	for i := range n {
		b.WriteString(eventLine(i) + "\n")
	}
	p := writeFile(t, t.TempDir(), "allocs.jsonl", b.Bytes())
	allocs := testing.AllocsPerRun(2, func() {
		out := make(chan shopguard.Batch, 64)
		errc := make(chan error, 1)
		go func() { errc <- (&FileSource{Paths: []string{p}, Workers: 2}).Run(context.Background(), out) }()
		got := 0
		for got < n {
			got += len((<-out).Events)
		}
		if err := <-errc; err != nil {
			t.Error(err)
		}
	})
	require.Less(t, allocs, float64(n/DefaultBatchSize*20), "allocations for %d events", n)
}
