package alert

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// postedAlert is the v2 API's postable alert, decoded the way Alertmanager
// decodes it.
type postedAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
}

// fakeAM is an Alertmanager: it records every POST to /api/v2/alerts and
// answers with the next status of its script (200 once the script is used
// up).
type fakeAM struct {
	t      *testing.T
	prefix string

	mu       sync.Mutex
	statuses []int
	posts    [][]postedAlert
	auth     []string
	got      chan struct{}
}

func newFakeAM(t *testing.T, statuses ...int) *fakeAM {
	return &fakeAM{t: t, statuses: statuses, got: make(chan struct{}, 100)}
}

func (f *fakeAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != f.prefix+"/api/v2/alerts" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad content type", http.StatusUnsupportedMediaType)
		return
	}
	var alerts []postedAlert
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &alerts); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	status := http.StatusOK
	if len(f.statuses) > 0 {
		status, f.statuses = f.statuses[0], f.statuses[1:]
	}
	f.posts = append(f.posts, alerts)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.mu.Unlock()
	if status != http.StatusOK {
		http.Error(w, "scripted failure", status)
	}
	f.got <- struct{}{}
}

func (f *fakeAM) allPosts() [][]postedAlert {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]postedAlert(nil), f.posts...)
}

// wait waits for n more POSTs, with a real-time bound.
func (f *fakeAM) wait(n int) {
	f.t.Helper()
	for range n {
		select {
		case <-f.got:
		case <-time.After(5 * time.Second):
			f.t.Fatal("timed out waiting for a POST")
		}
	}
}

// runSink runs a notification sink's loop until the test ends.
func runSink(t *testing.T, r interface{ Run(context.Context) error }) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		require.NoError(t, r.Run(ctx))
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func TestAlertmanagerPostsAlerts(t *testing.T) {
	am := newFakeAM(t)
	am.prefix = "/am"
	srv := httptest.NewServer(am)
	defer srv.Close()
	t.Setenv("SHOPGUARD_TEST_AM_PASSWORD", "s3cret-pw")

	cfg := DefaultAlertmanagerConfig
	cfg.URLs = []string{srv.URL + "/am/"}
	cfg.BasicAuth = &BasicAuth{Username: "shopguard", PasswordEnv: "SHOPGUARD_TEST_AM_PASSWORD"}
	cfg.GeneratorURL = "https://findings.example/f/{id}"
	reg, m := newTestMetrics()
	sink, err := NewAlertmanager(cfg, m, nil)
	require.NoError(t, err)
	runSink(t, sink)

	before := time.Now()
	require.NoError(t, sink.Send(t.Context(), travelFinding("id-travel"), stuffingFinding("id-stuff")))
	am.wait(1)
	after := time.Now()

	posts := am.allPosts()
	require.Len(t, posts, 1)
	require.Len(t, posts[0], 2)
	travel, stuff := posts[0][0], posts[0][1]

	require.Equal(t, map[string]string{
		"alertname": "ShopguardImpossibleTravel",
		"rule":      "impossible_travel",
		"severity":  "high",
		"shop_id":   "shop-17",
		"actor":     "owner@example.jp",
	}, travel.Labels)
	require.Equal(t, "login from Frankfurt, DE 8,340 km from Tokyo, JP within 30m", travel.Annotations["summary"])
	require.Equal(t, "id-travel", travel.Annotations["finding_id"])
	require.Equal(t, "18.184.0.1", travel.Annotations["ip"])
	require.Equal(t, "impossible_travel (high) in shop shop-17 for owner@example.jp from 18.184.0.1 at 2026-01-07T09:30:00Z", travel.Annotations["description"])
	var ev shopguard.Evidence
	require.NoError(t, json.Unmarshal([]byte(travel.Annotations["evidence"]), &ev))
	require.Equal(t, travelFinding("").Evidence, ev)
	require.Equal(t, "https://findings.example/f/id-travel", travel.GeneratorURL)

	// startsAt is the event time; endsAt is an hour after the send, since
	// the event lies in the past.
	require.True(t, travel.StartsAt.Equal(findingTime), "startsAt %s", travel.StartsAt)
	require.False(t, travel.EndsAt.Before(before.Add(time.Hour).Truncate(time.Second)), "endsAt %s", travel.EndsAt)
	require.False(t, travel.EndsAt.After(after.Add(time.Hour)), "endsAt %s", travel.EndsAt)

	// A finding keyed by source has no actor label (rather than an empty
	// one) and is told apart by its source.
	require.Equal(t, map[string]string{
		"alertname": "ShopguardCredentialStuffing",
		"rule":      "credential_stuffing",
		"severity":  "high",
		"shop_id":   "shop-3",
		"source":    "45.95.147.0/24",
	}, stuff.Labels)

	require.Equal(t, "Basic c2hvcGd1YXJkOnMzY3JldC1wdw==", am.auth[0]) // shopguard:s3cret-pw
	require.Eventually(t, func() bool {
		return metric(t, reg, "shopguard_sink_deliveries_total", "alertmanager", "success") == 1
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "alertmanager"))
}

func TestAlertmanagerEndsAtFollowsFutureStart(t *testing.T) {
	a := &Alertmanager{cfg: DefaultAlertmanagerConfig}
	now := time.Date(2026, 1, 7, 9, 0, 0, 0, time.UTC)
	f := travelFinding("x")
	f.Time = now.Add(10 * time.Minute) // producer clock ahead of ours
	body, err := a.encode([]shopguard.Finding{f}, now)
	require.NoError(t, err)
	var alerts []postedAlert
	require.NoError(t, json.Unmarshal(body, &alerts))
	require.Equal(t, f.Time.Add(time.Hour), alerts[0].EndsAt)
}

func TestAlertmanagerHAOneDown(t *testing.T) {
	am := newFakeAM(t)
	up := httptest.NewServer(am)
	defer up.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // connection refused from now on

	logger, logs := captureLogs()
	cfg := DefaultAlertmanagerConfig
	cfg.URLs = []string{down.URL, up.URL}
	reg, m := newTestMetrics()
	sink, err := NewAlertmanager(cfg, m, logger)
	require.NoError(t, err)
	runSink(t, sink)

	require.NoError(t, sink.Send(t.Context(), travelFinding("a")))
	am.wait(1)
	require.Eventually(t, func() bool {
		return metric(t, reg, "shopguard_sink_deliveries_total", "alertmanager", "success") == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 0.0, metric(t, reg, "shopguard_sink_deliveries_total", "alertmanager", "failure"))
	require.Equal(t, 0.0, metric(t, reg, "shopguard_sink_retries_total", "alertmanager"))
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "one Alertmanager did not accept alerts")
	}, 5*time.Second, 10*time.Millisecond)
	require.Contains(t, logs.String(), "class=connection")
}

// newInProcessAM builds an Alertmanager sink whose HTTP requests go to h
// in-process, for use inside a synctest bubble.
func newInProcessAM(t *testing.T, h http.Handler, mod func(*AlertmanagerConfig), m *Metrics) *Alertmanager {
	t.Helper()
	cfg := DefaultAlertmanagerConfig
	cfg.URLs = []string{"http://am.invalid:9093"}
	if mod != nil {
		mod(&cfg)
	}
	sink, err := NewAlertmanager(cfg, m, nil)
	require.NoError(t, err)
	sink.client.Transport = handlerTransport{h}
	return sink
}

func TestAlertmanagerRetriesAfter500(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		am := newFakeAM(t, 500, 503)
		var (
			mu    sync.Mutex
			times []time.Time
		)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
			am.ServeHTTP(w, r)
		})
		reg, m := newTestMetrics()
		sink := newInProcessAM(t, h, nil, m)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- sink.Run(ctx) }()

		require.NoError(t, sink.Send(ctx, travelFinding("a")))
		time.Sleep(time.Minute) // far beyond two backoffs
		synctest.Wait()

		mu.Lock()
		defer mu.Unlock()
		require.Len(t, times, 3)
		// Exponential backoff with jitter: [250ms, 500ms], then [500ms, 1s].
		first, second := times[1].Sub(times[0]), times[2].Sub(times[1])
		require.GreaterOrEqual(t, first, 250*time.Millisecond)
		require.LessOrEqual(t, first, 500*time.Millisecond)
		require.GreaterOrEqual(t, second, 500*time.Millisecond)
		require.LessOrEqual(t, second, time.Second)
		for _, p := range am.allPosts() {
			require.Equal(t, "a", p[0].Annotations["finding_id"])
		}
		require.Equal(t, 2.0, metric(t, reg, "shopguard_sink_deliveries_total", "alertmanager", "failure"))
		require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_deliveries_total", "alertmanager", "success"))
		require.Equal(t, 2.0, metric(t, reg, "shopguard_sink_retries_total", "alertmanager"))
		require.Equal(t, 0.0, metric(t, reg, "shopguard_sink_dropped_total", "alertmanager"))
		require.Equal(t, 1.0, metric(t, reg, "shopguard_sink_up", "alertmanager"))
		cancel()
		require.NoError(t, <-done)
	})
}

func TestAlertmanagerRejectedBatchIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		am := newFakeAM(t, http.StatusBadRequest)
		reg, m := newTestMetrics()
		sink := newInProcessAM(t, am, nil, m)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- sink.Run(ctx) }()

		require.NoError(t, sink.Send(ctx, numbered(3)...))
		time.Sleep(time.Minute)
		synctest.Wait()

		require.Len(t, am.allPosts(), 1, "a 400 is not retried")
		require.Equal(t, 3.0, metric(t, reg, "shopguard_sink_dropped_total", "alertmanager"))
		require.Equal(t, 0.0, metric(t, reg, "shopguard_sink_up", "alertmanager"))
		cancel()
		require.NoError(t, <-done)
	})
}

func TestNotifierQueueFullDropsOldest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		am := newFakeAM(t)
		reg, m := newTestMetrics()
		sink := newInProcessAM(t, am, func(c *AlertmanagerConfig) { c.Capacity = 3 }, m)

		// Nothing delivers yet: the queue keeps the newest three.
		require.NoError(t, sink.Send(t.Context(), numbered(2)...))
		require.NoError(t, sink.Send(t.Context(), numbered(5)[2:]...))
		require.Equal(t, 2.0, metric(t, reg, "shopguard_sink_dropped_total", "alertmanager"))
		require.Equal(t, 3.0, metric(t, reg, "shopguard_sink_queue_length", "alertmanager"))

		// A single Send larger than the queue keeps its own newest.
		many := numbered(8)
		require.NoError(t, sink.Send(t.Context(), many[5:]...))
		require.Equal(t, 5.0, metric(t, reg, "shopguard_sink_dropped_total", "alertmanager"))

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- sink.Run(ctx) }()
		synctest.Wait()
		posts := am.allPosts()
		require.Len(t, posts, 1)
		var ids []string
		for _, a := range posts[0] {
			ids = append(ids, a.Annotations["finding_id"])
		}
		require.Equal(t, []string{"f5", "f6", "f7"}, ids)
		require.Equal(t, 0.0, metric(t, reg, "shopguard_sink_queue_length", "alertmanager"))
		cancel()
		require.NoError(t, <-done)
	})
}

func TestNotifierBatchesWhileBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		am := newFakeAM(t)
		first := true
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if first {
				first = false
				<-release // hold the first POST until the test says so
			}
			am.ServeHTTP(w, r)
		})
		_, m := newTestMetrics()
		sink := newInProcessAM(t, h, nil, m)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- sink.Run(ctx) }()

		fs := numbered(101)
		require.NoError(t, sink.Send(ctx, fs[0]))
		synctest.Wait() // the first POST is in flight and held
		for i := 1; i < len(fs); i++ {
			require.NoError(t, sink.Send(ctx, fs[i])) // one at a time, as the engine does
		}
		close(release)
		synctest.Wait()

		var sizes []int
		var ids []string
		for _, p := range am.allPosts() {
			sizes = append(sizes, len(p))
			for _, a := range p {
				ids = append(ids, a.Annotations["finding_id"])
			}
		}
		require.Equal(t, []int{1, 64, 36}, sizes, "what queued up behind a slow POST goes out in batches of at most 64")
		require.Len(t, ids, 101)
		require.Equal(t, "f0", ids[0])
		require.Equal(t, "f100", ids[100])
		cancel()
		require.NoError(t, <-done)
	})
}

func TestNotifierFlushesOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		am := newFakeAM(t)
		_, m := newTestMetrics()
		sink := newInProcessAM(t, am, nil, m)
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // already shutting down when the findings arrive
		require.NoError(t, sink.Send(t.Context(), numbered(3)...))
		require.NoError(t, sink.Run(ctx))
		require.Len(t, am.allPosts(), 1, "flush delivers what was queued")
		require.Len(t, am.allPosts()[0], 3)
	})
}

func TestNotifierShutdownBudgetDropsAndLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		})
		reg, m := newTestMetrics()
		logger, logs := captureLogs()
		cfg := DefaultAlertmanagerConfig
		cfg.URLs = []string{"http://am.invalid:9093"}
		cfg.FlushTimeout = 5 * time.Second
		sink, err := NewAlertmanager(cfg, m, logger)
		require.NoError(t, err)
		sink.client.Transport = handlerTransport{h}

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- sink.Run(ctx) }()
		require.NoError(t, sink.Send(ctx, numbered(3)...))
		time.Sleep(10 * time.Second)
		start := time.Now()
		cancel()
		require.NoError(t, <-done)
		require.LessOrEqual(t, time.Since(start), 5*time.Second, "shutdown is bounded by flush_timeout")
		require.Equal(t, 3.0, metric(t, reg, "shopguard_sink_dropped_total", "alertmanager"))
		require.Contains(t, logs.String(), "shutdown flush ran out of time")

		// Nothing delivers after Run returned: later findings are counted.
		require.NoError(t, sink.Send(t.Context(), numbered(2)...))
		require.Equal(t, 5.0, metric(t, reg, "shopguard_sink_dropped_total", "alertmanager"))
	})
}

func TestAlertmanagerTLSWithCAFile(t *testing.T) {
	am := newFakeAM(t)
	srv := newTestTLSServer(t, am)
	ca := writeFile(t, "ca.pem", string(pemCert(srv.Certificate().Raw)))

	cfg := DefaultAlertmanagerConfig
	cfg.URLs = []string{srv.URL}
	cfg.TLS.CAFile = ca
	sink, err := NewAlertmanager(cfg, nil, nil)
	require.NoError(t, err)
	runSink(t, sink)
	require.NoError(t, sink.Send(t.Context(), travelFinding("tls")))
	am.wait(1)

	// Without the CA the server is not trusted.
	cfg.TLS.CAFile = ""
	_, m := newTestMetrics()
	untrusted, err := NewAlertmanager(cfg, m, nil)
	require.NoError(t, err)
	err = untrusted.deliver(t.Context(), []shopguard.Finding{travelFinding("x")})
	require.Error(t, err)
	require.Equal(t, ClassTLS, ClassifyError(err))
}

func TestAlertName(t *testing.T) {
	for rule, want := range map[string]string{
		shopguard.RuleImpossibleTravel:   "ShopguardImpossibleTravel",
		shopguard.RuleCredentialStuffing: "ShopguardCredentialStuffing",
		shopguard.RuleBruteForce:         "ShopguardBruteForce",
		shopguard.RuleAccountTakeover:    "ShopguardAccountTakeover",
		shopguard.RuleBulkExport:         "ShopguardBulkExport",
		"odd-rule.v2":                    "ShopguardOddRuleV2",
	} {
		require.Equal(t, want, AlertName(rule), rule)
	}
}
