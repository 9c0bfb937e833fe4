package alert

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/shopguard/shopguard"
)

// Console prints findings for people: one aligned line each, with the
// attacker-controlled parts escaped so that no control character or bidi
// override reaches the terminal. `shopguard demo` prints to standard output
// through it. It is a record sink in that Send returns once the lines are
// written, but nothing it writes is meant to be parsed: use File for that.
type Console struct {
	mu sync.Mutex
	w  *bufio.Writer
}

var _ shopguard.Sink = (*Console)(nil)

// NewConsole returns a Console writing to w.
func NewConsole(w io.Writer) *Console { return &Console{w: bufio.NewWriter(w)} }

// Send writes one line per finding and flushes.
func (c *Console) Send(_ context.Context, fs ...shopguard.Finding) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range fs {
		f := &fs[i]
		who := f.ShopID + "/" + f.Actor
		if f.Actor == "" {
			who = "-"
		}
		fmt.Fprintf(c.w, "%s  %-8s  %-19s  %-40s  %s\n", f.Time.UTC().Format("2006-01-02 15:04:05"),
			strings.ToUpper(string(f.Severity)), f.Rule, truncate(escapeText(who), 40), escapeText(f.Summary))
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// AddRecord appends record sinks to f, after those it already has. Call it
// before the pipeline starts.
func (f *Fanout) AddRecord(s ...shopguard.Sink) { f.records = append(f.records, s...) }
