package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Kratos's native (API) self-service flows, driven the way a mobile app or a CLI drives them: no browser,
// no cookies, JSON in and out.

// FlowResult is Kratos's answer to a flow submission.
type FlowResult struct {
	Status int
	Body   []byte
	// Set on success.
	IdentityID   uuid.UUID
	SessionToken string
}

// FlowOpts are extra request details for starting and submitting a flow.
type FlowOpts struct {
	// Headers go on every request of the flow (True-Client-Ip, User-Agent, …).
	Headers map[string]string
}

// StartFlow starts a native flow ("registration", "login", "settings", "verification", "recovery") and
// returns its id, or the status and body when Kratos refuses to start it (a before hook said no).
func (k *Kratos) StartFlow(t testing.TB, kind, sessionToken string, opts FlowOpts) (flowID string, status int, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, k.PublicURL+"/self-service/"+kind+"/api", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	if sessionToken != "" {
		req.Header.Set("X-Session-Token", sessionToken)
	}
	for h, v := range opts.Headers {
		req.Header.Set(h, v)
	}
	status, body = do(t, req)
	if status != http.StatusOK {
		return "", status, body
	}
	var flow struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &flow); err != nil || flow.ID == "" {
		t.Fatalf("start %s flow: unexpected body %s", kind, body)
	}
	return flow.ID, status, body
}

// SubmitFlow posts payload to a started flow.
func (k *Kratos) SubmitFlow(t testing.TB, kind, flowID, sessionToken string, payload any, opts FlowOpts) FlowResult {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, k.PublicURL+"/self-service/"+kind+"?flow="+flowID, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	if sessionToken != "" {
		req.Header.Set("X-Session-Token", sessionToken)
	}
	for h, v := range opts.Headers {
		req.Header.Set(h, v)
	}
	res := FlowResult{}
	res.Status, res.Body = do(t, req)
	var ok struct {
		SessionToken string `json:"session_token"`
		Identity     struct {
			ID uuid.UUID `json:"id"`
		} `json:"identity"`
		Session struct {
			Identity struct {
				ID uuid.UUID `json:"id"`
			} `json:"identity"`
		} `json:"session"`
	}
	if res.Status == http.StatusOK && json.Unmarshal(res.Body, &ok) == nil {
		res.SessionToken = ok.SessionToken
		res.IdentityID = ok.Identity.ID
		if res.IdentityID == uuid.Nil {
			res.IdentityID = ok.Session.Identity.ID
		}
	}
	return res
}

// Register registers with the password method and returns Kratos's answer; it does not fail the test on a
// refusal, so tests can check refusals.
func (k *Kratos) Register(t testing.TB, traits map[string]any, password string, transient map[string]any, opts FlowOpts) FlowResult {
	t.Helper()
	flowID, status, body := k.StartFlow(t, "registration", "", opts)
	if flowID == "" {
		return FlowResult{Status: status, Body: body}
	}
	payload := map[string]any{"method": "password", "traits": traits, "password": password}
	if transient != nil {
		payload["transient_payload"] = transient
	}
	return k.SubmitFlow(t, "registration", flowID, "", payload, opts)
}

// MustRegister registers and fails the test unless Kratos created the identity.
func (k *Kratos) MustRegister(t testing.TB, traits map[string]any, password string) FlowResult {
	t.Helper()
	res := k.Register(t, traits, password, nil, FlowOpts{})
	if res.Status != http.StatusOK || res.IdentityID == uuid.Nil {
		t.Fatalf("register: %d %s", res.Status, res.Body)
	}
	return res
}

// MustLogin logs in with the password method and returns the session token.
func (k *Kratos) MustLogin(t testing.TB, identifier, password string) FlowResult {
	t.Helper()
	flowID, status, body := k.StartFlow(t, "login", "", FlowOpts{})
	if flowID == "" {
		t.Fatalf("start login: %d %s", status, body)
	}
	res := k.SubmitFlow(t, "login", flowID, "", map[string]any{"method": "password", "identifier": identifier, "password": password}, FlowOpts{})
	if res.Status != http.StatusOK || res.SessionToken == "" {
		t.Fatalf("login: %d %s", res.Status, res.Body)
	}
	return res
}

// UpdateProfile submits new traits through the settings flow (profile method).
func (k *Kratos) UpdateProfile(t testing.TB, sessionToken string, traits map[string]any) FlowResult {
	t.Helper()
	flowID, status, body := k.StartFlow(t, "settings", sessionToken, FlowOpts{})
	if flowID == "" {
		t.Fatalf("start settings: %d %s", status, body)
	}
	return k.SubmitFlow(t, "settings", flowID, sessionToken, map[string]any{"method": "profile", "traits": traits}, FlowOpts{})
}

func do(t testing.TB, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, b
}

// Traits builds identity traits for the shipped schema.
func Traits(email, first, last string) map[string]any {
	t := map[string]any{"email": email}
	if first != "" || last != "" {
		t["name"] = map[string]any{"first": first, "last": last}
	}
	return t
}

// Password is a password Kratos accepts (long, not in any breach list a test could hit).
const Password = "correct-horse-battery-staple-4711"

// Email makes an address unique to this test run.
func Email(prefix string) string { return fmt.Sprintf("%s@%s.example.com", Name(prefix), "test") }

// LatestCode waits for the newest one-time code Kratos's courier queued for recipient and returns it.
// No SMTP server runs in tests; the message stays in Kratos's courier_messages table.
func (k *Kratos) LatestCode(t testing.TB, recipient string, after time.Time) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, DatabaseURL(t, k.DB))
	if err != nil {
		t.Fatalf("connect to kratos database: %v", err)
	}
	defer conn.Close(ctx)
	var code string
	Poll(t, 20*time.Second, func() error {
		var body string
		err := conn.QueryRow(ctx, `SELECT body FROM courier_messages WHERE recipient = $1 AND created_at >= $2 ORDER BY created_at DESC LIMIT 1`,
			recipient, after.Add(-time.Second)).Scan(&body)
		if err != nil {
			return fmt.Errorf("no message for %s yet: %w", recipient, err)
		}
		m := codePattern.FindString(body)
		if m == "" {
			return fmt.Errorf("no code in the message to %s", recipient)
		}
		code = m
		return nil
	})
	return code
}

var codePattern = regexp.MustCompile(`\b[0-9]{6}\b`)

// VerifyByCode runs a verification flow with the code method for address.
func (k *Kratos) VerifyByCode(t testing.TB, address string, opts FlowOpts) FlowResult {
	t.Helper()
	return k.codeFlow(t, "verification", "email", address, opts)
}

// RecoverByCode runs a recovery flow with the code method for address.
func (k *Kratos) RecoverByCode(t testing.TB, address string, opts FlowOpts) FlowResult {
	t.Helper()
	return k.codeFlow(t, "recovery", "email", address, opts)
}

func (k *Kratos) codeFlow(t testing.TB, kind, field, address string, opts FlowOpts) FlowResult {
	t.Helper()
	flowID, status, body := k.StartFlow(t, kind, "", opts)
	if flowID == "" {
		t.Fatalf("start %s: %d %s", kind, status, body)
	}
	sent := time.Now()
	res := k.SubmitFlow(t, kind, flowID, "", map[string]any{"method": "code", field: address}, opts)
	if res.Status != http.StatusOK {
		t.Fatalf("%s: send code: %d %s", kind, res.Status, res.Body)
	}
	code := k.LatestCode(t, address, sent)
	return k.SubmitFlow(t, kind, flowID, "", map[string]any{"method": "code", "code": code}, opts)
}
