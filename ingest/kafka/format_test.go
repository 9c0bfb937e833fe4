package kafka_test

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest"
	"github.com/shopguard/shopguard/ingest/kafka"
)

// TestKafkaSourceFormat runs the consumer-group source with an nginx
// decoder: events arrive in order, the line no route matches is counted
// as unmatched (not invalid), and the bad one is rejected.
func TestKafkaSourceFormat(t *testing.T) {
	dec, err := ingest.NewDecoder(ingest.InputConfig{Format: ingest.FormatNginx, Nginx: ingest.NginxConfig{
		LogFormat: `$remote_addr [$time_iso8601] "$request" $status $host $remote_user $request_id`,
		Fields:    map[string]string{"ip": "$remote_addr", "time": "$time_iso8601", "shop_id": "$host", "actor": "$remote_user", "id": "$request_id"},
		Routes:    []ingest.NginxRoute{{Method: "POST", Path: "^/admin/login$", Status: []string{"4xx"}, Action: "login.failure"}},
	}})
	require.NoError(t, err)
	c := newKafkaCluster(t, 1)
	cfg := kafkaTestConfig(c)
	var lines []string
	for i := range 20 {
		switch i {
		case 5:
			lines = append(lines, `192.0.2.7 [2026-01-07T09:00:05Z] "GET /assets/a.css HTTP/1.1" 200 shop-1 - r5`)
		case 9:
			lines = append(lines, `192.0.2.7 [2026-01-07T09:00:09Z] "POST /admin/login HTTP/1.1" 401 shop-1 - r9`)
		default:
			lines = append(lines, fmt.Sprintf(`192.0.2.7 [2026-01-07T09:00:%02dZ] "POST /admin/login HTTP/1.1" 401 shop-1 owner r%d`, i, i))
		}
	}
	c.ProduceLines(t, auditTopic, 1, lines...)

	reg := prometheus.NewRegistry()
	m := ingest.NewMetrics(reg)
	h := &kafkaHarness{t: t, out: make(chan shopguard.Batch, 4), reg: reg, m: m, km: kafka.NewMetrics(reg), runErr: make(chan error, 1)}
	h.src, err = kafka.NewSource(cfg, kafka.SourceOptions{Metrics: m, Kafka: h.km, Logger: kafkaTestLogger,
		Rejects: &ingest.Rejects{Metrics: m}, Decode: dec})
	require.NoError(t, err)
	h.run()
	t.Cleanup(func() { _ = h.stop() })

	var ids []string
	for len(ids) < 18 {
		b := h.next()
		ids = append(ids, batchIDs(b)...)
		b.Done()
	}
	var want []string
	for i := range 20 {
		if i != 5 && i != 9 {
			want = append(want, fmt.Sprintf("r%d", i))
		}
	}
	require.Equal(t, want, ids)
	st := m.Stats()
	require.Equal(t, int64(1), st.Unmatched)
	require.Equal(t, map[string]int64{"missing_field": 1}, st.Invalid)
}
