package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// RewindGroup makes cfg.Group resume cfg.Topic at offsets (by partition,
// the next offset to read; a restored checkpoint's) wherever the group's
// committed offset is ahead of them or missing, so that the events between
// are read again and processed with the restored state instead of being
// skipped. Partitions committed at or before offsets are left alone: the
// source's SourceOptions.Processed skips what the state already holds.
// It returns the partitions it set back, with the offsets committed before.
//
// Call it before NewSource. It commits outside any group generation,
// which Kafka accepts only while the group has no members, so it waits
// (at most SessionTimeout plus RebalanceTimeout) for the members of a
// killed process to time out. With live members elsewhere (another
// instance in the same group) it gives up with an error after that wait;
// the group then resumes from its committed offsets.
func RewindGroup(ctx context.Context, cfg Config, offsets map[int]int64, log *slog.Logger) (map[int]int64, error) {
	if len(offsets) == 0 {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr, err := cfg.Transport("kafka")
	if err != nil {
		return nil, err
	}
	cl := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: tr, Timeout: cfg.DialTimeout + cfg.MaxWait}
	parts := slices.Sorted(maps.Keys(offsets))
	var waitUntil time.Time // set at the first answer that the group has members
	for attempt := 1; ; attempt++ {
		ahead, err := groupAhead(ctx, cl, cfg, parts, offsets)
		if err == nil && len(ahead) == 0 {
			return nil, nil
		}
		if err == nil {
			err = commitOutsideGroup(ctx, cl, cfg, offsets, ahead)
			if err == nil {
				log.Info("committed offsets set back to the checkpoint's; the events between are processed again with the restored state",
					"topic", cfg.Topic, "group", cfg.Group, "committed_before", ahead, "checkpoint", offsets)
				return ahead, nil
			}
		}
		members := errors.Is(err, kafkago.UnknownMemberId) || errors.Is(err, kafkago.IllegalGeneration) || errors.Is(err, kafkago.RebalanceInProgress)
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("rewind group %s on %s: %w", cfg.Group, cfg.Topic, ctx.Err())
		case members && waitUntil.IsZero():
			waitUntil = time.Now().Add(cfg.SessionTimeout + cfg.RebalanceTimeout)
			log.Warn("committed offsets are ahead of the checkpoint but the group still has members (a killed process's session has not timed out yet); waiting to set them back",
				"topic", cfg.Topic, "group", cfg.Group, "wait_at_most", cfg.SessionTimeout+cfg.RebalanceTimeout)
		case members && time.Now().After(waitUntil):
			return nil, fmt.Errorf("rewind group %s on %s: the group kept members for %s: %w", cfg.Group, cfg.Topic, cfg.SessionTimeout+cfg.RebalanceTimeout, err)
		case !members && attempt > cfg.MaxRetries:
			return nil, fmt.Errorf("rewind group %s on %s (%d attempts): %w", cfg.Group, cfg.Topic, attempt, err)
		}
		t := time.NewTimer(cfg.Backoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// groupAhead returns the partitions of parts whose committed offset is
// ahead of offsets, or missing (-1), with that committed offset.
func groupAhead(ctx context.Context, cl *kafkago.Client, cfg Config, parts []int, offsets map[int]int64) (map[int]int64, error) {
	resp, err := cl.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: cfg.Group, Topics: map[string][]int{cfg.Topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets: %w", err)
	}
	committed := map[int]int64{}
	if resp.Error != nil && !errors.Is(resp.Error, kafkago.GroupIdNotFound) {
		return nil, fmt.Errorf("fetch committed offsets: %w", resp.Error)
	}
	for _, p := range resp.Topics[cfg.Topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("fetch committed offset of partition %d: %w", p.Partition, p.Error)
		}
		committed[p.Partition] = p.CommittedOffset
	}
	ahead := map[int]int64{}
	for _, p := range parts {
		c, ok := committed[p]
		if !ok {
			c = -1
		}
		if c < 0 || c > offsets[p] {
			ahead[p] = c
		}
	}
	return ahead, nil
}

// commitOutsideGroup commits offsets for the partitions in ahead as a
// simple consumer (generation -1, no member).
func commitOutsideGroup(ctx context.Context, cl *kafkago.Client, cfg Config, offsets, ahead map[int]int64) error {
	var commits []kafkago.OffsetCommit
	for _, p := range slices.Sorted(maps.Keys(ahead)) {
		commits = append(commits, kafkago.OffsetCommit{Partition: p, Offset: offsets[p]})
	}
	resp, err := cl.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: cfg.Group, GenerationID: -1,
		Topics: map[string][]kafkago.OffsetCommit{cfg.Topic: commits}})
	if err != nil {
		return fmt.Errorf("commit offsets outside the group: %w", err)
	}
	for _, p := range resp.Topics[cfg.Topic] {
		if p.Error != nil {
			return fmt.Errorf("commit offset of partition %d outside the group: %w", p.Partition, p.Error)
		}
	}
	return nil
}
