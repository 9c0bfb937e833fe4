package scaleout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"strconv"
	"strings"

	kafkago "github.com/segmentio/kafka-go"
)

// The wire formats of the internal topics of a scaled-out shopguard. They
// are read only by shopguard itself; every format starts with a type byte
// or a magic and a version, so that a later version can tell them apart.

// scaleHeader is the header of every message on the repartition topics: an
// event ('e') or a heartbeat ('h').
const scaleHeader = "shopguard-scale"

const (
	wireEvent     = 'e' // t p off
	wireHeartbeat = 'h' // t p next idle
	wireFlag      = 'f' // key, event time, finding id (flags topic)
	wireWatermark = 'w' // source partition, bound (flags topic)
	wireRotation  = 'r' // account key, event time (flags topic)
)

var errWire = errors.New("malformed internal message")

func appendKey(b []byte, k scaleKey) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(k.T))
	b = binary.BigEndian.AppendUint32(b, uint32(k.P))
	return binary.BigEndian.AppendUint64(b, uint64(k.Off))
}

func readKey(b []byte) scaleKey {
	return scaleKey{
		T:   int64(binary.BigEndian.Uint64(b)),
		P:   int32(binary.BigEndian.Uint32(b[8:])),
		Off: int64(binary.BigEndian.Uint64(b[12:])),
	}
}

const keyLen = 20

// eventHeader is the header of a re-keyed event.
func eventHeader(k scaleKey) kafkago.Header {
	return kafkago.Header{Key: scaleHeader, Value: appendKey([]byte{wireEvent}, k)}
}

// heartbeatHeader is the header of a heartbeat: input partition bound.P has
// sent everything below bound.
func heartbeatHeader(bound scaleKey, idle bool) kafkago.Header {
	b := appendKey([]byte{wireHeartbeat}, bound)
	if idle {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return kafkago.Header{Key: scaleHeader, Value: b}
}

// parseInternal reads the scale header of a repartition-topic message.
func parseInternal(m *kafkago.Message) (kind byte, k scaleKey, idle bool, err error) {
	for _, h := range m.Headers {
		if h.Key != scaleHeader {
			continue
		}
		v := h.Value
		switch {
		case len(v) == 1+keyLen && v[0] == wireEvent:
			return wireEvent, readKey(v[1:]), false, nil
		case len(v) == 2+keyLen && v[0] == wireHeartbeat:
			return wireHeartbeat, readKey(v[1:]), v[1+keyLen] == 1, nil
		}
		break
	}
	return 0, scaleKey{}, false, fmt.Errorf("%w at %s/%d/%d", errWire, m.Topic, m.Partition, m.Offset)
}

// scaleFlag is one source flagged for credential_stuffing: what the account
// stage needs to decide a takeover after stuffing as one process would.
type scaleFlag struct {
	k      scaleKey     // key of the failed login that raised it
	prefix netip.Prefix // the address (full length) or block the finding named
	t      int64        // the finding's time, unix ns
	id     string       // the finding's id
}

func flagMessage(f scaleFlag) kafkago.Message {
	v := appendKey([]byte{wireFlag}, f.k)
	v = binary.BigEndian.AppendUint64(v, uint64(f.t))
	v = append(v, f.id...)
	return kafkago.Message{Key: []byte(f.prefix.String()), Value: v}
}

func watermarkKey(q int) []byte { return []byte("watermark/" + strconv.Itoa(q)) }

// watermarkMessage says that source partition q has published the flags of
// every event below bound.
func watermarkMessage(q int, bound scaleKey) kafkago.Message {
	v := binary.BigEndian.AppendUint32([]byte{wireWatermark}, uint32(q))
	return kafkago.Message{Key: watermarkKey(q), Value: appendKey(v, bound)}
}

// rotationMessage says that the account with key acct (Rotator) rotated
// its listed password at event time at. Keyed by the account, so that
// compaction keeps one record an account.
func rotationMessage(acct uint64, at int64) kafkago.Message {
	v := binary.BigEndian.AppendUint64([]byte{wireRotation}, acct)
	v = binary.BigEndian.AppendUint64(v, uint64(at))
	return kafkago.Message{Key: fmt.Appendf(nil, "rotated/%016x", acct), Value: v}
}

// parseRotation reads what rotationMessage wrote.
func parseRotation(v []byte) (acct uint64, at int64, err error) {
	if len(v) != 17 || v[0] != wireRotation {
		return 0, 0, errWire
	}
	return binary.BigEndian.Uint64(v[1:]), int64(binary.BigEndian.Uint64(v[9:])), nil
}

// parseFlagsRecord reads a flags-topic record.
func parseFlagsRecord(key, v []byte) (kind byte, f scaleFlag, q int, bound scaleKey, err error) {
	switch {
	case len(v) >= 1+keyLen+8 && v[0] == wireFlag:
		f.k = readKey(v[1:])
		f.t = int64(binary.BigEndian.Uint64(v[1+keyLen:]))
		f.id = string(v[1+keyLen+8:])
		f.prefix, err = parseSourcePrefix(string(key))
		return wireFlag, f, 0, scaleKey{}, err
	case len(v) == 1+4+keyLen && v[0] == wireWatermark:
		return wireWatermark, f, int(binary.BigEndian.Uint32(v[1:])), readKey(v[5:]), nil
	case len(v) == 0:
		return 0, f, 0, scaleKey{}, nil // a tombstone: nothing to apply
	}
	return 0, f, 0, scaleKey{}, errWire
}

// parseSourcePrefix parses what a credential_stuffing finding names as its
// ip: an address (a full-length prefix) or a block in CIDR form.
func parseSourcePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// A snapshot of a task is written to the changelog in chunks, each small
// enough for the brokers' default message size limit. The key of a chunk
// is stage/partition/slot/index; snapshots alternate between two slots, so
// that a crash while writing one leaves the previous one whole (compaction
// keeps the latest record per key).
const (
	chunkMagic   = "SGCL"
	chunkVersion = 1
	chunkHead    = 4 + 1 + 8 + 4 + 4 + 4 // magic version seq n idx crc
	chunkSize    = 512 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func chunkKeyPrefix(stage string, part int) string {
	return stage + "/" + strconv.Itoa(part) + "/"
}

// chunkMessages splits data, snapshot number seq, into changelog messages.
func chunkMessages(stage string, part int, seq uint64, data []byte) []kafkago.Message {
	n := max((len(data)+chunkSize-1)/chunkSize, 1)
	sum := crc32.Checksum(data, crcTable)
	msgs := make([]kafkago.Message, n)
	for i := range n {
		part0 := data[min(i*chunkSize, len(data)):min((i+1)*chunkSize, len(data))]
		v := make([]byte, 0, chunkHead+len(part0))
		v = append(v, chunkMagic...)
		v = append(v, chunkVersion)
		v = binary.BigEndian.AppendUint64(v, seq)
		v = binary.BigEndian.AppendUint32(v, uint32(n))
		v = binary.BigEndian.AppendUint32(v, uint32(i))
		v = binary.BigEndian.AppendUint32(v, sum)
		v = append(v, part0...)
		key := chunkKeyPrefix(stage, part) + strconv.FormatUint(seq%2, 10) + "/" + strconv.Itoa(i)
		msgs[i] = kafkago.Message{Key: []byte(key), Value: v}
	}
	return msgs
}

// chunk is one parsed changelog record.
type chunk struct {
	seq    uint64
	n, idx uint32
	sum    uint32
	data   []byte
}

func parseChunk(v []byte) (chunk, error) {
	if len(v) < chunkHead || string(v[:4]) != chunkMagic {
		return chunk{}, fmt.Errorf("%w: not a snapshot chunk", errWire)
	}
	if v[4] != chunkVersion {
		return chunk{}, fmt.Errorf("%w: snapshot chunk version %d, want %d", errWire, v[4], chunkVersion)
	}
	c := chunk{
		seq:  binary.BigEndian.Uint64(v[5:]),
		n:    binary.BigEndian.Uint32(v[13:]),
		idx:  binary.BigEndian.Uint32(v[17:]),
		sum:  binary.BigEndian.Uint32(v[21:]),
		data: v[chunkHead:],
	}
	if c.n == 0 || c.idx >= c.n {
		return chunk{}, fmt.Errorf("%w: chunk %d of %d", errWire, c.idx, c.n)
	}
	return c, nil
}

// assemble joins the chunks of one snapshot, in index order, and checks the
// checksum.
func assemble(cs []chunk) ([]byte, error) {
	if len(cs) == 0 || uint32(len(cs)) != cs[0].n {
		return nil, fmt.Errorf("%w: incomplete snapshot", errWire)
	}
	var data []byte
	for i, c := range cs {
		if c.idx != uint32(i) {
			return nil, fmt.Errorf("%w: incomplete snapshot", errWire)
		}
		data = append(data, c.data...)
	}
	if crc32.Checksum(data, crcTable) != cs[0].sum {
		return nil, fmt.Errorf("%w: snapshot checksum mismatch", errWire)
	}
	return data, nil
}

// taskVersion is the version of a task's state encoding.
const taskVersion = 1

// taskState is what a task checkpoints besides its engine: where to read
// on, and the order buffer.
type taskState struct {
	next   int64 // next offset of the internal partition to read
	order  *scaleOrder
	engine []byte // the engine's own snapshot; nil means none
}

func encodeTask(st *taskState) []byte {
	o := st.order
	b := []byte{taskVersion}
	b = binary.BigEndian.AppendUint64(b, uint64(st.next))
	b = appendKey(b, o.Done)
	b = binary.BigEndian.AppendUint32(b, uint32(o.Inputs))
	b = binary.BigEndian.AppendUint32(b, uint32(len(o.Seen)))
	for p, off := range o.Seen {
		b = binary.BigEndian.AppendUint32(b, uint32(p))
		b = binary.BigEndian.AppendUint64(b, uint64(off))
	}
	marks := o.Marks()
	b = binary.BigEndian.AppendUint32(b, uint32(len(marks)))
	for p, m := range marks {
		b = binary.BigEndian.AppendUint32(b, uint32(p))
		b = appendKey(b, m.Bound)
		if m.Idle {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	items := o.Items()
	b = binary.BigEndian.AppendUint32(b, uint32(len(items)))
	for _, it := range items {
		b = appendKey(b, it.K)
		b = binary.BigEndian.AppendUint32(b, uint32(len(it.V)))
		b = append(b, it.V...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(len(st.engine)))
	return append(b, st.engine...)
}

// wireReader reads big-endian fields and remembers the first shortfall.
type wireReader struct {
	b   []byte
	bad bool
}

func (r *wireReader) take(n int) []byte {
	if r.bad || n < 0 || len(r.b) < n {
		r.bad = true
		return make([]byte, max(n, 0))
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *wireReader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }
func (r *wireReader) key() scaleKey {
	return readKey(r.take(keyLen))
}

func decodeTask(b []byte) (*taskState, error) {
	if len(b) == 0 || b[0] != taskVersion {
		return nil, fmt.Errorf("%w: task state version is not %d", errWire, taskVersion)
	}
	r := &wireReader{b: b[1:]}
	st := &taskState{next: int64(r.u64())}
	done := r.key()
	o := newScaleOrder(int(r.u32()))
	o.Done = done
	// Counts are checked against what is left, so a corrupt count cannot
	// allocate much.
	n := r.u32()
	if uint64(n)*12 > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: task state truncated", errWire)
	}
	for range n {
		p := int32(r.u32())
		o.Seen[p] = int64(r.u64())
	}
	n = r.u32()
	if uint64(n)*(4+keyLen+1) > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: task state truncated", errWire)
	}
	for range n {
		p := int32(r.u32())
		k := r.key()
		o.Mark(p, k, r.take(1)[0] == 1)
	}
	n = r.u32()
	if uint64(n)*(keyLen+4) > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: task state truncated", errWire)
	}
	items := make([]scaleItem, 0, n)
	for range n {
		k := r.key()
		// A copy: the order's popped slots keep their values until
		// overwritten, and raw would pin the whole snapshot.
		raw := bytes.Clone(r.take(int(r.u32())))
		items = append(items, scaleItem{K: k, V: raw})
	}
	o.Load(items)
	eng := r.take(int(r.u64()))
	if r.bad || len(r.b) != 0 {
		return nil, fmt.Errorf("%w: task state truncated", errWire)
	}
	if len(eng) > 0 {
		st.engine = eng
	}
	st.order = o
	return st, nil
}
