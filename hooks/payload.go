package hooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Payload is the body jsonnet/webhook.jsonnet makes Kratos send, at every hook point.
type Payload struct {
	Flow     PayloadFlow      `json:"flow"`
	Identity *PayloadIdentity `json:"identity"`
	Session  *PayloadSession  `json:"session"`
	Request  PayloadRequest   `json:"request"`
}

type PayloadFlow struct {
	ID               uuid.UUID       `json:"-"`
	RawID            string          `json:"id"`
	Type             string          `json:"type"`
	Active           string          `json:"active"`
	TransientPayload json.RawMessage `json:"transient_payload"`
}

type PayloadIdentity struct {
	ID       uuid.UUID       `json:"-"`
	RawID    string          `json:"id"`
	SchemaID string          `json:"schema_id"`
	State    string          `json:"state"`
	Traits   json.RawMessage `json:"traits"`
}

type PayloadSession struct {
	AuthenticatedAt *time.Time `json:"authenticated_at"`
}

type PayloadRequest struct {
	ClientIP  string `json:"client_ip"`
	UserAgent string `json:"user_agent"`
}

// decodeOpts says what a hook point needs from the payload.
type decodeOpts struct {
	// identity: the payload must carry an identity with a real (not nil) id.
	identity bool
	// preIdentity: the payload must carry an identity; its id may be the nil UUID (pre-persist hooks).
	preIdentity bool
}

// DecodePayload parses a webhook body and checks that it has what the hook point needs. Its errors say what
// is wrong in words an operator can act on; they are the 400 message.
func DecodePayload(body []byte, opts decodeOpts) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&p); err != nil {
		return Payload{}, fmt.Errorf("body is not the JSON object jsonnet/webhook.jsonnet makes: %s", jsonErrorText(err))
	}
	if dec.More() {
		return Payload{}, fmt.Errorf("body has data after the JSON object")
	}
	if p.Flow.RawID == "" {
		return Payload{}, fmt.Errorf("flow.id is missing: is the hook's body jsonnet/webhook.jsonnet?")
	}
	id, err := uuid.Parse(p.Flow.RawID)
	if err != nil {
		return Payload{}, fmt.Errorf("flow.id %q is not a UUID", truncate(p.Flow.RawID))
	}
	p.Flow.ID = id

	if !opts.identity && !opts.preIdentity {
		return p, nil
	}
	if p.Identity == nil {
		return Payload{}, fmt.Errorf("identity is missing: this hook point needs ctx.identity (is it wired as an after hook?)")
	}
	if p.Identity.RawID == "" {
		return Payload{}, fmt.Errorf("identity.id is missing")
	}
	if p.Identity.ID, err = uuid.Parse(p.Identity.RawID); err != nil {
		return Payload{}, fmt.Errorf("identity.id %q is not a UUID", truncate(p.Identity.RawID))
	}
	if opts.identity && p.Identity.ID == uuid.Nil {
		return Payload{}, fmt.Errorf("identity.id is the nil UUID: Kratos sends that before the identity is stored " +
			"(a response.parse hook); wire this URL as a post-persist hook with response.ignore: true")
	}
	return p, nil
}

func jsonErrorText(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		return fmt.Sprintf("%s has the wrong type: got JSON %s, want %s", typ.Field, typ.Value, typ.Type)
	}
	return err.Error()
}

func truncate(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
