package alert

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/shopguard/shopguard"
)

// deliverFunc hands one batch to a notification receiver. It is called from
// one goroutine at a time and must not retain the batch.
type deliverFunc func(ctx context.Context, batch []shopguard.Finding) error

// notifier is the machinery both notification sinks share: a bounded queue
// that drops its oldest findings when full, and a loop that takes batches
// off it and delivers them with retries. It is the shape of Prometheus'
// Alertmanager client (sendLoop): detection only ever appends to the queue
// and never waits for a receiver.
type notifier struct {
	name    string // the sink label
	deliver deliverFunc
	cfg     QueueConfig
	backoff backoff
	m       sinkMetrics
	log     *slog.Logger
	limit   *logLimiter

	wake chan struct{} // capacity 1: "the queue may have something"

	mu     sync.Mutex
	queue  []shopguard.Finding // oldest first
	closed bool                // Run has flushed and returned
}

func newNotifier(name string, cfg QueueConfig, deliver deliverFunc, m sinkMetrics, logger *slog.Logger) *notifier {
	return &notifier{
		name:    name,
		deliver: deliver,
		cfg:     cfg,
		backoff: notificationBackoff,
		m:       m,
		log:     logger,
		limit:   newLogLimiter(time.Minute),
		wake:    make(chan struct{}, 1),
	}
}

// enqueue appends copies of fs to the queue, dropping the oldest findings
// beyond its capacity, and never blocks on delivery. After Run has returned
// nothing delivers any more, so the findings are counted as dropped.
func (n *notifier) enqueue(fs []shopguard.Finding) {
	if len(fs) == 0 {
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.dropped(len(fs), "sink is closed")
		return
	}
	drop := 0
	if len(fs) >= n.cfg.Capacity {
		drop = len(n.queue) + len(fs) - n.cfg.Capacity
		clear(n.queue)
		n.queue = n.queue[:0]
		fs = fs[len(fs)-n.cfg.Capacity:]
	} else if over := len(n.queue) + len(fs) - n.cfg.Capacity; over > 0 {
		drop = over
		clear(n.queue[:over]) // let the dropped findings be collected
		n.queue = n.queue[over:]
	}
	n.queue = append(n.queue, fs...)
	n.m.queueLength.Set(float64(len(n.queue)))
	n.mu.Unlock()

	if drop > 0 {
		n.dropped(drop, "queue is full")
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// take removes and returns up to max findings from the head of the queue.
func (n *notifier) take(max int) []shopguard.Finding {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := min(len(n.queue), max)
	if k == 0 {
		return nil
	}
	batch := make([]shopguard.Finding, k)
	copy(batch, n.queue)
	clear(n.queue[:k])
	n.queue = n.queue[k:]
	n.m.queueLength.Set(float64(len(n.queue)))
	return batch
}

// putBack returns a batch that was not delivered to the head of the queue,
// where it was, so it goes out first when delivery resumes. If the queue
// filled up meanwhile, the batch's oldest findings are the ones dropped.
func (n *notifier) putBack(batch []shopguard.Finding) {
	n.mu.Lock()
	q := append(batch, n.queue...)
	drop := max(0, len(q)-n.cfg.Capacity)
	clear(q[:drop])
	n.queue = q[drop:]
	n.m.queueLength.Set(float64(len(n.queue)))
	n.mu.Unlock()
	if drop > 0 {
		n.dropped(drop, "queue is full")
	}
}

// dropped counts findings given up on and logs it, at most once a minute
// per reason with the number held back since.
func (n *notifier) dropped(count int, reason string) {
	n.m.dropped.Add(float64(count))
	if ok, more := n.limit.allow("drop:" + reason); ok {
		n.log.Warn("dropping findings", "sink", n.name, "reason", reason, "count", count, "similar_messages_suppressed", more)
	}
}

// run delivers queued findings until ctx is done. Then it keeps delivering
// for at most FlushTimeout, so findings raised while the pipeline drained
// still go out, counts and logs what is left as dropped, and returns nil.
// Findings enqueued after run returned are dropped.
func (n *notifier) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			n.flush(context.WithoutCancel(ctx))
			return nil
		case <-n.wake:
		}
		n.drain(ctx)
	}
}

// drain delivers batches until the queue is empty or ctx is done.
func (n *notifier) drain(ctx context.Context) {
	for ctx.Err() == nil {
		batch := n.take(n.cfg.BatchSize)
		if batch == nil {
			return
		}
		if !n.send(ctx, batch) {
			n.putBack(batch)
			return
		}
	}
}

func (n *notifier) flush(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, n.cfg.FlushTimeout)
	defer cancel()
	n.drain(ctx)

	n.mu.Lock()
	n.closed = true
	left := len(n.queue)
	n.queue = nil
	n.m.queueLength.Set(0)
	n.mu.Unlock()

	if left > 0 {
		n.m.dropped.Add(float64(left))
		n.log.Warn("shutdown flush ran out of time; dropping findings", "sink", n.name, "count", left, "budget", n.cfg.FlushTimeout)
		return
	}
	n.log.Debug("queue flushed", "sink", n.name)
}

// send delivers one batch, retrying with backoff while the error is
// retryable. It returns false only when ctx ended before the batch was
// delivered, so the caller keeps it; a batch the receiver rejects for good
// is counted as dropped and send returns true.
func (n *notifier) send(ctx context.Context, batch []shopguard.Finding) bool {
	for attempt := 0; ; attempt++ {
		err := n.deliver(ctx, batch)
		if err != nil && ctx.Err() != nil {
			return false // cancelled, not a receiver failure
		}
		n.m.delivered(err)
		if err == nil {
			if attempt > 0 {
				n.log.Info("delivered after retries", "sink", n.name, "findings", len(batch), "attempts", attempt+1)
			}
			return true
		}
		if !retryable(err) {
			n.m.dropped.Add(float64(len(batch)))
			n.log.Error("receiver rejected findings; dropping them", "sink", n.name, "findings", len(batch),
				"class", ClassifyError(err), "err", err)
			return true
		}
		wait := n.backoff.delay(attempt)
		n.log.Warn("delivery attempt did not succeed; will retry", "sink", n.name, "findings", len(batch),
			"attempt", attempt+1, "retry_in", wait, "class", ClassifyError(err), "err", err)
		if sleepCtx(ctx, wait) != nil {
			return false
		}
		n.m.retries.Inc()
	}
}
