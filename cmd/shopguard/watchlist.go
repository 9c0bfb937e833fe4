package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/shopguard/shopguard/detect"
)

// loadWatchlist reads the watchlist file at path. A malformed line is
// logged with its line number and skipped; a file that cannot be read is
// an error, and the caller keeps its previous list.
func loadWatchlist(path string, log *slog.Logger) (*detect.Watchlist, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("watchlist: %w", err)
	}
	defer f.Close()
	w, bad, err := detect.ParseWatchlist(f)
	for _, b := range bad {
		log.Warn("watchlist line skipped", "file", path, "line", b.Line, "err", b.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("watchlist %s: %w", path, err)
	}
	log.Info("watchlist loaded", "file", path, "accounts", w.Len(), "skipped_lines", len(bad))
	return w, nil
}
