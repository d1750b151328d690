package kratos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// The sync reads identities through the list filter instead of one GET each, and takes an id missing from
// the answer for a deleted identity. These tests hold Kratos v1.3.1 to both.

func TestGetIdentities_AnswersAsGetIdentityDoes(t *testing.T) {
	t.Parallel()
	k := testenv.StartKratos(t, testenv.KratosOpts{})
	ctx := context.Background()
	create := func(body kratos.CreateIdentityBody) uuid.UUID {
		ident, err := k.Admin.CreateIdentity(ctx, body)
		require.NoError(t, err)
		return ident.ID
	}
	full := create(kratos.CreateIdentityBody{SchemaID: "person",
		Traits:              json.RawMessage(`{"email":"ada@example.com","phone":"+4915112345678","name":{"first":"Ada","last":"Lovelace"}}`),
		MetadataPublic:      json.RawMessage(`{"plan":"pro"}`),
		VerifiableAddresses: []kratos.VerifiableAddress{{Value: "ada@example.com", Via: "email", Verified: true, Status: "completed"}}})
	inactive := create(kratos.CreateIdentityBody{SchemaID: "person", State: "inactive", Traits: json.RawMessage(`{"email":"off@example.com"}`)})
	deleted := create(kratos.CreateIdentityBody{SchemaID: "person", Traits: json.RawMessage(`{"email":"gone@example.com"}`)})
	require.NoError(t, k.Admin.DeleteIdentity(ctx, deleted))
	neverExisted := uuid.New()

	got, err := k.Admin.GetIdentities(ctx, []uuid.UUID{full, inactive, deleted, neverExisted, full})
	require.NoError(t, err)
	require.Len(t, got, 2, "only the identities Kratos has")
	for _, id := range []uuid.UUID{full, inactive} {
		one, err := k.Admin.GetIdentity(ctx, id)
		require.NoError(t, err)
		require.Equal(t, one, got[id], "the list answers what GET /admin/identities/{id} does")
	}
	require.Equal(t, "inactive", got[inactive].State)
	require.NotEmpty(t, got[full].VerifiableAddresses)
	require.NotEmpty(t, got[full].RecoveryAddresses)
	require.JSONEq(t, `{"plan":"pro"}`, string(got[full].MetadataPublic))

	for _, id := range []uuid.UUID{deleted, neverExisted} {
		_, err := k.Admin.GetIdentity(ctx, id)
		require.ErrorIs(t, err, kratos.ErrNotFound, "what GET says of an id the list leaves out")
	}
}

// More ids than one request carries (and than Kratos's default page of 250): every one is answered.
func TestGetIdentities_ManyIDs(t *testing.T) {
	t.Parallel()
	k := testenv.StartKratos(t, testenv.KratosOpts{})
	ctx := context.Background()
	bodies := make([]kratos.CreateIdentityBody, 260)
	for i := range bodies {
		bodies[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: json.RawMessage(fmt.Sprintf(`{"email":"p%d@example.com"}`, i))}
	}
	ids, err := k.Admin.BatchCreateIdentities(ctx, bodies)
	require.NoError(t, err)

	got, err := k.Admin.GetIdentities(ctx, append(ids, ids[:10]...))
	require.NoError(t, err)
	require.Len(t, got, len(ids))
	for i, id := range ids {
		require.Equal(t, id, got[id].ID)
		require.JSONEq(t, string(bodies[i].Traits), string(got[id].Traits))
	}
}

// A Kratos (or a proxy before it) that ignores the ids filter answers with the whole list: GetIdentities
// says so, instead of taking unasked identities for asked ones or reading all of Kratos on every sync.
func TestGetIdentities_RefusesAnAnswerThatIgnoredTheFilter(t *testing.T) {
	t.Parallel()
	k := testenv.StartKratos(t, testenv.KratosOpts{})
	ctx := context.Background()
	var ids []uuid.UUID
	for i := range 3 {
		ident, err := k.Admin.CreateIdentity(ctx, kratos.CreateIdentityBody{SchemaID: "person",
			Traits: json.RawMessage(fmt.Sprintf(`{"email":"filter%d@example.com"}`, i))})
		require.NoError(t, err)
		ids = append(ids, ident.ID)
	}
	target, err := url.Parse(k.AdminURL)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	direct := proxy.Director
	proxy.Director = func(r *http.Request) {
		direct(r)
		q := r.URL.Query()
		q.Del("ids")
		r.URL.RawQuery = q.Encode()
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	client, err := kratos.NewClient(srv.URL, nil)
	require.NoError(t, err)

	_, err = client.GetIdentities(ctx, ids[:1])
	require.ErrorContains(t, err, "not asked for")
}
