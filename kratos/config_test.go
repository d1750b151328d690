package kratos_test

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

const hooksKey = "hooks-key-0123456789abcdef"

func renderShipped(t *testing.T, vars kratos.ConfigVars) (map[string]any, error) {
	t.Helper()
	out, err := kratos.RenderConfig(kratos.ConfigTemplate, vars.Map())
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("rendered kratos.yml is not YAML: %v", err)
	}
	return cfg, nil
}

// smsChannel is the courier's sms channel of a rendered kratos.yml: its URL and Authorization header.
func smsChannel(t *testing.T, cfg map[string]any) (url, authorization string) {
	t.Helper()
	for _, ch := range cfg["courier"].(map[string]any)["channels"].([]any) {
		ch := ch.(map[string]any)
		if ch["id"] != "sms" {
			continue
		}
		rc := ch["request_config"].(map[string]any)
		auth := rc["auth"].(map[string]any)["config"].(map[string]any)
		if auth["name"] != "Authorization" || auth["in"] != "header" {
			t.Fatalf("sms channel auth: %v", auth)
		}
		return rc["url"].(string), auth["value"].(string)
	}
	t.Fatal("no sms channel in the courier")
	return "", ""
}

func baseVars() kratos.ConfigVars {
	return kratos.ConfigVars{
		HooksURL: "http://127.0.0.1:8080/", APIKey: hooksKey,
		IdentitySchema: kratos.IdentitySchema, WebhookBody: []byte("function(ctx) ctx"), SMSBody: []byte("function(ctx) ctx"),
	}
}

func TestRenderConfig_SMSGoesToTheDevelopmentSinkWithTheHooksKeyByDefault(t *testing.T) {
	cfg, err := renderShipped(t, baseVars())
	if err != nil {
		t.Fatal(err)
	}
	url, auth := smsChannel(t, cfg)
	if url != "http://127.0.0.1:8080/dev/sms" || auth != "Bearer "+hooksKey {
		t.Fatalf("sms channel: url %q, authorization %q", url, auth)
	}
}

func TestRenderConfig_AnSMSProviderGetsItsOwnAuthorizationNeverTheHooksKey(t *testing.T) {
	vars := baseVars()
	vars.SMSURL = "https://sms.example.com/send"
	if _, err := renderShipped(t, vars); err == nil || !strings.Contains(err.Error(), "KRATOS_SMS_AUTHORIZATION") {
		t.Fatalf("a provider URL without its authorization: err = %v, want one naming KRATOS_SMS_AUTHORIZATION", err)
	}

	vars.SMSAuthorization = "Basic cHJvdmlkZXI6c2VjcmV0"
	cfg, err := renderShipped(t, vars)
	if err != nil {
		t.Fatal(err)
	}
	url, auth := smsChannel(t, cfg)
	if url != vars.SMSURL || auth != vars.SMSAuthorization {
		t.Fatalf("sms channel: url %q, authorization %q", url, auth)
	}
	courier, _ := yaml.Marshal(cfg["courier"])
	if strings.Contains(string(courier), hooksKey) {
		t.Fatalf("the hooks key is in the courier configuration:\n%s", courier)
	}
}

// A value that would end its YAML string early or add lines (a quote, a backslash, a newline) is refused,
// naming the variable and not repeating what may be a secret.
func TestRenderConfig_RefusesAValueThatWouldBreakTheYAML(t *testing.T) {
	for _, auth := range []string{`Bearer a"b`, `Bearer a\b`, "Bearer a\nmalicious: true"} {
		vars := baseVars()
		vars.SMSURL = "https://sms.example.com/send"
		vars.SMSAuthorization = auth
		_, err := renderShipped(t, vars)
		if err == nil || !strings.Contains(err.Error(), "KRATOS_SMS_AUTHORIZATION") || strings.Contains(err.Error(), auth) {
			t.Fatalf("authorization %q: err = %v, want one naming KRATOS_SMS_AUTHORIZATION without its value", auth, err)
		}
	}
}
