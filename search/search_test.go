package search_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/search"
)

type testBundle struct {
	es    testenv.ElasticsearchIndex
	index *search.Index
}

// setup gives the test an index alias of its own on the shared cluster, reached at url (the cluster itself
// when empty, or a proxy in front of it).
func setup(t *testing.T, url string) *testBundle {
	t.Helper()
	es := testenv.Elasticsearch(t)
	if url == "" {
		url = es.URL
	}
	ix, err := search.New(search.Config{Addresses: []string{url}, Alias: es.Alias, RequestTimeout: 10 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ix.Close(context.Background()) })
	return &testBundle{es: es, index: ix}
}

func (b *testBundle) writer(t *testing.T, opts search.WriterOpts) *search.Writer {
	t.Helper()
	w, err := b.index.NewWriter(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

// tooDeep is a document the index refuses for good: traits deeper than a flattened field takes
// (depth_limit 20).
func tooDeep(id uuid.UUID) search.Document {
	deep := `"leaf"`
	for range 25 {
		deep = `{"x":` + deep + `}`
	}
	d := doc(id, 1, "Too Deep", "deep@example.com")
	d.Traits = json.RawMessage(deep)
	return d
}

// setupCounted is setup behind a proxy that counts bulk requests, with the index made.
func setupCounted(t *testing.T) (*testBundle, *testenv.CountingProxy) {
	t.Helper()
	proxy := testenv.NewCountingProxy(t, testenv.Elasticsearch(t).URL)
	b := setup(t, proxy.URL)
	_, err := b.index.Ensure(testenv.Context(t))
	require.NoError(t, err)
	return b, proxy
}

func ptr[T any](v T) *T { return &v }

func doc(id uuid.UUID, rev int64, name, email string) search.Document {
	return search.Document{
		IdentityID: id, SchemaID: "person", State: "active", Revision: rev,
		Name: ptr(name), Email: ptr(email), Traits: json.RawMessage(`{"email":"` + email + `"}`),
		Attributes: map[string]any{},
	}
}

func TestEnsure_CreatesTheFirstVersionBehindTheAliasOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)

	res, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	require.Equal(t, search.EnsureResult{Index: b.es.Alias + "-v1", Created: true, MappingVersion: search.MappingVersion}, res)

	res, err = b.index.Ensure(ctx)
	require.NoError(t, err)
	require.Equal(t, search.EnsureResult{Index: b.es.Alias + "-v1", Created: false, MappingVersion: search.MappingVersion}, res)
	require.NoError(t, b.index.Health(ctx))
}

func TestEnsure_ConcurrentRunsAgree(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = b.index.Ensure(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	versions, err := b.index.Versions(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{b.es.Alias + "-v1"}, versions)
}

func TestEnsure_RefusesAnIndexSquattingOnTheAliasName(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	// What a write to the alias name does when the alias is missing and require_alias is not set.
	req, _ := http.NewRequest(http.MethodPut, b.es.URL+"/"+b.es.Alias, nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	_, err = b.index.Ensure(testenv.Context(t))
	require.ErrorIs(t, err, search.ErrNameTaken)
	require.ErrorContains(t, err, "ELASTICSEARCH_INDEX")
}

func TestWriter_AnOlderRevisionNeverReplacesANewerOne(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	_, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	w := b.writer(t, search.WriterOpts{FlushInterval: 10 * time.Millisecond})
	id := uuid.New()

	out, err := w.Put(ctx, doc(id, 5, "Revision Five", "five@example.com"))
	require.NoError(t, err)
	require.Equal(t, search.Written, out)

	// A write that read the row at revision 3 and arrives late, and a replay of revision 5 itself.
	out, err = w.Put(ctx, doc(id, 3, "Revision Three", "three@example.com"))
	require.NoError(t, err)
	require.Equal(t, search.Stale, out)
	out, err = w.Put(ctx, doc(id, 5, "Revision Five again", "five@example.com"))
	require.NoError(t, err)
	require.Equal(t, search.Stale, out)

	got, err := testenv.GetDoc(b.es.URL, b.es.Alias, id.String())
	require.NoError(t, err)
	require.True(t, got.Found)
	require.EqualValues(t, 5, got.Version)
	require.Equal(t, "Revision Five", got.Source["name"])
	require.Equal(t, "five@example.com", got.Source["email"])
}

func TestWriter_DeletesAreVersionedAndAMissingDocumentIsNoError(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	_, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	w := b.writer(t, search.WriterOpts{FlushInterval: 10 * time.Millisecond})
	id := uuid.New()

	_, err = w.Put(ctx, doc(id, 1, "Gone Soon", "gone@example.com"))
	require.NoError(t, err)
	out, err := w.Delete(ctx, id, 2)
	require.NoError(t, err)
	require.Equal(t, search.Written, out)
	got, err := testenv.GetDoc(b.es.URL, b.es.Alias, id.String())
	require.NoError(t, err)
	require.False(t, got.Found)

	// Within index.gc_deletes the delete's version still refuses an older write.
	out, err = w.Put(ctx, doc(id, 1, "Gone Soon", "gone@example.com"))
	require.NoError(t, err)
	require.Equal(t, search.Stale, out)

	out, err = w.Delete(ctx, uuid.New(), 1)
	require.NoError(t, err)
	require.Equal(t, search.Absent, out)
}

func TestWriter_ManyCallersShareOneBulkRequest(t *testing.T) {
	t.Parallel()
	es := testenv.Elasticsearch(t)
	proxy := testenv.NewCountingProxy(t, es.URL)
	ix, err := search.New(search.Config{Addresses: []string{proxy.URL}, Alias: es.Alias})
	require.NoError(t, err)
	ctx := testenv.Context(t)
	_, err = ix.Ensure(ctx)
	require.NoError(t, err)
	w, err := ix.NewWriter(search.WriterOpts{FlushInterval: 200 * time.Millisecond})
	require.NoError(t, err)
	defer w.Close(ctx)

	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := w.Put(ctx, doc(uuid.New(), 1, fmt.Sprintf("Person %d", i), fmt.Sprintf("p%d@example.com", i)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// Every caller waited for its own acknowledgement, yet they travelled together.
	require.LessOrEqual(t, proxy.Bulks(), int64(3), "bulk requests for %d documents", n)
}

func TestWriter_EveryWaitingCallerFailsWhenTheClusterIsUnreachable(t *testing.T) {
	t.Parallel()
	// Nothing listens on a port that was free a moment ago: the request fails at once, as in an outage.
	addr := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	ix, err := search.New(search.Config{Addresses: []string{addr}, Alias: testenv.Name("kh_test"), RequestTimeout: 2 * time.Second})
	require.NoError(t, err)
	w, err := ix.NewWriter(search.WriterOpts{FlushInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	defer w.Close(context.Background())

	ctx, cancel := context.WithTimeout(testenv.Context(t), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() { _, errs[i] = w.Put(ctx, doc(uuid.New(), 1, "Nobody", "nobody@example.com")) })
	}
	wg.Wait()
	for _, err := range errs {
		require.Error(t, err)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "the failure must come from the request, not the caller's deadline")
	}
}

func TestWriter_AMissingAliasIsReportedNotCreated(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	w := b.writer(t, search.WriterOpts{FlushInterval: 10 * time.Millisecond})

	_, err := w.Put(ctx, doc(uuid.New(), 1, "Early Bird", "early@example.com"))
	require.ErrorIs(t, err, search.ErrNoAlias)
	// No index appeared under the alias's name, so Ensure can still make the alias.
	res, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	require.True(t, res.Created)
}

func TestMapping_UnknownTraitsDoNotGrowTheMapping(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	_, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	before := mappingFields(t, b)

	// 2,000 distinct keys would exceed index.mapping.total_fields.limit (1,000) if each became a field.
	traits := map[string]any{}
	for i := range 2000 {
		traits[fmt.Sprintf("custom_%d", i)] = map[string]any{"value": i, "label": fmt.Sprintf("label %d", i)}
	}
	raw, _ := json.Marshal(traits)
	d := doc(uuid.New(), 1, "Wide Traits", "wide@example.com")
	d.Traits = raw
	d.Attributes = map[string]any{"department": "R&D", "floor": 3}
	w := b.writer(t, search.WriterOpts{FlushInterval: 10 * time.Millisecond})
	out, err := w.Put(ctx, d)
	require.NoError(t, err)
	require.Equal(t, search.Written, out)
	require.Equal(t, before, mappingFields(t, b))

	// The traits are still searchable, as keywords.
	require.NoError(t, b.index.Refresh(ctx, ""))
	resp, err := http.Get(b.es.URL + "/" + b.es.Alias + "/_count?q=traits.custom_1234.label:%22label%201234%22")
	require.NoError(t, err)
	defer resp.Body.Close()
	var count struct{ Count int }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&count))
	require.Equal(t, 1, count.Count)
}

func mappingFields(t *testing.T, b *testBundle) []string {
	t.Helper()
	resp, err := http.Get(b.es.URL + "/" + b.es.Alias + "/_mapping")
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]struct {
		Mappings struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"mappings"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	var fields []string
	for _, idx := range m {
		for f := range idx.Mappings.Properties {
			fields = append(fields, f)
		}
	}
	slices.Sort(fields)
	return fields
}

func TestSearch_FindsByEmailNamePhoneAndId(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	_, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	w := b.writer(t, search.WriterOpts{FlushInterval: 10 * time.Millisecond})
	alice, bob := uuid.New(), uuid.New()
	a := doc(alice, 1, "Alice Liddell", "alice@wonderland.example")
	a.Phone = ptr("+441632960001")
	for _, d := range []search.Document{a, doc(bob, 1, "Bob Builder", "bob@example.com")} {
		_, err := w.Put(ctx, d)
		require.NoError(t, err)
	}
	require.NoError(t, b.index.Refresh(ctx, ""))

	for _, q := range []string{"alice@wonderland.example", "ALICE@Wonderland.example", "alice@", "Alice", "liddell", "alice lid", "+44 1632 960001", alice.String()} {
		res, err := b.index.Search(ctx, q, 10)
		require.NoError(t, err, q)
		require.NotEmpty(t, res.Hits, q)
		require.Equal(t, alice.String(), res.Hits[0].IdentityID, q)
		require.Equal(t, "alice@wonderland.example", *res.Hits[0].Email, q)
		require.Equal(t, "Alice Liddell", *res.Hits[0].Name, q)
		require.Positive(t, res.Hits[0].Score, q)
	}

	for _, q := range []string{"nobody@nowhere.example", "Zebediah", `"{[*?\`, "+1"} {
		res, err := b.index.Search(ctx, q, 10)
		require.NoError(t, err, q)
		require.Empty(t, res.Hits, q)
		require.Zero(t, res.Total, q)
	}
}

func TestVersions_ANewVersionTakesOverTheAliasAtomically(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	_, err := b.index.Ensure(ctx)
	require.NoError(t, err)

	next, err := b.index.CreateNextVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, b.es.Alias+"-v2", next)
	w := b.writer(t, search.WriterOpts{Index: next, FlushInterval: 10 * time.Millisecond})
	id := uuid.New()
	_, err = w.Put(ctx, doc(id, 7, "Only In V2", "v2@example.com"))
	require.NoError(t, err)
	require.NoError(t, b.index.FinishLoad(ctx, next))

	prev, err := b.index.SwapAlias(ctx, next)
	require.NoError(t, err)
	require.Equal(t, []string{b.es.Alias + "-v1"}, prev)
	got, err := testenv.GetDoc(b.es.URL, b.es.Alias, id.String())
	require.NoError(t, err)
	require.True(t, got.Found)
	require.EqualValues(t, 7, got.Version)

	versions, err := b.index.Versions(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{b.es.Alias + "-v1", b.es.Alias + "-v2"}, versions)
	require.NoError(t, b.index.DeleteIndex(ctx, prev[0]))
	res, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	require.Equal(t, next, res.Index)
}

func TestValidateAlias(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{
		"profiles": true, "kh-profiles.prod": true, "": false, "Profiles": false, "_profiles": false,
		"-x": false, "a b": false, "a*": false, "a,b": false, "..": false, "a:b": false,
	} {
		err := search.ValidateAlias(name)
		require.Equal(t, ok, err == nil, "%q: %v", name, err)
	}
}

func TestWriter_ADocumentTheMappingRefusesIsAPermanentItemError(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := testenv.Context(t)
	_, err := b.index.Ensure(ctx)
	require.NoError(t, err)
	w := b.writer(t, search.WriterOpts{FlushInterval: 10 * time.Millisecond})

	// Sharing a request with a good document.
	bad := tooDeep(uuid.New())
	good := doc(uuid.New(), 1, "Fine", "fine@example.com")
	var wg sync.WaitGroup
	var badErr, goodErr error
	wg.Go(func() { _, badErr = w.Put(ctx, bad) })
	wg.Go(func() { _, goodErr = w.Put(ctx, good) })
	wg.Wait()

	var itemErr *search.ItemError
	require.ErrorAs(t, badErr, &itemErr)
	require.True(t, itemErr.Permanent(), "%v", itemErr)
	require.NoError(t, goodErr, "one item's refusal fails only that item")
}

// A batch in hand goes out at once, in one request, with no FlushInterval to wait for; each item gets the
// answer Put or Delete would give it, and one refused item fails only itself.
func TestWriter_WriteManySendsABatchAtOnceAndAnswersEachItem(t *testing.T) {
	t.Parallel()
	b, proxy := setupCounted(t)
	ctx := testenv.Context(t)
	// An hour: WriteMany must not go through the interval-flushed requests Put shares.
	w := b.writer(t, search.WriterOpts{FlushInterval: time.Hour})

	newer, deleted, absent, fresh := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	for _, d := range []search.Document{doc(newer, 5, "Revision Five", "five@example.com"), doc(deleted, 1, "Gone Soon", "gone@example.com")} {
		outcomes, errs, err := w.WriteMany(ctx, []search.Write{{ID: d.IdentityID, Revision: d.Revision, Doc: &d}})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		require.Equal(t, search.Written, outcomes[0])
	}
	bad := tooDeep(uuid.New())
	stale := doc(newer, 3, "Revision Three", "three@example.com")
	good := doc(fresh, 2, "Fine", "fine@example.com")
	before := proxy.Bulks()
	start := time.Now()
	outcomes, errs, err := w.WriteMany(ctx, []search.Write{
		{ID: stale.IdentityID, Revision: stale.Revision, Doc: &stale},
		{ID: deleted, Revision: 2},
		{ID: absent, Revision: 1},
		{ID: bad.IdentityID, Revision: 1, Doc: &bad},
		{ID: fresh, Revision: 2, Doc: &good},
	})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.EqualValues(t, 1, proxy.Bulks()-before, "one bulk request for the batch")

	require.Equal(t, []search.Outcome{search.Stale, search.Written, search.Absent, 0, search.Written}, outcomes)
	for i, err := range errs {
		if i != 3 {
			require.NoError(t, err, "item %d", i)
		}
	}
	var itemErr *search.ItemError
	require.ErrorAs(t, errs[3], &itemErr)
	require.True(t, itemErr.Permanent(), "%v", itemErr)

	got, err := testenv.GetDoc(b.es.URL, b.es.Alias, newer.String())
	require.NoError(t, err)
	require.EqualValues(t, 5, got.Version)
	require.Equal(t, "Revision Five", got.Source["name"])
	got, err = testenv.GetDoc(b.es.URL, b.es.Alias, deleted.String())
	require.NoError(t, err)
	require.False(t, got.Found)
	got, err = testenv.GetDoc(b.es.URL, b.es.Alias, fresh.String())
	require.NoError(t, err)
	require.EqualValues(t, 2, got.Version)
}

// When the cluster cannot be reached, nothing is known about any item: the request fails as a whole.
func TestWriter_WriteManyFailsAsAWholeWhenTheClusterIsUnreachable(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	ix, err := search.New(search.Config{Addresses: []string{addr}, Alias: testenv.Name("kh_test"), RequestTimeout: 2 * time.Second})
	require.NoError(t, err)
	w, err := ix.NewWriter(search.WriterOpts{})
	require.NoError(t, err)
	defer w.Close(context.Background())
	d := doc(uuid.New(), 1, "Nobody", "nobody@example.com")
	outcomes, errs, err := w.WriteMany(testenv.Context(t), []search.Write{{ID: d.IdentityID, Revision: 1, Doc: &d}})
	require.Error(t, err)
	require.Nil(t, outcomes)
	require.Nil(t, errs)
}

// A batch larger than WriteManyBytes goes out in several requests, each within the bound, and every item
// is answered.
func TestWriter_WriteManySplitsABatchLargerThanItsBound(t *testing.T) {
	t.Parallel()
	b, proxy := setupCounted(t)
	ctx := testenv.Context(t)
	w := b.writer(t, search.WriterOpts{WriteManyBytes: 4 << 10})

	writes := make([]search.Write, 40)
	for i := range writes {
		d := doc(uuid.New(), 1, fmt.Sprintf("Person %d", i), fmt.Sprintf("p%d@example.com", i))
		writes[i] = search.Write{ID: d.IdentityID, Revision: 1, Doc: &d}
	}
	before := proxy.Bulks()
	outcomes, errs, err := w.WriteMany(ctx, writes)
	require.NoError(t, err)
	for i := range writes {
		require.NoError(t, errs[i])
		require.Equal(t, search.Written, outcomes[i], "item %d", i)
	}
	require.GreaterOrEqual(t, proxy.Bulks()-before, int64(3), "40 documents of some 400 bytes in requests of at most 4 KiB")
	versions, err := b.index.DocumentVersions(ctx, []uuid.UUID{writes[0].ID, writes[39].ID})
	require.NoError(t, err)
	require.Len(t, versions, 2)
}
