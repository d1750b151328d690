// Package kratos speaks to Ory Kratos: the wire types of its identities and a small client for the admin
// identities API. It also embeds the Kratos configuration and identity schemas this project ships.
package kratos

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Identity is an identity as the Kratos admin API returns it, without credentials and metadata_admin:
// neither is needed to keep a profile, and both may hold secrets.
type Identity struct {
	ID                  uuid.UUID           `json:"id"`
	SchemaID            string              `json:"schema_id"`
	State               string              `json:"state"`
	Traits              json.RawMessage     `json:"traits"`
	VerifiableAddresses []VerifiableAddress `json:"verifiable_addresses"`
	RecoveryAddresses   []RecoveryAddress   `json:"recovery_addresses"`
	MetadataPublic      json.RawMessage     `json:"metadata_public"`
	CreatedAt           time.Time           `json:"created_at"`
	// UpdatedAt is not bumped on trait changes in Kratos v1.3.1 (fixed in later releases), so nothing here
	// relies on it to order changes.
	UpdatedAt time.Time `json:"updated_at"`
}

// VerifiableAddress is an address Kratos can verify (an e-mail address or a phone number).
type VerifiableAddress struct {
	Value      string     `json:"value"`
	Via        string     `json:"via"`
	Verified   bool       `json:"verified"`
	Status     string     `json:"status"`
	VerifiedAt *time.Time `json:"verified_at,omitempty"`
}

// RecoveryAddress is an address Kratos can send recovery messages to.
type RecoveryAddress struct {
	Value string `json:"value"`
	Via   string `json:"via"`
}

// Channels Kratos uses in addresses' "via".
const (
	ViaEmail = "email"
	ViaSMS   = "sms"
)

// NilID is the identity id Kratos puts in pre-persist hook payloads: the identity does not exist yet.
var NilID = uuid.Nil

// CreateIdentityBody is the body of POST /admin/identities and of one create in PATCH /admin/identities.
type CreateIdentityBody struct {
	SchemaID            string              `json:"schema_id"`
	Traits              json.RawMessage     `json:"traits"`
	State               string              `json:"state,omitempty"`
	MetadataPublic      json.RawMessage     `json:"metadata_public,omitempty"`
	VerifiableAddresses []VerifiableAddress `json:"verifiable_addresses,omitempty"`
}

// UpdateIdentityBody is the body of PUT /admin/identities/{id}. Kratos replaces what it is given.
type UpdateIdentityBody struct {
	SchemaID       string          `json:"schema_id"`
	Traits         json.RawMessage `json:"traits"`
	State          string          `json:"state"`
	MetadataPublic json.RawMessage `json:"metadata_public,omitempty"`
}
