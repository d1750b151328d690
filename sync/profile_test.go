package sync_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// ProfilesFromIdentities gives, for each identity, what ProfileFromIdentity gives, and an identity the
// mapping refuses gets its error without failing the others.
func TestProfilesFromIdentities_SameAsOneByOne(t *testing.T) {
	t.Parallel()
	mapper, err := jsonnet.NewMapper("mine.jsonnet", []byte(`function(identity)
  if identity.traits.email == 'refused@example.com' then error 'refused' else {
    email: identity.traits.email, phone: identity.traits.phone, name: identity.traits.name.first,
    attributes: { state: identity.state },
  }`))
	require.NoError(t, err)
	var idents []*kratos.Identity
	for i := range 50 {
		email := fmt.Sprintf("Person%d@Example.com", i)
		if i == 17 {
			email = "refused@example.com"
		}
		traits, _ := json.Marshal(map[string]any{"email": email, "phone": "+49 170 1234-567", "name": map[string]any{"first": fmt.Sprint("P", i)}})
		idents = append(idents, &kratos.Identity{
			ID: uuid.New(), SchemaID: "person", State: "active", Traits: traits,
			VerifiableAddresses: []kratos.VerifiableAddress{
				{Value: fmt.Sprintf("person%d@example.com", i), Via: kratos.ViaEmail, Verified: i%2 == 0, Status: "completed"},
				{Value: "+491701234567", Via: kratos.ViaSMS, Verified: true, Status: "completed"},
			},
			CreatedAt: time.Now().UTC(),
		})
	}
	profiles, errs := profilesync.ProfilesFromIdentities(idents, mapper)
	require.Len(t, profiles, len(idents))
	require.Len(t, errs, len(idents))
	for i, ident := range idents {
		want, wantErr := profilesync.ProfileFromIdentity(ident, mapper)
		if i == 17 {
			require.EqualError(t, errs[i], wantErr.Error())
			continue
		}
		require.NoError(t, errs[i])
		require.Equal(t, want, profiles[i])
		require.Equal(t, i%2 == 0, profiles[i].EmailVerified)
		require.True(t, profiles[i].PhoneVerified)
	}
}
