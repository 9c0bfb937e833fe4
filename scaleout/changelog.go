package scaleout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	kafkago "github.com/segmentio/kafka-go"
)

// saveSnapshot writes the task's state as snapshot number seq to the
// changelog and returns once it is acknowledged.
func (s *Runtime) saveSnapshot(ctx context.Context, stage string, part int, seq uint64, st *taskState) error {
	data := encodeTask(st)
	msgs := chunkMessages(stage, part, seq, data)
	cp := part % s.nChangelog
	for i := range msgs {
		msgs[i].Topic = s.names.Changelog
		msgs[i].WriterData = cp
	}
	if err := s.write(ctx, msgs); err != nil {
		return fmt.Errorf("write snapshot %d of %s/%d (%d bytes): %w", seq, stage, part, len(data), err)
	}
	return nil
}

// loadSnapshot reads the newest whole snapshot of the task from the
// changelog. It returns a nil state if there is none; unusable reports
// that there were snapshot records but none could be used.
func (s *Runtime) loadSnapshot(ctx context.Context, stage string, part int) (st *taskState, seq uint64, unusable bool, err error) {
	prefix := chunkKeyPrefix(stage, part)
	latest := map[string]chunk{} // by key: what compaction would keep
	var bad int
	err = s.readPartition(ctx, s.names.Changelog, part%s.nChangelog, func(key, value []byte) {
		if !strings.HasPrefix(string(key), prefix) {
			return
		}
		c, perr := parseChunk(value)
		if perr != nil {
			bad++
			return
		}
		latest[string(key)] = c
	})
	if err != nil {
		return nil, 0, false, err
	}
	if len(latest) == 0 {
		return nil, 0, bad > 0, nil
	}
	// Group by snapshot (number, checksum, chunk count): a rewritten slot
	// may still hold chunks of an older snapshot beyond the new one's.
	type id struct {
		seq uint64
		sum uint32
		n   uint32
	}
	groups := map[id][]chunk{}
	for _, c := range latest {
		k := id{c.seq, c.sum, c.n}
		groups[k] = append(groups[k], c)
	}
	ids := make([]id, 0, len(groups))
	for k := range groups {
		ids = append(ids, k)
	}
	slices.SortFunc(ids, func(a, b id) int { return -cmpUint(a.seq, b.seq) })
	for _, k := range ids {
		cs := groups[k]
		slices.SortFunc(cs, func(a, b chunk) int { return cmpUint(uint64(a.idx), uint64(b.idx)) })
		data, aerr := assemble(cs)
		if aerr != nil {
			continue // cut short by a crash: try the one before
		}
		st, derr := decodeTask(data)
		if derr != nil {
			s.log.Warn("snapshot unreadable; trying an older one", "stage", stage, "partition", part, "seq", k.seq, "err", derr)
			continue
		}
		return st, k.seq, false, nil
	}
	return nil, 0, true, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readPartition calls fn for every record of topic/part from its start to
// the end it has when readPartition begins. Gaps left by compaction are
// skipped.
func (s *Runtime) readPartition(ctx context.Context, topic string, part int, fn func(key, value []byte)) error {
	end, err := s.listOffset(ctx, topic, part, true)
	if err != nil {
		return err
	}
	off, err := s.listOffset(ctx, topic, part, false)
	if err != nil {
		return err
	}
	for off < end {
		var got bool
		err := s.retry(ctx, "read "+topic, func() error {
			resp, err := s.client.Fetch(ctx, &kafkago.FetchRequest{
				Topic: topic, Partition: part, Offset: off,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: s.kc.MaxWait,
				IsolationLevel: kafkago.ReadCommitted,
			})
			if err != nil {
				return err
			}
			if resp.Error != nil {
				return resp.Error
			}
			if resp.Records == nil {
				return nil
			}
			for {
				rec, err := resp.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if rec.Offset < off {
					continue // a batch may start before the offset asked for
				}
				if rec.Offset >= end {
					off = end
					return nil
				}
				key, kerr := kafkago.ReadAll(rec.Key)
				value, verr := kafkago.ReadAll(rec.Value)
				if kerr != nil || verr != nil {
					return errors.Join(kerr, verr)
				}
				fn(key, value)
				off, got = rec.Offset+1, true
			}
		})
		if err != nil {
			return fmt.Errorf("read %s/%d at %d: %w", topic, part, off, err)
		}
		if !got {
			break // nothing more below end: compacted away
		}
	}
	return nil
}

// restoreEngine fills a fresh engine from a snapshot's engine part. It
// returns an error if the snapshot cannot be used with this engine.
func restoreEngine(eng Engine, snap []byte) error {
	sn, ok := eng.(Snapshotter)
	if !ok {
		return errors.New("the engine cannot restore snapshots")
	}
	return sn.Restore(bytes.NewReader(snap))
}
