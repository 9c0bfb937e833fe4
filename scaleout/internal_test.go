package scaleout

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/kafka"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

// releaseAll pops every item the frontier lets through.
func releaseAll(o *scaleOrder) []scaleKey {
	var out []scaleKey
	limit := o.Frontier()
	for {
		k, ok := o.Peek()
		if !ok || k.Cmp(limit) >= 0 {
			return out
		}
		it := o.Pop()
		o.Processed(it.K)
		out = append(out, it.K)
	}
}

// TestScaleOrderReleasesInKeyOrder: events of three input partitions that
// arrive interleaved at random, each partition's in offset order with
// heartbeats in between, come out in key order, each once, and none before
// every partition's heartbeat has passed it.
func TestScaleOrderReleasesInKeyOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type msg struct {
		hb   bool
		k    scaleKey
		idle bool
	}
	// Each input partition: events with non-decreasing stream time, a
	// heartbeat after every few, and some events written twice (a
	// repartitioner that restarted from its last commit).
	var streams [3][]msg
	var want []scaleKey
	for p := range 3 {
		var st int64
		for off := range int64(200) {
			st += rng.Int64N(3) * int64(time.Millisecond) // ties across partitions too
			k := scaleKey{T: st, P: int32(p), Off: off}
			want = append(want, k)
			streams[p] = append(streams[p], msg{k: k})
			if rng.IntN(10) == 0 {
				streams[p] = append(streams[p], msg{k: k}) // duplicate
			}
			if rng.IntN(7) == 0 {
				streams[p] = append(streams[p], msg{hb: true, k: scaleKey{T: st, P: int32(p), Off: off + 1}})
			}
		}
		streams[p] = append(streams[p], msg{hb: true, k: scaleKey{T: st, P: int32(p), Off: 200}, idle: true})
	}
	slices.SortFunc(want, func(a, b scaleKey) int { return a.Cmp(b) })

	o := newScaleOrder(3)
	var got []scaleKey
	pos := [3]int{}
	for {
		// Pick a partition that still has messages, at random.
		var open []int
		for p := range 3 {
			if pos[p] < len(streams[p]) {
				open = append(open, p)
			}
		}
		if len(open) == 0 {
			break
		}
		p := open[rng.IntN(len(open))]
		m := streams[p][pos[p]]
		pos[p]++
		if m.hb {
			o.Mark(m.k.P, m.k, m.idle)
		} else {
			o.Add(m.k, nil)
		}
		released := releaseAll(o)
		for _, k := range released {
			// Nothing released may be beaten by an event still to come.
			for q := range 3 {
				for _, later := range streams[q][pos[q]:] {
					if !later.hb {
						require.Negative(t, k.Cmp(later.k), "released %v before %v arrived", k, later.k)
					}
				}
			}
		}
		got = append(got, released...)
	}
	require.Equal(t, want, got)
	require.Zero(t, o.Len())
}

func TestScaleOrderFrontier(t *testing.T) {
	o := newScaleOrder(2)
	require.Equal(t, scaleKeyMin, o.Frontier(), "until every input partition is heard from")
	o.Mark(0, scaleKey{T: 10, P: 0, Off: 5}, false)
	require.Equal(t, scaleKeyMin, o.Frontier())
	o.Mark(1, scaleKey{T: 7, P: 1, Off: 3}, false)
	require.Equal(t, scaleKey{T: 7, P: 1, Off: 3}, o.Frontier())
	o.Mark(1, scaleKey{T: 5, P: 1, Off: 2}, false)
	require.Equal(t, scaleKey{T: 7, P: 1, Off: 3}, o.Frontier(), "a bound never goes back")
	o.Mark(1, scaleKey{T: 7, P: 1, Off: 3}, true)
	require.Equal(t, scaleKey{T: 10, P: 0, Off: 5}, o.Frontier(), "an idle partition holds nothing back")
	o.Mark(0, scaleKey{T: 10, P: 0, Off: 5}, true)
	require.Equal(t, scaleKeyMax, o.Frontier())
	o.Mark(0, scaleKey{T: 12, P: 0, Off: 6}, false)
	require.Equal(t, scaleKey{T: 12, P: 0, Off: 6}, o.Frontier(), "a partition that wakes up counts again")
	o.Mark(4, scaleKey{T: 1, P: 4, Off: 0}, false)
	require.Equal(t, scaleKeyMin, o.Frontier(), "partitions added to the audit topic count, once all are heard from")

	require.True(t, o.Add(scaleKey{T: 1, P: 0, Off: 9}, nil))
	require.False(t, o.Add(scaleKey{T: 1, P: 0, Off: 9}, nil), "duplicate")
	require.False(t, o.Add(scaleKey{T: 1, P: 0, Off: 8}, nil), "written before the last one seen")
	require.False(t, o.Processed(scaleKey{T: 1, P: 0, Off: 9}))
	require.True(t, o.Processed(scaleKey{T: 0, P: 3, Off: 0}), "late")
}

// TestTaskStateRoundTrip: a task's state survives encoding and chunking,
// whatever order the chunks come in; a flipped byte, a missing chunk or a
// short state is refused.
func TestTaskStateRoundTrip(t *testing.T) {
	o := newScaleOrder(3)
	o.Done = scaleKey{T: 99, P: 1, Off: 7}
	o.Add(scaleKey{T: 100, P: 2, Off: 4}, []byte(`{"a":1}`))
	o.Add(scaleKey{T: 101, P: 0, Off: 5}, []byte(`{"b":2}`))
	o.Mark(0, scaleKey{T: 101, P: 0, Off: 6}, false)
	o.Mark(2, scaleKey{T: 100, P: 2, Off: 5}, true)
	eng := make([]byte, 1_300_000) // three chunks
	for i := range eng {
		eng[i] = byte(i * 7)
	}
	data := encodeTask(&taskState{next: 42, order: o, engine: eng})
	msgs := chunkMessages(StageAccount, 3, 5, data)
	require.Len(t, msgs, 3)
	for i, m := range msgs {
		require.Equal(t, "account/3/1/"+strconv.Itoa(i), string(m.Key))
		require.LessOrEqual(t, len(m.Value), 1_000_000, "under the brokers' message size limit")
	}
	var cs []chunk
	for _, i := range []int{2, 0, 1} {
		c, err := parseChunk(msgs[i].Value)
		require.NoError(t, err)
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b chunk) int { return int(a.idx) - int(b.idx) })
	back, err := assemble(cs)
	require.NoError(t, err)
	st, err := decodeTask(back)
	require.NoError(t, err)
	require.Equal(t, int64(42), st.next)
	require.Equal(t, eng, st.engine)
	require.Equal(t, o.Done, st.order.Done)
	require.Equal(t, o.Seen, st.order.Seen)
	require.Equal(t, o.Marks(), st.order.Marks())
	require.Equal(t, o.Inputs, st.order.Inputs)
	k, _ := st.order.Peek()
	require.Equal(t, scaleKey{T: 100, P: 2, Off: 4}, k)
	require.Equal(t, `{"a":1}`, string(st.order.Pop().V))

	_, err = assemble(cs[:2])
	require.Error(t, err, "a chunk missing")
	bad := slices.Clone(cs)
	bad[1].data = slices.Clone(bad[1].data)
	bad[1].data[10] ^= 1
	_, err = assemble(bad)
	require.ErrorContains(t, err, "checksum")
	_, err = decodeTask(back[:len(back)-1])
	require.Error(t, err)
	_, err = decodeTask(back[:30])
	require.Error(t, err)
	_, err = parseChunk([]byte("not a chunk at all, not at all"))
	require.Error(t, err)
}

func TestScaleWireRecords(t *testing.T) {
	k := scaleKey{T: 1767571200123456789, P: 4, Off: 99}
	ev := kafkago.Message{Headers: []kafkago.Header{eventHeader(k)}}
	kind, got, _, err := parseInternal(&ev)
	require.NoError(t, err)
	require.Equal(t, byte(wireEvent), kind)
	require.Equal(t, k, got)
	hb := kafkago.Message{Headers: []kafkago.Header{{Key: "other", Value: []byte("x")}, heartbeatHeader(k, true)}}
	kind, got, idle, err := parseInternal(&hb)
	require.NoError(t, err)
	require.Equal(t, byte(wireHeartbeat), kind)
	require.Equal(t, k, got)
	require.True(t, idle)
	_, _, _, err = parseInternal(&kafkago.Message{})
	require.Error(t, err)

	f := scaleFlag{k: k, prefix: netip.MustParsePrefix("45.95.147.0/24"), t: 1767571200000000000, id: "9f2c"}
	m := flagMessage(f)
	kind, back, _, _, err := parseFlagsRecord(m.Key, m.Value)
	require.NoError(t, err)
	require.Equal(t, byte(wireFlag), kind)
	require.Equal(t, f, back)
	w := watermarkMessage(3, k)
	kind, _, q, bound, err := parseFlagsRecord(w.Key, w.Value)
	require.NoError(t, err)
	require.Equal(t, byte(wireWatermark), kind)
	require.Equal(t, 3, q)
	require.Equal(t, k, bound)

	for in, want := range map[string]string{
		"203.0.113.9":          "203.0.113.9/32",
		"::ffff:203.0.113.9":   "203.0.113.9/32",
		"45.95.147.0/24":       "45.95.147.0/24",
		"2001:db8:1:2::/64":    "2001:db8:1:2::/64",
		"2001:db8:1:2:3::1":    "2001:db8:1:2:3::1/128",
		"45.95.147.200/24":     "45.95.147.0/24",
		"2001:db8:1:2:3::1/64": "2001:db8:1:2::/64",
	} {
		p, err := parseSourcePrefix(in)
		require.NoError(t, err, in)
		require.Equal(t, want, p.String(), in)
	}
	_, err = parseSourcePrefix("not an address")
	require.Error(t, err)
}

func TestScaleConfigValidate(t *testing.T) {
	require.NoError(t, DefaultConfig.Validate())
	c := DefaultConfig
	c.Prefix = "bad prefix"
	c.Partitions = -1
	c.FlagsPartitions = 0
	c.ReplicationFactor = 0
	c.SnapshotInterval = 0
	c.IdleTimeout = time.Millisecond
	c.MaxBuffered = 0
	err := c.Validate()
	require.Error(t, err)
	for _, key := range []string{"scale_out.prefix", "scale_out.partitions", "scale_out.flags_partitions",
		"scale_out.replication_factor", "scale_out.snapshot_interval", "scale_out.idle_timeout", "scale_out.max_buffered"} {
		require.ErrorContains(t, err, key)
	}
	names := DefaultConfig.Topics("shopguard")
	require.Equal(t, Topics{ByAccount: "shopguard-by-account", BySource: "shopguard-by-source",
		Flags: "shopguard-source-flags", Changelog: "shopguard-changelog", RepartitionGroup: "shopguard",
		SourceGroup: "shopguard-source", AccountGroup: "shopguard-account"}, names)
}

type nopSink struct{}

func (nopSink) Send(context.Context, ...shopguard.Finding) error { return nil }

// TestScaleSnapshotSlots: against a broker, the newest whole snapshot
// wins; one cut short by a crash leaves the one before it usable, and a
// later snapshot in the same slot with fewer chunks is not mixed up with
// the leftovers of an older one.
func TestScaleSnapshotSlots(t *testing.T) {
	c := kafkatest.New(t, map[string]int32{"admin-audit": 2})
	kc := kafka.DefaultConfig
	kc.Brokers = c.Addrs()
	kc.MaxRetries = 3
	s, err := New(kc, DefaultConfig, Options{
		NewEngine:  func(string) (Engine, error) { return nil, nil },
		Sink:       nopSink{},
		IPv4Prefix: 24, IPv6Prefix: 64,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.setup(ctx))
	require.Equal(t, 2, s.nAccount, "internal topics get the audit topic's partition count")
	require.Equal(t, 1, s.nFlags)
	defer s.w.Close()

	state := func(next int64, engineBytes int) *taskState {
		return &taskState{next: next, order: newScaleOrder(2), engine: make([]byte, engineBytes)}
	}
	st, _, unusable, err := s.loadSnapshot(ctx, StageSource, 1)
	require.NoError(t, err)
	require.Nil(t, st)
	require.False(t, unusable)

	require.NoError(t, s.saveSnapshot(ctx, StageSource, 1, 1, state(10, 1_500_000))) // slot 1, 3 chunks
	require.NoError(t, s.saveSnapshot(ctx, StageSource, 1, 2, state(20, 10)))        // slot 0
	require.NoError(t, s.saveSnapshot(ctx, StageAccount, 1, 7, state(99, 10)))       // another stage
	st, seq, _, err := s.loadSnapshot(ctx, StageSource, 1)
	require.NoError(t, err)
	require.Equal(t, uint64(2), seq)
	require.Equal(t, int64(20), st.next)

	// Snapshot 3 goes to slot 1 with one chunk; chunks 1 and 2 of
	// snapshot 1 are still there.
	require.NoError(t, s.saveSnapshot(ctx, StageSource, 1, 3, state(30, 10)))
	st, seq, _, err = s.loadSnapshot(ctx, StageSource, 1)
	require.NoError(t, err)
	require.Equal(t, uint64(3), seq)
	require.Equal(t, int64(30), st.next)

	// Snapshot 4 (slot 0) is cut short after its first chunk of three.
	msgs := chunkMessages(StageSource, 1, 4, encodeTask(state(40, 1_500_000)))
	msgs = msgs[:1]
	msgs[0].Topic, msgs[0].WriterData = s.names.Changelog, 1%s.nChangelog
	require.NoError(t, s.write(ctx, msgs))
	st, seq, _, err = s.loadSnapshot(ctx, StageSource, 1)
	require.NoError(t, err)
	require.Equal(t, uint64(3), seq, "the one before the torn snapshot")
	require.Equal(t, int64(30), st.next)

	// Compaction keeps the latest record per key, which is what
	// loadSnapshot reads as well.
	before := len(c.ReadAll(t, s.names.Changelog))
	c.Compact()
	require.Less(t, len(c.ReadAll(t, s.names.Changelog)), before, "the changelog is compacted")
	st, seq, _, err = s.loadSnapshot(ctx, StageSource, 1)
	require.NoError(t, err)
	require.Equal(t, uint64(3), seq)
	require.Equal(t, int64(30), st.next)
}
