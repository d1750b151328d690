package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// phoneStack is kratos-hooks with search and the development SMS sink, and a Kratos whose courier runs,
// so its SMS reach the sink.
type phoneStack struct {
	stack
	es testenv.ElasticsearchIndex
}

func startPhoneStack(t *testing.T) *phoneStack {
	t.Helper()
	s := &phoneStack{stack: stack{db: testenv.NewDB(t)}, es: testenv.Elasticsearch(t)}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.kratos = testenv.StartKratos(t, testenv.KratosOpts{HooksURL: "http://" + addr, WatchCourier: true})
	s.svc = startService(t, map[string]string{
		"LISTEN_ADDR":         addr,
		"DATABASE_URL":        s.db.URL,
		"KRATOS_ADMIN_URL":    s.kratos.AdminURL,
		"ELASTICSEARCH_URL":   s.es.URL,
		"ELASTICSEARCH_INDEX": s.es.Alias,
		"ADMIN_API_TOKEN":     adminToken,
		"DEV_SMS_SINK":        "true",
	}, "--migrate")
	return s
}

type sinkMessage struct {
	Body     string `json:"body"`
	Template string `json:"template"`
	Code     string `json:"code"`
}

// sms waits for a message to number from the given template that was not seen before, and returns its code.
func (s *phoneStack) sms(t *testing.T, number, template string, seen int) (code string, count int) {
	t.Helper()
	testenv.Poll(t, 30*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, s.svc.URL+"/dev/sms?to="+url.QueryEscape(number), nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var list struct {
			Messages map[string][]sinkMessage `json:"messages"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return err
		}
		msgs := list.Messages[number]
		if len(msgs) <= seen {
			return fmt.Errorf("%d SMS to %s so far", len(msgs), number)
		}
		last := msgs[len(msgs)-1]
		if last.Template != template || last.Code == "" {
			return fmt.Errorf("last SMS to %s is %q without the code", number, last.Template)
		}
		code, count = last.Code, len(msgs)
		return nil
	})
	return code, count
}

func (s *phoneStack) document(t *testing.T, id string) testenv.ESDoc {
	t.Helper()
	d, err := testenv.GetDoc(s.es.URL, s.es.Alias, id)
	require.NoError(t, err)
	return d
}

// A person with only a phone number registers with a password, verifies the number with the code the
// courier sent by SMS, and later logs in with an SMS code: the profile and the search document follow.
func TestEndToEnd_PhoneRegistrationSMSVerificationAndSMSLogin(t *testing.T) {
	s := startPhoneStack(t)
	phone := fmt.Sprintf("+49151%08d", rand.IntN(100_000_000))

	reg := s.kratos.Register(t, map[string]any{"phone": phone, "name": map[string]any{"first": "Pat"}}, testenv.Password, nil, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, reg.Status, string(reg.Body))
	var regBody struct {
		ContinueWith []struct {
			Action string `json:"action"`
			Flow   struct {
				ID string `json:"id"`
			} `json:"flow"`
		} `json:"continue_with"`
	}
	require.NoError(t, json.Unmarshal(reg.Body, &regBody))
	var verificationFlow string
	for _, c := range regBody.ContinueWith {
		if c.Action == "show_verification_ui" {
			verificationFlow = c.Flow.ID
		}
	}
	require.NotEmpty(t, verificationFlow, "no verification flow in %s", reg.Body)

	// The courier sends the verification code by SMS to the sink; submitting it verifies the number.
	code, seen := s.sms(t, phone, "verification_code_valid", 0)
	res := s.kratos.SubmitFlow(t, "verification", verificationFlow, "", map[string]any{"method": "code", "code": code}, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	require.Contains(t, string(res.Body), `"state":"passed_challenge"`)

	id := reg.IdentityID.String()
	testenv.Poll(t, 30*time.Second, func() error {
		var number *string
		var verified bool
		if err := s.db.Pool.QueryRow(context.Background(), `SELECT phone, phone_verified FROM profiles WHERE identity_id = $1`, reg.IdentityID).Scan(&number, &verified); err != nil {
			return err
		}
		if number == nil || *number != phone || !verified {
			return fmt.Errorf("profile phone %v verified %v", number, verified)
		}
		if d := s.document(t, id); !d.Found || d.Source["phone"] != phone || d.Source["phone_verified"] != true {
			return fmt.Errorf("document: %v", d.Source)
		}
		return nil
	})

	// Log in with a code sent by SMS.
	flowID, status, body := s.kratos.StartFlow(t, "login", "", testenv.FlowOpts{})
	require.NotEmpty(t, flowID, "%d %s", status, body)
	res = s.kratos.SubmitFlow(t, "login", flowID, "", map[string]any{"method": "code", "identifier": phone}, testenv.FlowOpts{})
	require.Contains(t, []int{http.StatusOK, http.StatusBadRequest}, res.Status, string(res.Body)) // 400: "code sent", with the flow
	code, _ = s.sms(t, phone, "login_code_valid", seen)
	res = s.kratos.SubmitFlow(t, "login", flowID, "", map[string]any{"method": "code", "identifier": phone, "code": code}, testenv.FlowOpts{})
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	require.NotEmpty(t, res.SessionToken)

	testenv.Poll(t, 30*time.Second, func() error {
		var last *time.Time
		if err := s.db.Pool.QueryRow(context.Background(), `SELECT last_login_at FROM profiles WHERE identity_id = $1`, reg.IdentityID).Scan(&last); err != nil {
			return err
		}
		if last == nil {
			return fmt.Errorf("last_login_at not set")
		}
		if d := s.document(t, id); d.Source["last_login_at"] == nil {
			return fmt.Errorf("document has no last_login_at yet")
		}
		return nil
	})
}
