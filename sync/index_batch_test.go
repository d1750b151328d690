package sync_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// people makes n profiles, "Person 0" to "Person n-1", at revision 1, and returns their ids in that order.
func (b *indexBundle) people(t *testing.T, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
		_, err := profilesync.UpsertProfile(testenv.Context(t), b.db.Pool, profile(ids[i], fmt.Sprint("Person ", i)))
		require.NoError(t, err)
	}
	return ids
}

// An index batch writes each profile's document as an index job does: a live profile at its revision, a
// tombstone's document deleted, nothing for an id without a row.
func TestIndexBatchWorker_WritesEachProfileAsTheIndexWorkerDoes(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	live := b.people(t, 30)
	// One profile changed twice more (revision 3), one deleted after its document was written.
	changed, deleted := live[0], live[1]
	for _, name := range []string{"Changed Once", "Changed Twice"} {
		_, err := profilesync.UpsertProfile(ctx, b.db.Pool, profile(changed, name))
		require.NoError(t, err)
	}
	b.waitCompleted(t, b.enqueue(t, deleted))
	require.True(t, b.doc(t, deleted).Found)
	_, err := profilesync.TombstoneProfile(ctx, b.db.Pool, deleted)
	require.NoError(t, err)

	res, err := b.jobs.Insert(ctx, profilesync.IndexBatchArgs{IdentityIDs: append(live, uuid.New())}, nil)
	require.NoError(t, err)
	b.waitCompleted(t, res.Job.ID)

	require.False(t, b.doc(t, deleted).Found)
	d := b.doc(t, changed)
	require.EqualValues(t, 3, d.Version)
	require.Equal(t, "Changed Twice", d.Source["name"])
	for i, id := range live[2:] {
		d := b.doc(t, id)
		require.True(t, d.Found, id)
		require.EqualValues(t, 1, d.Version)
		require.Equal(t, fmt.Sprint("Person ", i+2), d.Source["name"])
	}
	// Run again, the batch changes nothing: every document is at its row's revision already.
	res, err = b.jobs.Insert(ctx, profilesync.IndexBatchArgs{IdentityIDs: live}, nil)
	require.NoError(t, err)
	b.waitCompleted(t, res.Job.ID)
	require.EqualValues(t, 3, b.doc(t, changed).Version)
	var handedOn int
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'index_profile' AND args->>'identity_id' <> $1`, deleted).Scan(&handedOn))
	require.Zero(t, handedOn, "no profile was handed on to a job of its own")
}

// A document the index refuses does not hold back the batch: it is handed on to an index job of its own,
// with the batch's metadata, which ends cancelled with the refusal on record, as any index job of it would.
func TestIndexBatchWorker_ADocumentTheIndexRefusesIsHandedOnAlone(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	bad, good := b.refusedAndFineProfiles(t)

	res, err := b.jobs.Insert(ctx, profilesync.IndexBatchArgs{IdentityIDs: []uuid.UUID{bad, good}}, &river.InsertOpts{
		Priority: 3, Tags: []string{"reconcile"}, Metadata: []byte(`{"reconcile_pass":"p1"}`),
	})
	require.NoError(t, err)
	b.waitCompleted(t, res.Job.ID)
	require.True(t, b.doc(t, good).Found)

	var state, errs, tags string
	var priority int
	testenv.Poll(t, 20*time.Second, func() error {
		err := b.db.Pool.QueryRow(ctx, `
SELECT state, errors::text, priority, array_to_string(tags, ',') FROM river_job
WHERE kind = 'index_profile' AND args->>'identity_id' = $1 AND metadata @> '{"reconcile_pass":"p1"}'`, bad.String()).Scan(&state, &errs, &priority, &tags)
		if err != nil {
			return err
		}
		if state != "cancelled" {
			return fmt.Errorf("job of the refused document is %s", state)
		}
		return nil
	})
	require.Contains(t, errs, "elasticsearch refused the item: 400")
	require.Equal(t, 3, priority)
	require.Equal(t, "reconcile", tags)
	require.False(t, b.doc(t, bad).Found)
}

// Documents someone deleted by hand, with Elasticsearch's internal versioning (which puts the delete's
// version past the profile's revision), come back with the next batch: each is written at a revision raised
// past the delete. The documents that were fine are left as they are, and nothing is handed on.
func TestIndexBatchWorker_DocumentsDeletedByHandComeBack(t *testing.T) {
	t.Parallel()
	b := setupIndex(t, indexOpts{})
	ctx := testenv.Context(t)
	ids := b.people(t, 6)
	res, err := b.jobs.Insert(ctx, profilesync.IndexBatchArgs{IdentityIDs: ids}, nil)
	require.NoError(t, err)
	b.waitCompleted(t, res.Job.ID)

	deletedByHand := ids[:3]
	for _, id := range deletedByHand {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, b.es.URL+"/"+b.es.Alias+"/_doc/"+id.String(), nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.False(t, b.doc(t, id).Found)
	}

	res, err = b.jobs.Insert(ctx, profilesync.IndexBatchArgs{IdentityIDs: ids}, nil)
	require.NoError(t, err)
	b.waitCompleted(t, res.Job.ID)
	for _, id := range deletedByHand {
		d := b.doc(t, id)
		require.True(t, d.Found, id)
		require.Greater(t, d.Version, int64(2), "past the delete's version")
		p, err := profilesync.GetProfile(ctx, b.db.Pool, id)
		require.NoError(t, err)
		require.Equal(t, d.Version, p.Revision, "the row's revision was raised with it")
	}
	for _, id := range ids[3:] {
		require.EqualValues(t, 1, b.doc(t, id).Version)
	}
	var handedOn int
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'index_profile'`).Scan(&handedOn))
	require.Zero(t, handedOn)
}
