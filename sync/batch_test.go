package sync_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// The identity worker syncs the jobs River runs at the same time in batches. These tests insert all their
// jobs before River starts, so that they run together, and check each job's outcome on its own.

// batchOpts configures the worker of a batch test.
type batchOpts struct {
	// kratos is what the worker reads through; the test Kratos's client when nil.
	kratos  *kratos.Client
	mapping string
	batches int
}

func (b *testBundle) useBatchWorker(t testing.TB, opts batchOpts) {
	t.Helper()
	src := string(jsonnet.DefaultProfileMapping)
	if opts.mapping != "" {
		src = opts.mapping
	}
	mapper, err := jsonnet.NewMapper("mapping.jsonnet", []byte(src))
	require.NoError(t, err)
	if opts.kratos == nil {
		opts.kratos = b.kratos.Admin
	}
	b.worker = profilesync.NewIdentityWorker(profilesync.IdentityWorkerOpts{
		Pool: b.db.Pool, Kratos: opts.kratos, Mapper: mapper, Logger: slog.New(slog.DiscardHandler), Batches: opts.batches,
	})
}

// createIdentities creates n identities with e-mail addresses prefix<i>@example.com in one batch call.
func (b *testBundle) createIdentities(t testing.TB, prefix string, n int) []uuid.UUID {
	t.Helper()
	bodies := make([]kratos.CreateIdentityBody, n)
	for i := range bodies {
		traits, _ := json.Marshal(testenv.Traits(fmt.Sprintf("%s%d@example.com", prefix, i), "Batch", fmt.Sprint(i)))
		bodies[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: traits}
	}
	ids, err := b.kratos.Admin.BatchCreateIdentities(context.Background(), bodies)
	require.NoError(t, err)
	return ids
}

// insertJobs inserts the jobs (before the workers start, so that they run together) and returns their ids.
func (b *testBundle) insertJobs(t testing.TB, args []profilesync.IdentityArgs) []int64 {
	t.Helper()
	params := make([]river.InsertManyParams, len(args))
	for i, a := range args {
		params[i] = river.InsertManyParams{Args: a}
	}
	inserter, err := river.NewClient(riverpgxv5.New(b.db.Pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	res, err := inserter.InsertMany(context.Background(), params)
	require.NoError(t, err)
	ids := make([]int64, len(res))
	for i, r := range res {
		ids[i] = r.Job.ID
	}
	return ids
}

// loginEvent records a login event for id, as the hook does, and returns its key.
func (b *testBundle) loginEvent(t testing.TB, id uuid.UUID) *profilesync.EventKey {
	t.Helper()
	key := &profilesync.EventKey{Hook: profilesync.HookLoginAfter, FlowID: uuid.New()}
	sum := sha256.Sum256(key.FlowID[:])
	key.BodySHA256 = sum[:]
	_, err := b.db.Pool.Exec(context.Background(), `INSERT INTO hook_events (hook, flow_id, body_sha256, identity_id) VALUES ($1, $2, $3, $4)`,
		string(key.Hook), key.FlowID, key.BodySHA256, id)
	require.NoError(t, err)
	return key
}

func waitJobs(t *testing.T, client *river.Client[pgx.Tx], ids []int64, state rivertype.JobState) []*rivertype.JobRow {
	t.Helper()
	rows := make([]*rivertype.JobRow, len(ids))
	for i, id := range ids {
		rows[i] = waitJob(t, client, id, state)
	}
	return rows
}

func TestIdentityWorker_JobsRunningTogetherShareKratosRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	proxy := testenv.NewCountingProxy(t, b.kratos.AdminURL)
	viaProxy, err := kratos.NewClient(proxy.URL, nil)
	require.NoError(t, err)
	b.useBatchWorker(t, batchOpts{kratos: viaProxy, batches: 1})
	const n = 150
	ids := b.createIdentities(t, testenv.Name("share"), n)
	args := make([]profilesync.IdentityArgs, n)
	for i, id := range ids {
		args[i] = profilesync.IdentityArgs{IdentityID: id}
	}
	jobs := b.insertJobs(t, args)

	client := b.startWorkersN(t, n)
	waitJobs(t, client, jobs, rivertype.JobStateCompleted)
	for _, id := range ids {
		p, err := profilesync.GetProfile(context.Background(), b.db.Pool, id)
		require.NoError(t, err)
		ident, err := b.kratos.Admin.GetIdentity(context.Background(), id)
		require.NoError(t, err)
		var traits struct{ Email string }
		require.NoError(t, json.Unmarshal(ident.Traits, &traits))
		require.Equal(t, traits.Email, *p.Email)
	}
	// One request per job would be 150; batches of up to 100 make a handful.
	require.LessOrEqual(t, proxy.Requests(), int64(10), "Kratos requests for %d jobs", n)
}

func TestIdentityWorker_EachJobOfABatchGetsItsOwnOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.useBatchWorker(t, batchOpts{batches: 1, mapping: `function(identity)
  if identity.traits.email == 'refused@example.com' then error 'this mapping refuses ' + identity.traits.email
  else { email: identity.traits.email }`})
	ctx := context.Background()
	kept := b.createIdentity(t, testenv.Email("kept"), "Kept")
	twice := b.createIdentity(t, testenv.Email("twice"), "Twice")
	refused := b.createIdentity(t, "refused@example.com", "Refused")
	deleted := b.createIdentity(t, testenv.Email("deleted"), "Deleted")
	require.NoError(t, b.kratos.Admin.DeleteIdentity(ctx, deleted.ID))

	jobs := b.insertJobs(t, []profilesync.IdentityArgs{
		{IdentityID: kept.ID},
		{IdentityID: twice.ID, Event: b.loginEvent(t, twice.ID)},
		{IdentityID: refused.ID},
		{IdentityID: deleted.ID},
		{IdentityID: twice.ID, Event: b.loginEvent(t, twice.ID)},
	})
	client := b.startWorkersN(t, 10)
	waitJobs(t, client, []int64{jobs[0], jobs[1], jobs[3], jobs[4]}, rivertype.JobStateCompleted)
	job := waitJob(t, client, jobs[2], rivertype.JobStateCancelled)
	require.Contains(t, job.Errors[0].Error, "this mapping refuses refused@example.com")

	p, err := profilesync.GetProfile(ctx, b.db.Pool, kept.ID)
	require.NoError(t, err)
	require.Equal(t, kept.ID, p.IdentityID)
	p, err = profilesync.GetProfile(ctx, b.db.Pool, twice.ID)
	require.NoError(t, err)
	require.EqualValues(t, 2, p.LoginCount, "each login event counts, whichever batch it was in")
	_, err = profilesync.GetProfile(ctx, b.db.Pool, refused.ID)
	require.ErrorIs(t, err, pgx.ErrNoRows)
	p, err = profilesync.GetProfile(ctx, b.db.Pool, deleted.ID)
	require.NoError(t, err)
	require.NotNil(t, p.DeletedAt, "an identity missing from Kratos's answer is a tombstone")
}

// A job whose write fails (here a trigger refuses one identity's row) fails alone: the batch it was in is
// tried again job by job, and the others complete.
func TestIdentityWorker_AJobThatCannotBeWrittenFailsAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.useBatchWorker(t, batchOpts{batches: 1})
	ids := b.createIdentities(t, testenv.Name("alone"), 20)
	bad := ids[7]
	_, err := b.db.Pool.Exec(context.Background(), fmt.Sprintf(`
CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.identity_id = '%s' THEN RAISE EXCEPTION 'row refused by the test'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_one BEFORE INSERT OR UPDATE ON profiles FOR EACH ROW EXECUTE FUNCTION refuse_one();`, bad))
	require.NoError(t, err)
	args := make([]profilesync.IdentityArgs, len(ids))
	for i, id := range ids {
		args[i] = profilesync.IdentityArgs{IdentityID: id}
	}
	jobs := b.insertJobs(t, args)

	client := b.startWorkersN(t, len(ids))
	var others []int64
	for i, id := range ids {
		if id != bad {
			others = append(others, jobs[i])
		}
	}
	for _, job := range waitJobs(t, client, others, rivertype.JobStateCompleted) {
		require.Empty(t, job.Errors, "job %d failed with the one that cannot be written", job.ID)
	}
	testenv.Poll(t, 20*time.Second, func() error {
		job, err := client.JobGet(context.Background(), jobs[7])
		if err != nil {
			return err
		}
		if job.State == rivertype.JobStateCompleted || len(job.Errors) == 0 {
			return fmt.Errorf("the refused job is %s with %d errors", job.State, len(job.Errors))
		}
		require.Contains(t, job.Errors[0].Error, "row refused by the test")
		return nil
	})
	_, err = profilesync.GetProfile(context.Background(), b.db.Pool, bad)
	require.ErrorIs(t, err, pgx.ErrNoRows)
}

// Batches that share identities take their locks in one order, so they wait for each other and never
// deadlock (a deadlock would fail an attempt, and show in the job's errors).
func TestIdentityWorker_BatchesSharingIdentitiesNeverDeadlock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.useBatchWorker(t, batchOpts{batches: 4})
	ids := b.createIdentities(t, testenv.Name("shared"), 20)
	var args []profilesync.IdentityArgs
	for round := range 15 {
		for i := range ids {
			// Each round in another order, so that batches hold the identities in different orders.
			args = append(args, profilesync.IdentityArgs{IdentityID: ids[(i*7+round)%len(ids)]})
		}
	}
	jobs := b.insertJobs(t, args)
	client := b.startWorkersN(t, len(args))
	for _, job := range waitJobs(t, client, jobs, rivertype.JobStateCompleted) {
		require.Empty(t, job.Errors, "job %d", job.ID)
	}
}
