package kratos

import (
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"
)

// ConfigTemplate is kratos.yml: the Kratos configuration wired to kratos-hooks, with placeholders such as ${KRATOS_HOOKS_URL}.
//
//go:embed kratos.yml
var ConfigTemplate []byte

// IdentitySchema is the shipped identity schema: a person with an e-mail address, a phone number or both.
//
//go:embed identity.schema.json
var IdentitySchema []byte

// Base64URL makes a base64:// URL, which Kratos accepts for identity schemas and web_hook bodies.
func Base64URL(content []byte) string {
	return "base64://" + base64.StdEncoding.EncodeToString(content)
}

// ConfigVars are the values of the placeholders in kratos.yml.
type ConfigVars struct {
	// HooksURL is where Kratos reaches kratos-hooks, e.g. http://kratos-hooks:8080.
	HooksURL string
	// APIKey is the key Kratos sends as Authorization: Bearer (one of HOOKS_API_KEY).
	APIKey string
	// IdentitySchema, WebhookBody and SMSBody are inlined as base64:// URLs.
	IdentitySchema []byte
	WebhookBody    []byte
	SMSBody        []byte
	// SMSURL is where the courier sends SMS; empty means kratos-hooks's development sink (HooksURL/dev/sms).
	SMSURL string
	// SMSAuthorization is the Authorization header the courier sends to SMSURL (for example "Bearer …" or
	// "Basic …"). Required with SMSURL: the hooks key authenticates the courier to the development sink
	// only, and must never go to a provider.
	SMSAuthorization string
}

// Map is the placeholder values RenderConfig takes.
func (v ConfigVars) Map() map[string]string {
	hooks := strings.TrimRight(v.HooksURL, "/")
	sms, smsAuth := v.SMSURL, v.SMSAuthorization
	if sms == "" {
		sms, smsAuth = hooks+"/dev/sms", "Bearer "+v.APIKey
	}
	return map[string]string{
		"KRATOS_HOOKS_URL":           hooks,
		"KRATOS_HOOKS_API_KEY":       v.APIKey,
		"KRATOS_IDENTITY_SCHEMA_URL": Base64URL(v.IdentitySchema),
		"KRATOS_HOOKS_WEBHOOK_BODY":  Base64URL(v.WebhookBody),
		"KRATOS_SMS_URL":             sms,
		"KRATOS_SMS_BODY":            Base64URL(v.SMSBody),
		"KRATOS_SMS_AUTHORIZATION":   smsAuth,
	}
}

// RenderConfig fills the ${NAME} placeholders of a configuration template from vars. Every placeholder
// must have a non-empty value that can stand in a YAML string as it is; the error lists the ones that do not.
func RenderConfig(template []byte, vars map[string]string) ([]byte, error) {
	var missing, unquotable []string
	out := os.Expand(string(template), func(name string) string {
		v, ok := vars[name]
		switch {
		case !ok || v == "":
			if !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
			return ""
		case strings.ContainsFunc(v, breaksYAML):
			// Inserted as it is, such a value would end its YAML string early or add lines to the file (a
			// secret's value is not repeated in the error).
			if !slices.Contains(unquotable, name) {
				unquotable = append(unquotable, name)
			}
			return ""
		}
		return v
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("kratos config: no value for %s", strings.Join(missing, ", "))
	}
	if len(unquotable) > 0 {
		return nil, fmt.Errorf("kratos config: the value of %s holds a quote, backslash or control character", strings.Join(unquotable, ", "))
	}
	if strings.Contains(out, "${") {
		return nil, errors.New("kratos config: a placeholder is left after rendering")
	}
	return []byte(out), nil
}

// breaksYAML reports whether r cannot stand unescaped in a double-quoted YAML string.
func breaksYAML(r rune) bool {
	return r == '"' || r == '\\' || unicode.IsControl(r)
}
