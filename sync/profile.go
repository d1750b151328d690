// Package sync keeps the profiles table (and, through it, the search index) in step with Kratos. It holds
// the River job args and workers, and the SQL that writes profiles and hook events.
//
// It shadows the standard library's sync: import it as profilesync.
package sync

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// Profile is one row of the profiles table.
type Profile struct {
	IdentityID          uuid.UUID
	SchemaID            string
	State               string
	Traits              json.RawMessage
	MetadataPublic      json.RawMessage
	VerifiableAddresses []kratos.VerifiableAddress
	RecoveryAddresses   []kratos.RecoveryAddress
	Email               *string
	EmailVerified       bool
	Phone               *string
	PhoneVerified       bool
	Name                *string
	Locale              *string
	Attributes          map[string]any
	CreatedAt           *time.Time
	Revision            int64
	SyncedAt            time.Time
	LastLoginAt         *time.Time
	LoginCount          int64
	DeletedAt           *time.Time
}

// Mapper derives a profile's searchable fields from an identity (jsonnet.Mapper). Map must be
// deterministic: the same identity must give the same fields, or every reconcile pass sees drift. MapBatch
// maps many identities in one go and must give, for each, what Map gives.
type Mapper interface {
	Map(identityJSON []byte) (jsonnet.Fields, error)
	MapBatch(identitiesJSON [][]byte) ([]jsonnet.Fields, []error)
}

// ProfileFromIdentity builds the profile row content for an identity (without the bookkeeping columns:
// revision, synced_at, login counts). A mapping error is returned as is (*jsonnet.MappingError).
func ProfileFromIdentity(ident *kratos.Identity, mapper Mapper) (Profile, error) {
	identityJSON, err := json.Marshal(ident)
	if err != nil {
		return Profile{}, fmt.Errorf("encode identity %s: %w", ident.ID, err)
	}
	fields, err := mapper.Map(identityJSON)
	if err != nil {
		return Profile{}, err
	}
	return profileFromFields(ident, fields), nil
}

// ProfilesFromIdentities is ProfileFromIdentity for many identities: profiles[i] and errs[i] are what it
// returns for idents[i]. The mapper maps them all in one evaluation, which costs less per identity.
func ProfilesFromIdentities(idents []*kratos.Identity, mapper Mapper) (profiles []Profile, errs []error) {
	profiles, errs = make([]Profile, len(idents)), make([]error, len(idents))
	docs := make([][]byte, 0, len(idents))
	at := make([]int, 0, len(idents)) // docs[j] is the identity idents[at[j]]
	for i, ident := range idents {
		doc, err := json.Marshal(ident)
		if err != nil {
			errs[i] = fmt.Errorf("encode identity %s: %w", ident.ID, err)
			continue
		}
		docs, at = append(docs, doc), append(at, i)
	}
	fields, mapErrs := mapper.MapBatch(docs)
	for j, i := range at {
		if errs[i] = mapErrs[j]; errs[i] == nil {
			profiles[i] = profileFromFields(idents[i], fields[j])
		}
	}
	return profiles, errs
}

// profileFromFields is the profile of ident with the fields the mapping derived from it.
func profileFromFields(ident *kratos.Identity, fields jsonnet.Fields) Profile {
	p := Profile{
		IdentityID:          ident.ID,
		SchemaID:            ident.SchemaID,
		State:               ident.State,
		Traits:              ident.Traits,
		MetadataPublic:      ident.MetadataPublic,
		VerifiableAddresses: ident.VerifiableAddresses,
		RecoveryAddresses:   ident.RecoveryAddresses,
		Email:               fields.Email,
		Phone:               fields.Phone,
		Name:                fields.Name,
		Locale:              fields.Locale,
		Attributes:          fields.Attributes,
		CreatedAt:           &ident.CreatedAt,
	}
	if len(p.Traits) == 0 || string(p.Traits) == "null" {
		p.Traits = json.RawMessage(`{}`)
	}
	if string(p.MetadataPublic) == "null" {
		p.MetadataPublic = nil
	}
	if p.VerifiableAddresses == nil {
		p.VerifiableAddresses = []kratos.VerifiableAddress{}
	}
	if p.RecoveryAddresses == nil {
		p.RecoveryAddresses = []kratos.RecoveryAddress{}
	}
	if p.Attributes == nil {
		p.Attributes = map[string]any{}
	}
	if p.Email != nil {
		email := *p.Email
		p.EmailVerified = verified(ident.VerifiableAddresses, kratos.ViaEmail, func(v string) bool { return strings.EqualFold(v, email) })
	}
	if p.Phone != nil {
		want := normalizePhone(*p.Phone)
		p.PhoneVerified = verified(ident.VerifiableAddresses, kratos.ViaSMS, func(v string) bool { return normalizePhone(v) == want })
	}
	return p
}

func verified(addrs []kratos.VerifiableAddress, via string, matches func(string) bool) bool {
	for _, a := range addrs {
		if a.Via == via && a.Verified && matches(a.Value) {
			return true
		}
	}
	return false
}

// normalizePhone drops the separators people type, so "+49 170 1234-567" matches "+491701234567".
func normalizePhone(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '(', ')', '.':
			return -1
		}
		return r
	}, s)
}

var _ Mapper = (*jsonnet.Mapper)(nil)
