package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

func TestServe_MetricsOnTheMainListenerOrOnMetricsAddr(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	// No Kratos: the hooks take events all the same, and /metrics says the admin API is down.
	env := map[string]string{"DATABASE_URL": db.URL, "KRATOS_ADMIN_URL": fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), "LOG_LEVEL": "info"}
	svc := startService(t, env)

	b, _ := json.Marshal(map[string]any{
		"flow":     map[string]any{"id": uuid.NewString()},
		"identity": map[string]any{"id": uuid.NewString(), "schema_id": "person", "traits": map[string]any{}},
	})
	req, err := http.NewRequest(http.MethodPost, svc.URL+"/hooks/login/after", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	s := testenv.MustScrape(t, svc.URL+"/metrics")
	route := []string{"route", "/hooks/login/after", "method", "POST"}
	require.Equal(t, 1.0, s.Get("kratos_hooks_http_requests_total", append(route, "status", "200")...))
	require.Equal(t, 1.0, s.Get("kratos_hooks_http_request_duration_seconds_count", route...))
	require.Equal(t, 1.0, s.Get("kratos_hooks_dependency_up", "dependency", "database"))
	down, ok := s.Value("kratos_hooks_dependency_up", "dependency", "kratos_admin")
	require.True(t, ok)
	require.Zero(t, down)
	_, ok = s.Value("kratos_hooks_dependency_up", "dependency", "elasticsearch")
	require.False(t, ok, "search is off: no such dependency")
	// The login's sync job waits for Kratos (retrying) or a worker: in the identity queue either way.
	jobs := 0.0
	for _, state := range []string{"available", "running", "retryable", "scheduled"} {
		jobs += s.Get("kratos_hooks_queue_jobs", "queue", "identity", "state", state)
	}
	require.Equal(t, 1.0, jobs)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		_, ok := s.Value(name)
		require.True(t, ok, name)
	}

	// With METRICS_ADDR, /metrics is there and only there.
	env["METRICS_ADDR"] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	svc = startService(t, env)
	s = testenv.MustScrape(t, "http://"+env["METRICS_ADDR"]+"/metrics")
	require.Equal(t, 1.0, s.Get("kratos_hooks_dependency_up", "dependency", "database"))
	resp, err = http.Get(svc.URL + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestServe_MetricsAddrErrorsNameTheVariable(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "KRATOS_ADMIN_URL": "http://127.0.0.1:1",
		"HOOKS_API_KEY": testenv.APIKey, "METRICS_ADDR": "9090"}
	_, stderr, err := runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, `METRICS_ADDR "9090": want host:port or :port`)

	env["METRICS_ADDR"], env["LISTEN_ADDR"] = ":9090", ":9090"
	_, stderr, err = runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, "METRICS_ADDR is LISTEN_ADDR")
}
