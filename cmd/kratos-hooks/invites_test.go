package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

func TestInvitesCLI_CreateListRevoke(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	env := map[string]string{"DATABASE_URL": db.URL, "LOG_FORMAT": "json"}

	// --json prints exactly one compact line of JSON on stdout; the log goes to stderr.
	out, stderr, err := runCLI(t, env, "invites", "create", "--code", "--max-uses", "5", "--expires", "72h", "--note", "beta", "--json")
	require.NoError(t, err, stderr)
	require.Equal(t, 1, strings.Count(out, "\n"))
	require.True(t, strings.HasSuffix(out, "}\n"))
	require.NotContains(t, strings.TrimSpace(out), "\n")
	require.NotContains(t, strings.TrimSpace(out), " ", "compact")
	var code map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &code))
	require.ElementsMatch(t, []string{"id", "code", "email", "expires_at", "max_uses"}, mapKeys(code))
	require.Nil(t, code["email"])
	require.EqualValues(t, 5, code["max_uses"])
	require.Regexp(t, `^[A-Z2-7]{4}(-[A-Z2-7]{4}){7}$`, code["code"])
	require.Contains(t, stderr, `"msg":"invite created"`)
	require.NotContains(t, stderr, code["code"].(string)[:9], "the code is never logged")

	out, stderr, err = runCLI(t, env, "invites", "create", "--email", "Zoe@Example.com", "--json")
	require.NoError(t, err, stderr)
	var email map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &email))
	require.Nil(t, email["code"])
	require.Equal(t, "zoe@example.com", email["email"])
	expires, err := time.Parse(time.RFC3339Nano, email["expires_at"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(7*24*time.Hour), expires, time.Minute, "seven days by default")

	// Without --json, the code is printed once, with a word on it.
	out, _, err = runCLI(t, env, "invites", "create", "--code")
	require.NoError(t, err)
	require.Contains(t, out, "Code: ")
	require.Contains(t, out, "shown only now")

	out, _, err = runCLI(t, env, "invites", "list")
	require.NoError(t, err)
	require.Contains(t, out, "for zoe@example.com")
	require.Contains(t, out, "0/5")
	require.Contains(t, out, "beta")
	require.NotContains(t, out, code["code"].(string)[:9])

	out, _, err = runCLI(t, env, "invites", "revoke", code["id"].(string))
	require.NoError(t, err)
	require.Contains(t, out, "Revoked invite "+code["id"].(string))

	out, _, err = runCLI(t, env, "invites", "list", "--json")
	require.NoError(t, err)
	var list []invites.Report
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Len(t, list, 3)
	statuses := map[string]invites.Status{}
	for _, r := range list {
		statuses[r.ID.String()] = r.Status
	}
	require.Equal(t, invites.StatusRevoked, statuses[code["id"].(string)])
	require.Equal(t, invites.StatusActive, statuses[email["id"].(string)])

	_, stderr, err = runCLI(t, env, "invites", "revoke", "00000000-0000-0000-0000-000000000001")
	require.Error(t, err)
	require.Contains(t, stderr, "no invite 00000000-0000-0000-0000-000000000001")
}

func TestInvitesCLI_BadCommandLinesAreUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x"}
	for _, args := range [][]string{
		{"invites", "create"},
		{"invites", "create", "--code", "--email", "a@example.com"},
		{"invites", "create", "--code", "--expires", "-1h"},
		{"invites", "create", "--code", "--expires", "soon"},
		{"invites", "create", "--code", "--max-uses", "0"},
		{"invites", "revoke"},
		{"invites", "revoke", "not-a-uuid"},
	} {
		_, stderr, err := runCLI(t, env, args...)
		var usage *usageError
		require.ErrorAs(t, err, &usage, args)
		require.Contains(t, stderr, "Usage: kratos-hooks invites", args)
	}
	_, stderr, err := runCLI(t, map[string]string{}, "invites", "list")
	require.Error(t, err)
	require.Contains(t, stderr, "DATABASE_URL is not set")
}

func TestServe_GatingConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	base := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "KRATOS_ADMIN_URL": "http://127.0.0.1:1", "HOOKS_API_KEY": testenv.APIKey}
	for variable, tt := range map[string]struct{ value, says string }{
		"REGISTRATION_MODE":          {"closed", `REGISTRATION_MODE "closed": want open or invite`},
		"DENIED_IP_RANGES":           {"10.0.0.0/33", "DENIED_IP_RANGES: \"10.0.0.0/33\""},
		"ALLOWED_IP_RANGES":          {"intranet", "ALLOWED_IP_RANGES: \"intranet\""},
		"IP_MISSING_POLICY":          {"maybe", "IP_MISSING_POLICY"},
		"DENIED_EMAIL_DOMAINS":       {"*", "DENIED_EMAIL_DOMAINS"},
		"DENIED_EMAIL_DOMAINS_FILE":  {filepath.Join(t.TempDir(), "missing.txt"), "DENIED_EMAIL_DOMAINS_FILE"},
		"ALLOWED_EMAIL_DOMAINS_FILE": {writeFile(t, "ok.example\nnot a domain!\n"), "ALLOWED_EMAIL_DOMAINS_FILE"},
		"ADMIN_API_TOKEN":            {testenv.APIKey, "ADMIN_API_TOKEN must differ from every HOOKS_API_KEY"},
		"INVITE_GUESS_LIMIT":         {"0", "INVITE_GUESS_LIMIT must be at least 1"},
		"INVITE_RESERVATION_TIMEOUT": {"soon", "INVITE_RESERVATION_TIMEOUT"},
	} {
		env := map[string]string{variable: tt.value}
		for k, v := range base {
			env[k] = v
		}
		_, stderr, err := runCLI(t, env, "serve")
		require.Error(t, err, variable)
		require.Contains(t, stderr, tt.says, variable)
	}
	env := map[string]string{"ADMIN_API_TOKEN": "short"}
	for k, v := range base {
		env[k] = v
	}
	_, stderr, err := runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, "ADMIN_API_TOKEN: token 1 of 1 is shorter than 16 characters")
}

// TestEndToEnd_InviteOnlyRegistration runs `serve` in invite-only mode with every gating setting, a real
// Kratos wired by the shipped kratos.yml, and invites made with the CLI.
func TestEndToEnd_InviteOnlyRegistration(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	k := testenv.StartKratos(t, testenv.KratosOpts{HooksURL: "http://" + addr})
	const adminToken = "e2e-admin-token-0123456789"
	svc := startService(t, map[string]string{
		"LISTEN_ADDR":               addr,
		"DATABASE_URL":              db.URL,
		"KRATOS_ADMIN_URL":          k.AdminURL,
		"REGISTRATION_MODE":         "invite",
		"ADMIN_API_TOKEN":           adminToken,
		"DENIED_IP_RANGES":          "203.0.113.0/24",
		"DENIED_EMAIL_DOMAINS_FILE": writeFile(t, "# disposable\nmailinator.example\n*.throwaway.example\n"),
	})
	cli := map[string]string{"DATABASE_URL": db.URL, "LOG_LEVEL": "warn"}
	ip := testenv.FlowOpts{Headers: map[string]string{"True-Client-Ip": "198.51.100.1"}}

	// Uninvited: refused on the e-mail field.
	email := testenv.Email("e2e")
	res := k.Register(t, testenv.Traits(email, "", ""), testenv.Password, nil, ip)
	require.Equal(t, http.StatusBadRequest, res.Status, string(res.Body))
	require.Contains(t, string(res.Body), fmt.Sprint(hooks.MsgInviteRequired))

	// A code made with the CLI admits the holder, and the new identity gets its profile.
	out, stderr, err := runCLI(t, cli, "invites", "create", "--code", "--json")
	require.NoError(t, err, stderr)
	var created invites.Summary
	require.NoError(t, json.Unmarshal([]byte(out), &created))
	res = k.Register(t, testenv.Traits(email, "Eve", ""), testenv.Password, map[string]any{"invite_code": *created.Code}, ip)
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	testenv.Poll(t, 20*time.Second, func() error {
		out, _, err := runCLI(t, cli, "invites", "list", "--json")
		if err != nil {
			return err
		}
		if !strings.Contains(out, res.IdentityID.String()) {
			return fmt.Errorf("invite not bound yet: %s", out)
		}
		return nil
	})
	var profiles int
	testenv.Poll(t, 20*time.Second, func() error {
		if err := db.Pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM profiles WHERE identity_id = $1`, res.IdentityID).Scan(&profiles); err != nil || profiles != 1 {
			return fmt.Errorf("profile rows %d, %v", profiles, err)
		}
		return nil
	})

	// The domain file and the IP ranges apply.
	out, _, err = runCLI(t, cli, "invites", "create", "--email", "x@sub.throwaway.example", "--json")
	require.NoError(t, err, out)
	res = k.Register(t, testenv.Traits("x@sub.throwaway.example", "", ""), testenv.Password, nil, ip)
	require.Equal(t, http.StatusBadRequest, res.Status, string(res.Body))
	require.Contains(t, string(res.Body), fmt.Sprint(hooks.MsgEmailDomainNotAllowed))
	flowID, status, _ := k.StartFlow(t, "registration", "", testenv.FlowOpts{Headers: map[string]string{"True-Client-Ip": "203.0.113.7"}})
	require.Empty(t, flowID)
	require.Equal(t, http.StatusBadGateway, status)

	// The admin API of the running service wants its token.
	resp, err := http.Get(svc.URL + "/admin/invites")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	req, _ := http.NewRequest(http.MethodGet, svc.URL+"/admin/invites", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func mapKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
