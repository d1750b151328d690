package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// indexBundle is a database, an index alias of the test's own on the shared cluster, and a running River
// client with the index worker (and the identity worker, when a Kratos is given).
type indexBundle struct {
	db     *testenv.DB
	es     testenv.ElasticsearchIndex
	index  *search.Index
	writer *search.Writer
	jobs   *river.Client[pgx.Tx]
}

type indexOpts struct {
	kratos *testenv.Kratos
}

func setupIndex(t *testing.T, opts indexOpts) *indexBundle {
	t.Helper()
	ctx := testenv.Context(t)
	b := &indexBundle{db: testenv.NewDB(t), es: testenv.Elasticsearch(t)}
	var err error
	b.index, err = search.New(search.Config{Addresses: []string{b.es.URL}, Alias: b.es.Alias, RequestTimeout: 10 * time.Second})
	require.NoError(t, err)
	_, err = b.index.Ensure(ctx)
	require.NoError(t, err)
	b.writer, err = b.index.NewWriter(search.WriterOpts{FlushInterval: 20 * time.Millisecond})
	require.NoError(t, err)

	logger := slog.New(slog.DiscardHandler)
	workers := river.NewWorkers()
	indexWorker := profilesync.NewIndexWorker(profilesync.IndexWorkerOpts{
		Pool: b.db.Pool, Index: b.index, Writer: b.writer, Logger: logger, Timeout: 10 * time.Second,
	})
	river.AddWorker(workers, indexWorker)
	river.AddWorker(workers, profilesync.NewIndexBatchWorker(indexWorker))
	queues := map[string]river.QueueConfig{
		profilesync.QueueIndex:      {MaxWorkers: 50},
		profilesync.QueueIndexBatch: {MaxWorkers: profilesync.IndexBatchWorkers},
	}
	if opts.kratos != nil {
		mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
		require.NoError(t, err)
		river.AddWorker(workers, profilesync.NewIdentityWorker(profilesync.IdentityWorkerOpts{
			Pool: b.db.Pool, Kratos: opts.kratos.Admin, Mapper: mapper, Logger: logger, IndexProfiles: true,
		}))
		queues[profilesync.QueueIdentity] = river.QueueConfig{MaxWorkers: 4}
	}
	b.jobs, err = river.NewClient(riverpgxv5.New(b.db.Pool), &river.Config{
		Logger:            logger,
		Workers:           workers,
		Queues:            queues,
		RetryPolicy:       profilesync.RetryPolicy{Base: 100 * time.Millisecond, Max: time.Second},
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
		TestOnly:          true,
	})
	require.NoError(t, err)
	require.NoError(t, b.jobs.Start(ctx))
	// Stop River before the writer its jobs wait on, as serve does.
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.jobs.Stop(stopCtx)
		_ = b.writer.Close(stopCtx)
		_ = b.index.Close(stopCtx)
	})
	return b
}

// enqueue inserts an index job for id, the way the identity worker (or reconcile) does.
func (b *indexBundle) enqueue(t *testing.T, id uuid.UUID) int64 {
	t.Helper()
	res, err := b.jobs.Insert(testenv.Context(t), profilesync.IndexArgs{IdentityID: id}, nil)
	require.NoError(t, err)
	return res.Job.ID
}

// waitCompleted waits until the job is completed, failing on any other final state.
func (b *indexBundle) waitCompleted(t *testing.T, jobID int64) {
	t.Helper()
	testenv.Poll(t, 20*time.Second, func() error {
		var state string
		var errs []byte
		if err := b.db.Pool.QueryRow(context.Background(), `SELECT state, errors::text FROM river_job WHERE id = $1`, jobID).Scan(&state, &errs); err != nil {
			return err
		}
		switch state {
		case "completed":
			return nil
		case "cancelled", "discarded":
			t.Fatalf("job %d ended %s: %s", jobID, state, errs)
		}
		return fmt.Errorf("job %d is %s (errors %s)", jobID, state, errs)
	})
}

func (b *indexBundle) doc(t *testing.T, id uuid.UUID) testenv.ESDoc {
	t.Helper()
	d, err := testenv.GetDoc(b.es.URL, b.es.Alias, id.String())
	require.NoError(t, err)
	return d
}

func profile(id uuid.UUID, name string) profilesync.Profile {
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	email := "someone@example.com"
	return profilesync.Profile{
		IdentityID: id, SchemaID: "person", State: "active", Traits: json.RawMessage(`{"email":"someone@example.com","name":"` + name + `"}`),
		VerifiableAddresses: []kratos.VerifiableAddress{}, RecoveryAddresses: []kratos.RecoveryAddress{},
		Email: &email, EmailVerified: true, Name: &name, Attributes: map[string]any{"department": "sales"}, CreatedAt: &created,
	}
}

func TestIndexWorker_AnOlderRevisionNeverReplacesANewerOne(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	id := uuid.New()

	// Five changes to one profile; keep what the row looked like at revision 3.
	var atThree profilesync.Profile
	for rev := 1; rev <= 5; rev++ {
		w, err := profilesync.UpsertProfile(ctx, b.db.Pool, profile(id, fmt.Sprintf("Revision %d", rev)))
		require.NoError(t, err)
		require.EqualValues(t, rev, w.Revision)
		if rev == 3 {
			atThree, err = profilesync.GetProfile(ctx, b.db.Pool, id)
			require.NoError(t, err)
		}
	}
	b.waitCompleted(t, b.enqueue(t, id))
	d := b.doc(t, id)
	require.EqualValues(t, 5, d.Version)
	require.Equal(t, "Revision 5", d.Source["name"])

	// Revision 3 arrives late, as from a job that read the row before the last two changes.
	out, err := b.writer.Put(ctx, profilesync.DocumentFromProfile(atThree))
	require.NoError(t, err)
	require.Equal(t, search.Stale, out)
	// And a replayed job writes the current row, which the index already holds.
	b.waitCompleted(t, b.enqueue(t, id))

	d = b.doc(t, id)
	require.EqualValues(t, 5, d.Version)
	require.Equal(t, "Revision 5", d.Source["name"])
}

func TestIndexWorker_DocumentCarriesTheProfile(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	id := uuid.New()
	_, err := profilesync.UpsertProfile(ctx, b.db.Pool, profile(id, "Carla Carrier"))
	require.NoError(t, err)
	login := time.Date(2024, 6, 1, 8, 30, 0, 0, time.UTC)
	_, err = profilesync.RecordLogin(ctx, b.db.Pool, id, login)
	require.NoError(t, err)

	b.waitCompleted(t, b.enqueue(t, id))
	d := b.doc(t, id)
	require.True(t, d.Found)
	require.EqualValues(t, 2, d.Version)
	require.Equal(t, map[string]any{
		"identity_id": id.String(), "schema_id": "person", "state": "active",
		"email": "someone@example.com", "email_verified": true, "phone": nil, "phone_verified": false,
		"name": "Carla Carrier", "locale": nil, "attributes": map[string]any{"department": "sales"},
		"traits":     map[string]any{"email": "someone@example.com", "name": "Carla Carrier"},
		"created_at": "2024-05-01T12:00:00Z", "last_login_at": "2024-06-01T08:30:00Z", "login_count": float64(1),
		"revision": float64(2),
	}, d.Source)
}

func TestIndexWorker_ATombstoneDeletesTheDocumentAndAnOldJobCannotBringItBack(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	id := uuid.New()
	_, err := profilesync.UpsertProfile(ctx, b.db.Pool, profile(id, "Dora Deleted"))
	require.NoError(t, err)
	b.waitCompleted(t, b.enqueue(t, id))
	require.True(t, b.doc(t, id).Found)

	_, err = profilesync.TombstoneProfile(ctx, b.db.Pool, id)
	require.NoError(t, err)
	b.waitCompleted(t, b.enqueue(t, id))
	require.False(t, b.doc(t, id).Found)

	// The job the first write enqueued, run again: it reads the tombstone and deletes again (a no-op).
	b.waitCompleted(t, b.enqueue(t, id))
	require.False(t, b.doc(t, id).Found)

	// An id with no row at all: nothing to write, and the job completes.
	b.waitCompleted(t, b.enqueue(t, uuid.New()))
}

func TestIndexWorker_RecreatesAMissingIndexAndRetries(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	// Someone deleted the index (and with it the alias) by hand.
	require.NoError(t, b.index.DeleteIndex(ctx, b.es.Alias+"-v1"))
	id := uuid.New()
	_, err := profilesync.UpsertProfile(ctx, b.db.Pool, profile(id, "Ernie Early"))
	require.NoError(t, err)

	b.waitCompleted(t, b.enqueue(t, id))
	require.True(t, b.doc(t, id).Found)
	versions, err := b.index.Versions(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{b.es.Alias + "-v1"}, versions)
}

func TestIdentitySync_IndexesEveryChangeOnceAndDeletesWhatKratosDeleted(t *testing.T) {
	t.Parallel()
	k := testenv.StartKratos(t, testenv.KratosOpts{})
	b := setupIndex(t, indexOpts{kratos: k})
	ctx := testenv.Context(t)

	ident, err := k.Admin.CreateIdentity(ctx, kratos.CreateIdentityBody{
		SchemaID: "person", Traits: json.RawMessage(`{"email":"Fiona@Example.com","name":{"first":"Fiona","last":"Fable"}}`),
	})
	require.NoError(t, err)
	sync := func() {
		res, err := b.jobs.Insert(ctx, profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
		require.NoError(t, err)
		b.waitCompleted(t, res.Job.ID)
	}
	indexJobs := func() (n int) {
		require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'index_profile' AND args->>'identity_id' = $1`, ident.ID.String()).Scan(&n))
		return n
	}
	waitDoc := func(check func(d testenv.ESDoc) error) {
		testenv.Poll(t, 20*time.Second, func() error { return check(b.doc(t, ident.ID)) })
	}

	sync()
	waitDoc(func(d testenv.ESDoc) error {
		if !d.Found || d.Version != 1 {
			return fmt.Errorf("document %+v", d)
		}
		return nil
	})
	d := b.doc(t, ident.ID)
	require.Equal(t, "fiona@example.com", d.Source["email"])
	require.Equal(t, "Fiona Fable", d.Source["name"])
	require.Equal(t, "person", d.Source["schema_id"])

	// Nothing changed in Kratos: no profile write, so no index job.
	sync()
	require.Equal(t, 1, indexJobs())

	_, err = k.Admin.UpdateIdentity(ctx, ident.ID, kratos.UpdateIdentityBody{
		SchemaID: "person", State: "active", Traits: json.RawMessage(`{"email":"fiona@example.com","name":{"first":"Fiona","last":"Fairweather"}}`),
	})
	require.NoError(t, err)
	sync()
	waitDoc(func(d testenv.ESDoc) error {
		if d.Source["name"] != "Fiona Fairweather" {
			return fmt.Errorf("name is %v", d.Source["name"])
		}
		return nil
	})
	require.Equal(t, 2, indexJobs())

	require.NoError(t, k.Admin.DeleteIdentity(ctx, ident.ID))
	sync()
	waitDoc(func(d testenv.ESDoc) error {
		if d.Found {
			return fmt.Errorf("document still there at version %d", d.Version)
		}
		return nil
	})
	require.Equal(t, 3, indexJobs())
}

// refusedAndFineProfiles stores two profiles: bad, whose traits nest deeper than a flattened field takes
// (depth_limit 20), so that Elasticsearch refuses its document, and good.
func (b *indexBundle) refusedAndFineProfiles(t *testing.T) (bad, good uuid.UUID) {
	t.Helper()
	deep := `"leaf"`
	for range 25 {
		deep = `{"x":` + deep + `}`
	}
	bad, good = uuid.New(), uuid.New()
	p := profile(bad, "Too Deep")
	p.Traits = json.RawMessage(deep)
	_, err := profilesync.UpsertProfile(testenv.Context(t), b.db.Pool, p)
	require.NoError(t, err)
	_, err = profilesync.UpsertProfile(testenv.Context(t), b.db.Pool, profile(good, "Fine"))
	require.NoError(t, err)
	return bad, good
}

func TestIndexWorker_ADocumentTheMappingRefusesFailsOnlyItsOwnJob(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	bad, good := b.refusedAndFineProfiles(t)

	badJob, goodJob := b.enqueue(t, bad), b.enqueue(t, good)
	b.waitCompleted(t, goodJob)
	require.True(t, b.doc(t, good).Found)
	// Sending it again gives the same answer: the job is cancelled at once, its error on record.
	testenv.Poll(t, 20*time.Second, func() error {
		var state string
		if err := b.db.Pool.QueryRow(ctx, `SELECT state FROM river_job WHERE id = $1`, badJob).Scan(&state); err != nil {
			return err
		}
		if state != "cancelled" {
			return fmt.Errorf("job is %s", state)
		}
		return nil
	})
	var errs string
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT errors::text FROM river_job WHERE id = $1`, badJob).Scan(&errs))
	require.Contains(t, errs, "elasticsearch refused the item: 400")
}
