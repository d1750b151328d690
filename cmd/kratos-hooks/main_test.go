package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// service is kratos-hooks running in-process through run, as `kratos-hooks serve` would.
type service struct {
	URL    string
	stderr *testenv.Buffer
}

// startService runs `kratos-hooks serve` with env (on LISTEN_ADDR, or a free port) until the test ends, and
// waits until it is ready.
func startService(t *testing.T, env map[string]string, args ...string) *service {
	t.Helper()
	addr := env["LISTEN_ADDR"]
	if addr == "" {
		addr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	}
	s := &service{URL: "http://" + addr, stderr: &testenv.Buffer{}}
	full := map[string]string{
		"LISTEN_ADDR":   addr,
		"HOOKS_API_KEY": testenv.APIKey,
		"LOG_LEVEL":     "debug",
		"LOG_FORMAT":    "text",
	}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve"}, args...), func(k string) string { return full[k] }, io.Discard, s.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop within 30s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("service log:\n%s", s.stderr.String())
		}
	})
	testenv.WaitReady(t, s.URL, 30*time.Second, func() string {
		select {
		case err := <-done:
			return fmt.Sprintf("serve exited: %v\n%s", err, s.stderr.String())
		default:
			return ""
		}
	})
	return s
}

// runCLI runs one command to completion.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(testenv.Context(t), args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCLI_HelpOnEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"migrate", "--help"}, {"kratos-config", "--help"}} {
		out, _, err := runCLI(t, nil, args...)
		require.NoError(t, err, args)
		require.Contains(t, out, "Usage:", args)
	}
}

func TestCLI_UnknownCommandOrFlagIsAUsageError(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"serve", "--no-such-flag"}, {"migrate", "extra-arg"}, {"serve", "--role", "cook"}} {
		_, stderr, err := runCLI(t, nil, args...)
		var usage *usageError
		require.ErrorAs(t, err, &usage, args)
		require.Contains(t, stderr, "Usage: kratos-hooks", args)
	}
}

func TestServe_RefusesToStartWithoutAStrongAPIKey(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "KRATOS_ADMIN_URL": "http://127.0.0.1:1"}
	_, stderr, err := runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, "HOOKS_API_KEY is not set")

	env["HOOKS_API_KEY"] = "0123456789abcdef0123,short"
	_, stderr, err = runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, "HOOKS_API_KEY: key 2 of 2 is shorter than 16 characters")
}

func TestServe_ConfigErrorsNameTheVariable(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "KRATOS_ADMIN_URL": "http://127.0.0.1:1",
		"HOOKS_API_KEY": testenv.APIKey, "SYNC_WORKERS": "many",
	}
	_, stderr, err := runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, `SYNC_WORKERS: cannot read "many" as a number`)

	delete(env, "SYNC_WORKERS")
	env["KRATOS_ADMIN_URL"] = "http://kratos:4434/admin"
	_, stderr, err = runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, "KRATOS_ADMIN_URL")
	require.Contains(t, stderr, "without /admin")
}

func TestMigrate_TwiceInARowSucceeds(t *testing.T) {
	db := testenv.NewEmptyDB(t)
	env := map[string]string{"DATABASE_URL": db.URL, "LOG_LEVEL": "warn"}

	out, stderr, err := runCLI(t, env, "migrate")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "applied River migrations")
	require.Contains(t, out, "applied migrations: 00001_profiles.sql")

	out, stderr, err = runCLI(t, env, "migrate")
	require.NoError(t, err, stderr)
	require.Equal(t, "database is up to date: nothing to apply\n", out)

	var n int
	require.NoError(t, db.Pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM profiles`).Scan(&n))
}

func TestMigrate_ConcurrentRunsTakeTurns(t *testing.T) {
	db := testenv.NewEmptyDB(t)
	env := map[string]string{"DATABASE_URL": db.URL, "LOG_LEVEL": "warn"}
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, stderr, err := runCLI(t, env, "migrate")
			if err != nil {
				err = errors.New(stderr)
			}
			errs <- err
		}()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
}

func TestServe_RefusesAnUnmigratedDatabase(t *testing.T) {
	db := testenv.NewEmptyDB(t)
	env := map[string]string{"DATABASE_URL": db.URL, "KRATOS_ADMIN_URL": "http://127.0.0.1:1", "HOOKS_API_KEY": testenv.APIKey,
		"LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
	_, stderr, err := runCLI(t, env, "serve")
	require.Error(t, err)
	require.True(t, strings.Contains(stderr, "migrations pending: run `kratos-hooks migrate`"), stderr)
}

func TestMapping_PrintsWhatTheMappingMakesOfIdentities(t *testing.T) {
	out, stderr, err := runCLI(t, nil, "mapping", "../../jsonnet/testdata/identities/email.json")
	require.NoError(t, err, stderr)
	require.Contains(t, out, `"email":"ada.lovelace@example.com"`)
	require.Contains(t, out, `"name":"Ada Lovelace"`)

	dir := t.TempDir()
	broken := dir + "/broken.jsonnet"
	require.NoError(t, os.WriteFile(broken, []byte("function(identity) {\n  email: identity.traits.email.address,\n}"), 0o600))
	_, stderr, err = runCLI(t, map[string]string{"PROFILE_MAPPING_FILE": broken}, "mapping", "--schema", "../../kratos/identity.schema.json")
	require.Error(t, err)
	require.Contains(t, stderr, "broken.jsonnet:2")
}

func TestServe_RefusesAMappingThatFailsOnKratosSchemas(t *testing.T) {
	db := testenv.NewDB(t)
	k := testenv.StartKratos(t, testenv.KratosOpts{})
	broken := t.TempDir() + "/broken.jsonnet"
	require.NoError(t, os.WriteFile(broken, []byte("function(identity) {\n  phone: identity.traits.phone,\n}"), 0o600))
	env := map[string]string{"DATABASE_URL": db.URL, "KRATOS_ADMIN_URL": k.AdminURL, "HOOKS_API_KEY": testenv.APIKey,
		"PROFILE_MAPPING_FILE": broken, "LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
	_, stderr, err := runCLI(t, env, "serve")
	require.Error(t, err)
	require.Contains(t, stderr, "PROFILE_MAPPING_FILE: on a sample identity (schema person, anyOf branch 1)")
	require.Contains(t, stderr, "broken.jsonnet:2")
}
