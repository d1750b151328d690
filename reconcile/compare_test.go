package reconcile

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

func TestJSONEqual(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{`{"a":1,"b":"x"}`, `{"b": "x", "a": 1}`, true}, // jsonb's key order and spacing
		{`{"a":1}`, `{"a":1.0}`, true},
		{`{"a":100}`, `{"a":1e2}`, true},
		{`{"a":12345678901234567890}`, `{"a":12345678901234567891}`, false}, // exact, not float64
		{`{"a":[1,2]}`, `{"a":[2,1]}`, false},
		{`{"a":{"b":null}}`, `{"a":{}}`, false},
		{`{"a":"1"}`, `{"a":1}`, false},
		{`{"a":true}`, `{"a":"true"}`, false},
		{`{}`, `{}`, true},
		{`{"a":1}`, `{"a":1,"b":2}`, false},
		{`{"a":"é"}`, `{"a":"\u00e9"}`, true},
		{`{"a":1`, `{"a":1`, true}, // the same bytes, however broken
		{`{"a":1`, `{"a":1}`, false},
	} {
		require.Equal(t, tc.want, jsonEqual([]byte(tc.a), []byte(tc.b)), "%s vs %s", tc.a, tc.b)
	}
}

func TestStaleField(t *testing.T) {
	t.Parallel()
	created := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)
	verifiedAt := created.Add(time.Hour)
	identity := func() *kratos.Identity {
		return &kratos.Identity{
			ID: uuid.New(), SchemaID: "person", State: "active",
			Traits: json.RawMessage(`{"email":"a@example.com","name":{"first":"A","last":"B"}}`),
			VerifiableAddresses: []kratos.VerifiableAddress{
				{Value: "a@example.com", Via: "email", Verified: true, Status: "completed", VerifiedAt: &verifiedAt},
			},
			RecoveryAddresses: []kratos.RecoveryAddress{{Value: "a@example.com", Via: "email"}},
			CreatedAt:         created,
		}
	}
	// The row as Postgres gives it back: jsonb spacing and key order, microseconds.
	row := func() *profileRow {
		stored := created.Round(time.Microsecond)
		return &profileRow{
			SchemaID: "person", State: "active",
			Traits: []byte(`{"name": {"last": "B", "first": "A"}, "email": "a@example.com"}`),
			VerifiableAddresses: []kratos.VerifiableAddress{
				{Value: "a@example.com", Via: "email", Verified: true, Status: "completed", VerifiedAt: &verifiedAt},
			},
			RecoveryAddresses: []kratos.RecoveryAddress{{Value: "a@example.com", Via: "email"}},
			CreatedAt:         &stored,
		}
	}
	require.Equal(t, "", staleField(identity(), row()))

	for _, tc := range []struct {
		want   string
		change func(*kratos.Identity, *profileRow)
	}{
		{"", func(i *kratos.Identity, r *profileRow) { i.Traits = nil; r.Traits = []byte(`{}`) }},
		{"", func(i *kratos.Identity, r *profileRow) { i.Traits = json.RawMessage(`null`); r.Traits = []byte(`{}`) }},
		{"", func(i *kratos.Identity, _ *profileRow) { i.MetadataPublic = json.RawMessage(`null`) }},
		{"", func(i *kratos.Identity, r *profileRow) {
			i.MetadataPublic = json.RawMessage(`{"plan":"pro","seats":3}`)
			r.MetadataPublic = []byte(`{"seats": 3, "plan": "pro"}`)
		}},
		{"schema_id", func(i *kratos.Identity, _ *profileRow) { i.SchemaID = "phone" }},
		{"state", func(i *kratos.Identity, _ *profileRow) { i.State = "inactive" }},
		{"traits", func(i *kratos.Identity, _ *profileRow) {
			i.Traits = json.RawMessage(`{"email":"a@example.com","name":{"first":"A","last":"C"}}`)
		}},
		{"traits", func(i *kratos.Identity, _ *profileRow) { i.Traits = nil }},
		{"metadata_public", func(i *kratos.Identity, _ *profileRow) { i.MetadataPublic = json.RawMessage(`{}`) }},
		{"metadata_public", func(_ *kratos.Identity, r *profileRow) { r.MetadataPublic = []byte(`{"plan": "pro"}`) }},
		{"verifiable_addresses", func(i *kratos.Identity, _ *profileRow) { i.VerifiableAddresses[0].Verified = false }},
		{"verifiable_addresses", func(i *kratos.Identity, _ *profileRow) { i.VerifiableAddresses[0].VerifiedAt = nil }},
		{"verifiable_addresses", func(i *kratos.Identity, _ *profileRow) {
			later := verifiedAt.Add(time.Second)
			i.VerifiableAddresses[0].VerifiedAt = &later
		}},
		{"verifiable_addresses", func(i *kratos.Identity, _ *profileRow) { i.VerifiableAddresses = nil }},
		{"recovery_addresses", func(i *kratos.Identity, _ *profileRow) { i.RecoveryAddresses[0].Value = "b@example.com" }},
		{"created_at", func(_ *kratos.Identity, r *profileRow) { r.CreatedAt = nil }},
		{"created_at", func(i *kratos.Identity, _ *profileRow) { i.CreatedAt = created.Add(time.Millisecond) }},
	} {
		i, r := identity(), row()
		tc.change(i, r)
		require.Equal(t, tc.want, staleField(i, r), "%+v", tc)
	}
}

func TestCheckOrder_RefusesIdentitiesOutOfIDOrder(t *testing.T) {
	t.Parallel()
	a := uuid.MustParse("10000000-0000-4000-8000-000000000000")
	b := uuid.MustParse("20000000-0000-4000-8000-000000000000")
	c := uuid.MustParse("9fffffff-0000-4000-8000-000000000000")
	page := func(ids ...uuid.UUID) []kratos.Identity {
		out := make([]kratos.Identity, len(ids))
		for i, id := range ids {
			out[i].ID = id
		}
		return out
	}
	require.NoError(t, checkOrder(page(a, b, c), nil))
	require.NoError(t, checkOrder(page(b, c), &a))
	require.NoError(t, checkOrder(nil, &c))
	require.ErrorContains(t, checkOrder(page(a, c, b), nil), "not in ascending id order")
	require.ErrorContains(t, checkOrder(page(a, a), nil), "not in ascending id order")
	require.ErrorContains(t, checkOrder(page(a), &b), "not in ascending id order") // behind the previous page
}

func TestDocumentDrift(t *testing.T) {
	t.Parallel()
	id := func(n byte) uuid.UUID { return uuid.UUID{15: n} }
	rows := map[uuid.UUID]*profileRow{
		id(1): {Revision: 3},                // document at 3: in step
		id(2): {Revision: 3},                // document at 2: stale
		id(3): {Revision: 1},                // no document: missing
		id(4): {Revision: 5, Deleted: true}, // a tombstone with a document: stale (the repair deletes it)
		id(5): {Revision: 5, Deleted: true}, // a tombstone without one: in step
		id(6): {Revision: 2},                // a document ahead (a write since the page was read): in step
	}
	versions := map[uuid.UUID]int64{id(1): 3, id(2): 2, id(4): 4, id(6): 3, id(7): 1}
	// id(7) has a document but no profile on this page's rows: the profile check deals with it, not this one.
	missing, stale := documentDrift([]uuid.UUID{id(1), id(2), id(3), id(4), id(5), id(6), id(7)}, rows, versions)
	require.Equal(t, []uuid.UUID{id(3)}, missing)
	require.Equal(t, []uuid.UUID{id(2), id(4)}, stale)
}
