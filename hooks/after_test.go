package hooks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

type testBundle struct {
	db  *testenv.DB
	url string
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	db := testenv.NewDB(t)
	return &testBundle{db: db, url: serve(t, db.Pool, time.Second)}
}

// serve runs the HTTP side on pool with an insert-only River client, as `serve --role http` does.
func serve(t testing.TB, pool *pgxpool.Pool, dbTimeout time.Duration) string {
	t.Helper()
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	h := hooks.New(hooks.Opts{
		Logger:    slog.New(slog.DiscardHandler),
		Pool:      pool,
		Jobs:      jobs,
		APIKeys:   []string{"old-key-0123456789abcdef", testenv.APIKey},
		DBTimeout: dbTimeout,
		Hooks:     true,
		Checks:    []hooks.Check{{Name: "database", Critical: true, Func: func(ctx context.Context) error { return pool.Ping(ctx) }}},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func body(identityID uuid.UUID) []byte {
	b, _ := json.Marshal(map[string]any{
		"flow":     map[string]any{"id": uuid.NewString(), "type": "api"},
		"identity": map[string]any{"id": identityID.String(), "schema_id": "person", "traits": map[string]any{"email": "a@example.com"}},
		"request":  map[string]any{"client_ip": "192.0.2.1"},
	})
	return b
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func post(t *testing.T, url, key string, b []byte) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, rb}
}

// stored counts what the service wrote for an identity: hook events and sync jobs.
func (b *testBundle) stored(t *testing.T, id uuid.UUID) (events, jobs int) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM hook_events WHERE identity_id = $1`, id).Scan(&events))
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args->>'identity_id' = $1`, id.String()).Scan(&jobs))
	return events, jobs
}

func errorMessage(t *testing.T, r response) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal(r.body, &e), string(r.body))
	require.Equal(t, r.status, e.Error.Code)
	return e.Error.Message
}

func TestAfterHook_StoresTheEventAndItsJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := uuid.New()
	for _, hook := range []string{"registration", "login", "settings", "verification", "recovery"} {
		r := post(t, b.url+"/hooks/"+hook+"/after", testenv.APIKey, body(id))
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Contains(t, string(r.body), `"duplicate":false`)
	}
	events, jobs := b.stored(t, id)
	require.Equal(t, 5, events)
	require.Equal(t, 5, jobs)
}

func TestAfterHook_TheSameBytesTwiceAreOneEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := uuid.New()
	delivery := body(id)
	for i := range 3 {
		r := post(t, b.url+"/hooks/settings/after", testenv.APIKey, delivery)
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, i > 0, strings.Contains(string(r.body), `"duplicate":true`), string(r.body))
	}
	// The same settings flow submitted again with other content is a new event.
	var again map[string]any
	require.NoError(t, json.Unmarshal(delivery, &again))
	again["identity"].(map[string]any)["traits"] = map[string]any{"email": "b@example.com"}
	changed, _ := json.Marshal(again)
	require.Equal(t, http.StatusOK, post(t, b.url+"/hooks/settings/after", testenv.APIKey, changed).status)

	events, jobs := b.stored(t, id)
	require.Equal(t, 2, events)
	require.Equal(t, 2, jobs)
}

func TestAfterHook_RefusesMissingOrWrongCredentialsAndStoresNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := uuid.New()
	for name, key := range map[string]string{"missing": "", "wrong": "not-the-key-0123456789", "prefix of a key": testenv.APIKey[:10]} {
		r := post(t, b.url+"/hooks/registration/after", key, body(id))
		require.Equal(t, http.StatusUnauthorized, r.status, name)
		require.Contains(t, errorMessage(t, r), "Bearer", name)
	}
	req, _ := http.NewRequest(http.MethodPost, b.url+"/hooks/login/after", bytes.NewReader(body(id)))
	req.Header.Set("Authorization", "Basic "+testenv.APIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "another scheme")

	events, jobs := b.stored(t, id)
	require.Zero(t, events)
	require.Zero(t, jobs)

	// Any of the configured keys works (rotation).
	require.Equal(t, http.StatusOK, post(t, b.url+"/hooks/registration/after", "old-key-0123456789abcdef", body(id)).status)
}

func TestAfterHook_RefusesBodiesOverOneMebibyte(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := uuid.New()
	var big map[string]any
	require.NoError(t, json.Unmarshal(body(id), &big))
	big["padding"] = strings.Repeat("x", hooks.MaxBodyBytes)
	raw, _ := json.Marshal(big)

	r := post(t, b.url+"/hooks/registration/after", testenv.APIKey, raw)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	require.Contains(t, errorMessage(t, r), "1 MiB")
	events, jobs := b.stored(t, id)
	require.Zero(t, events)
	require.Zero(t, jobs)
}

func TestAfterHook_MalformedPayloadsGetA400ThatSaysWhatIsWrong(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := uuid.New()
	cases := map[string]struct {
		body string
		want string
	}{
		"not json":       {`{"flow": {"id": `, "not the JSON object"},
		"not an object":  {`[1,2,3]`, "not the JSON object"},
		"no flow id":     {`{"flow":{},"identity":{"id":"` + id.String() + `"}}`, "flow.id is missing"},
		"bad flow id":    {`{"flow":{"id":"nope"},"identity":{"id":"` + id.String() + `"}}`, `flow.id "nope" is not a UUID`},
		"no identity":    {`{"flow":{"id":"` + uuid.NewString() + `"}}`, "identity is missing"},
		"bad identity":   {`{"flow":{"id":"` + uuid.NewString() + `"},"identity":{"id":42}}`, "identity.id has the wrong type"},
		"nil identity":   {`{"flow":{"id":"` + uuid.NewString() + `"},"identity":{"id":"00000000-0000-0000-0000-000000000000"}}`, "identity.id is the nil UUID"},
		"trailing bytes": {`{"flow":{"id":"` + uuid.NewString() + `"},"identity":{"id":"` + id.String() + `"}} {}`, "data after the JSON object"},
	}
	for name, c := range cases {
		r := post(t, b.url+"/hooks/registration/after", testenv.APIKey, []byte(c.body))
		require.Equal(t, http.StatusBadRequest, r.status, name)
		require.Contains(t, errorMessage(t, r), c.want, name)
	}
	events, jobs := b.stored(t, id)
	require.Zero(t, events)
	require.Zero(t, jobs)
	var all int
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM hook_events`).Scan(&all))
	require.Zero(t, all)
}

// blackhole accepts TCP connections and never answers: a database that hangs rather than refuses.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().String()
}

func TestAfterHook_AnswersServiceUnavailableAtOnceWhenTheDatabaseHangs(t *testing.T) {
	t.Parallel()
	for name, addr := range map[string]string{"refuses": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "hangs": blackhole(t)} {
		pc, err := pgxpool.ParseConfig("postgres://u:p@" + addr + "/db?sslmode=disable&connect_timeout=30")
		require.NoError(t, err)
		pool, err := pgxpool.NewWithConfig(context.Background(), pc)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		url := serve(t, pool, 300*time.Millisecond)

		start := time.Now()
		r := post(t, url+"/hooks/login/after", testenv.APIKey, body(uuid.New()))
		require.Equal(t, http.StatusServiceUnavailable, r.status, name)
		require.Equal(t, "5", r.header.Get("Retry-After"), name)
		require.Contains(t, errorMessage(t, r), "database unavailable", name)
		// Bounded by HOOK_DB_TIMEOUT, not by the 30 s connect timeout or Kratos's own 30 s.
		require.Less(t, time.Since(start), 5*time.Second, name)

		ready, err := http.Get(url + "/health/ready")
		require.NoError(t, err)
		ready.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, ready.StatusCode, name)
	}
}

func TestHealth_AliveAndReady(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/health/alive", "/health/ready"} {
		resp, err := http.Get(b.url + path)
		require.NoError(t, err)
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Contains(t, string(raw), `"status":"ok"`, path)
	}
}
