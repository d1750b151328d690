package search

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Document is one profile in the index. Its _id is IdentityID and its external version is Revision.
type Document struct {
	IdentityID    uuid.UUID       `json:"identity_id"`
	SchemaID      string          `json:"schema_id"`
	State         string          `json:"state"`
	Email         *string         `json:"email"`
	EmailVerified bool            `json:"email_verified"`
	Phone         *string         `json:"phone"`
	PhoneVerified bool            `json:"phone_verified"`
	Name          *string         `json:"name"`
	Locale        *string         `json:"locale"`
	Attributes    map[string]any  `json:"attributes"`
	Traits        json.RawMessage `json:"traits"`
	CreatedAt     *time.Time      `json:"created_at"`
	LastLoginAt   *time.Time      `json:"last_login_at"`
	LoginCount    int64           `json:"login_count"`
	// Revision is the profile row's revision, kept in _source as well so that a reader (reconcile) can
	// compare without asking for versions.
	Revision int64 `json:"revision"`
}
