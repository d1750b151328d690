package jsonnet_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gojsonnet "github.com/google/go-jsonnet"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
)

var (
	update  = flag.Bool("update", false, "rewrite the golden files in testdata/webhook from the ctx fixtures")
	capture = flag.Bool("capture", false, "capture fresh ctx fixtures from a real Kratos into testdata/ctx")
)

// hookPoints are the hook points whose ctx the fixtures hold, with what Kratos gives each.
var hookPoints = map[string]struct{ identity, preIdentity, session bool }{
	"registration/before":   {},
	"registration/validate": {preIdentity: true},
	"registration/after":    {identity: true},
	"login/before":          {},
	"login/after":           {identity: true, session: true},
	"settings/before":       {},
	"settings/validate":     {identity: true},
	"settings/after":        {identity: true},
	"verification/before":   {},
	"verification/after":    {identity: true},
	"recovery/before":       {},
	"recovery/after":        {identity: true},
}

// render evaluates a template the way Kratos v1.3.1 does: go-jsonnet v0.20.0 (the version both pin), the
// template called with the top-level argument ctx, and no imports.
func render(t *testing.T, template []byte, ctx []byte) []byte {
	t.Helper()
	vm := gojsonnet.MakeVM()
	vm.Importer(&gojsonnet.MemoryImporter{Data: map[string]gojsonnet.Contents{}})
	vm.TLACode("ctx", string(ctx))
	out, err := vm.EvaluateAnonymousSnippet("webhook.jsonnet", string(template))
	require.NoError(t, err)
	return []byte(out)
}

func fixtureName(point string) string { return strings.ReplaceAll(point, "/", "-") + ".json" }

func TestWebhookTemplate_GoldenOnKratosContexts(t *testing.T) {
	for point := range hookPoints {
		t.Run(point, func(t *testing.T) {
			ctx, err := os.ReadFile(filepath.Join("testdata", "ctx", fixtureName(point)))
			require.NoError(t, err, "fixture missing: run go test ./jsonnet -run InsideKratos -capture")
			got := render(t, jsonnet.WebhookTemplate, ctx)

			golden := filepath.Join("testdata", "webhook", fixtureName(point))
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "golden missing: run go test ./jsonnet -update")
			require.JSONEq(t, string(want), string(got))
		})
	}
}

func TestWebhookTemplate_NeverForwardsCookiesOrTheFormContents(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "ctx", fixtureName("login/after")))
	require.NoError(t, err)
	var ctx map[string]any
	require.NoError(t, json.Unmarshal(raw, &ctx))
	ctx["request_cookies"] = map[string]any{"ory_kratos_session": "SESSION-COOKIE-VALUE", "csrf_token_x": "CSRF-VALUE"}
	ctx["request_headers"].(map[string]any)["Cookie"] = []any{"ory_kratos_session=SESSION-COOKIE-VALUE"}
	withCookies, _ := json.Marshal(ctx)

	out := string(render(t, jsonnet.WebhookTemplate, withCookies))
	require.NotContains(t, out, "SESSION-COOKIE-VALUE")
	require.NotContains(t, out, "CSRF-VALUE")
	require.NotContains(t, out, `"ui"`)
	require.NotContains(t, out, `"nodes"`)
}

// recorder is the web_hook target for TestWebhookTemplate_RendersInsideKratosAtEveryHookPoint: it keeps the
// first body each hook point sent and answers 200 {} (a no-op even for response.parse hooks).
type recorder struct {
	mu     sync.Mutex
	bodies map[string][]byte
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	if _, ok := r.bodies[strings.TrimPrefix(req.URL.Path, "/")]; !ok {
		r.bodies[strings.TrimPrefix(req.URL.Path, "/")] = b
	}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{}`))
}

func (r *recorder) get(point string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[point]
}

// TestWebhookTemplate_RendersInsideKratosAtEveryHookPoint drives every flow through a real Kratos whose every
// hook point sends webhook.jsonnet, and checks what arrived. With -capture it sends the whole ctx instead
// and stores it as the fixtures of the golden test.
func TestWebhookTemplate_RendersInsideKratosAtEveryHookPoint(t *testing.T) {
	rec := &recorder{bodies: map[string][]byte{}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)

	template, err := os.ReadFile(filepath.Join("testdata", "every-hook.kratos.yml"))
	require.NoError(t, err)
	body := jsonnet.WebhookTemplate
	if *capture {
		body = []byte("function(ctx) ctx")
	}
	k := testenv.StartKratos(t, testenv.KratosOpts{HooksURL: srv.URL, Template: template, WebhookBody: body})

	opts := testenv.FlowOpts{Headers: map[string]string{"True-Client-Ip": "203.0.113.7", "User-Agent": "kratos-hooks-test/1.0"}}
	email := testenv.Email("ctx")
	reg := k.Register(t, testenv.Traits(email, "Ctx", "Capture"), testenv.Password, map[string]any{"invite_code": "abc123"}, opts)
	require.Equal(t, http.StatusOK, reg.Status, string(reg.Body))
	flowID, status, raw := k.StartFlow(t, "login", "", opts)
	require.NotEmpty(t, flowID, "%d %s", status, raw)
	login := k.SubmitFlow(t, "login", flowID, "", map[string]any{"method": "password", "identifier": email, "password": testenv.Password,
		"transient_payload": map[string]any{"device": "test"}}, opts)
	require.Equal(t, http.StatusOK, login.Status, string(login.Body))
	flowID, status, raw = k.StartFlow(t, "settings", login.SessionToken, opts)
	require.NotEmpty(t, flowID, "%d %s", status, raw)
	settings := k.SubmitFlow(t, "settings", flowID, login.SessionToken, map[string]any{"method": "profile", "traits": testenv.Traits(email, "Ctx", "Changed")}, opts)
	require.Equal(t, http.StatusOK, settings.Status, string(settings.Body))
	k.VerifyByCode(t, email, opts)
	k.RecoverByCode(t, email, opts)

	testenv.Poll(t, 30*time.Second, func() error {
		var missing []string
		for point := range hookPoints {
			if rec.get(point) == nil {
				missing = append(missing, point)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			return &missingErr{missing}
		}
		return nil
	})

	for point, has := range hookPoints {
		got := rec.get(point)
		if *capture {
			var pretty bytes.Buffer
			require.NoError(t, json.Indent(&pretty, got, "", "  "))
			require.NoError(t, os.MkdirAll(filepath.Join("testdata", "ctx"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join("testdata", "ctx", fixtureName(point)), append(pretty.Bytes(), '\n'), 0o644))
			continue
		}
		var p struct {
			Flow struct {
				ID               string         `json:"id"`
				TransientPayload map[string]any `json:"transient_payload"`
			} `json:"flow"`
			Identity *struct {
				ID     string         `json:"id"`
				Traits map[string]any `json:"traits"`
			} `json:"identity"`
			Session *struct {
				AuthenticatedAt string `json:"authenticated_at"`
				Methods         []struct {
					Method string `json:"method"`
				} `json:"authentication_methods"`
			} `json:"session"`
			Request struct {
				ClientIP  string `json:"client_ip"`
				UserAgent string `json:"user_agent"`
			} `json:"request"`
		}
		require.NoError(t, json.Unmarshal(got, &p), point)
		require.NotEmpty(t, p.Flow.ID, point)
		require.Equal(t, "203.0.113.7", p.Request.ClientIP, point)
		require.Equal(t, "kratos-hooks-test/1.0", p.Request.UserAgent, point)
		require.Equal(t, has.identity || has.preIdentity, p.Identity != nil, point)
		if has.preIdentity {
			require.Equal(t, "00000000-0000-0000-0000-000000000000", p.Identity.ID, point)
		}
		if has.identity {
			require.NotEqual(t, "00000000-0000-0000-0000-000000000000", p.Identity.ID, point)
		}
		if p.Identity != nil {
			require.Equal(t, email, p.Identity.Traits["email"], point)
		}
		require.Equal(t, has.session, p.Session != nil, point)
		if has.session {
			require.NotEmpty(t, p.Session.AuthenticatedAt, point)
			require.Equal(t, "password", p.Session.Methods[0].Method, point)
		}
		if point == "registration/validate" || point == "registration/after" {
			require.Equal(t, "abc123", p.Flow.TransientPayload["invite_code"], point)
		}
	}
}

type missingErr struct{ points []string }

func (e *missingErr) Error() string { return "no delivery yet from " + strings.Join(e.points, ", ") }
