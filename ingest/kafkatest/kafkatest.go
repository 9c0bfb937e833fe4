// Package kafkatest provides an in-process Kafka cluster and helpers for
// tests of shopguard's Kafka code, in the style of net/http/httptest: start
// a kfake cluster with topics, produce JSONL lines or events into it, read a
// topic back in full, read a group's committed offsets, and inject faults
// into the requests clients send (fail, disconnect or drop Fetch,
// OffsetCommit, Produce and any other request).
//
// It is for tests only: every helper takes a testing.TB and fails the test
// on error. It does not consume through shopguard's own source (package
// ingest imports nothing from here and this package imports nothing from
// ingest), and it is not the embedded broker of `shopguard demo`, which is
// ingest/broker.
package kafkatest

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shopguard/shopguard"
)

// timeout bounds every helper's broker round trips, so that a broken test
// fails instead of hanging.
const timeout = 30 * time.Second

// Cluster is a kfake cluster started for one test. The embedded
// *kfake.Cluster gives direct access to kfake's ControlKey and Fault hooks
// for fault injection beyond the helpers here.
type Cluster struct {
	*kfake.Cluster

	addrs []string

	mu      sync.Mutex
	writers map[string]*kafka.Writer
	sasl    sasl.Mechanism
}

// New starts a single-broker cluster on a free loopback port with the given
// topics (name → partitions) and closes it when the test ends. Extra kfake
// options are applied after shopguard's defaults.
func New(t testing.TB, topics map[string]int32, opts ...kfake.Opt) *Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)
	kc, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kafkatest: start cluster: %v", err)
	}
	c := &Cluster{Cluster: kc, addrs: kc.ListenAddrs(), writers: map[string]*kafka.Writer{}}
	t.Cleanup(c.Close)
	names := make([]string, 0, len(topics))
	for name := range topics {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := kc.CreateTopic(name, topics[name], nil); err != nil {
			t.Fatalf("kafkatest: create topic %q: %v", name, err)
		}
	}
	return c
}

// UseSASL makes the helpers authenticate with m, for a cluster started with
// kfake.EnableSASL. Call it before the first helper.
func (c *Cluster) UseSASL(m sasl.Mechanism) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sasl = m
}

func (c *Cluster) transport() *kafka.Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &kafka.Transport{SASL: c.sasl}
}

func (c *Cluster) dialer() *kafka.Dialer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &kafka.Dialer{Timeout: 10 * time.Second, SASLMechanism: c.sasl}
}

// Addrs returns the bootstrap addresses of the cluster.
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// Close closes the helpers' writers and shuts the cluster down. It is
// idempotent and runs at test cleanup.
func (c *Cluster) Close() {
	c.mu.Lock()
	for _, w := range c.writers {
		_ = w.Close()
	}
	c.writers = map[string]*kafka.Writer{}
	c.mu.Unlock()
	c.Cluster.Close()
}

// toPartition is the WriterData that pins a message to a partition.
type toPartition int

// balancer sends messages pinned with ToPartition there and the rest as
// kafka-go's Hash balancer does.
var balancer = kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
	if p, ok := m.WriterData.(toPartition); ok {
		return int(p)
	}
	return (&kafka.Hash{}).Balance(m, partitions...)
})

// ToPartition pins m to partition p when it is produced by Produce.
func ToPartition(p int, m kafka.Message) kafka.Message {
	m.WriterData = toPartition(p)
	return m
}

func (c *Cluster) writer(topic string) *kafka.Writer {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writers[topic]
	if w == nil {
		w = &kafka.Writer{
			Addr:         kafka.TCP(c.addrs...),
			Topic:        topic,
			Balancer:     balancer,
			BatchSize:    1000,
			BatchBytes:   16 << 20,
			BatchTimeout: time.Millisecond,
			RequiredAcks: kafka.RequireAll,
			Transport:    &kafka.Transport{SASL: c.sasl},
		}
		c.writers[topic] = w
	}
	return w
}

// Produce writes msgs to topic synchronously, keeping their order within
// each partition. Messages wrapped by ToPartition go to that partition,
// others with a key to the partition of its hash, and the rest round-robin.
func (c *Cluster) Produce(t testing.TB, topic string, msgs ...kafka.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// kafka-go's Writer sends one batch per partition concurrently;
	// chunking keeps each chunk's messages in order and the chunks too.
	for len(msgs) > 0 {
		n := min(len(msgs), 1000)
		if err := c.writer(topic).WriteMessages(ctx, msgs[:n]...); err != nil {
			t.Fatalf("kafkatest: produce %d messages to %q: %v", n, topic, err)
		}
		msgs = msgs[n:]
	}
}

// ProduceLines writes each line as one message value to topic, spreading
// them round-robin over its first partitions partitions (1 if
// partitions < 1) so that line i goes to partition i % partitions.
func (c *Cluster) ProduceLines(t testing.TB, topic string, partitions int, lines ...string) {
	t.Helper()
	partitions = max(partitions, 1)
	msgs := make([]kafka.Message, len(lines))
	for i, l := range lines {
		msgs[i] = ToPartition(i%partitions, kafka.Message{Value: []byte(l)})
	}
	c.Produce(t, topic, msgs...)
}

// ProduceEvents writes evs to topic as JSON, keyed by account (shop_id and
// actor, as the README asks producers to key), each with its event time as
// the record timestamp.
func (c *Cluster) ProduceEvents(t testing.TB, topic string, evs ...shopguard.Event) {
	t.Helper()
	c.Produce(t, topic, EventMessages(evs...)...)
}

// EventMessages returns the messages ProduceEvents would write for evs.
func EventMessages(evs ...shopguard.Event) []kafka.Message {
	msgs := make([]kafka.Message, len(evs))
	for i := range evs {
		msgs[i] = kafka.Message{
			Key:   []byte(evs[i].ShopID + "\x00" + evs[i].Actor),
			Value: EncodeEvent(&evs[i]),
			Time:  evs[i].Time,
		}
	}
	return msgs
}

// wireEvent is the JSON form of an event (SPEC §1).
type wireEvent struct {
	Time      string `json:"time"`
	ShopID    string `json:"shop_id"`
	Actor     string `json:"actor"`
	Action    string `json:"action"`
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Records   int64  `json:"records,omitempty"`
	Resource  string `json:"resource,omitempty"`
	ID        string `json:"id,omitempty"`
}

// EncodeEvent returns ev as one line of JSON (without the newline), with
// the time in RFC 3339 with nanoseconds.
func EncodeEvent(ev *shopguard.Event) []byte {
	b, err := json.Marshal(wireEvent{
		Time:      ev.Time.UTC().Format(time.RFC3339Nano),
		ShopID:    ev.ShopID,
		Actor:     ev.Actor,
		Action:    ev.Action.String(),
		IP:        ev.IP.String(),
		UserAgent: ev.UserAgent,
		SessionID: ev.SessionID,
		Reason:    ev.Reason,
		Records:   ev.Records,
		Resource:  ev.Resource,
		ID:        ev.ID,
	})
	if err != nil { // only strings and an int64: cannot happen
		panic(err)
	}
	return b
}

// ReadAll returns every message of topic up to its end at the time of the
// call, ordered by partition and then offset, without joining a group.
func (c *Cluster) ReadAll(t testing.TB, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	info := c.PartitionInfos(topic)
	if info == nil {
		t.Fatalf("kafkatest: read %q: no such topic", topic)
	}
	var out []kafka.Message
	for _, p := range info {
		if p.HighWatermark <= p.LogStartOffset {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:   c.addrs,
			Topic:     topic,
			Partition: int(p.Partition),
			MaxWait:   50 * time.Millisecond,
			Dialer:    c.dialer(),
		})
		if err := r.SetOffset(p.LogStartOffset); err != nil {
			t.Fatalf("kafkatest: read %q/%d: %v", topic, p.Partition, err)
		}
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				_ = r.Close()
				t.Fatalf("kafkatest: read %q/%d: %v", topic, p.Partition, err)
			}
			out = append(out, m)
			if m.Offset+1 >= p.HighWatermark {
				break
			}
		}
		_ = r.Close()
	}
	return out
}

// Committed returns the offsets group has committed on topic, by
// partition, as a client sees them through OffsetFetch. Partitions without
// a commit are absent.
func (c *Cluster) Committed(t testing.TB, group, topic string) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var parts []int
	for _, p := range c.PartitionInfos(topic) {
		parts = append(parts, int(p.Partition))
	}
	cl := &kafka.Client{Addr: kafka.TCP(c.addrs...), Timeout: timeout, Transport: c.transport()}
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err == nil {
		err = resp.Error
	}
	out := map[int]int64{}
	if errors.Is(err, kafka.GroupIdNotFound) { // kfake's answer for a group that never committed
		return out
	}
	if err != nil {
		t.Fatalf("kafkatest: offsets of group %q on %q: %v", group, topic, err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("kafkatest: offset of group %q on %q/%d: %v", group, topic, p.Partition, p.Error)
		}
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out
}

// Header returns the value of the first header of m named key, and whether
// there was one.
func Header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// Fail makes the next n requests of kind key that concern topic (any topic
// if empty) fail with err (kerr.UnknownServerError if nil), answered in
// the response the way a broker answers a per-partition error. n < 0 fails
// them until the handle is removed.
func (c *Cluster) Fail(key kmsg.Key, topic string, n int, err *kerr.Error) *kfake.FaultHandle {
	if n == 0 {
		return nil
	}
	return c.Fault(kfake.Fault{Keys: []kmsg.Key{key}, Topic: topic, Err: err, Count: n})
}

// Counter counts the requests a fault hook intercepted.
type Counter struct {
	mu sync.Mutex
	n  int
}

// N returns how many requests were intercepted so far.
func (c *Counter) N() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Disconnect makes the broker close the client's connection instead of
// answering the next n requests of kind key (n < 0: every one), the way a
// broker crash or a network cut looks to a client.
func (c *Cluster) Disconnect(key kmsg.Key, n int) *Counter {
	return c.intercept(key, n, errors.New("kafkatest: injected disconnect"))
}

// Drop makes the broker read and never answer the next n requests of kind
// key (n < 0: every one), so that the client times out, the way a lost
// packet or a hung broker looks to it.
func (c *Cluster) Drop(key kmsg.Key, n int) *Counter {
	return c.intercept(key, n, nil)
}

func (c *Cluster) intercept(key kmsg.Key, n int, err error) *Counter {
	cnt := &Counter{}
	if n == 0 {
		return cnt
	}
	c.ControlKey(key.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		cnt.mu.Lock()
		defer cnt.mu.Unlock()
		cnt.n++
		// A kept control stays kept: keep it, and drop it explicitly once
		// the n-th request was intercepted.
		c.KeepControl()
		if n >= 0 && cnt.n >= n {
			c.DropControl()
		}
		return nil, err, true
	})
	return cnt
}
