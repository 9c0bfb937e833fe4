package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/detect"
	"github.com/shopguard/shopguard/ingest/generate"
)

// campaignStream is the generator of the campaign tests: about 40 h of
// events, a campaign episode every few hours, waves rare enough that the
// ones of the warm-up day (which are not judged, and so teach the baseline
// in full) leave it well below the later ones.
func campaignStream(t *testing.T) (generate.Config, *generate.Generator) {
	t.Helper()
	cfg := generate.DefaultConfig
	cfg.Seed, cfg.Shops, cfg.EventsPerSecond, cfg.AttackRate = 5, 400, 1, 2
	cfg.Events = 150_000
	cfg.Mix = generate.AttackMix{Stuffing: 3, BruteForce: 3, ListWave: 0.5, UnknownSpray: 0.5, RotationV6W: 1}
	g, err := generate.New(cfg)
	require.NoError(t, err)
	return cfg, g
}

// TestCampaignGenerated runs the generator's campaign attacks (a list
// wave, an unknown-user spray, a /48 rotation) through the engine for 30
// hours of event time: the waves after the day of warm-up are found, the
// /48 rotations are credential_stuffing findings naming their /48, and
// the list waves' logins are account_takeover findings with the wave_id.
// (The warm-up day's waves are not judged and teach the baseline in full;
// the stream is tuned so that the later waves stay above 3× of it.)
func TestCampaignGenerated(t *testing.T) {
	cfg, g := campaignStream(t)
	e, err := detect.New(detect.DefaultConfig)
	require.NoError(t, err)
	var fs []shopguard.Finding
	var ev shopguard.Event
	for g.Next(&ev) {
		fs = e.Process(fs, &ev)
	}
	labels := g.TakeLabels(nil)
	warm := cfg.Start.Add(25 * time.Hour)

	waves, waveIDs := map[string]bool{}, map[string]bool{}
	for _, f := range fs {
		if f.Rule == shopguard.RuleStuffingWave {
			require.True(t, f.Time.After(cfg.Start.Add(24*time.Hour)), "no wave in the warm-up: %s", f.Time)
			waveIDs[f.Evidence.WaveID] = true
		}
	}
	var late, found, rot48, rot48Found, logins, loginsFound int
	for _, l := range labels {
		switch l.Attack {
		case generate.AttackListWave, generate.AttackUnknownSpray:
			if l.Start.Before(warm) {
				continue
			}
			late++
			for _, f := range fs {
				// Once an hour while a wave lasts: an episode that starts
				// within the hour after another's finding is that wave.
				if f.Rule == shopguard.RuleStuffingWave && !f.Time.Before(l.Start.Add(-time.Hour)) && !f.Time.After(l.End) {
					found++
					waves[f.Evidence.WaveID] = true
					break
				}
			}
			for _, a := range l.Accounts {
				logins++
				for _, f := range fs {
					if f.Rule == shopguard.RuleAccountTakeover && f.ShopID == a.ShopID && f.Actor == a.Actor && waveIDs[f.Evidence.WaveID] {
						loginsFound++
						break
					}
				}
			}
		case generate.AttackRotationV6W:
			rot48++
			for _, f := range fs {
				if f.Rule == shopguard.RuleCredentialStuffing && f.IP == l.Sources[0] {
					rot48Found++
					break
				}
			}
		}
	}
	t.Logf("%d labels; waves after the warm-up: %d of %d found (%d wave ids); their logins: %d of %d takeovers; /48 rotations: %d of %d",
		len(labels), found, late, len(waveIDs), loginsFound, logins, rot48Found, rot48)
	require.Positive(t, late, "the stream has waves after the warm-up")
	require.Equal(t, late, found, "every wave after the warm-up is found")
	require.Positive(t, rot48)
	require.Equal(t, rot48, rot48Found, "every /48 rotation is named by its /48")
	require.Equal(t, logins, loginsFound, "every login of a list wave is a takeover of the wave")
}

// TestE2ERunCampaignsMatchReplay is the live path of the campaign rules:
// the generator's campaigns (list waves, an unknown-user spray, /48
// rotations) over 40 hours of events, produced to six partitions keyed by
// account and read by `shopguard run`, give exactly the file replay's
// findings, stuffing_wave and its wave-aware takeovers included.
func TestE2ERunCampaignsMatchReplay(t *testing.T) {
	cfg, g := campaignStream(t)
	evs := make([]shopguard.Event, 0, cfg.Events)
	var ev shopguard.Event
	for g.Next(&ev) {
		evs = append(evs, ev)
	}
	dir := t.TempDir()
	want := e2eReplay(t, e2eWriteEvents(t, dir, "events.jsonl", evs))
	byRule := map[string]int{}
	for _, f := range want {
		byRule[f.Rule]++
	}
	require.Positive(t, byRule[shopguard.RuleStuffingWave], "the stream has waves: %v", byRule)

	c := e2eCluster(t)
	c.ProduceEvents(t, e2eAuditTopic, evs...)
	rc := e2eRunConfig{brokers: c.Addrs()[0], listen: e2eFreeAddr(t), geoip: e2eGeoDB(t, dir), findings: filepath.Join(dir, "findings.jsonl")}
	r := e2eStartRun(t, rc.write(t), rc.listen)
	e2eWaitCommitted(t, c, int64(len(evs)), r.stderr)
	require.Equal(t, 0, r.stop(), r.stderr.tail())
	got, n := e2eTopicFindings(t, c)
	require.Equal(t, len(want), n, "no finding was sent twice")
	e2eRequireSameFindings(t, want, got)
	t.Logf("%d findings, as the replay: %v", len(want), byRule)
}
