package kafkatest_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/kafkatest"
)

func TestProduceAndReadAll(t *testing.T) {
	c := kafkatest.New(t, map[string]int32{"lines": 3, "events": 2})

	c.ProduceLines(t, "lines", 3, "a", "b", "c", "d", "e")
	got := c.ReadAll(t, "lines")
	var vals []string
	var parts []int
	for _, m := range got {
		vals = append(vals, string(m.Value))
		parts = append(parts, m.Partition)
	}
	require.Equal(t, []string{"a", "d", "b", "e", "c"}, vals, "ordered by partition, then offset")
	require.Equal(t, []int{0, 0, 1, 1, 2}, parts)

	t0 := time.Date(2026, 1, 7, 9, 30, 0, 123, time.UTC)
	ev := shopguard.Event{Time: t0, ShopID: "shop-1", Actor: "owner@example.jp", Action: shopguard.ActionCustomersExport,
		IP: netip.MustParseAddr("2001:db8::1"), Records: 12, ID: "e1"}
	c.ProduceEvents(t, "events", ev, ev)
	msgs := c.ReadAll(t, "events")
	require.Len(t, msgs, 2)
	require.Equal(t, msgs[0].Partition, msgs[1].Partition, "one account, one partition")
	require.True(t, msgs[0].Time.Equal(t0.Truncate(time.Millisecond)), "record timestamp is the event time, got %v", msgs[0].Time)
	var wire map[string]any
	require.NoError(t, json.Unmarshal(msgs[0].Value, &wire))
	require.Equal(t, map[string]any{"time": "2026-01-07T09:30:00.000000123Z", "shop_id": "shop-1", "actor": "owner@example.jp",
		"action": "customers.export", "ip": "2001:db8::1", "records": 12.0, "id": "e1"}, wire)
}

func TestCommittedAndFaults(t *testing.T) {
	c := kafkatest.New(t, map[string]int32{"t": 2})
	c.ProduceLines(t, "t", 2, "a", "b", "c")
	require.Empty(t, c.Committed(t, "g", "t"))

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Addrs(), GroupID: "g", Topic: "t", MaxWait: 50 * time.Millisecond,
		ReadBackoffMin: 10 * time.Millisecond, ReadBackoffMax: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond, JoinGroupBackoff: 50 * time.Millisecond})
	defer r.Close()

	// A failed fetch surfaces as an error from FetchMessage, and the reader
	// recovers on its own afterwards.
	h := c.Fail(kmsg.Fetch, "t", 1, kerr.UnknownServerError)
	var fetchErr error
	var last []kafka.Message
	for len(last) < 3 {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			require.ErrorIs(t, err, kafka.Unknown)
			fetchErr = err
			continue
		}
		last = append(last, m)
	}
	require.Equal(t, 1, h.Hits())
	require.Error(t, fetchErr)

	// A commit whose connection is cut fails; kafka-go rejoins the group on
	// a new connection and a later commit lands.
	cnt := c.Disconnect(kmsg.OffsetCommit, 1)
	require.Error(t, r.CommitMessages(ctx, last...))
	require.Equal(t, 1, cnt.N())
	require.Eventually(t, func() bool { return r.CommitMessages(ctx, last...) == nil }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, map[int]int64{0: 2, 1: 1}, c.Committed(t, "g", "t"))

	require.NoError(t, r.Close())

	// A dropped request is never answered: the client's deadline ends it,
	// and the next one is served.
	drop := c.Drop(kmsg.Metadata, 1)
	conn, err := kafka.DialContext(ctx, "tcp", c.Addrs()[0])
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(300*time.Millisecond)))
	_, err = conn.ReadPartitions("t")
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Equal(t, 1, drop.N())
	conn2, err := kafka.DialContext(ctx, "tcp", c.Addrs()[0])
	require.NoError(t, err)
	defer conn2.Close()
	ps, err := conn2.ReadPartitions("t")
	require.NoError(t, err)
	require.Len(t, ps, 2)
}
