package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shopguard/shopguard"
)

// DefaultBatchSize is the number of events per Batch when
// FileSource.BatchSize is not set.
const DefaultBatchSize = 1024

const (
	// fileReadBuf is the size of the buffers input is read into. Events
	// alias them, so a buffer is never reused: a fresh one is allocated
	// when the current one runs short, and the garbage collector frees it
	// once no batch refers to it. It must exceed MaxEventSize+2.
	fileReadBuf = 1 << 20
	// fileMinRead is the least free space a read is given.
	fileMinRead = 64 << 10
)

// FileSource reads JSONL audit events from files (SPEC §4 replay) and
// delivers them in batches, in file order and line order.
//
// Lines are decoded by Workers goroutines in parallel, while the order of
// events and the split into batches stay the same as with one worker, so a
// replay is deterministic: every batch holds BatchSize events except the
// last of each file (or of each read, for Stdin and other non-regular
// files, so that a live pipe is not held back waiting for a full batch).
// Events alias the read buffers; no allocation is made per event.
//
// Empty and whitespace-only lines are skipped. Lines may end in LF or CRLF,
// the last line needs no terminator, and a UTF-8 byte order mark at the
// start of a file is ignored. Invalid lines are handed to Rejects (counted,
// logged, dead-lettered) and skipped; a line over MaxEventSize is rejected
// as too_large without being buffered whole, and its dead letter holds
// only its first MaxEventSize bytes. Positions are "file:line", with line
// numbers counting every line from 1 and Stdin named "stdin".
type FileSource struct {
	// Paths are read in order. "-" is Stdin. A file whose name ends in .gz
	// or whose content starts with the gzip magic number is gunzipped.
	Paths []string
	// Stdin is read for the path "-".
	Stdin io.Reader
	// Strict stops at the first invalid line: Run delivers the events
	// before it, counts it, and returns an error that names it as
	// "file:line" and wraps its *DecodeError. Nothing is dead-lettered.
	Strict bool
	// BatchSize is the most events per Batch (default DefaultBatchSize).
	BatchSize int
	// Workers is the number of goroutines decoding in parallel (default
	// runtime.GOMAXPROCS(0)).
	Workers int
	// Rejects handles invalid lines. If nil, a Rejects with Metrics and
	// Logger is used. Its Metrics is normally the same as Metrics.
	Rejects *Rejects
	// Metrics counts the valid events delivered; nil counts nothing.
	Metrics *Metrics
	// Logger logs at Debug which input is read; nil discards.
	Logger *slog.Logger
	// Decode decodes each line (NewDecoder); nil is the native format,
	// Decode. Lines it reports as ErrUnmatched are counted in Metrics
	// and skipped, in Strict mode too.
	Decode DecodeFunc
}

var _ shopguard.Source = (*FileSource)(nil)

// errFileStopped ends Run when ctx is done; Run then returns nil.
var errFileStopped = errors.New("stopped")

// fileLine is one non-blank line of input.
type fileLine struct {
	b    []byte // without terminator; for a too-large line, its first MaxEventSize bytes
	no   int    // 1-based line number in its file
	size int    // for a too-large line its full length, else 0
}

// fileJob is a run of up to BatchSize lines of one file, decoded by a worker
// into one batch. The reader queues jobs on the order channel in input
// order, and the emitter waits for each one's done in that order, which is
// what keeps the output in order whatever the workers do.
type fileJob struct {
	name     string
	lines    []fileLine
	received time.Time
	err      error         // a read error, delivered after the jobs before it
	done     chan struct{} // closed when events and bad are set

	events    []shopguard.Event
	bad       []badLine
	unmatched int
	dec       DecodeFunc
}

// badLine is an invalid line of a job.
type badLine struct {
	at  int // how many of the job's events come before it
	no  int
	raw []byte
	err *DecodeError
}

// Run reads every path in order and sends the events to out. It returns
// nil at the end of the input and when ctx is done, and an error naming
// the file for a missing or unreadable file, a read error, corrupt gzip
// data, a dead-letter failure, or (in Strict mode) an invalid line. Every
// path but "-" is checked to exist before anything is read. A read from
// Stdin that blocks when ctx is done is abandoned; its goroutine ends when
// the read returns.
func (s *FileSource) Run(ctx context.Context, out chan<- shopguard.Batch) error {
	if len(s.Paths) == 0 {
		return errors.New("file source: no input files")
	}
	for _, p := range s.Paths {
		if p == "-" {
			if s.Stdin == nil {
				return errors.New("file source: path \"-\" given but no Stdin")
			}
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("read input: %w", err)
		}
	}
	batch := s.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	workers := s.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	rej := s.Rejects
	if rej == nil {
		rej = &Rejects{Metrics: s.Metrics, Logger: s.Logger}
	}
	defer rej.Flush()

	ctx, cancel := context.WithCancel(ctx)
	// order bounds the jobs in flight, and so the memory held.
	order := make(chan *fileJob, 2*workers)
	jobs := make(chan *fileJob, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case j, ok := <-jobs:
					if !ok {
						return
					}
					j.decode()
					close(j.done)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	r := &fileReader{src: s, batch: batch, order: order, jobs: jobs, log: s.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		r.run(ctx)
	}()
	defer func() {
		cancel()
		wg.Wait()
		if !r.inStdin.Load() {
			<-readerDone
		}
	}()

	for {
		var j *fileJob
		select {
		case j = <-order:
		case <-ctx.Done():
			return nil
		}
		if j == nil { // order closed: the input ended
			return nil
		}
		select {
		case <-j.done:
		case <-ctx.Done():
			return nil
		}
		if j.err != nil {
			return j.err
		}
		if err := s.emit(ctx, j, rej, out); err != nil {
			if errors.Is(err, errFileStopped) {
				return nil
			}
			return err
		}
	}
}

// emit hands a decoded job's invalid lines to rej and sends its events.
func (s *FileSource) emit(ctx context.Context, j *fileJob, rej *Rejects, out chan<- shopguard.Batch) error {
	s.Metrics.Unmatched(j.unmatched)
	for _, b := range j.bad {
		pos := j.name + ":" + strconv.Itoa(b.no)
		if s.Strict {
			rej.Metrics.Invalid(b.err.Reason)
			if err := s.send(ctx, j.events[:b.at], j.received, out); err != nil {
				return err
			}
			return fmt.Errorf("%s: %w", pos, b.err)
		}
		if err := rej.Reject(ctx, pos, b.raw, b.err); err != nil {
			return err
		}
	}
	return s.send(ctx, j.events, j.received, out)
}

// send delivers evs, if any, as one batch.
func (s *FileSource) send(ctx context.Context, evs []shopguard.Event, received time.Time, out chan<- shopguard.Batch) error {
	if len(evs) == 0 {
		return nil
	}
	select {
	case out <- shopguard.Batch{Events: evs, Received: received}:
		s.Metrics.ReadEvents(evs)
		return nil
	case <-ctx.Done():
		return errFileStopped
	}
}

// decode turns the job's lines into events and bad lines.
func (j *fileJob) decode() {
	evs := make([]shopguard.Event, len(j.lines))
	n := 0
	for _, l := range j.lines {
		var derr *DecodeError
		if l.size > 0 {
			derr = tooLargeError(l.size)
		} else if err := j.decodeLine(l.b, &evs[n]); err != nil {
			if errors.Is(err, ErrUnmatched) {
				j.unmatched++
				continue
			}
			// Decoders return only *DecodeError otherwise. (errors.As would
			// make derr escape: one allocation per line.)
			var ok bool
			if derr, ok = err.(*DecodeError); !ok {
				derr = &DecodeError{Reason: ReasonNotJSON, Msg: err.Error()}
			}
		}
		if derr != nil {
			j.bad = append(j.bad, badLine{at: n, no: l.no, raw: l.b, err: derr})
			continue
		}
		n++
	}
	j.events = evs[:n]
	j.lines = nil
}

// decodeLine decodes with the job's decoder, calling the native one
// directly so that the default format pays for no indirect call.
func (j *fileJob) decodeLine(b []byte, ev *shopguard.Event) error {
	if j.dec == nil {
		return Decode(b, ev)
	}
	return j.dec(b, ev)
}

// fileReader splits the input into lines and jobs. It runs in one
// goroutine.
type fileReader struct {
	src         *FileSource
	batch       int
	order, jobs chan<- *fileJob
	log         *slog.Logger
	// inStdin is set while Stdin is read, whose reads cannot be
	// interrupted; Run does not wait for the reader then.
	inStdin atomic.Bool

	buf        []byte // input is read into buf[end:]; buf[start:end] is not yet split
	start, end int
	cur        *fileJob // the job being filled
}

// utf8BOM is the byte order mark some tools write at the start of a file.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// run reads all paths, then closes order and jobs. A read error is queued
// as a job of its own, so the emitter returns it after the events before
// it.
func (r *fileReader) run(ctx context.Context) {
	defer close(r.jobs)
	defer close(r.order)
	for _, p := range r.src.Paths {
		err := r.readPath(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			j := &fileJob{err: err, done: make(chan struct{})}
			close(j.done)
			select {
			case r.order <- j:
			case <-ctx.Done():
			}
			return
		}
	}
}

// readPath opens one path, gunzipping it if needed, and scans it.
func (r *fileReader) readPath(ctx context.Context, p string) error {
	name := p
	var in io.Reader
	streaming := false
	if p == "-" {
		name, in, streaming = "stdin", r.src.Stdin, true
		r.inStdin.Store(true)
		defer r.inStdin.Store(false)
	} else {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
			streaming = true // a FIFO or device: deliver what has arrived
		}
		in = f
	}
	r.log.Debug("reading input", "path", name)

	br := bufio.NewReaderSize(in, fileMinRead)
	magic, err := br.Peek(2)
	switch {
	case err != nil && !errors.Is(err, io.EOF):
		return fmt.Errorf("read %s: %w", name, err)
	case len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("read %s: gzip: %w", name, err)
		}
		defer zr.Close()
		if err := r.scan(ctx, name, zr, streaming); err != nil {
			return fmt.Errorf("read %s: gzip: %w", name, err)
		}
		return nil
	case strings.HasSuffix(p, ".gz") && len(magic) > 0:
		return fmt.Errorf("read %s: %w", name, gzip.ErrHeader)
	}
	if err := r.scan(ctx, name, br, streaming); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// scan splits one input into lines and queues them as jobs; the last fileJob
// of the input is queued at its end (or at an error), so that no fileJob spans
// two files. With streaming, whatever lines a read completed are queued at
// once.
func (r *fileReader) scan(ctx context.Context, name string, in io.Reader, streaming bool) error {
	lineNo := 0
	discarding := false // inside a too-large line, looking for its end
	var long fileLine   // that line
	// Jobs of the previous input still alias r.buf[:r.start]; carry on
	// after them.
	r.start = r.end
	for {
		if len(r.buf)-r.end < fileMinRead {
			// Lines already queued alias the old buffer: move the
			// unfinished line to a fresh one.
			nb := make([]byte, fileReadBuf)
			n := copy(nb, r.buf[r.start:r.end])
			r.buf, r.start, r.end = nb, 0, n
		}
		n, rerr := in.Read(r.buf[r.end:])
		r.end += n

		if discarding && n > 0 {
			if i := bytes.IndexByte(r.buf[r.start:r.end], '\n'); i < 0 {
				long.size += r.end - r.start
				r.end = r.start // nothing refers to these bytes: reuse the space
			} else {
				long.size += i
				if i > 0 && r.buf[r.start+i-1] == '\r' {
					long.size--
				}
				r.start += i + 1
				discarding = false
				if !r.add(ctx, name, long) {
					return errFileStopped
				}
			}
		}
		if !discarding {
			for {
				i := bytes.IndexByte(r.buf[r.start:r.end], '\n')
				if i < 0 {
					break
				}
				lineNo++
				line := r.buf[r.start : r.start+i]
				r.start += i + 1
				if !r.addLine(ctx, name, lineNo, line) {
					return errFileStopped
				}
			}
			if r.end-r.start > MaxEventSize+1 {
				// No terminator yet and already too long even if a CR
				// follows: keep a prefix for the dead letter, drop the rest
				// up to the next newline.
				lineNo++
				discarding = true
				long = fileLine{b: bytes.Clone(r.buf[r.start : r.start+MaxEventSize]), no: lineNo, size: r.end - r.start}
				r.end = r.start
			}
		}

		switch {
		case errors.Is(rerr, io.EOF):
			if discarding {
				if !r.add(ctx, name, long) {
					return errFileStopped
				}
			} else if r.start < r.end {
				lineNo++
				line := r.buf[r.start:r.end]
				r.start = r.end
				if !r.addLine(ctx, name, lineNo, line) {
					return errFileStopped
				}
			}
			if !r.flush(ctx) {
				return errFileStopped
			}
			return nil
		case rerr != nil:
			// Deliver what was read before the error, then report it.
			if !r.flush(ctx) {
				return errFileStopped
			}
			return rerr
		case streaming || ctx.Err() != nil:
			if !r.flush(ctx) {
				return errFileStopped
			}
		}
	}
}

// addLine queues one line of input unless it is blank.
func (r *fileReader) addLine(ctx context.Context, name string, no int, line []byte) bool {
	if no == 1 {
		line = bytes.TrimPrefix(line, utf8BOM)
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > MaxEventSize {
		return r.add(ctx, name, fileLine{b: line[:MaxEventSize], no: no, size: len(line)})
	}
	for _, c := range line {
		if !isJSONSpace(c) {
			return r.add(ctx, name, fileLine{b: line, no: no})
		}
	}
	return true
}

// add appends a line to the current job, queueing the job when full. It
// reports false when ctx is done.
func (r *fileReader) add(ctx context.Context, name string, l fileLine) bool {
	if r.cur == nil {
		r.cur = &fileJob{name: name, lines: make([]fileLine, 0, r.batch), received: time.Now(), dec: r.src.Decode}
	}
	r.cur.lines = append(r.cur.lines, l)
	if len(r.cur.lines) >= r.batch {
		return r.flush(ctx)
	}
	return true
}

// flush queues the current fileJob, if any: first on order, which fixes its
// place in the output, then on jobs for a worker. It reports false when
// ctx is done.
func (r *fileReader) flush(ctx context.Context) bool {
	j := r.cur
	if j == nil {
		return ctx.Err() == nil
	}
	r.cur = nil
	j.done = make(chan struct{})
	select {
	case r.order <- j:
	case <-ctx.Done():
		return false
	}
	select {
	case r.jobs <- j:
	case <-ctx.Done():
		return false
	}
	return true
}
