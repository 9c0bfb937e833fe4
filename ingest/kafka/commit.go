package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// errCommitsFailing marks a Run stopped because commits kept failing.
var errCommitsFailing = errors.New("kafka source: offset commits keep failing")

// commitLoop commits acknowledged offsets in the background, at most once
// per CommitInterval, backing off after errors, until Close.
func (s *Source) commitLoop() {
	defer close(s.commitDone)
	fails := 0
	for {
		select {
		case <-s.bg.Done():
			return
		case <-s.acks.wake:
		}
		// A commit can wait for a rebalance to finish; bound it, and let
		// Close cut it short (Close commits again itself).
		ctx, cancel := context.WithTimeout(s.bg, s.cfg.SessionTimeout)
		err := s.commit(ctx)
		cancel()
		if s.bg.Err() != nil {
			return
		}
		wait := s.cfg.CommitInterval
		if err != nil {
			fails++
			if fails > s.cfg.MaxRetries {
				s.acks.fatal(fmt.Errorf("%w: %d attempts: %w", errCommitsFailing, fails, err))
			}
			wait = max(wait, s.cfg.Backoff(fails))
			s.log.Warn("kafka offset commit did not succeed; retrying", "attempt", fails, "retry_in", wait, "err", err)
			s.acks.poke()
		} else {
			fails = 0
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.bg.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// commit commits the acknowledged offsets not yet committed.
func (s *Source) commit(ctx context.Context) error { return s.commitTo(ctx, nil) }

// commitTo commits the acknowledged offsets not yet committed, capped by
// upTo unless it is nil.
func (s *Source) commitTo(ctx context.Context, upTo map[int]int64) error {
	s.acks.commitMu.Lock() // one commit at a time keeps them in order
	defer s.acks.commitMu.Unlock()
	msgs := s.acks.toCommit(upTo)
	if len(msgs) == 0 {
		return nil
	}
	if err := s.r.CommitMessages(ctx, msgs...); err != nil {
		s.opts.Kafka.commitErrors.Inc()
		return fmt.Errorf("commit offsets of %s: %w", s.cfg.Topic, err)
	}
	s.opts.Kafka.commits.Inc()
	s.acks.committed(msgs)
	return nil
}

// acks tracks batches from fetch to commit. Batches are acknowledged (made
// committable) strictly in fetch order: a batch whose Done came early
// waits for the batches before it.
type acks struct {
	commitMu sync.Mutex // serialises commits

	mu     sync.Mutex
	topic  string
	queue  []*ack                  // fetched, not yet acknowledged, in fetch order
	ready  map[int]kafkago.Message // acknowledged, not committed: last message by partition
	next   map[int]int64           // committed: next offset by partition
	onFail func(error)             // stops the active Run
	wake   chan struct{}           // poked when there may be something to commit
}

// ack is one batch's commit range.
type ack struct {
	parts []partPos
	done  bool
}

func (a *acks) init(topic string) {
	a.topic = topic
	a.ready = map[int]kafkago.Message{}
	a.next = map[int]int64{}
	a.wake = make(chan struct{}, 1)
}

func (a *acks) push(parts []partPos) *ack {
	x := &ack{parts: parts}
	a.mu.Lock()
	a.queue = append(a.queue, x)
	a.mu.Unlock()
	return x
}

// done marks x acknowledged and moves every acknowledged batch at the head
// of the queue into ready.
func (a *acks) done(x *ack) {
	a.mu.Lock()
	x.done = true
	n := 0
	for n < len(a.queue) && a.queue[n].done {
		for _, p := range a.queue[n].parts {
			if prev, ok := a.ready[p.partition]; !ok || p.offset > prev.Offset {
				a.ready[p.partition] = kafkago.Message{Topic: a.topic, Partition: p.partition, Offset: p.offset}
			}
		}
		a.queue[n] = nil
		n++
	}
	a.queue = a.queue[n:]
	a.mu.Unlock()
	if n > 0 {
		a.poke()
	}
}

func (a *acks) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// toCommit returns the ready offsets that move a partition forward, capped
// by upTo (the next offset, by partition) unless it is nil.
func (a *acks) toCommit(upTo map[int]int64) []kafkago.Message {
	a.mu.Lock()
	defer a.mu.Unlock()
	var msgs []kafkago.Message
	for p, m := range a.ready {
		next, done := a.next[p]
		if done && m.Offset+1 <= next {
			delete(a.ready, p) // already covered, e.g. redelivered after a rebalance
			continue
		}
		if upTo != nil {
			limit, ok := upTo[p]
			if !ok {
				continue
			}
			// Beyond the cap stays ready for a later commit.
			if m.Offset = min(m.Offset, limit-1); m.Offset < 0 || (done && m.Offset+1 <= next) {
				continue
			}
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// committed records msgs as committed, keeping newer ready offsets.
func (a *acks) committed(msgs []kafkago.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range msgs {
		a.next[m.Partition] = max(a.next[m.Partition], m.Offset+1)
		if r, ok := a.ready[m.Partition]; ok && r.Offset <= m.Offset {
			delete(a.ready, m.Partition)
		}
	}
}

func (a *acks) acknowledged() map[int]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[int]int64, len(a.next)+len(a.ready))
	for p, next := range a.next {
		out[p] = next
	}
	for p, m := range a.ready {
		out[p] = max(out[p], m.Offset+1)
	}
	return out
}

func (a *acks) pendingString() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var b strings.Builder
	for p, m := range a.ready {
		fmt.Fprintf(&b, "%d:%d ", p, m.Offset+1)
	}
	return strings.TrimSpace(b.String())
}

// onFatal routes a persistent commit failure to cancel while Run is active.
func (a *acks) onFatal(cancel context.CancelCauseFunc) (stop func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onFail = func(err error) { cancel(err) }
	return func() {
		a.mu.Lock()
		a.onFail = nil
		a.mu.Unlock()
	}
}

func (a *acks) fatal(err error) {
	a.mu.Lock()
	f := a.onFail
	a.mu.Unlock()
	if f != nil {
		f(err)
	}
}
