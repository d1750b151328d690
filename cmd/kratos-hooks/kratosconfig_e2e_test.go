package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// TestShippedKratosConfig_EveryWiredHookFires starts Kratos with exactly the shipped kratos/kratos.yml and
// identity schema (rendered by the same code as `kratos-hooks kratos-config`), drives every flow through its
// native API with each method that has its own hook list, and counts what reached the service per hook point
// and per person: a hook in the wrong list (a global list shadowed by a per-method one, a parse hook in a
// post-persist list) would never arrive.
func TestShippedKratosConfig_EveryWiredHookFires(t *testing.T) {
	proxy := &retryingProxy{attempts: map[string][][]byte{}}
	db := testenv.NewDB(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	proxy.target, _ = url.Parse("http://" + addr)
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	k := testenv.StartKratos(t, testenv.KratosOpts{HooksURL: front.URL, WatchCourier: true})
	startService(t, map[string]string{
		"LISTEN_ADDR": addr, "DATABASE_URL": db.URL, "KRATOS_ADMIN_URL": k.AdminURL,
		"ADMIN_API_TOKEN": adminToken, "DEV_SMS_SINK": "true",
	})

	// Person A: password registration and login, both kinds of settings, verification and recovery.
	a := testenv.Email("a")
	reg := k.Register(t, testenv.Traits(a, "Ann", "A"), testenv.Password, nil, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, reg.Status, string(reg.Body))
	login := k.MustLogin(t, a, testenv.Password)
	res := k.UpdateProfile(t, login.SessionToken, testenv.Traits(a, "Ann", "Changed"))
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	flowID, status, body := k.StartFlow(t, "settings", login.SessionToken, testenv.FlowOpts{})
	require.NotEmpty(t, flowID, "%d %s", status, body)
	res = k.SubmitFlow(t, "settings", flowID, login.SessionToken, map[string]any{"method": "password", "password": testenv.Password + "-new"}, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	res = k.VerifyByCode(t, a, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	k.RecoverByCode(t, a, testenv.FlowOpts{})

	// Person B: registration and login with a one-time code instead of a password (the code method's lists).
	b := testenv.Email("b")
	flowID, status, body = k.StartFlow(t, "registration", "", testenv.FlowOpts{})
	require.NotEmpty(t, flowID, "%d %s", status, body)
	sent := time.Now()
	res = k.SubmitFlow(t, "registration", flowID, "", map[string]any{"method": "code", "traits": testenv.Traits(b, "", "")}, testenv.FlowOpts{})
	require.Contains(t, []int{http.StatusOK, http.StatusBadRequest}, res.Status, string(res.Body)) // 400: "code sent", with the flow
	res = k.SubmitFlow(t, "registration", flowID, "", map[string]any{"method": "code", "traits": testenv.Traits(b, "", ""), "code": k.LatestCode(t, b, sent)}, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	flowID, status, body = k.StartFlow(t, "login", "", testenv.FlowOpts{})
	require.NotEmpty(t, flowID, "%d %s", status, body)
	sent = time.Now()
	res = k.SubmitFlow(t, "login", flowID, "", map[string]any{"method": "code", "identifier": b}, testenv.FlowOpts{})
	require.Contains(t, []int{http.StatusOK, http.StatusBadRequest}, res.Status, string(res.Body))
	res = k.SubmitFlow(t, "login", flowID, "", map[string]any{"method": "code", "identifier": b, "code": k.LatestCode(t, b, sent)}, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))

	// Who each hook point was called for: the before hooks carry no identity ("-").
	want := map[string][]string{
		"/hooks/registration/before":   {"-", "-"},
		"/hooks/registration/validate": {a, b},
		"/hooks/registration/after":    {a, b},
		"/hooks/login/before":          {"-", "-"},
		"/hooks/login/after":           {a, b},
		"/hooks/settings/validate":     {a},
		"/hooks/settings/after":        {a, a}, // the profile method and the password method
		"/hooks/verification/after":    {a},
		"/hooks/recovery/after":        {a},
	}
	var got map[string][]string
	testenv.Poll(t, 30*time.Second, func() error {
		got = map[string][]string{}
		for path := range want {
			for _, raw := range proxy.bodies(path) {
				var p struct {
					Identity *struct {
						Traits map[string]any `json:"traits"`
					} `json:"identity"`
				}
				require.NoError(t, json.Unmarshal(raw, &p), path)
				who := "-"
				if p.Identity != nil {
					who, _ = p.Identity.Traits["email"].(string)
				}
				got[path] = append(got[path], who)
			}
			sort.Strings(got[path])
		}
		for path, people := range want {
			sorted := append([]string(nil), people...)
			sort.Strings(sorted)
			if strings.Join(got[path], ",") != strings.Join(sorted, ",") {
				return fmt.Errorf("%s called for %v, want %v", path, got[path], sorted)
			}
		}
		return nil
	})
	for path, people := range got {
		t.Logf("%-30s %d deliveries", path, len(people))
	}
}
