package testenv

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// Readiness is what a kratos-hooks process answers at GET /health/ready: the status code and the state of
// each check by name ("ok", or why not).
func Readiness(t testing.TB, baseURL string) (status int, checks map[string]string) {
	t.Helper()
	resp, err := http.Get(baseURL + "/health/ready")
	if err != nil {
		t.Fatalf("GET /health/ready: %v", err)
	}
	defer resp.Body.Close()
	var body struct{ Checks map[string]string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET /health/ready: %v", err)
	}
	return resp.StatusCode, body.Checks
}

// WaitReady waits up to timeout until baseURL's /health/ready answers 200. exited is asked on every try;
// when it says the process has ended (a non-empty reason), the test fails at once with it.
func WaitReady(t testing.TB, baseURL string, timeout time.Duration, exited func() string) {
	t.Helper()
	Poll(t, timeout, func() error {
		if why := exited(); why != "" {
			t.Fatalf("kratos-hooks ended before it was ready: %s", why)
		}
		resp, err := http.Get(baseURL + "/health/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
}
