// Package testenv gives tests the real services this project talks to. `make test` (scripts/test.sh)
// starts one Postgres, one Elasticsearch and builds one Kratos for the whole run and passes them in:
//
//	TEST_DATABASE_URL       a Postgres superuser URL; each test gets its own database on that server
//	TEST_ELASTICSEARCH_URL  an Elasticsearch URL; each test gets its own index names
//	TEST_KRATOS_BIN         a Kratos v1.3.1 binary; each test (or package) starts its own Kratos
//
// A test that needs a service fails (never skips) when its variable is missing: a skipped test proves
// nothing in CI.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"testing"
	"time"
)

const (
	EnvDatabaseURL      = "TEST_DATABASE_URL"
	EnvElasticsearchURL = "TEST_ELASTICSEARCH_URL"
	EnvKratosBin        = "TEST_KRATOS_BIN"
)

// Getenv returns the variable or fails the test with how to get it.
func Getenv(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run the tests with `make test`, which starts Postgres, Elasticsearch and "+
			"Kratos and sets it, or set it to your own service (see README, Testing)", name)
	}
	return v
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Poll calls check until it returns nil or timeout passes, then fails the test with check's last error.
// Tests synchronise on observable state this way, never on sleeps.
func Poll(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not true after %s: %v", timeout, err)
		}
		time.Sleep(interval)
		interval = min(interval*2, 250*time.Millisecond)
	}
}

// Context is a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// Name makes a short lower-case identifier unique to this test run, safe for database and index names.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}
