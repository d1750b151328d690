package kratos

import (
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
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

// RenderConfig fills the ${NAME} placeholders of a configuration template from vars. Every placeholder
// must have a non-empty value; the error lists the ones that do not.
func RenderConfig(template []byte, vars map[string]string) ([]byte, error) {
	var missing []string
	out := os.Expand(string(template), func(name string) string {
		v, ok := vars[name]
		if !ok || v == "" {
			if !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
			return ""
		}
		return v
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("kratos config: no value for %s", strings.Join(missing, ", "))
	}
	if strings.Contains(out, "${") {
		return nil, errors.New("kratos config: a placeholder is left after rendering")
	}
	return []byte(out), nil
}
