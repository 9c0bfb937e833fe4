package scaleout

import (
	"context"
	"errors"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/shopguard/shopguard/ingest/kafka"
)

// runGroup takes part in consumer group on topic until ctx is done. For
// every generation it runs work once per partition assigned to this
// instance, each in its own goroutine, with a context that ends with the
// generation (a rebalance) or with ctx; the next generation starts only
// when every work of the previous one has returned, so a task's last
// snapshot is written before anyone else can be assigned its partition.
func (s *Runtime) runGroup(ctx context.Context, idx int, stage, group, topic string,
	work func(ctx context.Context, gen *kafkago.Generation, part int)) {
	log := s.log.With("stage", stage, "group", group)
	info, errl := kafka.Loggers(log)
	start := kafkago.FirstOffset
	if s.kc.StartOffset == kafka.StartLatest && stage == StageRepartition {
		start = kafkago.LastOffset
	}
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID:                    group,
		Brokers:               s.kc.Brokers,
		Dialer:                s.dialer,
		Topics:                []string{topic},
		HeartbeatInterval:     s.kc.HeartbeatInterval,
		SessionTimeout:        s.kc.SessionTimeout,
		RebalanceTimeout:      s.kc.RebalanceTimeout,
		JoinGroupBackoff:      s.kc.RetryBackoffMax,
		WatchPartitionChanges: true,
		StartOffset:           start,
		Timeout:               s.kc.DialTimeout,
		Logger:                info,
		ErrorLogger:           errl,
	})
	if err != nil { // only a configuration kafka.Config.Validate has checked
		log.Error("consumer group not created", "err", err)
		return
	}
	gauge := s.opts.Scale.partitions.WithLabelValues(stage)
	var running sync.WaitGroup
	defer func() {
		// Close ends the current generation, which waits for its work to
		// return (each sees ctx done and writes its last snapshot), and
		// then leaves the group.
		_ = cg.Close()
		running.Wait()
		gauge.Set(0)
	}()
	fails := 0
	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			if !errors.Is(err, kafkago.RebalanceInProgress) {
				log.Warn("joining the consumer group did not succeed; retrying", "attempt", fails, "err", err)
			}
			if kafka.Sleep(ctx, s.kc.Backoff(min(fails, 10))) != nil {
				return
			}
			continue
		}
		fails = 0
		s.joined[idx].Store(true)
		parts := gen.Assignments[topic]
		gauge.Set(float64(len(parts)))
		ids := make([]int, len(parts))
		for i, p := range parts {
			ids[i] = p.ID
		}
		log.Info("partitions assigned", "generation", gen.ID, "partitions", ids)
		for _, p := range parts {
			running.Add(1)
			gen.Start(func(gctx context.Context) {
				defer running.Done()
				wctx, cancel := context.WithCancel(ctx)
				defer cancel()
				stop := context.AfterFunc(gctx, cancel)
				defer stop()
				began := time.Now()
				work(wctx, gen, p.ID)
				log.Debug("partition released", "partition", p.ID, "generation", gen.ID, "held", time.Since(began))
			})
		}
	}
}
