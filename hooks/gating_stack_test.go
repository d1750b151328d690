package hooks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// gateStack is the HTTP side of kratos-hooks (in-process, with an injected clock) behind a switchable proxy,
// and a real Kratos whose hooks point at that proxy, with the shipped kratos.yml.
type gateStack struct {
	db     *testenv.DB
	kratos *testenv.Kratos
	// url is the service itself, without the proxy.
	url   string
	clock *testClock
	proxy *switchProxy
	ctx   context.Context
}

// adminToken is the admin API token of every gate stack.
const adminToken = "test-admin-token-0123456789"

// fastHashing makes Kratos hash passwords with the cheapest bcrypt cost (--dev allows it): the race test
// sends twenty registrations at once on two cores.
const fastHashing = "hashers: {bcrypt: {cost: 4}}\n"

func startGateStack(t *testing.T, g hooks.Gating) *gateStack {
	t.Helper()
	s := &gateStack{db: testenv.NewDB(t), clock: &testClock{}, ctx: testenv.Context(t)}
	jobs, err := river.NewClient(riverpgxv5.New(s.db.Pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	h := hooks.New(hooks.Opts{
		Logger:         slog.New(slog.DiscardHandler),
		Pool:           s.db.Pool,
		Jobs:           jobs,
		APIKeys:        []string{testenv.APIKey},
		DBTimeout:      2 * time.Second,
		Hooks:          true,
		Gating:         g,
		AdminAPITokens: []string{adminToken},
		NowFunc:        s.clock.Now,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	target, _ := url.Parse(srv.URL)
	s.proxy = &switchProxy{next: httputil.NewSingleHostReverseProxy(target)}
	proxy := httptest.NewServer(s.proxy)
	t.Cleanup(proxy.Close)
	s.kratos = testenv.StartKratos(t, testenv.KratosOpts{HooksURL: proxy.URL, Overlay: fastHashing})
	return s
}

// register starts a registration flow and submits it with the password method, from client address ip
// ("" sends no True-Client-Ip).
func (s *gateStack) register(t *testing.T, traits map[string]any, code, ip string) testenv.FlowResult {
	t.Helper()
	var transient map[string]any
	if code != "" {
		transient = map[string]any{"invite_code": code}
	}
	return s.kratos.Register(t, traits, testenv.Password, transient, flowOpts(ip))
}

func flowOpts(ip string) testenv.FlowOpts {
	if ip == "" {
		return testenv.FlowOpts{}
	}
	return testenv.FlowOpts{Headers: map[string]string{"True-Client-Ip": ip}}
}

func (s *gateStack) createInvite(t *testing.T, opts invites.CreateOpts) invites.Created {
	t.Helper()
	c, err := invites.Create(s.ctx, s.db.Pool, opts, s.clock.Now())
	require.NoError(t, err)
	return c
}

func (s *gateStack) invite(t *testing.T, id uuid.UUID) invites.Invite {
	t.Helper()
	inv, err := invites.Get(s.ctx, s.db.Pool, id)
	require.NoError(t, err)
	return inv
}

// identities lists every identity Kratos has.
func (s *gateStack) identities(t *testing.T) []kratos.Identity {
	t.Helper()
	page, err := s.kratos.Admin.ListIdentities(s.ctx, kratos.ListOpts{PageSize: kratos.MaxPageSize})
	require.NoError(t, err)
	require.Empty(t, page.NextPageToken)
	return page.Identities
}

// identityWith returns the identities Kratos has for an identifier (an e-mail address, a phone number).
func (s *gateStack) identityWith(t *testing.T, identifier string) []kratos.Identity {
	t.Helper()
	page, err := s.kratos.Admin.ListIdentities(s.ctx, kratos.ListOpts{CredentialsIdentifier: identifier})
	require.NoError(t, err)
	return page.Identities
}

// kratosMessage is a message as Kratos shows it in a flow's UI.
type kratosMessage struct {
	ID      int            `json:"id"`
	Text    string         `json:"text"`
	Type    string         `json:"type"`
	Context map[string]any `json:"context"`
}

// formMessages reads the messages of a flow Kratos returned: by field name ("traits.email"), and the form's
// own under "".
func formMessages(t *testing.T, body []byte) map[string][]kratosMessage {
	t.Helper()
	var flow struct {
		UI struct {
			Messages []kratosMessage `json:"messages"`
			Nodes    []struct {
				Attributes struct {
					Name string `json:"name"`
				} `json:"attributes"`
				Messages []kratosMessage `json:"messages"`
			} `json:"nodes"`
		} `json:"ui"`
	}
	require.NoError(t, json.Unmarshal(body, &flow), string(body))
	out := map[string][]kratosMessage{}
	if len(flow.UI.Messages) > 0 {
		out[""] = flow.UI.Messages
	}
	for _, n := range flow.UI.Nodes {
		if len(n.Messages) > 0 {
			out[n.Attributes.Name] = append(out[n.Attributes.Name], n.Messages...)
		}
	}
	return out
}

// requireRefusedAt checks that Kratos refused a flow with HTTP 400 and showed exactly message id at field
// ("" for the form itself).
func requireRefusedAt(t *testing.T, res testenv.FlowResult, field string, id int) kratosMessage {
	t.Helper()
	require.Equal(t, http.StatusBadRequest, res.Status, string(res.Body))
	msgs := formMessages(t, res.Body)
	require.Len(t, msgs[field], 1, "messages: %+v", msgs)
	require.Equal(t, id, msgs[field][0].ID, "messages: %+v", msgs)
	require.Equal(t, "error", msgs[field][0].Type)
	require.NotEmpty(t, msgs[field][0].Text)
	return msgs[field][0]
}

func requireRegistered(t *testing.T, res testenv.FlowResult) uuid.UUID {
	t.Helper()
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	require.NotEqual(t, uuid.Nil, res.IdentityID)
	return res.IdentityID
}

// adminCall calls the admin API directly (not through the proxy).
func (s *gateStack) adminCall(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url+path, r)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// hookCall posts a body straight to a hook endpoint, as Kratos would.
func (s *gateStack) hookCall(t *testing.T, path string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, out
}

// testClock is the service's clock: real time plus an offset the test moves.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// switchProxy forwards Kratos's hook calls to the service. On demand it replaces the service's answer to
// the next call of a path with a 500 after forwarding it (as if the answer were lost on the way back, so
// that Kratos retries the same bytes), or drops calls to a path without forwarding them (a lost delivery).
// A real Kratos cannot be made to lose an answer on demand; this is the one fake in these tests.
type switchProxy struct {
	next http.Handler

	mu       sync.Mutex
	failNext map[string]int
	drop     map[string]bool
	calls    map[string]int
	dropped  atomic.Int64
}

func (p *switchProxy) failNextCalls(path string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failNext == nil {
		p.failNext = map[string]int{}
	}
	p.failNext[path] = n
}

func (p *switchProxy) dropCalls(path string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drop == nil {
		p.drop = map[string]bool{}
	}
	p.drop[path] = on
}

func (p *switchProxy) count(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[path]
}

func (p *switchProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	p.mu.Lock()
	if p.calls == nil {
		p.calls = map[string]int{}
	}
	p.calls[path]++
	drop := p.drop[path]
	fail := p.failNext[path] > 0
	if fail {
		p.failNext[path]--
	}
	p.mu.Unlock()

	if drop {
		p.dropped.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if !fail {
		p.next.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	p.next.ServeHTTP(rec, r)
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte(strings.Repeat(" ", 1)))
}
