// Command demo drives the local stack (scripts/stack.sh up) the way an app and an operator would: it
// creates invites, registers an e-mail person and a phone person through Kratos's native API, verifies the
// phone number with the code sent by SMS, logs both in, is refused without an invite, and shows what
// kratos-hooks made of it all: profile rows in Postgres and hits in the search index. Run it with
// `make demo`; CI runs it too and checks what it prints.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

const password = "correct-horse-battery-staple-4711"

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	kratos, hooks, adminToken string
	db                        *pgx.Conn
}

func run(ctx context.Context) error {
	d := &demo{kratos: os.Getenv("KRATOS_PUBLIC_URL"), hooks: os.Getenv("KRATOS_HOOKS_URL"), adminToken: os.Getenv("ADMIN_API_TOKEN")}
	var err error
	if d.db, err = pgx.Connect(ctx, os.Getenv("DATABASE_URL")); err != nil {
		return fmt.Errorf("connect to DATABASE_URL: %w", err)
	}
	defer d.db.Close(ctx)
	suffix := randomDigits(8)
	email := "ada-" + suffix + "@example.com"
	phone := "+49151" + suffix

	fmt.Println("Registration is invite-only in this stack (REGISTRATION_MODE=invite).")
	fmt.Printf("\n1. Someone without an invite tries to register (mallory-%s@example.com)\n", suffix)
	res, err := d.flow("registration", "", map[string]any{"method": "password", "password": password,
		"traits": map[string]any{"email": "mallory-" + suffix + "@example.com"}})
	if err != nil {
		return err
	}
	if res.status != http.StatusBadRequest {
		return fmt.Errorf("an uninvited registration got HTTP %d, want 400: %s", res.status, res.body)
	}
	fmt.Printf("   Kratos refused it (HTTP %d) and shows under the e-mail field: %q\n", res.status, fieldMessage(res.body, "traits.email"))

	fmt.Printf("\n2. An operator invites %s (POST /admin/invites) and Ada registers with a password\n", email)
	if _, err := d.invite(map[string]any{"email": email, "note": "demo"}); err != nil {
		return err
	}
	res, err = d.flow("registration", "", map[string]any{"method": "password", "password": password,
		"traits": map[string]any{"email": email, "name": map[string]any{"first": "Ada", "last": "Lovelace"}}})
	if err := res.ok(err); err != nil {
		return err
	}
	ada := res.identityID()
	fmt.Printf("   Kratos created identity %s; kratos-hooks synced it:\n", ada)
	if err := d.waitProfile(ctx, ada, "true"); err != nil {
		return err
	}

	fmt.Printf("\n3. A code invite for a phone person; Pat registers %s with a password and the code\n", phone)
	inv, err := d.invite(map[string]any{"code": true, "max_uses": 1, "note": "demo phone"})
	if err != nil {
		return err
	}
	res, err = d.flow("registration", "", map[string]any{"method": "password", "password": password,
		"traits": map[string]any{"phone": phone, "name": map[string]any{"first": "Pat"}}, "transient_payload": map[string]any{"invite_code": inv.Code}})
	if err := res.ok(err); err != nil {
		return err
	}
	pat := res.identityID()
	verifyFlow := res.continueWith("show_verification_ui")
	fmt.Printf("   Kratos created identity %s and sent a verification code by SMS\n", pat)
	code, seen, err := d.sms(phone, 0)
	if err != nil {
		return err
	}
	fmt.Printf("   the development SMS sink (GET /dev/sms) received it: code %s\n", code)
	res, err = d.submit("verification", verifyFlow, "", map[string]any{"method": "code", "code": code})
	if err := res.ok(err); err != nil {
		return err
	}
	fmt.Println("   the number is verified; kratos-hooks synced it:")
	if err := d.waitProfile(ctx, pat, "phone_verified"); err != nil {
		return err
	}

	fmt.Println("\n4. Ada logs in with her password; Pat logs in with a code sent by SMS")
	res, err = d.flow("login", "", map[string]any{"method": "password", "identifier": email, "password": password})
	if err := res.ok(err); err != nil {
		return err
	}
	flowID, err := d.start("login", "")
	if err != nil {
		return err
	}
	if _, err := d.submit("login", flowID, "", map[string]any{"method": "code", "identifier": phone}); err != nil {
		return err
	}
	code, _, err = d.sms(phone, seen)
	if err != nil {
		return err
	}
	res, err = d.submit("login", flowID, "", map[string]any{"method": "code", "identifier": phone, "code": code})
	if err := res.ok(err); err != nil {
		return err
	}
	for _, id := range []string{ada, pat} {
		if err := d.waitProfile(ctx, id, "logged_in"); err != nil {
			return err
		}
	}

	if os.Getenv("ELASTICSEARCH_URL") != "" {
		fmt.Println("\n5. Search the index (GET /admin/profiles)")
		for _, q := range []string{"ada-" + suffix, "Lovelace", phone} {
			if err := d.search(q); err != nil {
				return err
			}
		}
	}
	fmt.Println("\ndemo: ok")
	return nil
}

// waitProfile waits until the profile row shows what the step did, then prints it.
func (d *demo) waitProfile(ctx context.Context, id, until string) error {
	cond := map[string]string{
		"true":           "true",
		"phone_verified": "phone_verified",
		"logged_in":      "login_count > 0",
	}[until]
	deadline := time.Now().Add(30 * time.Second)
	for {
		var email, phone, name, lastLogin *string
		var phoneVerified bool
		var revision, logins int64
		err := d.db.QueryRow(ctx, `SELECT email, phone, phone_verified, name, revision, login_count,
       to_char(last_login_at, 'YYYY-MM-DD HH24:MI:SS')
FROM profiles WHERE identity_id = $1 AND deleted_at IS NULL AND `+cond, id).
			Scan(&email, &phone, &phoneVerified, &name, &revision, &logins, &lastLogin)
		if err == nil {
			fmt.Printf("   profiles: email=%s phone=%s phone_verified=%t name=%q revision=%d login_count=%d last_login_at=%s\n",
				deref(email), deref(phone), phoneVerified, deref(name), revision, logins, deref(lastLogin))
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) || time.Now().After(deadline) {
			return fmt.Errorf("profile of %s (%s): %w", id, until, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type invite struct {
	ID   string `json:"id"`
	Code string `json:"code"`
}

func (d *demo) invite(body map[string]any) (invite, error) {
	var inv invite
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, d.hooks+"/admin/invites", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+d.adminToken)
	req.Header.Set("Content-Type", "application/json")
	status, raw, err := do(req)
	if err != nil {
		return inv, err
	}
	if status != http.StatusCreated {
		return inv, fmt.Errorf("create invite: HTTP %d %s", status, raw)
	}
	return inv, json.Unmarshal(raw, &inv)
}

// sms waits for a message to number after the first seen ones and returns its code.
func (d *demo) sms(number string, seen int) (string, int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, d.hooks+"/dev/sms?to="+url.QueryEscape(number), nil)
		req.Header.Set("Authorization", "Bearer "+d.adminToken)
		status, raw, err := do(req)
		if err != nil {
			return "", 0, err
		}
		if status != http.StatusOK {
			return "", 0, fmt.Errorf("GET /dev/sms: HTTP %d %s (is DEV_SMS_SINK=true?)", status, raw)
		}
		var list struct {
			Messages map[string][]struct {
				Code string `json:"code"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			return "", 0, err
		}
		if msgs := list.Messages[number]; len(msgs) > seen && msgs[len(msgs)-1].Code != "" {
			return msgs[len(msgs)-1].Code, len(msgs), nil
		}
		if time.Now().After(deadline) {
			return "", 0, fmt.Errorf("no SMS to %s after 30s: is Kratos's courier running (kratos serve --watch-courier)?", number)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *demo) search(q string) error {
	req, _ := http.NewRequest(http.MethodGet, d.hooks+"/admin/profiles?limit=3&q="+url.QueryEscape(q), nil)
	req.Header.Set("Authorization", "Bearer "+d.adminToken)
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, raw, err := do(req)
		if err != nil {
			return err
		}
		var res struct {
			Profiles []struct {
				IdentityID string  `json:"identity_id"`
				Email      *string `json:"email"`
				Phone      *string `json:"phone"`
				Name       *string `json:"name"`
			} `json:"profiles"`
			Total int `json:"total"`
		}
		if status == http.StatusOK && json.Unmarshal(raw, &res) == nil && res.Total > 0 {
			p := res.Profiles[0]
			fmt.Printf("   %-26q → %d hit(s), first: email=%s phone=%s name=%q\n", q, res.Total, deref(p.Email), deref(p.Phone), deref(p.Name))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("search %q: HTTP %d %s", q, status, raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type flowResult struct {
	status int
	body   []byte
}

func (r flowResult) ok(err error) error {
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", r.status, r.body)
	}
	return nil
}

func (r flowResult) identityID() string {
	var v struct {
		Identity struct {
			ID string `json:"id"`
		} `json:"identity"`
	}
	_ = json.Unmarshal(r.body, &v)
	return v.Identity.ID
}

func (r flowResult) continueWith(action string) string {
	var v struct {
		ContinueWith []struct {
			Action string `json:"action"`
			Flow   struct {
				ID string `json:"id"`
			} `json:"flow"`
		} `json:"continue_with"`
	}
	_ = json.Unmarshal(r.body, &v)
	for _, c := range v.ContinueWith {
		if c.Action == action {
			return c.Flow.ID
		}
	}
	return ""
}

// fieldMessage is the text Kratos shows under a form field.
func fieldMessage(body []byte, field string) string {
	var flow struct {
		UI struct {
			Nodes []struct {
				Attributes struct {
					Name string `json:"name"`
				} `json:"attributes"`
				Messages []struct {
					Text string `json:"text"`
				} `json:"messages"`
			} `json:"nodes"`
		} `json:"ui"`
	}
	_ = json.Unmarshal(body, &flow)
	for _, n := range flow.UI.Nodes {
		if n.Attributes.Name == field && len(n.Messages) > 0 {
			return n.Messages[0].Text
		}
	}
	return "(no message)"
}

// flow starts a native flow and submits payload to it.
func (d *demo) flow(kind, token string, payload any) (flowResult, error) {
	id, err := d.start(kind, token)
	if err != nil {
		return flowResult{}, err
	}
	return d.submit(kind, id, token, payload)
}

func (d *demo) start(kind, token string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, d.kratos+"/self-service/"+kind+"/api", nil)
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("X-Session-Token", token)
	}
	status, raw, err := do(req)
	if err != nil {
		return "", err
	}
	var flow struct {
		ID string `json:"id"`
	}
	if status != http.StatusOK || json.Unmarshal(raw, &flow) != nil || flow.ID == "" {
		return "", fmt.Errorf("start %s flow: HTTP %d %s", kind, status, raw)
	}
	return flow.ID, nil
}

func (d *demo) submit(kind, flowID, token string, payload any) (flowResult, error) {
	body, _ := json.Marshal(payload)
	req, _ := http.NewRequest(http.MethodPost, d.kratos+"/self-service/"+kind+"?flow="+flowID, bytes.NewReader(body))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Session-Token", token)
	}
	status, raw, err := do(req)
	return flowResult{status: status, body: raw}, err
}

func do(req *http.Request) (int, []byte, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

func deref(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

func randomDigits(n int) string {
	out := make([]byte, n)
	for i := range out {
		d, _ := rand.Int(rand.Reader, big.NewInt(10))
		out[i] = byte('0' + d.Int64())
	}
	return string(out)
}
