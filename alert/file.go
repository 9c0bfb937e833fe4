package alert

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/shopguard/shopguard"
)

// FileConfig configures the JSONL file sink (`sinks.file`).
type FileConfig struct {
	// Path is the file findings are appended to, one JSON object per line;
	// "-" is standard output. The file is created if missing (mode 0640).
	// One shopguard process per file.
	Path string `yaml:"path"`
	// Fsync makes every Send wait until the findings are on disk, not just
	// in the page cache. It applies to regular files only (not to a pipe or
	// terminal on standard output).
	Fsync bool `yaml:"fsync"`
}

// DefaultFileConfig is the file sink unless configured: standard output,
// with fsync on when that is a regular file.
var DefaultFileConfig = FileConfig{Path: "-", Fsync: true}

// UnmarshalYAML fills the fields the YAML leaves out from DefaultFileConfig,
// keeping the decoder strict.
func (c *FileConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultFileConfig
	type plain FileConfig
	return unmarshal((*plain)(c))
}

// Validate reports every problem of the config, naming its key.
func (c FileConfig) Validate() error { return c.validate(configKey + ".file").err() }

func (c FileConfig) validate(key string) problems {
	var p problems
	if c.Path == "" {
		p.addf(key+".path", `required ("-" for standard output)`)
	}
	return p
}

// syncFile is what File needs of its output; *os.File has it. Tests inject
// failures through it.
type syncFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
}

// File is a record sink that appends findings to a JSONL file or standard
// output. Send returns once the lines are written (and, with fsync, on
// disk), retrying with backoff until its context is done, so a full disk
// stalls the pipeline instead of losing findings.
type File struct {
	path     string
	out      syncFile
	closer   io.Closer // nil for standard output, which File does not own
	fsync    bool      // sync after each write (regular files only)
	truncate bool      // roll back partial writes (files File opened for appending)
	backoff  backoff
	m        sinkMetrics
	log      *slog.Logger
	health   health

	mu    sync.Mutex
	size  int64  // end of the last complete write
	dirty bool   // a partial line could not be rolled back
	buf   []byte // reused encoding buffer
}

var _ shopguard.Sink = (*File)(nil)

// NewFile validates cfg and opens the file for appending. m may be shared
// with other sinks; nil means unregistered metrics. A nil logger discards.
func NewFile(cfg FileConfig, m *Metrics, logger *slog.Logger) (*File, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = orDiscard(logger)
	fl := &File{path: cfg.Path, backoff: recordBackoff, log: logger}
	if cfg.Path == "-" {
		fl.path = "standard output"
		fl.out = os.Stdout
		if st, err := os.Stdout.Stat(); err == nil && st.Mode().IsRegular() {
			fl.fsync = cfg.Fsync
		}
	} else {
		f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("%s.file.path: %w", configKey, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s.file.path: %w", configKey, err)
		}
		fl.out, fl.closer = f, f
		if st.Mode().IsRegular() {
			fl.fsync, fl.truncate, fl.size = cfg.Fsync, true, st.Size()
			if cfg.Fsync {
				// Make a newly created file's directory entry durable too.
				syncDir(filepath.Dir(cfg.Path), logger)
			}
		}
	}
	fl.m = m.forSink(sinkFile)
	return fl, nil
}

// Send appends one line per finding. It returns nil once all of them are
// written, or the last error once ctx is done; a batch is written whole or,
// on regular files, rolled back, so no partial line is left behind.
func (fl *File) Send(ctx context.Context, fs ...shopguard.Finding) error {
	if len(fs) == 0 {
		return nil
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	buf := fl.buf[:0]
	for i := range fs {
		b, err := marshalFinding(&fs[i])
		if err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
		buf = append(append(buf, b...), '\n')
	}
	fl.buf = buf
	for attempt := 0; ; attempt++ {
		err := fl.write(buf)
		fl.m.delivered(err)
		fl.health.set(err)
		if err == nil {
			if attempt > 0 {
				fl.log.Info("file sink writable again", "path", fl.path, "attempts", attempt+1)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("file sink: %w (gave up: %w)", err, ctx.Err())
		}
		wait := fl.backoff.delay(attempt)
		fl.log.Warn("file sink write did not succeed; will retry, holding back the pipeline", "path", fl.path,
			"findings", len(fs), "attempt", attempt+1, "retry_in", wait, "class", ClassifyError(err), "err", err)
		if sleepCtx(ctx, wait) != nil {
			return fmt.Errorf("file sink: %w (gave up: %w)", err, ctx.Err())
		}
		fl.m.retries.Inc()
	}
}

// write writes buf (and syncs), rolling back to the previous end on error.
func (fl *File) write(buf []byte) error {
	if fl.dirty {
		// An earlier partial line could not be removed: end it, so that the
		// next finding starts on a line of its own.
		if _, err := fl.out.Write([]byte{'\n'}); err != nil {
			return fmt.Errorf("write %s: %w", fl.path, err)
		}
		fl.dirty = false
		fl.size++
	}
	_, err := fl.out.Write(buf)
	if err == nil && fl.fsync {
		err = fl.out.Sync()
		if err != nil {
			err = fmt.Errorf("sync %s: %w", fl.path, err)
		}
	} else if err != nil {
		err = fmt.Errorf("write %s: %w", fl.path, err)
	}
	if err == nil {
		fl.size += int64(len(buf))
		return nil
	}
	if !fl.truncate {
		fl.dirty = true
		return err
	}
	if terr := fl.out.Truncate(fl.size); terr != nil {
		fl.dirty = true
		fl.log.Error("could not roll back a partial write; the file may hold one broken line", "path", fl.path, "err", terr)
	}
	return err
}

// Ready returns nil unless the last write failed, and then its error.
func (fl *File) Ready() error {
	if err := fl.health.get(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	return nil
}

// Close syncs and closes the file. It does not close standard output.
func (fl *File) Close() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closer == nil {
		return nil
	}
	var err error
	if fl.truncate { // a regular file: devices and pipes (/dev/null) cannot be synced
		err = fl.out.Sync()
	}
	if cerr := fl.closer.Close(); err == nil {
		err = cerr
	}
	fl.closer = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", fl.path, err)
	}
	return nil
}

// syncDir fsyncs a directory so a file created in it survives a crash.
func syncDir(dir string, logger *slog.Logger) {
	d, err := os.Open(dir)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		logger.Debug("could not sync directory", "dir", dir, "err", err)
	}
}

// NewWriterFile returns a File that appends findings to w, which it does not
// own: standard output as the caller has it (an in-process caller may have
// its own). Writes are not synced and not rolled back.
func NewWriterFile(w io.Writer, name string, m *Metrics, logger *slog.Logger) *File {
	return &File{path: name, out: writerFile{w}, backoff: recordBackoff, log: orDiscard(logger), m: m.forSink(sinkFile)}
}

// writerFile gives a plain io.Writer the syncFile methods File needs.
type writerFile struct{ io.Writer }

func (writerFile) Sync() error            { return nil }
func (writerFile) Truncate(_ int64) error { return nil }
