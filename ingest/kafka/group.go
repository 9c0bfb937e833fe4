package kafka

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// groupReader is the Source's consumer: a member of the consumer group
// (kafka-go's ConsumerGroup, as kafka-go's Reader uses it) that reads each
// assigned partition with a connection to its leader (kafka-go's Conn).
//
// It exists for speed. kafka-go's Reader allocates a key, a value and
// headers for every message and hands each over a channel; in the live
// profile that was half of the consumer's CPU time. The partition readers
// here copy a whole fetch's values into one buffer and hand the buffer
// over at once; FetchMessage then returns one message of it at a time,
// without allocating. A message's Value aliases that buffer, which is
// never reused: events decoded from it (whose strings alias it too, see
// shopguard.Event) stay valid for as long as anything holds them.
//
// Its semantics are the Reader's: the group's committed offsets (or
// StartOffset) are where a generation starts; messages a partition reader
// of an earlier generation fetched are dropped once a new generation is
// assigned; fetches are read committed (kafka-go stops at the last stable
// offset, but, Reader or not, does not drop the records of aborted
// transactions, nor their markers, which are rejected as invalid); a
// partition read before its first offset (retention) moves on to it.
type groupReader struct {
	cfg    Config
	dialer *kafkago.Dialer
	cg     *kafkago.ConsumerGroup
	log    *slog.Logger

	chunks  chan *chunk
	errs    chan error
	version atomic.Int64 // of the current generation's assignment
	gen     atomic.Pointer[kafkago.Generation]

	rebalances atomic.Uint64
	errors     atomic.Uint64

	// Only FetchMessage (and now) touch these.
	cur *chunk
	i   int
	at  time.Time // when cur was taken

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// chunk is what one partition reader read in one fetch (or part of one).
type chunk struct {
	version   int64
	partition int
	hwm       int64
	buf       []byte
	msgs      []chunkMsg
}

type chunkMsg struct {
	offset   int64
	from, to int32 // the value in buf
}

const (
	// chunkBytes is the buffer a partition reader copies values into;
	// a fetch with more is handed over in several chunks.
	chunkBytes = 128 << 10
	// minValueRoom is the room a value is first given; a larger value
	// makes the fetch be read again with twice the room.
	minValueRoom = 16 << 10
)

// newGroupReader joins cfg.Group (in the background) to consume cfg.Topic.
func newGroupReader(cfg Config, dialer *kafkago.Dialer, log *slog.Logger) (*groupReader, error) {
	info, errl := Loggers(log)
	start := kafkago.FirstOffset
	if cfg.StartOffset == StartLatest {
		start = kafkago.LastOffset
	}
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID:                    cfg.Group,
		Brokers:               cfg.Brokers,
		Dialer:                dialer,
		Topics:                []string{cfg.Topic},
		HeartbeatInterval:     cfg.HeartbeatInterval,
		WatchPartitionChanges: true,
		SessionTimeout:        cfg.SessionTimeout,
		RebalanceTimeout:      cfg.RebalanceTimeout,
		JoinGroupBackoff:      cfg.RetryBackoffMax,
		StartOffset:           start,
		Logger:                info,
		ErrorLogger:           errl,
	})
	if err != nil {
		return nil, fmt.Errorf("kafka: consumer group %q: %w", cfg.Group, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &groupReader{
		cfg: cfg, dialer: bufferedDialer(dialer), cg: cg, log: log,
		// Enough for every partition reader to be a fetch ahead.
		chunks: make(chan *chunk, max(cfg.QueueCapacity/64, 16)),
		errs:   make(chan error, 1),
		stop:   stop, done: make(chan struct{}),
	}
	go r.run(ctx)
	return r, nil
}

// readBufferBytes is how much a partition connection reads from its
// socket at once. kafka-go's Conn reads through a 4 KiB bufio.Reader, which
// at full speed made one read system call per 4 KiB: a sixth of the
// partition readers' time in the live profile.
const readBufferBytes = 256 << 10

// bufferedDialer returns a copy of d whose connections read from the
// socket readBufferBytes at a time (below TLS, when d has it).
func bufferedDialer(d *kafkago.Dialer) *kafkago.Dialer {
	bd := *d
	dial := d.DialFunc
	if dial == nil {
		// As kafka-go's Dialer dials (its DualStack is the default since
		// Go 1.12).
		dial = (&net.Dialer{LocalAddr: d.LocalAddr, FallbackDelay: d.FallbackDelay, KeepAlive: d.KeepAlive}).DialContext
	}
	bd.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBufferBytes)}, nil
	}
	return &bd
}

// bufferedConn is a net.Conn whose reads go through r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// run follows the group's generations until ctx is done.
func (r *groupReader) run(ctx context.Context) {
	defer close(r.done)
	defer r.cg.Close() // leaves the group
	for {
		var gen *kafkago.Generation
		var err error
		for attempt := 1; attempt <= max(r.cfg.MaxRetries, 1); attempt++ {
			if gen, err = r.cg.Next(ctx); err == nil || ctx.Err() != nil {
				break
			}
			r.errors.Add(1)
			r.log.Warn("kafka consumer group: joining did not succeed; retrying", "attempt", attempt, "err", err)
		}
		if ctx.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
			return
		}
		if err != nil {
			r.report(err)
			continue
		}
		r.rebalances.Add(1)
		v := r.version.Add(1)
		r.gen.Store(gen)
		assigned := gen.Assignments[r.cfg.Topic]
		r.log.Debug("partitions assigned", "generation", gen.ID, "partitions", len(assigned))
		for _, a := range assigned {
			gen.Start(func(gctx context.Context) { r.readPartition(gctx, v, a.ID, a.Offset) })
		}
		gen.Start(func(gctx context.Context) {
			select {
			case <-gctx.Done():
			case <-ctx.Done():
			}
			r.gen.CompareAndSwap(gen, nil)
		})
	}
}

// report hands err to the next FetchMessage, unless one is waiting there.
// io.EOF (a broker that closed the connection) becomes io.ErrUnexpectedEOF,
// as in kafka-go's Reader: FetchMessage's io.EOF means the reader is closed.
func (r *groupReader) report(err error) {
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w (%v)", io.ErrUnexpectedEOF, err)
	}
	select {
	case r.errs <- err:
	default:
	}
}

// readPartition reads partition p from offset until ctx (its generation)
// ends, retrying with backoff whatever fails; errors the Reader would
// surface are handed to FetchMessage as well.
func (r *groupReader) readPartition(ctx context.Context, version int64, p int, offset int64) {
	log := r.log.With("partition", p)
	room := minValueRoom
	var spare []byte // the unused end of the last buffer
	for attempt := 0; ; attempt++ {
		if attempt > 0 && Sleep(ctx, r.cfg.Backoff(attempt)) != nil {
			return
		}
		conn, start, err := r.dial(ctx, p, offset)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, kafkago.OffsetOutOfRange) {
				// Past the partition's end (as kafka-go's Reader, wait for
				// it to grow).
				log.Warn("kafka partition reader: offset past the partition's end; retrying", "offset", offset, "err", err)
				continue
			}
			r.errors.Add(1)
			if attempt >= max(r.cfg.MaxRetries, 1) {
				r.report(fmt.Errorf("partition %d: %w", p, err))
			}
			log.Warn("kafka partition reader: connecting did not succeed; retrying", "attempt", attempt+1, "err", err)
			continue
		}
		attempt, offset = 0, start
	read:
		for fails := 0; ; fails++ {
			if ctx.Err() != nil || fails > 0 && Sleep(ctx, r.cfg.Backoff(fails)) != nil {
				conn.Close()
				return
			}
			var short bool
			offset, short, err = r.fetch(ctx, conn, version, p, offset, room, &spare)
			switch {
			case err == nil || errors.Is(err, io.EOF) || errors.Is(err, kafkago.RequestTimedOut):
				fails, room = -1, minValueRoom // one big value does not make every buffer big
			case short:
				room *= 2 // read the rest of the fetch again with more room
				fails = -1
			case ctx.Err() != nil:
				conn.Close()
				return
			case errors.Is(err, kafkago.OffsetOutOfRange):
				first, last, oerr := readOffsets(conn)
				switch {
				case oerr != nil:
					conn.Close()
					break read
				case offset < first:
					log.Warn("kafka partition reader: offset before the partition's first (retention); skipping ahead",
						"offset", offset, "first", first, "skipped", first-offset)
					if _, err := conn.Seek(first, kafkago.SeekAbsolute); err != nil {
						conn.Close()
						break read
					}
					offset, fails = first, -1
				case offset < last:
					fails = -1
				}
			case errors.Is(err, kafkago.NotLeaderForPartition), errors.Is(err, kafkago.UnknownTopicOrPartition),
				errors.Is(err, io.ErrNoProgress):
				log.Info("kafka partition reader: reconnecting", "reason", err)
				conn.Close()
				break read
			default:
				var kerr kafkago.Error
				if !errors.As(err, &kerr) {
					log.Warn("kafka partition reader: read did not succeed; reconnecting", "offset", offset, "err", err)
					r.errors.Add(1)
					conn.Close()
					break read
				}
				r.report(fmt.Errorf("partition %d: %w", p, err))
			}
		}
	}
}

// dial connects to the leader of partition p and seeks to offset (the
// first or last offset if it is FirstOffset or LastOffset, the first if it
// is before it), trying each broker in turn.
func (r *groupReader) dial(ctx context.Context, p int, offset int64) (*kafkago.Conn, int64, error) {
	var err error
	for _, b := range r.cfg.Brokers {
		var conn *kafkago.Conn
		if conn, err = r.dialer.DialLeader(ctx, "tcp", b, r.cfg.Topic, p); err != nil {
			continue
		}
		first, last, oerr := readOffsets(conn)
		if oerr != nil {
			conn.Close()
			return nil, 0, oerr
		}
		switch {
		case offset == kafkago.LastOffset:
			offset = last
		case offset < first: // FirstOffset too
			offset = first
		}
		start, serr := conn.Seek(offset, kafkago.SeekAbsolute)
		if serr != nil {
			conn.Close()
			return nil, 0, serr
		}
		_ = conn.SetDeadline(time.Time{})
		return conn, start, nil
	}
	return nil, 0, err
}

func readOffsets(conn *kafkago.Conn) (first, last int64, err error) {
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{}) //nolint:errcheck
	return conn.ReadOffsets()
}

// fetch reads one fetch of partition p (the connection is at offset) and
// hands its values over in chunks, which take their buffers from *spare.
// It returns the offset to read next; short reports that a value needs
// more than room (the connection is back at that value).
func (r *groupReader) fetch(ctx context.Context, conn *kafkago.Conn, version int64, p int, offset int64, room int, spare *[]byte) (next int64, short bool, err error) {
	_ = conn.SetReadDeadline(time.Now().Add(r.cfg.MaxWait))
	batch := conn.ReadBatchWith(kafkago.ReadBatchConfig{
		MinBytes:       r.cfg.MinBytes,
		MaxBytes:       r.cfg.MaxBytes,
		IsolationLevel: kafkago.ReadCommitted,
	})
	// The fetch reads within this, and so does each chunk after one is
	// handed over (kafka-go's Reader set it for every message).
	readDeadline := func() { _ = conn.SetReadDeadline(time.Now().Add(r.cfg.MaxWait + r.cfg.DialTimeout)) }
	readDeadline()
	want := offset
	c := &chunk{version: version, partition: p, hwm: batch.HighWaterMark(), buf: (*spare)[:0]}
	// send hands c over; the next chunk continues in the rest of its
	// buffer, which nothing aliases.
	send := func() error {
		if len(c.msgs) == 0 {
			return nil
		}
		select {
		case r.chunks <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		c = &chunk{version: version, partition: p, hwm: c.hwm, buf: c.buf[len(c.buf):len(c.buf):cap(c.buf)]}
		readDeadline() // however long the Source took to take the chunk
		return nil
	}
	for {
		if cap(c.buf)-len(c.buf) < room {
			if err = send(); err != nil {
				break
			}
			c.buf = make([]byte, 0, max(chunkBytes, 2*room))
		}
		from := len(c.buf)
		var n int
		n, err = batch.Read(c.buf[from:cap(c.buf)])
		if err != nil {
			short = errors.Is(err, io.ErrShortBuffer)
			break
		}
		off := batch.Offset() - 1 // of this message
		if off < want {
			continue // a record batch may begin before the offset asked for
		}
		c.buf, offset = c.buf[:from+n], off+1
		c.msgs = append(c.msgs, chunkMsg{offset: off, from: int32(from), to: int32(from + n)})
	}
	if serr := send(); serr != nil && err == nil {
		err = serr
	}
	*spare = c.buf[len(c.buf):len(c.buf):cap(c.buf)]
	if errors.Is(err, io.EOF) {
		// The fetch was read to its end; a compacted batch's trailing
		// records moved its offset past the last message.
		offset = max(offset, batch.Offset())
	}
	if cerr := batch.Close(); err == nil && cerr != nil {
		err = cerr
	}
	_ = conn.SetReadDeadline(time.Time{})
	return offset, short, err
}

// FetchMessage returns the next message of the current generation. Its
// Value aliases a buffer that is never reused. It returns ctx's error when
// ctx ends, an error a partition reader or the group reported, or io.EOF
// once the reader is closed.
func (r *groupReader) FetchMessage(ctx context.Context) (kafkago.Message, error) {
	for {
		// A chunk of an earlier generation is dropped even part-read, as
		// kafka-go's Reader drops its messages: its partition may be
		// another member's now.
		if c := r.cur; c != nil && r.i < len(c.msgs) && c.version == r.version.Load() {
			m := &c.msgs[r.i]
			if r.i++; r.i%256 == 0 {
				r.at = time.Now() // bounds the clock's drift
				if err := ctx.Err(); err != nil {
					r.i--
					return kafkago.Message{}, err
				}
			}
			return kafkago.Message{Topic: r.cfg.Topic, Partition: c.partition, Offset: m.offset,
				HighWaterMark: c.hwm, Value: c.buf[m.from:m.to:m.to]}, nil
		}
		r.cur = nil
		select { // what was fetched first, before an error reported meanwhile
		case c := <-r.chunks:
			r.take(c)
			continue
		default:
		}
		select {
		case c := <-r.chunks:
			r.take(c)
		case err := <-r.errs:
			return kafkago.Message{}, err
		case <-ctx.Done():
			return kafkago.Message{}, ctx.Err()
		case <-r.done:
			return kafkago.Message{}, io.EOF
		}
	}
}

// take makes c the chunk FetchMessage returns messages of, unless it is
// of an earlier generation.
func (r *groupReader) take(c *chunk) {
	if c.version == r.version.Load() {
		r.cur, r.i, r.at = c, 0, time.Now()
	}
}

// now is the Source's clock: the time the current chunk was taken while
// FetchMessage still has messages of it to return without waiting (its
// error is at most the time the Source spends on 256 messages), time.Now
// otherwise. Two clock reads a message were a tenth of the
// merge's time.
func (r *groupReader) now() time.Time {
	if r.cur != nil && r.i < len(r.cur.msgs) {
		return r.at
	}
	return time.Now()
}

// CommitMessages commits, for each partition, the offset after the last
// of msgs, in the current generation (waiting for one during a rebalance).
func (r *groupReader) CommitMessages(ctx context.Context, msgs ...kafkago.Message) error {
	offsets := map[int]int64{}
	for _, m := range msgs {
		offsets[m.Partition] = max(offsets[m.Partition], m.Offset+1)
	}
	for attempt := 1; ; {
		if gen := r.gen.Load(); gen != nil {
			err := gen.CommitOffsets(map[string]map[int]int64{r.cfg.Topic: offsets})
			// Three attempts, as kafka-go's Reader makes, before the
			// Source counts a failed commit.
			if err == nil || attempt == 3 || Sleep(ctx, r.cfg.Backoff(attempt)) != nil {
				return err
			}
			attempt++
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return errors.New("the consumer is closed")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close leaves the group and stops the partition readers.
func (r *groupReader) Close() error {
	r.closeOnce.Do(func() {
		r.stop()
		<-r.done
	})
	return nil
}
