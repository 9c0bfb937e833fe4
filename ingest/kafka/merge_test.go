package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

var mergeT0 = time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)

// scripted is a Source whose messages come from a channel instead of a
// broker, so that a test decides which partition delivers what, when, and
// how far behind it is.
type scripted struct {
	s   *Source
	in  chan kafkago.Message
	out chan shopguard.Batch
	ctx context.Context
}

func newScripted(t *testing.T, lateness time.Duration) *scripted {
	return newScriptedOut(t, lateness, 100)
}

// newScriptedOut is newScripted with out holding outCap batches.
func newScriptedOut(t *testing.T, lateness time.Duration, outCap int) *scripted {
	cfg := DefaultConfig
	cfg.Topic, cfg.Lateness, cfg.BatchSize, cfg.BatchLinger = "admin-audit", lateness, 100, time.Millisecond
	opts := SourceOptions{}
	opts.fill()
	s := &Source{cfg: cfg, opts: opts, log: opts.Logger, lagGauges: nil, commitDone: make(chan struct{})}
	s.acks.init(cfg.Topic)
	s.merge = newMerger(cfg, opts.Kafka)
	sc := &scripted{s: s, in: make(chan kafkago.Message, 100), out: make(chan shopguard.Batch, outCap)}
	s.fetch = func(ctx context.Context) (kafkago.Message, error) {
		select {
		case m := <-sc.in:
			return m, nil
		case <-ctx.Done():
			return kafkago.Message{}, ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc.ctx = ctx
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, sc.out) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return sc
}

// send delivers an event of partition p at offset off, with event time
// t0+sec and hwm the partition's high water mark.
func (sc *scripted) send(p int, off, hwm int64, sec int) {
	v := fmt.Sprintf(`{"time":%q,"shop_id":"s","actor":"a%d","action":"login.failure","ip":"192.0.2.1","id":"p%d-%d"}`,
		mergeT0.Add(time.Duration(sec)*time.Second).Format(time.RFC3339), p, p, off)
	sc.in <- kafkago.Message{Topic: "admin-audit", Partition: p, Offset: off, HighWaterMark: hwm, Value: []byte(v)}
}

// ids receives batches until n events came, acknowledging each, and
// returns their ids and when the last came.
func (sc *scripted) ids(t *testing.T, n int) ([]string, time.Time) {
	t.Helper()
	var ids []string
	for len(ids) < n {
		select {
		case b := <-sc.out:
			for _, ev := range b.Events {
				ids = append(ids, ev.ID)
			}
			b.Done()
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v of %d events came", ids, n)
		}
	}
	return ids, time.Now()
}

func (sc *scripted) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case b := <-sc.out:
		t.Fatalf("events came early: %d", len(b.Events))
	case <-time.After(within):
	}
}

// TestMergeOrdersPartitionsByEventTime: partitions that are behind and
// deliver their messages in chunks come out in event time order.
func TestMergeOrdersPartitionsByEventTime(t *testing.T) {
	sc := newScripted(t, time.Hour) // no partition stalls
	sc.s.merge.grace = 200 * time.Millisecond
	// p0 first, all of its chunk, then p1; both far behind.
	for i := range 3 {
		sc.send(0, int64(i), 100, 2*i+1) // 1, 3, 5
	}
	for i := range 3 {
		sc.send(1, int64(i), 100, 2*i+2) // 2, 4, 6
	}
	// Released up to the frontier: p0's stream time 5 and p1's 6 promise
	// nothing below 5, so 1..5 go (after the start-up wait), 6 waits.
	ids, _ := sc.ids(t, 5)
	require.Equal(t, []string{"p0-0", "p1-0", "p0-1", "p1-1", "p0-2"}, ids)
	sc.send(0, 3, 100, 7)
	ids, _ = sc.ids(t, 1)
	require.Equal(t, []string{"p1-2"}, ids)
}

// TestMergeStalledPartitionDelaysByLateness: a partition behind that
// stops delivering holds the others back for the lateness, not longer;
// one read to its end holds nothing back.
func TestMergeStalledPartitionDelaysByLateness(t *testing.T) {
	const lateness = 400 * time.Millisecond
	for _, c := range []struct {
		name    string
		hwm     int64 // p1's high water mark with its last message
		minWait time.Duration
		maxWait time.Duration
	}{
		{"stalled", 50, lateness - 50*time.Millisecond, lateness + 250*time.Millisecond},
		{"idle", 2, 0, 150 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			sc := newScripted(t, lateness)
			sc.s.merge.grace = 0
			sc.send(0, 0, 50, 1)
			sc.send(1, 0, 50, 2)
			sc.ids(t, 2) // p1-0 once p0 stalled
			start := time.Now()
			sc.send(1, 1, c.hwm, 3)
			sc.send(0, 1, 50, 10)
			sc.send(0, 2, 50, 11)
			// p1-1 goes at once; p0's wait for p1 unless it is idle.
			ids, at := sc.ids(t, 3)
			require.Equal(t, []string{"p1-1", "p0-1", "p0-2"}, ids)
			require.GreaterOrEqual(t, at.Sub(start), c.minWait)
			require.Less(t, at.Sub(start), c.maxWait)
		})
	}
}

// TestMergeBusyEngineIsNoStall: while the engine does not take a batch,
// nothing is fetched, and that time does not make the partitions behind
// stalled.
func TestMergeBusyEngineIsNoStall(t *testing.T) {
	const lateness = 300 * time.Millisecond
	sc := newScriptedOut(t, lateness, 0)
	sc.s.merge.grace = 0
	sc.send(0, 0, 50, 1)
	sc.send(1, 0, 50, 2)
	time.Sleep(2 * lateness) // the engine is busy: p0-0 waits to be taken
	ids, _ := sc.ids(t, 1)
	require.Equal(t, []string{"p0-0"}, ids)
	sc.send(0, 1, 50, 3)
	ids, _ = sc.ids(t, 1)
	require.Equal(t, []string{"p1-0"}, ids, "p0-1 still waits for p1")
	sc.none(t, lateness/2)
}

// TestMergeCommitsOnlyWhatWasProcessed: the committable position of a
// partition never passes its events still waiting; a message that is not
// an event is committable once nothing waits before it.
func TestMergeCommitsOnlyWhatWasProcessed(t *testing.T) {
	sc := newScripted(t, time.Hour) // p0 never stalls
	sc.s.merge.grace = 0
	sc.send(0, 0, 50, 1)
	sc.send(1, 0, 50, 5)
	sc.send(1, 1, 50, 6)
	ids, _ := sc.ids(t, 1) // p0-0 goes; p1's events wait for p0 (stream time 1)
	require.Equal(t, []string{"p0-0"}, ids)
	require.Eventually(t, func() bool {
		a := sc.s.Acknowledged()
		return a[0] == 1 && a[1] == 0
	}, 2*time.Second, 10*time.Millisecond, "p1 is committable before its waiting events only: %v", sc.s.Acknowledged())
	sc.in <- kafkago.Message{Topic: "admin-audit", Partition: 0, Offset: 1, HighWaterMark: 50, Value: []byte("<html>")}
	require.Eventually(t, func() bool { return sc.s.Acknowledged()[0] == 2 }, 2*time.Second, 10*time.Millisecond,
		"the invalid message is committable: %v", sc.s.Acknowledged())
	sc.none(t, 100*time.Millisecond)
}

// TestMergeMaxBuffered: beyond max_buffered the oldest events go on
// without waiting for the partition behind.
func TestMergeMaxBuffered(t *testing.T) {
	sc := newScripted(t, time.Hour)
	sc.s.merge.max = 3
	sc.send(1, 0, 50, 0) // p1 behind, never again
	for i := range 6 {
		sc.send(0, int64(i), 50, i+1)
	}
	// Within the start-up wait nothing goes unless forced: the buffer
	// holds 7, so the oldest 4 go.
	ids, _ := sc.ids(t, 4)
	require.Equal(t, []string{"p1-0", "p0-0", "p0-1", "p0-2"}, ids)
	sc.none(t, 100*time.Millisecond)
}
