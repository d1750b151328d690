package hooks_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/gating"
	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

func TestIPGate_ThroughKratos(t *testing.T) {
	t.Parallel()
	allowed, err := gating.ParseRanges("198.51.100.0/24, 2001:db8::/32")
	require.NoError(t, err)
	denied, err := gating.ParseRanges("198.51.100.128/25, 2001:db8:bad::/48")
	require.NoError(t, err)
	s := startGateStack(t, hooks.Gating{IP: gating.IPPolicy{Allowed: allowed, Denied: denied, Missing: gating.MissingDeny}})

	for _, tt := range []struct {
		ip     string
		starts bool
	}{
		{"198.51.100.5", true},
		{"198.51.100.127", true},
		{"198.51.100.128", false}, // first address of the denied half
		{"198.51.100.255", false},
		{"192.0.2.1", false}, // outside the allow list
		{"::ffff:198.51.100.5", true},
		{"2001:db8::1", true},
		{"2001:db8:bad:ffff::1", false},
		{"2001:db9::1", false},
		{"", false}, // no True-Client-Ip, and IP_MISSING_POLICY=deny
	} {
		for _, kind := range []string{"registration", "login"} {
			flowID, status, body := s.kratos.StartFlow(t, kind, "", flowOpts(tt.ip))
			if tt.starts {
				require.NotEmpty(t, flowID, "%s from %q: %d %s", kind, tt.ip, status, body)
				continue
			}
			// Kratos shows a before hook's refusal only as a generic error, not in a form.
			require.Empty(t, flowID, "%s from %q started", kind, tt.ip)
			require.Equal(t, http.StatusBadGateway, status, "%s from %q", kind, tt.ip)
			require.Contains(t, string(body), "webhook failed with status code 403")
		}
	}

	// A flow started from an allowed address but submitted from a denied one is refused at submission, in
	// the form.
	flowID, _, _ := s.kratos.StartFlow(t, "registration", "", flowOpts("198.51.100.5"))
	require.NotEmpty(t, flowID)
	email := testenv.Email("hopper")
	res := s.kratos.SubmitFlow(t, "registration", flowID, "", map[string]any{
		"method": "password", "traits": testenv.Traits(email, "", ""), "password": testenv.Password,
	}, flowOpts("198.51.100.200"))
	msg := requireRefusedAt(t, res, "", hooks.MsgRegistrationNetwork)
	require.Equal(t, "198.51.100.200", msg.Context["ip"])
	require.Empty(t, s.identityWith(t, email))

	// From an allowed address, registration and login go through.
	requireRegistered(t, s.register(t, testenv.Traits(email, "", ""), "", "2001:db8::42"))
}

func TestIPGate_RefusalSaysWhy(t *testing.T) {
	t.Parallel()
	denied, err := gating.ParseRanges("203.0.113.0/24")
	require.NoError(t, err)
	s := startGateStack(t, hooks.Gating{IP: gating.IPPolicy{Denied: denied}})
	flow := map[string]any{"flow": map[string]any{"id": uuid.NewString()}, "request": map[string]any{"client_ip": "203.0.113.9"}}

	status, body := s.hookCall(t, "/hooks/login/before", flow)
	require.Equal(t, http.StatusForbidden, status)
	require.JSONEq(t, `{"messages":[{"instance_ptr":"#/","messages":[{"id":4900302,"text":"Sign-in from your network is not allowed.","type":"error","context":{"ip":"203.0.113.9"}}]}]}`, string(body))

	flow["request"] = map[string]any{"client_ip": "203.0.114.9"}
	status, body = s.hookCall(t, "/hooks/registration/before", flow)
	require.Equal(t, http.StatusNoContent, status, string(body))
	require.Empty(t, body)
}

func TestDomainRules_ThroughKratos(t *testing.T) {
	t.Parallel()
	allowed, err := gating.ParseDomains("*.example.com, example.org")
	require.NoError(t, err)
	denied, err := gating.ParseDomains("blocked.example.com, *.spam.example.com")
	require.NoError(t, err)
	s := startGateStack(t, hooks.Gating{Domains: gating.DomainPolicy{Allowed: allowed, Denied: denied}})

	// testenv.Email addresses are at test.example.com: allowed by *.example.com.
	user := testenv.Email("domains")
	requireRegistered(t, s.register(t, testenv.Traits(user, "", ""), "", ""))
	requireRegistered(t, s.register(t, testenv.Traits(testenv.Name("org")+"@Example.ORG", "", ""), "", ""))

	for email, domain := range map[string]string{
		"someone@gmail.com":                "gmail.com",           // not on the allow list
		"someone@example.com":              "example.com",         // *.example.com does not cover example.com
		"someone@BLOCKED.Example.com":      "blocked.example.com", // denied, whatever the letter case
		"someone@deep.er.spam.example.com": "deep.er.spam.example.com",
	} {
		res := s.register(t, testenv.Traits(email, "", ""), "", "")
		msg := requireRefusedAt(t, res, "traits.email", hooks.MsgEmailDomainNotAllowed)
		require.Equal(t, domain, msg.Context["domain"], email)
		require.Contains(t, msg.Text, domain)
		require.Empty(t, s.identityWith(t, email))
	}

	// Settings: changing the e-mail address to a denied domain is refused on the field, and Kratos keeps
	// the old address; other changes and allowed addresses go through.
	session := s.kratos.MustLogin(t, user, testenv.Password).SessionToken
	res := s.kratos.UpdateProfile(t, session, testenv.Traits("moved@blocked.example.com", "", ""))
	requireRefusedAt(t, res, "traits.email", hooks.MsgEmailDomainNotAllowed)
	require.Len(t, s.identityWith(t, user), 1)
	require.Empty(t, s.identityWith(t, "moved@blocked.example.com"))

	res = s.kratos.UpdateProfile(t, session, testenv.Traits(user, "Ada", "Lovelace"))
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	moved := testenv.Email("moved")
	res = s.kratos.UpdateProfile(t, session, testenv.Traits(moved, "Ada", "Lovelace"))
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	require.Len(t, s.identityWith(t, moved), 1)
}

func TestSettingsValidate_AnUnchangedAddressAtANewlyDeniedDomainPasses(t *testing.T) {
	t.Parallel()
	denied, err := gating.ParseDomains("legacy.example.net")
	require.NoError(t, err)
	s := startGateStack(t, hooks.Gating{Domains: gating.DomainPolicy{Denied: denied}})

	// The profile as sync stored it, from before the domain was denied.
	id := uuid.New()
	_, err = s.db.Pool.Exec(s.ctx, `INSERT INTO profiles (identity_id, traits) VALUES ($1, $2)`, id,
		map[string]any{"email": "Old@legacy.example.net"})
	require.NoError(t, err)
	call := func(email string) (int, []byte) {
		return s.hookCall(t, "/hooks/settings/validate", map[string]any{
			"flow":     map[string]any{"id": uuid.NewString()},
			"identity": map[string]any{"id": id.String(), "traits": map[string]any{"email": email, "name": map[string]any{"first": "Renamed"}}},
		})
	}
	status, body := call("old@legacy.example.net")
	require.Equal(t, http.StatusNoContent, status, string(body))

	status, body = call("other@legacy.example.net")
	require.Equal(t, http.StatusForbidden, status)
	var refusal struct {
		Messages []hooks.FieldMessages `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(body, &refusal))
	require.Equal(t, "#/traits/email", refusal.Messages[0].InstancePtr)
	require.Equal(t, hooks.MsgEmailDomainNotAllowed, refusal.Messages[0].Messages[0].ID)
}

func TestGatingHooks_MalformedCallsGetA400(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})
	for path, body := range map[string]any{
		"/hooks/registration/validate": map[string]any{"flow": map[string]any{"id": uuid.NewString()}}, // no identity
		"/hooks/settings/validate":     map[string]any{"flow": map[string]any{"id": uuid.NewString()}, "identity": map[string]any{"id": uuid.Nil.String()}},
		"/hooks/registration/before":   map[string]any{"flow": map[string]any{"id": "not-a-uuid"}},
		"/hooks/login/before":          []int{1, 2},
	} {
		status, out := s.hookCall(t, path, body)
		require.Equal(t, http.StatusBadRequest, status, "%s: %s", path, out)
		require.Contains(t, string(out), `"code":400`, path)
	}
	// Success of a validate hook is a 204: Kratos fails a flow on an empty 200.
	inv := s.createInvite(t, invites.CreateOpts{Code: true})
	status, out := s.hookCall(t, "/hooks/registration/validate", map[string]any{
		"flow":     map[string]any{"id": uuid.NewString(), "transient_payload": map[string]any{"invite_code": inv.Code}},
		"identity": map[string]any{"id": uuid.Nil.String(), "traits": map[string]any{"email": "x@example.com"}},
	})
	require.Equal(t, http.StatusNoContent, status, string(out))
	// A code that is not a string is a wrong code, not a crash.
	status, out = s.hookCall(t, "/hooks/registration/validate", map[string]any{
		"flow":     map[string]any{"id": uuid.NewString(), "transient_payload": map[string]any{"invite_code": map[string]any{"x": 1}}},
		"identity": map[string]any{"id": uuid.Nil.String(), "traits": map[string]any{"email": "y@example.com"}},
	})
	require.Equal(t, http.StatusForbidden, status, string(out))
	require.Contains(t, string(out), `"id":4900202`)
}
