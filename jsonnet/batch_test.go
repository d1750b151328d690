package jsonnet_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
)

// randomIdentities makes identities with traits of every shape the default mapping looks at (and some it
// does not): present, missing, blank, of the wrong type.
func randomIdentities(r *rand.Rand, n int) [][]byte {
	keys := []string{"email", "email_address", "emails", "phone", "phone_number", "mobile", "name", "given_name",
		"family_name", "first_name", "last_name", "username", "locale", "language", "company", "department", "country", "other"}
	nameKeys := []string{"first", "last", "given", "family", "middle"}
	values := []any{nil, "", "  ", "x", "Ada", " A@B.example ", 0.0, 42.5, true, false, []any{}, []any{"e1@x", "e2@x"},
		[]any{""}, []any{7.0}, map[string]any{}}
	out := make([][]byte, n)
	for i := range out {
		traits := map[string]any{}
		for _, k := range keys {
			if r.IntN(3) == 0 {
				traits[k] = values[r.IntN(len(values))]
			}
		}
		if r.IntN(2) == 0 {
			name := map[string]any{}
			for _, k := range nameKeys {
				if r.IntN(2) == 0 {
					name[k] = values[r.IntN(len(values))]
				}
			}
			traits["name"] = name
		}
		var t any = traits
		if r.IntN(50) == 0 {
			t = values[r.IntN(len(values))] // not an object at all
		}
		out[i], _ = json.Marshal(map[string]any{
			"id": fmt.Sprintf("6ba7b810-9dad-11d1-80b4-%012d", i), "schema_id": "person", "state": "active",
			"traits": t, "metadata_public": map[string]any{"plan": values[r.IntN(len(values))]},
		})
	}
	return out
}

// requireSameAsMap checks that MapBatch gives, for every identity, what Map gives: the same fields, or an
// error with the same message.
func requireSameAsMap(t *testing.T, m *jsonnet.Mapper, idents [][]byte) {
	t.Helper()
	fields, errs := m.MapBatch(idents)
	require.Len(t, fields, len(idents))
	require.Len(t, errs, len(idents))
	for i, ident := range idents {
		want, wantErr := m.Map(ident)
		if wantErr != nil {
			require.EqualError(t, errs[i], wantErr.Error(), "identity %d: %s", i, ident)
			var mappingErr *jsonnet.MappingError
			require.ErrorAs(t, errs[i], &mappingErr)
			continue
		}
		require.NoError(t, errs[i], "identity %d: %s", i, ident)
		require.Equal(t, want, fields[i], "identity %d: %s", i, ident)
	}
}

func TestMapBatch_SameAsMap(t *testing.T) {
	t.Parallel()
	mappings := map[string][]byte{
		"profile.jsonnet": jsonnet.DefaultProfileMapping,
		// Reads more than the traits, and its own file name.
		"custom.jsonnet": []byte(`function(identity) {
  name: identity.schema_id + ':' + identity.id,
  locale: std.thisFile,
  attributes: { plan: identity.metadata_public.plan, state: identity.state },
}`),
		// Not a function: Jsonnet ignores the argument, and so must MapBatch.
		"constant.jsonnet": []byte(`{ email: 'Same@Example.com' }`),
		// A default parameter besides identity.
		"defaults.jsonnet": []byte(`function(identity, suffix='!') { name: std.toString(identity.traits) + suffix }`),
	}
	for name, src := range mappings {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := jsonnet.NewMapper(name, src)
			require.NoError(t, err)
			r := rand.New(rand.NewPCG(1, 2)) // one per subtest: they run in parallel
			for _, size := range []int{1, 2, 17, 500} {
				requireSameAsMap(t, m, randomIdentities(r, size))
			}
			var fixtures [][]byte
			for _, f := range []string{"email", "phone", "email-and-phone", "minimal"} {
				raw, err := os.ReadFile(filepath.Join("testdata", "identities", f+".json"))
				require.NoError(t, err)
				fixtures = append(fixtures, raw)
			}
			requireSameAsMap(t, m, fixtures)
		})
	}
}

// An identity the mapping fails on fails alone, with the error Map gives it; the others are mapped.
func TestMapBatch_FailingIdentityFailsAlone(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"an error":        `function(identity) if identity.traits.email == 'bad@example.com' then error 'refused: ' + identity.id else { email: identity.traits.email }`,
		"not an object":   `function(identity) if identity.traits.email == 'bad@example.com' then 'nope' else { email: identity.traits.email }`,
		"a bad attribute": `function(identity) { email: identity.traits.email, attributes: { x: if identity.traits.email == 'bad@example.com' then { nested: 1 } else 1 } }`,
		"a missing field": `function(identity) { email: identity.traits.mail }`,
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := jsonnet.NewMapper("mine.jsonnet", []byte(src))
			require.NoError(t, err)
			idents := [][]byte{
				[]byte(`{"id":"a","traits":{"email":"a@example.com"}}`),
				[]byte(`{"id":"b","traits":{"email":"bad@example.com"}}`),
				[]byte(`{"id":"c","traits":{"email":"c@example.com"}}`),
				[]byte(`not json`),
			}
			requireSameAsMap(t, m, idents)
			_, errs := m.MapBatch(idents)
			require.Error(t, errs[1])
			require.ErrorContains(t, errs[3], "identity is not JSON")
			if name != "a missing field" {
				require.NoError(t, errs[0])
				require.NoError(t, errs[2])
			}
		})
	}
}

// A number beyond what a float64 holds (Kratos stores traits as JSON, and Postgres's jsonb takes any
// number) fails only a mapping that reads it, not the identity.
func TestMapBatch_ANumberTooLargeForJsonnetFailsOnlyAMappingThatReadsIt(t *testing.T) {
	t.Parallel()
	idents := [][]byte{
		[]byte(`{"id":"a","traits":{"email":"a@example.com","score":1e400}}`),
		[]byte(`{"id":"b","traits":{"email":"b@example.com","score":1}}`),
	}
	def, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	requireSameAsMap(t, def, idents)
	fields, errs := def.MapBatch(idents)
	require.NoError(t, errs[0])
	require.Equal(t, "a@example.com", *fields[0].Email)

	reads, err := jsonnet.NewMapper("mine.jsonnet", []byte(`function(identity) { attributes: { score: identity.traits.score } }`))
	require.NoError(t, err)
	requireSameAsMap(t, reads, idents)
	fields, errs = reads.MapBatch(idents)
	require.ErrorContains(t, errs[0], "mine.jsonnet")
	require.NoError(t, errs[1])
	require.Equal(t, map[string]any{"score": float64(1)}, fields[1].Attributes)
}

func TestMapBatch_ParameterNotCalledIdentity(t *testing.T) {
	t.Parallel()
	m, err := jsonnet.NewMapper("mine.jsonnet", []byte(`function(ident) { email: ident.traits.email }`))
	require.NoError(t, err)
	idents := [][]byte{[]byte(`{"traits":{"email":"a@example.com"}}`), []byte(`{"traits":{"email":"b@example.com"}}`)}
	requireSameAsMap(t, m, idents)
	_, errs := m.MapBatch(idents)
	require.ErrorContains(t, errs[0], "identity")
}

func TestMapBatch_Empty(t *testing.T) {
	t.Parallel()
	m, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	fields, errs := m.MapBatch(nil)
	require.Empty(t, fields)
	require.Empty(t, errs)
}

// MapBatch and Map share the mapper's VMs, each setting its own top-level arguments: used together from
// many goroutines, neither may see the other's.
func TestMapBatch_ConcurrentWithMap(t *testing.T) {
	t.Parallel()
	m, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	idents := randomIdentities(rand.New(rand.NewPCG(3, 4)), 20)
	want := make([]jsonnet.Fields, len(idents))
	for i, ident := range idents {
		want[i], err = m.Map(ident)
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 20 {
				if g%2 == 0 {
					fields, errs := m.MapBatch(idents)
					for i := range idents {
						if errs[i] != nil || !assertEqualFields(want[i], fields[i]) {
							t.Errorf("MapBatch, identity %d: %+v, %v", i, fields[i], errs[i])
							return
						}
					}
					continue
				}
				for i, ident := range idents {
					f, err := m.Map(ident)
					if err != nil || !assertEqualFields(want[i], f) {
						t.Errorf("Map, identity %d: %+v, %v", i, f, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func assertEqualFields(a, b jsonnet.Fields) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
