// Package broker runs the embedded Kafka-protocol broker behind
// `shopguard demo`, so that the demo needs nothing installed: kcat, kafka-go
// and any other Kafka client can produce to it and consume from it on one
// TCP address.
//
// It wraps github.com/twmb/franz-go/pkg/kfake, and it is the only non-test
// code in shopguard that may import kfake. It is not a production broker:
// it keeps every log in memory (bounded only by Config.Retention), runs a
// single node, has no replication, TLS or authentication, and loses
// everything when closed. Tests use ingest/kafkatest instead.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultListen is where the broker listens unless configured otherwise: the
// standard Kafka port on loopback, so that local tools find it.
const DefaultListen = "127.0.0.1:9092"

// Config configures the embedded broker.
type Config struct {
	// Listen is the host:port the broker accepts connections on; empty means
	// DefaultListen and port 0 picks a free port (see Broker.Addrs).
	Listen string
	// Advertise is the host:port the broker tells clients to connect to in
	// its metadata. Empty means Listen, with an unspecified host (0.0.0.0
	// or ::) replaced by 127.0.0.1.
	Advertise string
	// Topics maps each topic to create at start to its partition count.
	Topics map[string]int32
	// AutoCreateTopics lets clients create topics by producing to or
	// requesting metadata for them, with DefaultPartitions partitions, as
	// a development Kafka does.
	AutoCreateTopics bool
	// DefaultPartitions is the partition count of auto-created topics;
	// zero means 1.
	DefaultPartitions int32
	// Retention bounds memory: records older than it are dropped, checked
	// every Retention/10 (at most once a minute). Zero keeps everything.
	Retention time.Duration
}

// Broker is a running embedded broker. Its methods are safe for concurrent
// use.
type Broker struct {
	c     *kfake.Cluster
	addrs []string
	log   *slog.Logger

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start listens on cfg.Listen, creates cfg.Topics and returns the running
// broker. It runs until Close is called or ctx is done, whichever is first;
// the caller must call Close in any case to release the port. A nil logger
// discards the broker's logs.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Broker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = DefaultListen
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded broker listen address %q: port must be 0-65535", listen)
	}
	for t, p := range cfg.Topics {
		if t == "" || p < 1 {
			return nil, fmt.Errorf("embedded broker topic %q: need a name and at least one partition, got %d", t, p)
		}
	}
	if cfg.Retention < 0 {
		return nil, errors.New("embedded broker retention must not be negative")
	}

	// kfake always listens on 127.0.0.1:<port> and advertises the
	// listener's own address. Listening through ListenFn honours the
	// configured host, and wrapping the listener decides what is
	// advertised, so a broker on 0.0.0.0 still hands out a dialable one.
	var lnErr error
	listenFn := func(network, _ string) (net.Listener, error) {
		ln, err := net.Listen(network, listen)
		if err != nil {
			lnErr = err
			return nil, err
		}
		adv := cfg.Advertise
		if adv == "" {
			adv = advertised(host, ln.Addr())
		}
		return &advertisedListener{Listener: ln, adv: advAddr(adv)}, nil
	}

	parts := cfg.DefaultPartitions
	if parts < 1 {
		parts = 1
	}
	opts := []kfake.Opt{
		kfake.Ports(port), // one port means one broker
		kfake.ListenFn(listenFn),
		kfake.DefaultNumPartitions(int(parts)),
		kfake.WithLogger(slogLogger{logger}),
		kfake.ClusterID("shopguard-demo"),
	}
	if cfg.AutoCreateTopics {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if cfg.Retention > 0 {
		opts = append(opts, kfake.BrokerConfigs(map[string]string{
			"log.retention.ms": strconv.FormatInt(cfg.Retention.Milliseconds(), 10),
		}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if lnErr != nil {
			err = lnErr
		}
		return nil, fmt.Errorf("start embedded broker on %s: %w", listen, err)
	}

	// Create topics in a stable order so that logs read the same each run.
	topics := make([]string, 0, len(cfg.Topics))
	for t := range cfg.Topics {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		if err := c.CreateTopic(t, cfg.Topics[t], nil); err != nil {
			c.Close()
			return nil, fmt.Errorf("create topic %q on embedded broker: %w", t, err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	b := &Broker{c: c, addrs: c.ListenAddrs(), log: logger, stop: stop}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.housekeep(runCtx, cfg.Retention)
	}()
	logger.Info("embedded Kafka broker listening", "addr", listen, "advertised", b.addrs, "topics", topics)
	return b, nil
}

// housekeep enforces retention until ctx is done, then closes the cluster,
// so that a cancelled Start context releases the port even before Close.
func (b *Broker) housekeep(ctx context.Context, retention time.Duration) {
	var tick <-chan time.Time
	if retention > 0 {
		every := min(retention/10, time.Minute)
		every = max(every, time.Second)
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			b.c.Close()
			return
		case <-tick:
			b.c.ApplyRetention()
		}
	}
}

// Addrs returns the advertised addresses clients should bootstrap from.
func (b *Broker) Addrs() []string {
	return append([]string(nil), b.addrs...)
}

// CreateTopic creates a topic with the given number of partitions. It is an
// error if the topic exists.
func (b *Broker) CreateTopic(topic string, partitions int32) error {
	if err := b.c.CreateTopic(topic, partitions, nil); err != nil {
		return fmt.Errorf("create topic %q on embedded broker: %w", topic, err)
	}
	return nil
}

// Close stops the broker and releases its port. Everything it held is
// lost. Close is idempotent.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		b.stop()
		b.wg.Wait()
		b.log.Info("embedded Kafka broker stopped")
	})
}

// advertised picks the address to advertise for a listener on host: the
// listener's own address, with an unspecified host replaced by loopback.
func advertised(host string, a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// advertisedListener reports the advertised address as its own, which is
// what kfake puts in metadata responses.
type advertisedListener struct {
	net.Listener
	adv net.Addr
}

func (l *advertisedListener) Addr() net.Addr { return l.adv }

// advAddr is a net.Addr for a host:port that need not be resolvable here.
type advAddr string

func (a advAddr) Network() string { return "tcp" }
func (a advAddr) String() string  { return string(a) }

// slogLogger routes kfake's logs to slog. kfake logs every request at Info,
// which is Debug detail for shopguard.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var lv slog.Level
	switch level {
	case kfake.LogLevelError:
		lv = slog.LevelError
	case kfake.LogLevelWarn:
		lv = slog.LevelWarn
	case kfake.LogLevelInfo:
		lv = slog.LevelDebug
	default:
		lv = slog.LevelDebug - 4
	}
	ctx := context.Background()
	if !s.l.Enabled(ctx, lv) {
		return
	}
	s.l.Log(ctx, lv, fmt.Sprintf(format, args...), "component", "kfake")
}
