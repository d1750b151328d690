package hooks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
)

// FuzzDecodePayload: whatever arrives, the decoder returns an error or a payload that has what the hook
// point needs; it never panics.
func FuzzDecodePayload(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "jsonnet", "testdata", "webhook", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"flow":{"id":"00000000-0000-0000-0000-000000000000"},"identity":{"id":"00000000-0000-0000-0000-000000000000"}}`))
	f.Add([]byte(`{"flow":{"id":1}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, opts := range []decodeOpts{{}, {identity: true}, {preIdentity: true}} {
			p, err := DecodePayload(body, opts)
			if err != nil {
				continue
			}
			if id, _ := uuid.Parse(p.Flow.RawID); id != p.Flow.ID {
				t.Fatalf("flow id %q decoded as %s", p.Flow.RawID, p.Flow.ID)
			}
			if opts.identity && (p.Identity == nil || p.Identity.ID == uuid.Nil) {
				t.Fatalf("accepted a payload without a real identity id: %s", body)
			}
			if opts.preIdentity && p.Identity == nil {
				t.Fatalf("accepted a pre-persist payload without an identity: %s", body)
			}
		}
	})
}

// FuzzMessagesBody: a refusal always renders as the JSON shape Kratos parses, with what was put in.
func FuzzMessagesBody(f *testing.F) {
	f.Add("#/traits/email", 4000100, "This e-mail address is not invited.", "domain", "example.com")
	f.Add("#/", 1, "", "", "")
	f.Add("#/traits/phone", -5, "\x00\xff<script>", "k\"ey", "v\n")
	f.Fuzz(func(t *testing.T, ptr string, id int, text, key, value string) {
		e := refuse(ptr, Message{ID: id, Text: text, Context: map[string]any{key: value}})
		raw, err := json.Marshal(e.Body())
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		var back struct {
			Messages []struct {
				InstancePtr string `json:"instance_ptr"`
				Messages    []struct {
					ID   int    `json:"id"`
					Type string `json:"type"`
				} `json:"messages"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("not JSON: %v: %s", err, raw)
		}
		if len(back.Messages) != 1 || len(back.Messages[0].Messages) != 1 {
			t.Fatalf("shape: %s", raw)
		}
		m := back.Messages[0].Messages[0]
		if m.ID != id || m.Type != "error" {
			t.Fatalf("message %+v from id %d", m, id)
		}
		if e.Status < 400 || e.Status >= 500 || e.Status == 429 {
			t.Fatalf("status %d would not reach Kratos's parser", e.Status)
		}
	})
}
