package hooks_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/gating"
	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

type observed struct {
	route, method string
	status        int
	timed         bool
}

func TestObserveRequest_ReportsTheRouteTemplateAndTheStatusSent(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	jobs, err := river.NewClient(riverpgxv5.New(db.Pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	var (
		mu  sync.Mutex
		got []observed
	)
	srv := httptest.NewServer(hooks.New(hooks.Opts{
		Logger: slog.New(slog.DiscardHandler), Pool: db.Pool, Jobs: jobs, Hooks: true,
		APIKeys: []string{testenv.APIKey}, AdminAPITokens: []string{adminToken},
		ObserveRequestFunc: func(route, method string, status int, elapsed time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, observed{route, method, status, elapsed > 0})
		},
	}))
	t.Cleanup(srv.Close)

	call := func(method, path, token string, body []byte) {
		req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	call(http.MethodPost, "/hooks/login/after", testenv.APIKey, body(uuid.New()))
	call(http.MethodPost, "/hooks/login/after", "", body(uuid.New()))
	call(http.MethodPost, "/hooks/login/after", testenv.APIKey, []byte(`{"flow":`))
	call(http.MethodDelete, "/admin/invites/"+uuid.NewString(), adminToken, nil)
	call(http.MethodGet, "/health/alive", "", nil)
	call(http.MethodGet, "/no/such/"+uuid.NewString(), "", nil)
	call(http.MethodPut, "/hooks/login/after", testenv.APIKey, nil)
	call("BREW", "/health/alive", "", nil)

	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []observed{
		{"/hooks/login/after", "POST", 200, true},
		{"/hooks/login/after", "POST", 401, true},
		{"/hooks/login/after", "POST", 400, true},
		// A template, never the id in the path.
		{"/admin/invites/:id", "DELETE", 404, true},
		{"/health/alive", "GET", 200, true},
		// Paths and methods no route serves make no series of their own.
		{"unmatched", "GET", 404, true},
		{"unmatched", "PUT", 404, true},
		{"unmatched", "other", 405, true},
	}, got)
}

func TestRequestLogs_EveryLineOfARequestCarriesItsRequestID(t *testing.T) {
	t.Parallel()
	// A database that refuses connections: the after hook fails with a 503, which is logged.
	pool, err := pgxpool.New(context.Background(), fmt.Sprintf("postgres://u:p@127.0.0.1:%d/db?sslmode=disable", testenv.FreePort(t)))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	denied, err := gating.ParseRanges("203.0.113.0/24")
	require.NoError(t, err)
	var logs testenv.Buffer
	logger, err := logging.New(&logs, "json", "info")
	require.NoError(t, err)
	srv := httptest.NewServer(hooks.New(hooks.Opts{
		Logger: logger, Pool: pool, Jobs: jobs, Hooks: true, APIKeys: []string{testenv.APIKey},
		DBTimeout: 300 * time.Millisecond, Gating: hooks.Gating{IP: gating.IPPolicy{Denied: denied}},
	}))
	t.Cleanup(srv.Close)

	call := func(path, requestID string, b []byte) string {
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
		if requestID != "" {
			req.Header.Set("X-Request-Id", requestID)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.Header.Get("X-Request-Id")
	}
	refused, _ := json.Marshal(map[string]any{"flow": map[string]any{"id": uuid.NewString()}, "request": map[string]any{"client_ip": "203.0.113.9"}})
	want := map[string]string{
		call("/hooks/login/after", "req-unavailable", body(uuid.New())): "request failed",
		call("/hooks/login/before", "req-refused", refused):             "flow interrupted",
		// Without one from the caller, the id is made up, and is in the response and the log alike.
		call("/hooks/login/after", "", body(uuid.New())): "request failed",
	}
	require.Contains(t, want, "req-unavailable")
	require.Contains(t, want, "req-refused")
	require.Len(t, want, 3)

	seen := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
		require.NotEmpty(t, line.RequestID, "a line without a request id: %s", sc.Text())
		seen[line.RequestID] = line.Msg
	}
	require.Equal(t, want, seen)
}
