package reconcile

import (
	"bytes"
	"encoding/json"
	"math/big"
	"time"

	"github.com/google/uuid"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// profileRow is what a pass reads of a profile: the columns it compares with Kratos, and the bookkeeping.
type profileRow struct {
	IdentityID          uuid.UUID
	SchemaID            string
	State               string
	Traits              []byte
	MetadataPublic      []byte // nil for SQL NULL
	VerifiableAddresses []kratos.VerifiableAddress
	RecoveryAddresses   []kratos.RecoveryAddress
	CreatedAt           *time.Time
	Revision            int64
	Deleted             bool
}

const selectProfilesSQL = `
SELECT identity_id, schema_id, state, traits, metadata_public, verifiable_addresses, recovery_addresses,
       created_at, revision, deleted_at IS NOT NULL
FROM profiles
WHERE identity_id = ANY($1)`

// staleField says which compared field of a live profile differs from the identity Kratos listed, or ""
// when none does.
//
// The list is fixed: schema_id, state, traits, metadata_public, the addresses and created_at, the columns a
// sync copies from Kratos. They are normalised the way sync.ProfileFromIdentity normalises them before it
// writes, and JSON is compared by value as Postgres's jsonb does (key order, spacing and the spelling of a
// number do not matter), so that a profile the worker wrote from a GET compares equal to the same identity
// in the list. The list omits credentials, which profiles do not hold.
//
// The fields the profile mapping derives (email, name, …) are not compared: they follow from the fields
// above unless the mapping itself changed, and evaluating the mapping for every identity would cost more
// than paging Kratos.
func staleField(ident *kratos.Identity, row *profileRow) string {
	switch {
	case ident.SchemaID != row.SchemaID:
		return "schema_id"
	case ident.State != row.State:
		return "state"
	case !jsonEqual(normalTraits(ident.Traits), normalTraits(row.Traits)):
		return "traits"
	case !jsonEqualOrNull(ident.MetadataPublic, row.MetadataPublic):
		return "metadata_public"
	case !verifiableEqual(ident.VerifiableAddresses, row.VerifiableAddresses):
		return "verifiable_addresses"
	case !recoveryEqual(ident.RecoveryAddresses, row.RecoveryAddresses):
		return "recovery_addresses"
	case row.CreatedAt == nil || !sameInstant(ident.CreatedAt, *row.CreatedAt):
		return "created_at"
	}
	return ""
}

// normalTraits is what ProfileFromIdentity stores for traits: an absent or null value becomes {}.
func normalTraits(b []byte) []byte {
	if isNull(b) {
		return []byte(`{}`)
	}
	return b
}

func isNull(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || string(b) == "null"
}

// jsonEqualOrNull compares two JSON values where absent and null are the same (metadata_public is stored as
// SQL NULL for both).
func jsonEqualOrNull(a, b []byte) bool {
	if isNull(a) || isNull(b) {
		return isNull(a) && isNull(b)
	}
	return jsonEqual(a, b)
}

// jsonEqual reports whether two JSON documents hold the same value, as jsonb equality does: object key
// order and whitespace do not matter, and numbers are compared exactly by value (1.0 equals 1, 1e2 equals
// 100). Invalid JSON is never equal to anything.
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	// Kratos writes compact JSON; Postgres writes jsonb with spaces after ':' and ','. Compacting is cheap
	// and settles the usual case without decoding.
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	if bytes.Equal(ca.Bytes(), cb.Bytes()) {
		return true
	}
	va, okA := decodeJSON(ca.Bytes())
	vb, okB := decodeJSON(cb.Bytes())
	return okA && okB && valuesEqual(va, vb)
}

func decodeJSON(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	return v, true
}

func valuesEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			yv, ok := y[k]
			if !ok || !valuesEqual(xv, yv) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !valuesEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		return ok && numbersEqual(x, y)
	default: // string, bool, nil
		return a == b
	}
}

func numbersEqual(a, b json.Number) bool {
	if a == b {
		return true
	}
	ra, okA := new(big.Rat).SetString(string(a))
	rb, okB := new(big.Rat).SetString(string(b))
	return okA && okB && ra.Cmp(rb) == 0
}

// verifiableEqual compares address lists in order: Kratos returns them ordered by address id, in the list
// as in a single GET.
func verifiableEqual(a, b []kratos.VerifiableAddress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Value != y.Value || x.Via != y.Via || x.Verified != y.Verified || x.Status != y.Status {
			return false
		}
		if (x.VerifiedAt == nil) != (y.VerifiedAt == nil) || x.VerifiedAt != nil && !sameInstant(*x.VerifiedAt, *y.VerifiedAt) {
			return false
		}
	}
	return true
}

func recoveryEqual(a, b []kratos.RecoveryAddress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sameInstant compares times at Postgres's precision (microseconds, rounded on input).
func sameInstant(a, b time.Time) bool {
	return a.Round(time.Microsecond).Equal(b.Round(time.Microsecond))
}
