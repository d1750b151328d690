package hooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

func TestAdminAPI_RefusesMissingOrWrongTokens(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})
	for _, token := range []string{"", "wrong-token-0123456789", testenv.APIKey} {
		for _, call := range []struct{ method, path string }{
			{http.MethodGet, "/admin/invites"},
			{http.MethodPost, "/admin/invites"},
			{http.MethodDelete, "/admin/invites/00000000-0000-0000-0000-000000000001"},
		} {
			status, body := s.adminCall(t, call.method, call.path, token, map[string]any{"code": true})
			require.Equal(t, http.StatusUnauthorized, status, "%s %s with %q: %s", call.method, call.path, token, body)
		}
	}
	list, err := invites.List(s.ctx, s.db.Pool)
	require.NoError(t, err)
	require.Empty(t, list, "a refused request created nothing")
}

func TestAdminAPI_CreateListRevoke(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})

	status, body := s.adminCall(t, http.MethodPost, "/admin/invites", adminToken,
		map[string]any{"code": true, "expires_in": "72h", "max_uses": 3, "note": "launch party"})
	require.Equal(t, http.StatusCreated, status, string(body))
	var created map[string]any
	require.NoError(t, json.Unmarshal(body, &created))
	require.ElementsMatch(t, []string{"id", "code", "email", "expires_at", "max_uses"}, keys(created))
	require.Nil(t, created["email"])
	require.EqualValues(t, 3, created["max_uses"])
	code := created["code"].(string)
	expires, err := time.Parse(time.RFC3339Nano, created["expires_at"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(72*time.Hour), expires, time.Minute)

	// The code works through Kratos.
	requireRegistered(t, s.register(t, testenv.Traits(testenv.Email("party"), "", ""), code, "192.0.2.1"))

	status, body = s.adminCall(t, http.MethodPost, "/admin/invites", adminToken, map[string]any{"email": "Guest@Example.com"})
	require.Equal(t, http.StatusCreated, status, string(body))
	require.NoError(t, json.Unmarshal(body, &created))
	require.Nil(t, created["code"])
	require.Equal(t, "guest@example.com", created["email"])
	emailID := created["id"].(string)

	status, body = s.adminCall(t, http.MethodGet, "/admin/invites", adminToken, nil)
	require.Equal(t, http.StatusOK, status, string(body))
	var list struct {
		Invites []invites.Report `json:"invites"`
	}
	require.NoError(t, json.Unmarshal(body, &list))
	require.Len(t, list.Invites, 2)
	require.Equal(t, emailID, list.Invites[0].ID.String())
	require.Equal(t, "email", list.Invites[0].Kind)
	require.Equal(t, "code", list.Invites[1].Kind)
	require.Equal(t, invites.StatusActive, list.Invites[1].Status)
	require.Equal(t, "launch party", list.Invites[1].Note)
	require.NotContains(t, string(body), code[:9], "a listing never shows a code")

	status, body = s.adminCall(t, http.MethodDelete, "/admin/invites/"+emailID, adminToken, nil)
	require.Equal(t, http.StatusOK, status, string(body))
	require.Contains(t, string(body), `"status":"revoked"`)
	requireRefusedAt(t, s.register(t, testenv.Traits("guest@example.com", "", ""), "", "192.0.2.1"), "traits.email", hooks.MsgInviteRevoked)
}

func TestAdminAPI_BadRequestsSayWhatIsWrong(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})
	for _, tt := range []struct {
		method, path string
		body         any
		status       int
		says         string
	}{
		{http.MethodPost, "/admin/invites", map[string]any{}, 400, "e-mail address"},
		{http.MethodPost, "/admin/invites", map[string]any{"code": true, "email": "a@example.com"}, 400, "not both"},
		{http.MethodPost, "/admin/invites", map[string]any{"code": true, "expires_in": "soon"}, 400, "expires_in"},
		{http.MethodPost, "/admin/invites", map[string]any{"code": true, "max_uses": -2}, 400, "max uses"},
		{http.MethodPost, "/admin/invites", map[string]any{"code": true, "uses": 2}, 400, "unknown field"},
		{http.MethodPost, "/admin/invites", "not an object", 400, "JSON object"},
		{http.MethodDelete, "/admin/invites/42", nil, 400, "UUID"},
		{http.MethodDelete, "/admin/invites/00000000-0000-0000-0000-000000000001", nil, 404, "no such invite"},
	} {
		status, body := s.adminCall(t, tt.method, tt.path, adminToken, tt.body)
		require.Equal(t, tt.status, status, "%s %s %v: %s", tt.method, tt.path, tt.body, body)
		require.Contains(t, string(body), tt.says, "%s %s %v", tt.method, tt.path, tt.body)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestAdminAPI_AnswersServiceUnavailableAtOnceWhenTheDatabaseIsDown(t *testing.T) {
	t.Parallel()
	for name, addr := range map[string]string{"refuses": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "hangs": blackhole(t)} {
		pool, err := pgxpool.New(context.Background(), "postgres://u:p@"+addr+"/db?sslmode=disable&connect_timeout=30")
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		srv := httptest.NewServer(hooks.New(hooks.Opts{
			Logger:         slog.New(slog.DiscardHandler),
			Pool:           pool,
			Jobs:           jobs,
			APIKeys:        []string{testenv.APIKey},
			AdminAPITokens: []string{adminToken},
			DBTimeout:      300 * time.Millisecond,
			Hooks:          true,
		}))
		t.Cleanup(srv.Close)

		for _, call := range []struct{ method, path, body string }{
			{http.MethodGet, "/admin/invites", ""},
			{http.MethodPost, "/admin/invites", `{"email":"guest@example.com"}`},
			{http.MethodDelete, "/admin/invites/00000000-0000-0000-0000-000000000001", ""},
		} {
			req, err := http.NewRequest(call.method, srv.URL+call.path, strings.NewReader(call.body))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Not a 500 ("internal error"): the service is not broken, its database is away, and a client may
			// try again after Retry-After.
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s: %s %s: %s", name, call.method, call.path, raw)
			require.Equal(t, "5", resp.Header.Get("Retry-After"), "%s: %s %s", name, call.method, call.path)
			require.Contains(t, string(raw), "database unavailable", "%s: %s %s", name, call.method, call.path)
			require.Less(t, time.Since(start), 5*time.Second, "%s: %s %s", name, call.method, call.path)
		}
	}
}
