package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// stack is a real Kratos wired to kratos-hooks (run in-process) with its own database.
type stack struct {
	db     *testenv.DB
	kratos *testenv.Kratos
	svc    *service
}

// startStack starts the service on a free port and a Kratos whose hooks point at hooksURL(serviceURL):
// the service itself, or a proxy in front of it.
func startStack(t *testing.T, hooksURL func(serviceURL string) string) *stack {
	t.Helper()
	s := &stack{db: testenv.NewDB(t)}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	serviceURL := "http://" + addr
	if hooksURL == nil {
		hooksURL = func(u string) string { return u }
	}
	s.kratos = testenv.StartKratos(t, testenv.KratosOpts{HooksURL: hooksURL(serviceURL)})
	s.svc = startService(t, map[string]string{
		"LISTEN_ADDR":      addr,
		"DATABASE_URL":     s.db.URL,
		"KRATOS_ADMIN_URL": s.kratos.AdminURL,
	})
	return s
}

type profileRow struct {
	Email       *string
	Name        *string
	Traits      map[string]any
	Revision    int64
	LastLoginAt *time.Time
	LoginCount  int64
}

func (s *stack) profile(t *testing.T, id uuid.UUID) (profileRow, error) {
	var p profileRow
	err := s.db.Pool.QueryRow(context.Background(),
		`SELECT email, name, traits, revision, last_login_at, login_count FROM profiles WHERE identity_id = $1`, id).
		Scan(&p.Email, &p.Name, &p.Traits, &p.Revision, &p.LastLoginAt, &p.LoginCount)
	return p, err
}

func TestEndToEnd_KratosFlowsKeepTheProfileInStep(t *testing.T) {
	s := startStack(t, nil)
	email := testenv.Email("alice")

	// Registration through Kratos's native API makes a profile row with the identity's traits.
	reg := s.kratos.MustRegister(t, testenv.Traits(email, "Alice", "Liddell"), testenv.Password)
	var p profileRow
	testenv.Poll(t, 20*time.Second, func() (err error) {
		p, err = s.profile(t, reg.IdentityID)
		return err
	})
	require.Equal(t, email, *p.Email)
	require.Equal(t, "Alice Liddell", *p.Name)
	require.Equal(t, map[string]any{"first": "Alice", "last": "Liddell"}, p.Traits["name"])
	require.Nil(t, p.LastLoginAt)
	first := p.Revision

	// A profile change in the settings flow changes the row and bumps its revision.
	res := s.kratos.UpdateProfile(t, reg.SessionToken, testenv.Traits(email, "Alice", "Pleasance"))
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	testenv.Poll(t, 20*time.Second, func() (err error) {
		if p, err = s.profile(t, reg.IdentityID); err != nil {
			return err
		}
		if p.Name == nil || *p.Name != "Alice Pleasance" {
			return fmt.Errorf("name is %v", p.Name)
		}
		return nil
	})
	require.Greater(t, p.Revision, first)

	// A login records last_login_at and counts one login.
	before := time.Now().Add(-time.Minute)
	s.kratos.MustLogin(t, email, testenv.Password)
	testenv.Poll(t, 20*time.Second, func() (err error) {
		if p, err = s.profile(t, reg.IdentityID); err != nil {
			return err
		}
		if p.LastLoginAt == nil {
			return fmt.Errorf("last_login_at not set")
		}
		return nil
	})
	require.True(t, p.LastLoginAt.After(before), "last_login_at %s", p.LastLoginAt)
	require.EqualValues(t, 1, p.LoginCount)
}

// retryingProxy forwards every hook delivery to the service but answers the first failures of each flow's
// deliveries with 500, so that Kratos retries the same bytes: the service sees every attempt, as it would
// if its own answers had been lost on the way back.
type retryingProxy struct {
	target   *url.URL
	failures int

	mu       sync.Mutex
	attempts map[string][][]byte // by path: bodies in arrival order
}

func (p *retryingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	p.attempts[r.URL.Path] = append(p.attempts[r.URL.Path], body)
	n := len(p.attempts[r.URL.Path])
	p.mu.Unlock()

	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	httputil.NewSingleHostReverseProxy(p.target).ServeHTTP(rec, r)
	// Only after hooks fail: the gating hooks (before, validate) in the same flows would make Kratos wait out
	// their retries too, for nothing this test looks at.
	if n <= p.failures && strings.HasSuffix(r.URL.Path, "/after") {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (p *retryingProxy) bodies(path string) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.attempts[path]...)
}

func TestEndToEnd_KratosRetryingADeliveryMakesOneEventAndCountsOneLogin(t *testing.T) {
	proxy := &retryingProxy{failures: 2, attempts: map[string][][]byte{}}
	s := startStack(t, func(serviceURL string) string {
		proxy.target, _ = url.Parse(serviceURL)
		srv := httptest.NewServer(proxy)
		t.Cleanup(srv.Close)
		return srv.URL
	})
	email := testenv.Email("retried")
	reg := s.kratos.MustRegister(t, testenv.Traits(email, "", ""), testenv.Password)
	s.kratos.MustLogin(t, email, testenv.Password)

	// Kratos makes three attempts (1 s and 2 s apart) with identical bodies.
	testenv.Poll(t, 30*time.Second, func() error {
		if n := len(proxy.bodies("/hooks/login/after")); n < 3 {
			return fmt.Errorf("%d login deliveries so far", n)
		}
		return nil
	})
	deliveries := proxy.bodies("/hooks/login/after")
	require.Len(t, deliveries, 3)
	require.Equal(t, deliveries[0], deliveries[1])
	require.Equal(t, deliveries[0], deliveries[2])

	var p profileRow
	testenv.Poll(t, 20*time.Second, func() (err error) {
		if p, err = s.profile(t, reg.IdentityID); err != nil {
			return err
		}
		if p.LoginCount == 0 {
			return fmt.Errorf("login not counted yet")
		}
		return nil
	})
	require.EqualValues(t, 1, p.LoginCount)

	ctx := context.Background()
	var events, jobs int
	require.NoError(t, s.db.Pool.QueryRow(ctx,
		`SELECT count(*) FROM hook_events WHERE identity_id = $1 AND hook = $2`, reg.IdentityID, string(profilesync.HookLoginAfter)).Scan(&events))
	require.NoError(t, s.db.Pool.QueryRow(ctx,
		`SELECT count(*) FROM river_job WHERE kind = 'sync_identity' AND args->>'identity_id' = $1 AND args->'event'->>'hook' = $2`,
		reg.IdentityID.String(), string(profilesync.HookLoginAfter)).Scan(&jobs))
	require.Equal(t, 1, events, "hook_events rows for the login")
	require.Equal(t, 1, jobs, "sync jobs for the login")
}
