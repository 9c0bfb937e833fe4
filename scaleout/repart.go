package scaleout

import (
	"context"
	"errors"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
)

// repartition re-keys one partition of the audit topic into the
// repartition topics until ctx is done (the partition was revoked or the
// instance stops).
//
// Its position is the group's committed offset, and the stream time up to
// it is the commit's metadata, so that whoever takes the partition over
// gives every event the key it had before: the receivers rely on that to
// drop what is written twice.
func (s *Runtime) repartition(ctx context.Context, gen *kafkago.Generation, part int) {
	topic := s.kc.Topic
	log := s.log.With("stage", StageRepartition, "topic", topic, "partition", part)
	next, meta, err := s.committed(ctx, gen.GroupID, topic, part)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("no committed offset; giving the partition up", "err", err)
		}
		return
	}
	// st is the stream time, the newest event time read so far; stNext is
	// what it was after the event before next, which commits record.
	var st, stNext int64
	if next >= 0 && meta != "" {
		if st, err = strconv.ParseInt(meta, 10, 64); err != nil {
			log.Warn("committed stream time unreadable; starting from zero", "metadata", meta)
			st = 0
		}
	}
	stNext = st
	if next < 0 {
		if next, err = s.listOffset(ctx, topic, part, s.kc.StartOffset == kafka.StartLatest); err != nil {
			if ctx.Err() == nil {
				log.Error("no start offset; giving the partition up", "err", err)
			}
			return
		}
	}
	r := s.partitionReader(topic, part)
	defer r.Close()
	if err := r.SetOffset(next); err != nil {
		log.Error("seek", "offset", next, "err", err)
		return
	}
	committed := next
	lastCommit := time.Now()
	commit := func(ctx context.Context) {
		if next == committed {
			return
		}
		if err := s.commit(ctx, gen, topic, part, next, strconv.FormatInt(stNext, 10)); err != nil {
			log.Warn("commit did not succeed; a successor writes again what followed the last commit", "err", err)
			return
		}
		committed, lastCommit = next, time.Now()
	}
	defer func() {
		fctx, cancel := s.finalContext()
		defer cancel()
		commit(fctx)
	}()
	lag := s.opts.Kafka.Lag(part)
	// hb appends a heartbeat to every partition of both topics: everything
	// below (st, part, upTo) has been written.
	hb := func(dst []kafkago.Message, upTo int64, idle bool) []kafkago.Message {
		h := []kafkago.Header{heartbeatHeader(scaleKey{T: st, P: int32(part), Off: upTo}, idle)}
		for q := range s.nAccount {
			dst = append(dst, kafkago.Message{Topic: s.names.ByAccount, Headers: h, WriterData: q})
		}
		for q := range s.nSource {
			dst = append(dst, kafkago.Message{Topic: s.names.BySource, Headers: h, WriterData: q})
		}
		return dst
	}
	// Announce the position at once, so that the stages hear from every
	// input partition even before it has anything to say.
	if s.write(ctx, hb(nil, next, false)) != nil {
		return
	}
	forwarded := s.opts.Scale.events.WithLabelValues(StageRepartition)
	idle := false
	var (
		msgs, out []kafkago.Message
		evs       []shopguard.Event
	)
	for {
		msgs, err = s.fetchBatch(ctx, r, s.sc.IdleTimeout, msgs[:0])
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// Nothing for IdleTimeout: declare the partition idle if it
			// really has been read to its end.
			if !idle {
				end, lerr := s.listOffset(ctx, topic, part, true)
				if lerr == nil && next >= end {
					if s.write(ctx, hb(nil, next, true)) != nil {
						return
					}
					idle = true
					lag.Set(0)
					commit(ctx)
				}
			}
			continue
		}
		if err != nil {
			s.opts.Kafka.FetchError()
			log.Warn("fetch did not succeed; retrying", "err", err)
			if kafka.Sleep(ctx, s.kc.RetryBackoff) != nil {
				return
			}
			continue
		}
		idle = false
		out, evs = out[:0], evs[:0]
		for i := range msgs {
			m := &msgs[i]
			s.opts.Kafka.Message()
			evs = append(evs, shopguard.Event{})
			ev := &evs[len(evs)-1]
			value := m.Value
			if s.opts.Decode == nil {
				if err := ingest.Decode(value, ev); err != nil {
					evs = evs[:len(evs)-1]
					s.reject(ctx, m, err)
					continue
				}
			} else {
				if err := s.opts.Decode(value, ev); err != nil {
					evs = evs[:len(evs)-1]
					if errors.Is(err, ingest.ErrUnmatched) {
						s.opts.Metrics.Unmatched(1)
					} else {
						s.reject(ctx, m, err)
					}
					continue
				}
				// The stages read the native format.
				value = ingest.AppendJSON(nil, ev)
			}
			st = max(st, ev.Time.UnixNano())
			h := []kafkago.Header{eventHeader(scaleKey{T: st, P: int32(part), Off: m.Offset})}
			key := make([]byte, 0, len(ev.ShopID)+1+len(ev.Actor))
			key = append(append(append(key, ev.ShopID...), 0), ev.Actor...)
			own := partitionOf(key, s.nAccount)
			out = append(out, kafkago.Message{Topic: s.names.ByAccount, Key: key, Value: value, Headers: h,
				Time: m.Time, WriterData: own})
			if ev.Action == shopguard.ActionLoginFailure && s.opts.FollowFailures {
				// Every account task follows every failed login.
				for q := range s.nAccount {
					if q != own {
						out = append(out, kafkago.Message{Topic: s.names.ByAccount, Key: key, Value: value, Headers: h,
							Time: m.Time, WriterData: q})
					}
				}
			}
			if ev.Action == shopguard.ActionLoginFailure {
				sk := s.sourceKey(ev.IP)
				out = append(out, kafkago.Message{Topic: s.names.BySource, Key: sk, Value: value, Headers: h,
					Time: m.Time, WriterData: partitionOf(sk, s.nSource)})
			}
		}
		last := &msgs[len(msgs)-1]
		out = hb(out, last.Offset+1, false)
		if s.write(ctx, out) != nil {
			return // not committed: a successor writes it again, with the same keys
		}
		next, stNext = last.Offset+1, st
		s.opts.Metrics.ReadEvents(evs)
		forwarded.Add(float64(len(evs)))
		lag.Set(float64(max(last.HighWaterMark-next, 0)))
		if time.Since(lastCommit) >= s.kc.CommitInterval {
			commit(ctx)
		}
	}
}

// reject hands an invalid audit message to Rejects, naming it
// topic/partition/offset; it is skipped like in the single-process source.
func (s *Runtime) reject(ctx context.Context, m *kafkago.Message, err error) {
	var derr *ingest.DecodeError
	if !errors.As(err, &derr) {
		derr = &ingest.DecodeError{Reason: ingest.ReasonNotJSON, Msg: err.Error()}
	}
	pos := m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
	if rerr := s.opts.Rejects.Reject(context.WithoutCancel(ctx), pos, m.Value, derr); rerr != nil {
		s.log.Debug("invalid message not dead-lettered; skipped anyway", "pos", pos, "err", rerr)
	}
}
