package generate

import (
	"fmt"
	"io"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
)

// WriteJSONL writes the generator's events to w as JSON Lines (ingest.AppendJSON
// plus a newline each) until Next reports false or a write fails, and
// returns how many events reached w. It buffers internally; w needs no
// bufio. With an endless generator (Config.Events 0) it returns only on a
// write error, such as a closed pipe.
func WriteJSONL(w io.Writer, g *Generator) (int64, error) {
	const flushAt = 60 << 10
	buf := make([]byte, 0, 64<<10)
	var ev shopguard.Event
	var written, pending int64
	flush := func() error {
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("write events: %w", err)
		}
		written += pending
		buf, pending = buf[:0], 0
		return nil
	}
	for g.Next(&ev) {
		buf = ingest.AppendJSON(buf, &ev)
		buf = append(buf, '\n')
		pending++
		if len(buf) >= flushAt {
			if err := flush(); err != nil {
				return written, err
			}
		}
	}
	return written, flush()
}
