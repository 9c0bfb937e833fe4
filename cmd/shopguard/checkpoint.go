package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/shopguard/shopguard/detect"
)

// CheckpointConfig is the `checkpoint:` section: where and how often the
// engine's state is saved together with the Kafka offsets it corresponds to.
type CheckpointConfig struct {
	// Path of the checkpoint file; empty disables checkpoints.
	Path string `yaml:"path"`
	// Interval between checkpoints (and so between offset commits, which
	// wait for them). One is also written on shutdown.
	Interval time.Duration `yaml:"interval"`
}

// DefaultCheckpointConfig: off, and every 30 s when a path is given.
var DefaultCheckpointConfig = CheckpointConfig{Interval: 30 * time.Second}

// Validate names the bad key.
func (c CheckpointConfig) Validate() error {
	if c.Path != "" && c.Interval <= 0 {
		return fmt.Errorf("checkpoint.interval: must be above 0, got %s", c.Interval)
	}
	return nil
}

// A checkpoint file: magic "SGCP", format version, the length and CRC-32C
// of a JSON header (which topic and group, and the next offset by partition
// that the state corresponds to), the header, then the engine snapshot
// (detect.Engine.Snapshot, which carries its own version and checksum).
const (
	checkpointMagic   = "SGCP"
	checkpointVersion = 1
)

var errCheckpoint = errors.New("unusable checkpoint")

type checkpointHeader struct {
	Topic   string        `json:"topic"`
	Group   string        `json:"group"`
	Offsets map[int]int64 `json:"offsets"`
	Written time.Time     `json:"written"`
}

// checkpointer writes checkpoints for the live pipeline.
type checkpointer struct {
	cfg   CheckpointConfig
	eng   *detect.Engine
	log   *slog.Logger
	last  time.Time
	topic string
	group string

	writes   *prometheus.CounterVec
	lastOK   prometheus.Gauge
	bytes    prometheus.Gauge
	duration prometheus.Histogram
}

func newCheckpointer(cfg CheckpointConfig, topic, group string, reg prometheus.Registerer, log *slog.Logger) *checkpointer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(reg)
	c := &checkpointer{cfg: cfg, log: log, topic: topic, group: group, last: time.Now(),
		writes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "shopguard_checkpoint_writes_total",
			Help: "Checkpoints written, by result (success, failure).",
		}, []string{"result"}),
		lastOK: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_checkpoint_last_success_timestamp_seconds",
			Help: "Unix time of the last checkpoint written.",
		}),
		bytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "shopguard_checkpoint_bytes",
			Help: "Size of the last checkpoint written.",
		}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "shopguard_checkpoint_duration_seconds",
			Help:    "Time to write a checkpoint, during which the engine waits.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	c.writes.WithLabelValues("success")
	c.writes.WithLabelValues("failure")
	return c
}

// due reports whether the interval has passed since the last checkpoint.
func (c *checkpointer) due() bool { return time.Since(c.last) >= c.cfg.Interval }

// write saves the engine state with offsets atomically: a temporary file in
// the same directory, fsync, rename, fsync of the directory.
func (c *checkpointer) write(offsets map[int]int64) error {
	start := time.Now()
	c.last = start
	err := c.writeFile(offsets)
	c.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		c.writes.WithLabelValues("failure").Inc()
		c.log.Error("checkpoint not written; the offsets stay uncommitted until one is", "path", c.cfg.Path, "err", err)
		return err
	}
	c.writes.WithLabelValues("success").Inc()
	c.lastOK.Set(float64(time.Now().Unix()))
	return nil
}

func (c *checkpointer) writeFile(offsets map[int]int64) error {
	dir := filepath.Dir(c.cfg.Path)
	tmp, err := os.CreateTemp(dir, tempPattern(c.cfg.Path))
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	w := bufio.NewWriterSize(tmp, 1<<20)
	hdr, err := json.Marshal(checkpointHeader{Topic: c.topic, Group: c.group, Offsets: offsets, Written: time.Now().UTC()})
	if err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint header: %w", err)
	}
	var pre [16]byte
	copy(pre[:4], checkpointMagic)
	binary.BigEndian.PutUint32(pre[4:8], checkpointVersion)
	binary.BigEndian.PutUint32(pre[8:12], uint32(len(hdr)))
	binary.BigEndian.PutUint32(pre[12:16], crc32.Checksum(hdr, crc32.MakeTable(crc32.Castagnoli)))
	_, _ = w.Write(pre[:])
	_, _ = w.Write(hdr)
	if err := c.eng.Snapshot(w); err != nil {
		tmp.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint %s: fsync: %w", tmp.Name(), err)
	}
	st, _ := tmp.Stat()
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), c.cfg.Path); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if st != nil {
		c.bytes.Set(float64(st.Size()))
	}
	return nil
}

// tempPattern names the temporary files a checkpoint is written to before
// the rename: hidden, beside it, and tied to its name, so that those a
// killed process left behind can be found and removed.
func tempPattern(path string) string { return "." + filepath.Base(path) + ".tmp-*" }

// prepare removes the temporary files of checkpoints that a killed process
// did not finish, and checks that a checkpoint can be written at all: a
// directory that is missing or read-only would otherwise show only as
// failed writes while offsets, which wait for checkpoints, are never
// committed. Call it before the first write.
func (c *checkpointer) prepare() error {
	dir := filepath.Dir(c.cfg.Path)
	left, _ := filepath.Glob(filepath.Join(dir, tempPattern(c.cfg.Path)))
	for _, f := range left {
		if err := os.Remove(f); err != nil {
			c.log.Warn("unfinished checkpoint not removed", "path", f, "err", err)
			continue
		}
		c.log.Info("unfinished checkpoint of an earlier run removed", "path", f)
	}
	probe, err := os.CreateTemp(dir, tempPattern(c.cfg.Path))
	if err != nil {
		return fmt.Errorf("checkpoint.path: cannot write beside %s: %w", c.cfg.Path, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// restore loads the checkpoint at path into eng and returns the offsets it
// corresponds to. A missing file returns (nil, nil).
func restoreCheckpoint(path, topic, group string, eng *detect.Engine) (map[int]int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var pre [16]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("%w %s: header: %w", errCheckpoint, path, err)
	}
	if string(pre[:4]) != checkpointMagic {
		return nil, fmt.Errorf("%w %s: not a shopguard checkpoint", errCheckpoint, path)
	}
	if v := binary.BigEndian.Uint32(pre[4:8]); v != checkpointVersion {
		return nil, fmt.Errorf("%w %s: format version %d, this shopguard reads %d", errCheckpoint, path, v, checkpointVersion)
	}
	n := binary.BigEndian.Uint32(pre[8:12])
	if n > 1<<20 {
		return nil, fmt.Errorf("%w %s: header of %d bytes", errCheckpoint, path, n)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("%w %s: header: %w", errCheckpoint, path, err)
	}
	if crc32.Checksum(hdr, crc32.MakeTable(crc32.Castagnoli)) != binary.BigEndian.Uint32(pre[12:16]) {
		return nil, fmt.Errorf("%w %s: header checksum mismatch (corrupt)", errCheckpoint, path)
	}
	var h checkpointHeader
	if err := json.NewDecoder(bytes.NewReader(hdr)).Decode(&h); err != nil {
		return nil, fmt.Errorf("%w %s: header: %w", errCheckpoint, path, err)
	}
	if h.Topic != topic || h.Group != group {
		return nil, fmt.Errorf("%w %s: written for topic %q and group %q, not %q and %q", errCheckpoint, path, h.Topic, h.Group, topic, group)
	}
	if err := eng.Restore(r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h.Offsets, nil
}
