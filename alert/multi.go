package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopguard/shopguard"
)

// runner is a sink with a background delivery loop.
type runner interface {
	Run(ctx context.Context) error
}

// closer is a sink that holds resources until closed.
type closer interface {
	Close() error
}

// readier is a sink that can tell whether its last delivery went through.
type readier interface {
	Ready() error
}

// Fanout is the one Sink the pipeline sees. Send hands findings to the
// record sinks in order, each of which must hold them before the next is
// tried, and then queues them on the notification sinks. So a notification
// always refers to a finding the records already have, and when a record
// sink is down Send waits (or fails when its context ends) and the source
// does not commit.
type Fanout struct {
	records       []shopguard.Sink
	notifications []shopguard.Sink
}

var _ shopguard.Sink = (*Fanout)(nil)

// NewFanout combines record sinks (durable on return from Send) and
// notification sinks (queue on Send, deliver in Run). Either may be empty.
func NewFanout(records, notifications []shopguard.Sink) *Fanout {
	return &Fanout{records: slices.Clone(records), notifications: slices.Clone(notifications)}
}

// Send returns nil once every record sink holds fs and the notification
// sinks have queued them. It stops at the first record sink error, which it
// returns; that happens only when ctx is done, since record sinks retry
// until then.
func (f *Fanout) Send(ctx context.Context, fs ...shopguard.Finding) error {
	if len(fs) == 0 {
		return nil
	}
	for _, s := range f.records {
		if err := s.Send(ctx, fs...); err != nil {
			return err
		}
	}
	for _, s := range f.notifications {
		// Notification sinks only queue; an error here would not be worth
		// holding back the commit for.
		_ = s.Send(ctx, fs...)
	}
	return nil
}

// Run runs the delivery loops of the notification sinks until ctx is done
// and each has flushed (within its flush_timeout), then returns nil. It
// blocks until ctx is done even when there is nothing to run, so it can be
// an actor of an oklog/run group. Cancel ctx only after the pipeline has
// stopped sending: later findings are not delivered to notification sinks.
func (f *Fanout) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(f.notifications))
	for i, s := range f.notifications {
		if r, ok := s.(runner); ok {
			wg.Go(func() { errs[i] = r.Run(ctx) })
		}
	}
	<-ctx.Done()
	wg.Wait()
	return errors.Join(errs...)
}

// Ready returns nil unless the last delivery attempt of a record sink
// failed: then the pipeline is waiting on that sink (consumption has
// stopped) and the joined errors say why. Notification sinks do not count,
// since their being down loses no finding the records do not hold. It
// never blocks, so it suits a /readyz handler.
func (f *Fanout) Ready() error {
	var errs []error
	for _, s := range f.records {
		if r, ok := s.(readier); ok {
			errs = append(errs, r.Ready())
		}
	}
	return errors.Join(errs...)
}

// Close closes the sinks that hold resources (the file, the Kafka writer).
// Call it after Send has returned for the last time.
func (f *Fanout) Close() error {
	var errs []error
	for _, s := range slices.Concat(f.records, f.notifications) {
		if c, ok := s.(closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Build validates cfg and constructs the configured sinks, with their
// metrics registered on reg (nil: not registered) and logs to logger (nil:
// discarded). Record sinks are called in the order file, kafka. On error,
// whatever was already opened is closed again. Build registers the metrics,
// so call it once per registry.
func Build(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Fanout, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = orDiscard(logger)
	m := NewMetrics(reg)

	var pseudo *Pseudonymizer
	if pc := cfg.Pseudonymize; pc != nil {
		key, err := readSecret(configKey+".pseudonymize.key", pc.KeyFile, pc.KeyEnv)
		if err != nil {
			return nil, err
		}
		if pseudo, err = NewPseudonymizer(nopSink{}, []byte(key)); err != nil {
			return nil, fmt.Errorf("%s.pseudonymize: %w", configKey, err)
		}
	}
	wrap := func(name string, s shopguard.Sink) shopguard.Sink {
		if pseudo == nil || !slices.Contains(cfg.Pseudonymize.Sinks, name) {
			return s
		}
		return &Pseudonymizer{next: s, key: pseudo.key}
	}

	var records, notifications []shopguard.Sink
	fail := func(err error) (*Fanout, error) {
		_ = NewFanout(records, notifications).Close()
		return nil, err
	}
	if cfg.File != nil {
		s, err := NewFile(*cfg.File, m, logger)
		if err != nil {
			return fail(err)
		}
		records = append(records, wrap(sinkFile, s))
	}
	if cfg.Kafka != nil {
		s, err := NewKafka(*cfg.Kafka, m, logger)
		if err != nil {
			return fail(err)
		}
		records = append(records, wrap(sinkKafka, s))
	}
	if cfg.Alertmanager != nil {
		s, err := NewAlertmanager(*cfg.Alertmanager, m, logger)
		if err != nil {
			return fail(err)
		}
		notifications = append(notifications, wrap(sinkAlertmanager, s))
	}
	if cfg.Webhook != nil {
		s, err := NewWebhook(*cfg.Webhook, m, logger)
		if err != nil {
			return fail(err)
		}
		notifications = append(notifications, wrap(sinkWebhook, s))
	}
	return NewFanout(records, notifications), nil
}

// nopSink discards; it stands in while Build checks the key.
type nopSink struct{}

func (nopSink) Send(context.Context, ...shopguard.Finding) error { return nil }
