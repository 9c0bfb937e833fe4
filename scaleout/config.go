package scaleout

import (
	"errors"
	"fmt"
	"time"

	"github.com/shopguard/shopguard/ingest/kafka"
)

// Config configures scale-out (YAML key "scale_out"): N instances of
// shopguard in one consumer group that together give the findings one
// instance gives. See Runtime for the topology and docs/scaling.md for how
// to run it. The connection settings, the audit topic and the group come
// from KafkaConfig.
//
// Decoding YAML into a Config starts from DefaultConfig.
type Config struct {
	// Enabled turns scale-out on. Off (the default), `shopguard run` is
	// the single-process pipeline and creates no internal topics.
	Enabled bool `yaml:"enabled"`
	// Prefix starts the names of the internal topics:
	// <prefix>-by-account, <prefix>-by-source, <prefix>-source-flags and
	// <prefix>-changelog. Empty means kafka.group, as Kafka Streams uses
	// its application id.
	Prefix string `yaml:"prefix"`
	// Partitions is how many partitions the two repartition topics are
	// created with, and so how many tasks each stage has: the most
	// instances that can share a stage's work. Zero means as many as the
	// audit topic has.
	Partitions int `yaml:"partitions"`
	// FlagsPartitions is how many partitions the source-flags topic is
	// created with. Every instance reads all of it; flags are rare, so one
	// is plenty.
	FlagsPartitions int `yaml:"flags_partitions"`
	// ChangelogPartitions is how many partitions the changelog topic is
	// created with; task p's snapshots go to partition p modulo this.
	// Zero means Partitions.
	ChangelogPartitions int `yaml:"changelog_partitions"`
	// ReplicationFactor of the topics created; -1 means the brokers'
	// default.
	ReplicationFactor int `yaml:"replication_factor"`
	// CreateTopics creates the internal topics that do not exist. Turn it
	// off where topics are provisioned by other means; they must then exist
	// (the flags and changelog topics with cleanup.policy=compact).
	CreateTopics bool `yaml:"create_topics"`
	// SnapshotInterval is how often each task writes its state to the
	// changelog (also on every rebalance and at shutdown). It bounds what
	// a crashed instance's successor processes again.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// IdleTimeout is how long a repartitioner that has read an input
	// partition to its end waits for more before declaring the partition
	// idle, so that the stages stop waiting for it. An event arriving in
	// an idle partition later than events of other partitions already
	// processed is processed out of order (counted as late).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxBuffered bounds the events one task holds while waiting for the
	// slowest input partition; beyond it the oldest are processed anyway
	// (counted as late).
	MaxBuffered int `yaml:"max_buffered"`
	// FlagsCompactionLag is the flags topic's min.compaction.lag.ms: how
	// long a superseded flag stays readable, so that an account task
	// restored from a snapshot that old still sees every flag after it.
	FlagsCompactionLag time.Duration `yaml:"flags_compaction_lag"`
}

// DefaultConfig is the scale-out configuration unless configured: off.
var DefaultConfig = Config{
	FlagsPartitions:    1,
	ReplicationFactor:  -1,
	CreateTopics:       true,
	SnapshotInterval:   10 * time.Second,
	IdleTimeout:        2 * time.Second,
	MaxBuffered:        200_000,
	FlagsCompactionLag: 24 * time.Hour,
}

// UnmarshalYAML fills the keys the YAML leaves out from
// DefaultConfig. It uses the decoder's own unmarshal, so a strict
// decoder stays strict.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate returns every problem of c at once, each naming its key below
// "scale_out.".
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("scale_out.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Prefix != "" {
		// The longest suffix must still give a valid topic name.
		if msg := kafka.TopicProblem(c.Prefix + "-source-flags"); msg != "" {
			bad("prefix", "%q does not make valid topic names: %s", c.Prefix, msg)
		}
	}
	if c.Partitions < 0 || c.Partitions > 10_000 {
		bad("partitions", "%d is not between 0 and 10000", c.Partitions)
	}
	if c.FlagsPartitions < 1 || c.FlagsPartitions > 10_000 {
		bad("flags_partitions", "%d is not between 1 and 10000", c.FlagsPartitions)
	}
	if c.ChangelogPartitions < 0 || c.ChangelogPartitions > 10_000 {
		bad("changelog_partitions", "%d is not between 0 and 10000", c.ChangelogPartitions)
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 || c.ReplicationFactor > 32 {
		bad("replication_factor", "%d is not -1 (broker default) or between 1 and 32", c.ReplicationFactor)
	}
	if c.SnapshotInterval < 10*time.Millisecond {
		bad("snapshot_interval", "%s is below 10ms", c.SnapshotInterval)
	}
	if c.IdleTimeout < 10*time.Millisecond {
		bad("idle_timeout", "%s is below 10ms", c.IdleTimeout)
	}
	if c.MaxBuffered < 1 {
		bad("max_buffered", "%d is below 1", c.MaxBuffered)
	}
	if c.FlagsCompactionLag < 0 {
		bad("flags_compaction_lag", "%s is negative", c.FlagsCompactionLag)
	}
	return errors.Join(errs...)
}

// Topics names the internal topics and groups of a scaled-out
// shopguard.
type Topics struct {
	ByAccount, BySource, Flags, Changelog string
	// RepartitionGroup is kafka.group itself; the stages have their own
	// groups, since each reads a different topic.
	RepartitionGroup, SourceGroup, AccountGroup string
}

// Topics returns the names for the audit consumer group group.
func (c Config) Topics(group string) Topics {
	p := c.Prefix
	if p == "" {
		p = group
	}
	return Topics{
		ByAccount:        p + "-by-account",
		BySource:         p + "-by-source",
		Flags:            p + "-source-flags",
		Changelog:        p + "-changelog",
		RepartitionGroup: group,
		SourceGroup:      group + "-source",
		AccountGroup:     group + "-account",
	}
}
