package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// profileFor is the profile of a made-up identity with an e-mail address.
func profileFor(t *testing.T, email string) profilesync.Profile {
	t.Helper()
	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	traits, _ := json.Marshal(testenv.Traits(email, "Ada", "Lovelace"))
	p, err := profilesync.ProfileFromIdentity(&kratos.Identity{
		ID: uuid.New(), SchemaID: "person", State: "active", Traits: traits,
		VerifiableAddresses: []kratos.VerifiableAddress{{Value: email, Via: kratos.ViaEmail, Verified: true, Status: "completed"}},
		CreatedAt:           time.Now().UTC().Truncate(time.Microsecond),
	}, mapper)
	require.NoError(t, err)
	return p
}

// A page's snapshot inserts only the profiles that have no row: a live row that a sync wrote meanwhile, or a
// tombstone, stays exactly as it is, whatever the snapshot holds.
func TestInsertMissingProfiles_NeverTouchesAnExistingRowOrTombstone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)

	live, deleted := profileFor(t, "live@example.com"), profileFor(t, "deleted@example.com")
	_, err := profilesync.UpsertProfile(ctx, db.Pool, live)
	require.NoError(t, err)
	live.State = "inactive"
	_, err = profilesync.UpsertProfile(ctx, db.Pool, live) // revision 2, inactive
	require.NoError(t, err)
	_, err = profilesync.UpsertProfile(ctx, db.Pool, deleted)
	require.NoError(t, err)
	_, err = profilesync.TombstoneProfile(ctx, db.Pool, deleted.IdentityID)
	require.NoError(t, err)

	// The snapshot's older copies of both, and two profiles nobody has.
	staleLive, staleDeleted := live, deleted
	staleLive.State = "active"
	fresh1, fresh2 := profileFor(t, "fresh1@example.com"), profileFor(t, "fresh2@example.com")
	writes, err := profilesync.InsertMissingProfiles(ctx, db.Pool, []profilesync.Profile{staleLive, fresh1, staleDeleted, fresh2})
	require.NoError(t, err)
	require.Equal(t, []profilesync.Write{{}, {Changed: true, Revision: 1}, {}, {Changed: true, Revision: 1}}, writes)

	got, err := profilesync.GetProfile(ctx, db.Pool, live.IdentityID)
	require.NoError(t, err)
	require.Equal(t, "inactive", got.State)
	require.EqualValues(t, 2, got.Revision)
	got, err = profilesync.GetProfile(ctx, db.Pool, deleted.IdentityID)
	require.NoError(t, err)
	require.NotNil(t, got.DeletedAt, "the tombstone stays a tombstone")
	require.Nil(t, got.Email)

	for _, want := range []profilesync.Profile{fresh1, fresh2} {
		got, err := profilesync.GetProfile(ctx, db.Pool, want.IdentityID)
		require.NoError(t, err)
		require.Equal(t, want.Email, got.Email)
		require.True(t, got.EmailVerified)
		require.Equal(t, want.Name, got.Name)
		require.JSONEq(t, string(want.Traits), string(got.Traits))
		require.Equal(t, want.VerifiableAddresses, got.VerifiableAddresses)
		require.True(t, want.CreatedAt.Equal(*got.CreatedAt))
		require.EqualValues(t, 1, got.Revision)
	}

	// The single-profile form is the same statement.
	w, err := profilesync.InsertMissingProfile(ctx, db.Pool, staleLive)
	require.NoError(t, err)
	require.False(t, w.Changed)
}

// More profiles than one statement takes are inserted in several.
func TestInsertMissingProfiles_MoreThanOneStatementHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	base := profileFor(t, "many@example.com")
	ps := make([]profilesync.Profile, 4500)
	for i := range ps {
		ps[i] = base
		ps[i].IdentityID = uuid.New()
		email := fmt.Sprintf("many%d@example.com", i)
		ps[i].Email = &email
	}
	writes, err := profilesync.InsertMissingProfiles(ctx, db.Pool, ps)
	require.NoError(t, err)
	require.Len(t, writes, len(ps))
	for i, w := range writes {
		require.True(t, w.Changed, "profile %d", i)
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&n))
	require.Equal(t, len(ps), n)
	got, err := profilesync.GetProfile(ctx, db.Pool, ps[4321].IdentityID)
	require.NoError(t, err)
	require.Equal(t, "many4321@example.com", *got.Email)
}
