package detect

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

var update = flag.Bool("update", false, "rewrite the golden want.jsonl files from the current output")

// TestGolden replays every testdata/<scenario>/events.jsonl in file order
// (event time, including any disorder the file has) and compares the
// findings with want.jsonl. Run with -update to rewrite them, then review
// the diff.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/events.jsonl")
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for _, path := range dirs {
		dir := filepath.Dir(path)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			evs := readEvents(t, path)
			var got bytes.Buffer
			enc := json.NewEncoder(&got)
			for _, f := range run(t, DefaultConfig, testLocator, evs) {
				require.NoError(t, enc.Encode(f))
			}
			want := filepath.Join(dir, "want.jsonl")
			if *update {
				require.NoError(t, os.WriteFile(want, got.Bytes(), 0o644))
			}
			b, err := os.ReadFile(want)
			require.NoError(t, err, "run go test ./detect -run TestGolden -update to create it")
			require.Equal(t, string(b), got.String())
		})
	}
}

// readEvents decodes events with encoding/json: the detect package does not
// depend on ingest's decoder.
func readEvents(t *testing.T, path string) []shopguard.Event {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var evs []shopguard.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var raw struct {
			Time    time.Time `json:"time"`
			ShopID  string    `json:"shop_id"`
			Actor   string    `json:"actor"`
			Action  string    `json:"action"`
			IP      string    `json:"ip"`
			Records int64     `json:"records"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &raw))
		evs = append(evs, shopguard.Event{Time: raw.Time, ShopID: raw.ShopID, Actor: raw.Actor,
			Action: shopguard.ParseAction(raw.Action), IP: netip.MustParseAddr(raw.IP), Records: raw.Records})
	}
	require.NoError(t, sc.Err())
	return evs
}
