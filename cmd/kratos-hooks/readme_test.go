package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// envVars lists the environment variables a configuration struct reads, embedded structs included.
func envVars(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			names = append(names, envVars(f.Type)...)
			continue
		}
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			names = append(names, name)
		}
	}
	return names
}

// The README's configuration reference is the one place a user looks a setting up: every variable the
// commands read must be in it.
func TestReadme_DocumentsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	vars := envVars(reflect.TypeFor[serveConfig]())
	vars = append(vars, envVars(reflect.TypeFor[reconcileConfig]())...)
	vars = append(vars, "KRATOS_HOOKS_URL", "KRATOS_HOOKS_API_KEY", "KRATOS_SMS_URL", "KRATOS_SMS_AUTHORIZATION")
	if len(vars) < 30 {
		t.Fatalf("found only %d variables: is the env tag still how configuration is read?", len(vars))
	}
	for _, v := range vars {
		if !strings.Contains(string(readme), "`"+v+"`") {
			t.Errorf("README.md does not document %s", v)
		}
	}
}
