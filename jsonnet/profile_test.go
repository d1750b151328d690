package jsonnet_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// identityFixtures are identities of the shipped schema as Kratos v1.3.1 returns them: e-mail only, phone
// only, both, and the smallest one the schema allows. -capture creates them through the admin API and
// stores what GET /admin/identities/{id} answers (without credentials, as the sync worker sees them).
var identityFixtures = map[string]kratos.CreateIdentityBody{
	"email": {SchemaID: "person", Traits: json.RawMessage(`{"email":"Ada.Lovelace@Example.COM","name":{"first":"Ada","last":"Lovelace"},"locale":"en-GB"}`),
		VerifiableAddresses: []kratos.VerifiableAddress{{Value: "ada.lovelace@example.com", Via: "email", Verified: true, Status: "completed"}}},
	"phone": {SchemaID: "person", Traits: json.RawMessage(`{"phone":"+4915112345678","name":{"first":"Grace"}}`),
		MetadataPublic: json.RawMessage(`{"plan":"free"}`)},
	"email-and-phone": {SchemaID: "person", Traits: json.RawMessage(`{"email":"linus@example.org","phone":"+14155550123","name":{"last":"Torvalds"}}`),
		VerifiableAddresses: []kratos.VerifiableAddress{{Value: "+14155550123", Via: "sms", Verified: true, Status: "completed"}}},
	"minimal": {SchemaID: "person", Traits: json.RawMessage(`{"email":"x@example.net"}`)},
}

// captureIdentities refreshes testdata/identities from a real Kratos (go test ./jsonnet -args -capture).
func captureIdentities(t *testing.T) {
	k := testenv.StartKratos(t, testenv.KratosOpts{})
	for name, body := range identityFixtures {
		created, err := k.Admin.CreateIdentity(context.Background(), body)
		require.NoError(t, err, name)
		got, err := k.Admin.GetIdentity(context.Background(), created.ID)
		require.NoError(t, err, name)
		raw, err := json.MarshalIndent(got, "", "  ")
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join("testdata", "identities"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join("testdata", "identities", name+".json"), append(raw, '\n'), 0o644))
	}
}

func TestProfileMapping_GoldenOnKratosIdentities(t *testing.T) {
	if *capture {
		captureIdentities(t)
	}
	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	for name := range identityFixtures {
		t.Run(name, func(t *testing.T) {
			ident, err := os.ReadFile(filepath.Join("testdata", "identities", name+".json"))
			require.NoError(t, err, "fixture missing: go test ./jsonnet -args -capture")
			fields, err := mapper.Map(ident)
			require.NoError(t, err)
			got, err := json.MarshalIndent(fields, "", "  ")
			require.NoError(t, err)

			golden := filepath.Join("testdata", "profile", name+".json")
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
				require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "golden missing: go test ./jsonnet -args -update")
			require.JSONEq(t, string(want), string(got))
		})
	}
}

func TestProfileMapping_CommonTraitNames(t *testing.T) {
	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	cases := []struct {
		traits      string
		email, name string
		phone       string
	}{
		{traits: `{"email":"A@B.example","name":"Ada L."}`, email: "a@b.example", name: "Ada L."},
		{traits: `{"emails":["first@example.com","second@example.com"],"given_name":"Ada","family_name":"Lovelace"}`, email: "first@example.com", name: "Ada Lovelace"},
		{traits: `{"email_address":"c@example.com","first_name":"Charles","last_name":"Babbage"}`, email: "c@example.com", name: "Charles Babbage"},
		{traits: `{"phone_number":"+12025550123","username":"cb"}`, phone: "+12025550123", name: "cb"},
		{traits: `{"email":"  ","name":{"first":"  ","last":""}}`},
		{traits: `{}`},
	}
	for _, c := range cases {
		fields, err := mapper.Map([]byte(`{"id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","schema_id":"x","traits":` + c.traits + `}`))
		require.NoError(t, err, c.traits)
		require.Equal(t, c.email, deref(fields.Email), c.traits)
		require.Equal(t, c.name, deref(fields.Name), c.traits)
		require.Equal(t, c.phone, deref(fields.Phone), c.traits)
	}
}

// The fallbacks and the attributes, on values of every JSON type: what is not a non-empty string is not a
// candidate, and an attribute is kept only when it is a string, number or boolean.
func TestProfileMapping_ValuesOfOtherTypes(t *testing.T) {
	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	cases := []struct {
		traits     string
		email      string
		name       string
		locale     string
		attributes map[string]any
	}{
		{traits: `{"email":42,"email_address":"","emails":[7,"x@example.com"]}`},
		{traits: `{"email":null,"emails":["y@example.com"]}`, email: "y@example.com"},
		{traits: `{"name":{"first":"Ada","last":null},"locale":7,"language":"de"}`, name: "Ada", locale: "de"},
		{traits: `{"name":{"last":"Lovelace"},"first_name":"A","last_name":"L"}`, name: "Lovelace"},
		{traits: `{"name":["Ada"],"given_name":"Ada","family_name":"King"}`, name: "Ada King"},
		{traits: `{"username":"ada","company":7,"department":false,"country":{"code":"GB"}}`, name: "ada",
			attributes: map[string]any{"username": "ada", "company": float64(7), "department": false}},
		{traits: `{"username":"","company":"","country":null}`, attributes: map[string]any{"username": "", "company": ""}},
		{traits: `"not an object"`},
	}
	for _, c := range cases {
		fields, err := mapper.Map([]byte(`{"id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","schema_id":"x","traits":` + c.traits + `}`))
		require.NoError(t, err, c.traits)
		require.Equal(t, c.email, deref(fields.Email), c.traits)
		require.Equal(t, c.name, deref(fields.Name), c.traits)
		require.Equal(t, c.locale, deref(fields.Locale), c.traits)
		if c.attributes == nil {
			c.attributes = map[string]any{}
		}
		require.Equal(t, c.attributes, fields.Attributes, c.traits)
	}
}

func TestMapper_ReportsJsonnetErrorsWithTheirPosition(t *testing.T) {
	_, err := jsonnet.NewMapper("mine.jsonnet", []byte("function(identity) {\n  email: identity.traits.email,,\n}"))
	require.ErrorContains(t, err, "mine.jsonnet:2")

	m, err := jsonnet.NewMapper("mine.jsonnet", []byte("function(identity) {\n  email: identity.traits.mail,\n}"))
	require.NoError(t, err)
	_, err = m.Map([]byte(`{"traits":{"email":"a@example.com"}}`))
	var mappingErr *jsonnet.MappingError
	require.ErrorAs(t, err, &mappingErr)
	require.ErrorContains(t, err, "mine.jsonnet:2")
	require.ErrorContains(t, err, "mail")

	m, err = jsonnet.NewMapper("mine.jsonnet", []byte(`function(identity) { attributes: { nested: { deep: 1 } } }`))
	require.NoError(t, err)
	_, err = m.Map([]byte(`{"traits":{}}`))
	require.ErrorContains(t, err, `attribute "nested"`)

	m, err = jsonnet.NewMapper("mine.jsonnet", []byte(`import "other.libsonnet"`))
	require.NoError(t, err)
	_, err = m.Map([]byte(`{}`))
	require.ErrorContains(t, err, "imports are not allowed")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return strings.TrimSpace(*s)
}

func TestMapper_CheckOnSamplesOfTheShippedSchema(t *testing.T) {
	samples, err := jsonnet.SampleIdentities("person", kratos.IdentitySchema)
	require.NoError(t, err)
	require.Len(t, samples, 4) // all traits, required traits, the e-mail branch, the phone branch

	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	require.NoError(t, mapper.Check(samples))

	// A mapping that assumes every person has an e-mail address fails on the phone-only sample, before any
	// real identity meets it.
	strict, err := jsonnet.NewMapper("strict.jsonnet", []byte("function(identity) {\n  email: std.asciiLower(identity.traits.email),\n}"))
	require.NoError(t, err)
	err = strict.Check(samples)
	require.ErrorContains(t, err, "anyOf branch 2")
	require.ErrorContains(t, err, "strict.jsonnet:2")
}
