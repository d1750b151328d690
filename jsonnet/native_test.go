package jsonnet_test

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
)

// The default mapping runs natively (jsonnet.mapDefault); profile.jsonnet is what it must equal. Change
// one, and this test says where the other differs.
func TestDefaultMapping_NativeEqualsProfileJsonnet(t *testing.T) {
	native, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	interpreted, err := jsonnet.NewInterpretedMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	same := func(identity []byte) {
		t.Helper()
		want, wantErr := interpreted.Map(identity)
		got, gotErr := native.Map(identity)
		require.Equal(t, wantErr != nil, gotErr != nil, "error on %s: jsonnet %v, native %v", identity, wantErr, gotErr)
		require.Equal(t, want, got, "fields of %s", identity)
	}

	fixtures, err := filepath.Glob(filepath.Join("testdata", "identities", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, fixtures)
	for _, f := range fixtures {
		identity, err := os.ReadFile(f)
		require.NoError(t, err)
		same(identity)
	}
	for _, identity := range []string{`{"id":"x"}`, `{"traits":null}`, `[]`, `{"traits":[1,2]}`, `{"traits":{"name":"  "}}`} {
		same([]byte(identity))
	}

	// Random traits over the keys the mapping reads (and one it does not), with values of every JSON type.
	keys := []string{"email", "email_address", "emails", "phone", "phone_number", "mobile", "name", "given_name",
		"family_name", "first_name", "last_name", "username", "locale", "language", "company", "department",
		"country", "nickname"}
	nameKeys := []string{"first", "last", "given", "family", "middle"}
	values := []any{nil, "", " ", "x", "Ada ", "A@B.example", 0.0, -1.5, 42.0, 1e21, true, false,
		[]any{}, []any{"e1@example.com", "e2@example.com"}, []any{""}, []any{7.0}, map[string]any{}, "Zoë"}
	r := rand.New(rand.NewPCG(7, 11))
	pick := func() any { return values[r.IntN(len(values))] }
	for range 5000 {
		traits := map[string]any{}
		for _, k := range keys {
			if r.IntN(3) == 0 {
				traits[k] = pick()
			}
		}
		if r.IntN(2) == 0 {
			name := map[string]any{}
			for _, k := range nameKeys {
				if r.IntN(2) == 0 {
					name[k] = pick()
				}
			}
			traits["name"] = name
		}
		var anyTraits any = traits
		if r.IntN(50) == 0 {
			anyTraits = pick()
		}
		identity, err := json.Marshal(map[string]any{"id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "schema_id": "person", "traits": anyTraits})
		require.NoError(t, err)
		same(identity)
	}
}
