// Command demo drives the local stack (scripts/stack.sh up) the way an app would: it registers and logs in
// through Kratos's native API and shows what kratos-hooks made of it. Run it with `make demo`.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	kratosURL := os.Getenv("KRATOS_PUBLIC_URL")
	db, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return fmt.Errorf("connect to DATABASE_URL: %w", err)
	}
	defer db.Close(ctx)

	var b [4]byte
	_, _ = rand.Read(b[:])
	email := fmt.Sprintf("ada-%s@example.com", hex.EncodeToString(b[:]))
	const password = "correct-horse-battery-staple-4711"

	fmt.Printf("1. Register %s through Kratos (password method)\n", email)
	reg, err := submit(kratosURL, "registration", "", map[string]any{
		"method": "password", "password": password,
		"traits": map[string]any{"email": email, "name": map[string]any{"first": "Ada", "last": "Lovelace"}},
	})
	if err != nil {
		return err
	}
	id := reg.Identity.ID
	fmt.Printf("   Kratos created identity %s\n", id)

	fmt.Println("2. kratos-hooks got the after-registration hook; its worker wrote the profile:")
	if err := waitFor(func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE identity_id = $1`, id).Scan(&n)
		return n == 1, err
	}); err != nil {
		return fmt.Errorf("profile of %s: %w", id, err)
	}
	if err := printProfile(ctx, db, id); err != nil {
		return err
	}

	fmt.Println("3. Log in through Kratos; the login hook records it:")
	if _, err := submit(kratosURL, "login", "", map[string]any{"method": "password", "identifier": email, "password": password}); err != nil {
		return err
	}
	if err := waitFor(func() (bool, error) {
		var n int64
		err := db.QueryRow(ctx, `SELECT login_count FROM profiles WHERE identity_id = $1`, id).Scan(&n)
		return n > 0, err
	}); err != nil {
		return fmt.Errorf("login of %s: %w", id, err)
	}
	if err := printProfile(ctx, db, id); err != nil {
		return err
	}

	if os.Getenv("ELASTICSEARCH_URL") != "" {
		fmt.Println("4. The index worker projected the profile into Elasticsearch; GET /admin/profiles finds it:")
		if err := printSearch(os.Getenv("KRATOS_HOOKS_URL"), os.Getenv("ADMIN_API_TOKEN"), email); err != nil {
			return err
		}
	}
	fmt.Println("demo: ok")
	return nil
}

func printProfile(ctx context.Context, db *pgx.Conn, id string) error {
	var email, name, lastLogin *string
	var revision, logins int64
	err := db.QueryRow(ctx, `SELECT email, name, revision, login_count, to_char(last_login_at, 'YYYY-MM-DD HH24:MI:SS')
FROM profiles WHERE identity_id = $1`, id).Scan(&email, &name, &revision, &logins, &lastLogin)
	if err != nil {
		return err
	}
	fmt.Printf("   profiles: email=%s name=%q revision=%d login_count=%d last_login_at=%s\n",
		deref(email), deref(name), revision, logins, deref(lastLogin))
	return nil
}

// printSearch searches /admin/profiles for q until the index has it (documents become searchable within a
// second or two) and prints the answer.
func printSearch(hooksURL, token, q string) error {
	var body struct {
		Profiles []json.RawMessage `json:"profiles"`
		Total    int64             `json:"total"`
	}
	err := waitFor(func() (bool, error) {
		req, _ := http.NewRequest(http.MethodGet, hooksURL+"/admin/profiles?q="+url.QueryEscape(q), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		err := doJSON(req, &body)
		return err == nil && len(body.Profiles) > 0, err
	})
	if err != nil {
		return fmt.Errorf("search for %s: %w", q, err)
	}
	fmt.Printf("   search: total=%d first=%s\n", body.Total, body.Profiles[0])
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

type flowResult struct {
	Identity struct {
		ID string `json:"id"`
	} `json:"identity"`
	SessionToken string `json:"session_token"`
}

func submit(kratosURL, kind, token string, payload any) (flowResult, error) {
	var res flowResult
	req, _ := http.NewRequest(http.MethodGet, kratosURL+"/self-service/"+kind+"/api", nil)
	req.Header.Set("Accept", "application/json")
	var flow struct {
		ID string `json:"id"`
	}
	if err := doJSON(req, &flow); err != nil {
		return res, fmt.Errorf("start %s: %w", kind, err)
	}
	body, _ := json.Marshal(payload)
	req, _ = http.NewRequest(http.MethodPost, kratosURL+"/self-service/"+kind+"?flow="+flow.ID, bytes.NewReader(body))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Session-Token", token)
	}
	if err := doJSON(req, &res); err != nil {
		return res, fmt.Errorf("submit %s: %w", kind, err)
	}
	return res, nil
}

func doJSON(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

func waitFor(cond func() (bool, error)) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("timed out")
			}
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
