package alert

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// orderSink records into a shared log which sink was called.
type orderSink struct {
	name   string
	calls  *[]string
	err    error
	closed bool
}

func (s *orderSink) Send(_ context.Context, fs ...shopguard.Finding) error {
	*s.calls = append(*s.calls, s.name)
	return s.err
}

func (s *orderSink) Close() error {
	s.closed = true
	return s.err
}

func TestFanoutRecordsFirstThenNotifications(t *testing.T) {
	var calls []string
	file := &orderSink{name: "file", calls: &calls}
	kafka := &orderSink{name: "kafka", calls: &calls}
	am := &orderSink{name: "alertmanager", calls: &calls}
	f := NewFanout([]shopguard.Sink{file, kafka}, []shopguard.Sink{am})

	require.NoError(t, f.Send(t.Context(), travelFinding("a")))
	require.Equal(t, []string{"file", "kafka", "alertmanager"}, calls)

	calls = nil
	require.NoError(t, f.Send(t.Context()))
	require.Empty(t, calls, "nothing to send, nothing called")

	// A record sink that gives up stops the rest: no notification about a
	// finding the records do not hold, and the error reaches the caller so
	// the source does not commit.
	down := errors.New("kafka sink: produce: context canceled")
	kafka.err = down
	require.ErrorIs(t, f.Send(t.Context(), travelFinding("b")), down)
	require.Equal(t, []string{"file", "kafka"}, calls)

	require.ErrorIs(t, f.Close(), down)
	require.True(t, file.closed)
	require.True(t, kafka.closed)
	require.True(t, am.closed)
}

func TestFanoutRunBlocksAndFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// With nothing to run, Run still lasts until ctx is done, as an
		// oklog/run actor must.
		ctx, cancel := context.WithCancel(t.Context())
		returned := make(chan error)
		go func() { returned <- NewFanout(nil, nil).Run(ctx) }()
		time.Sleep(time.Hour)
		select {
		case <-returned:
			t.Fatal("Run returned before its context was done")
		default:
		}
		cancel()
		require.NoError(t, <-returned)

		// With a notification sink behind a pseudonymizer, Run reaches the
		// sink's loop, and a Send right before shutdown is flushed.
		am := newFakeAM(t)
		sink := newInProcessAM(t, am, nil, nil)
		p, err := NewPseudonymizer(sink, []byte(testKey))
		require.NoError(t, err)
		fan := NewFanout(nil, []shopguard.Sink{p})
		ctx, cancel = context.WithCancel(t.Context())
		go func() { returned <- fan.Run(ctx) }()
		require.NoError(t, fan.Send(ctx, travelFinding("last")))
		cancel()
		require.NoError(t, <-returned)
		require.Len(t, am.allPosts(), 1)
		require.Equal(t, p.Pseudonym("shop-17", "owner@example.jp"), am.allPosts()[0][0].Labels["actor"])
	})
}
