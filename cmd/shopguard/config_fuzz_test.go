package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/detect"
)

// FuzzLoadConfig checks strict decoding and validation of the configuration
// file on arbitrary input. Invariants: no panic; either an error, or a
// configuration that passes Validate and from which the engine can be built
// and run; decoding is deterministic and never writes through to the
// package defaults. Seeds are the example and deploy configurations and the
// corpus in testdata/fuzz/FuzzLoadConfig.
func FuzzLoadConfig(f *testing.F) {
	for _, path := range []string{exampleConfig, deployConfig} {
		b, err := os.ReadFile(path)
		require.NoError(f, err)
		f.Add(b)
	}
	def := defaultConfig()
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg := defaultConfig()
		err := decodeConfig(doc, &cfg)
		again := defaultConfig()
		err2 := decodeConfig(doc, &again)
		require.Equal(t, def, defaultConfig(), "decoding wrote through to the defaults")
		if err != nil {
			require.Error(t, err2)
			require.Equal(t, err.Error(), err2.Error(), "decoding is not deterministic")
			require.NotEmpty(t, err.Error())
			return
		}
		require.NoError(t, err2)
		require.Equal(t, cfg, again, "decoding is not deterministic")
		require.NoError(t, cfg.Validate())

		// What run builds from it first: the engine, which turns windows
		// and speeds into horizons. It must take events without panicking.
		eng, err := detect.New(cfg.Detect, detect.WithMetrics(detect.NewMetrics(prometheus.NewRegistry())))
		require.NoError(t, err)
		t0 := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
		var fs []shopguard.Finding
		for i, a := range []shopguard.Action{shopguard.ActionLoginFailure, shopguard.ActionLoginSuccess, shopguard.ActionCustomersExport} {
			ev := shopguard.Event{Time: t0.Add(time.Duration(i) * time.Minute), ShopID: "s", Actor: "a", Action: a,
				IP: netip.MustParseAddr("203.0.113.9"), Records: 20_000}
			fs = eng.Process(fs, &ev)
		}
	})
}

// TestFuzzLoadConfigCorpusPresent keeps the stored corpus from silently
// vanishing.
func TestFuzzLoadConfigCorpusPresent(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzLoadConfig"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(entries), 5)
}
