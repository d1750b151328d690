package sync_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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

type testBundle struct {
	db     *testenv.DB
	kratos *testenv.Kratos
	worker *profilesync.IdentityWorker
}

func setup(t *testing.T) *testBundle { return setupB(t) }

func setupB(t testing.TB) *testBundle {
	t.Helper()
	b := &testBundle{db: testenv.NewDB(t), kratos: testenv.StartKratos(t, testenv.KratosOpts{})}
	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	b.worker = profilesync.NewIdentityWorker(profilesync.IdentityWorkerOpts{
		Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: mapper, Logger: slog.New(slog.DiscardHandler),
	})
	return b
}

// startWorkers runs the identity worker in a River client until the test ends. Retries come back within
// a fraction of a second, so an outage test takes seconds.
func (b *testBundle) startWorkers(t *testing.T) *river.Client[pgx.Tx] { return b.startWorkersN(t, 4) }

func (b *testBundle) startWorkersN(t testing.TB, n int) *river.Client[pgx.Tx] {
	t.Helper()
	workers := river.NewWorkers()
	river.AddWorker(workers, b.worker)
	client, err := river.NewClient(riverpgxv5.New(b.db.Pool), &river.Config{
		Logger:            slog.New(slog.DiscardHandler),
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{profilesync.QueueIdentity: {MaxWorkers: n}},
		RetryPolicy:       profilesync.RetryPolicy{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
		TestOnly:          true,
	})
	require.NoError(t, err)
	require.NoError(t, client.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.StopAndCancel(ctx)
	})
	return client
}

func (b *testBundle) createIdentity(t *testing.T, email, first string) *kratos.Identity {
	t.Helper()
	traits, _ := json.Marshal(testenv.Traits(email, first, "Tester"))
	ident, err := b.kratos.Admin.CreateIdentity(context.Background(), kratos.CreateIdentityBody{SchemaID: "person", Traits: traits})
	require.NoError(t, err)
	return ident
}

func (b *testBundle) rename(t *testing.T, ident *kratos.Identity, first string) {
	t.Helper()
	var traits map[string]any
	require.NoError(t, json.Unmarshal(ident.Traits, &traits))
	traits["name"] = map[string]any{"first": first, "last": "Tester"}
	raw, _ := json.Marshal(traits)
	_, err := b.kratos.Admin.UpdateIdentity(context.Background(), ident.ID, kratos.UpdateIdentityBody{SchemaID: ident.SchemaID, Traits: raw, State: "active"})
	require.NoError(t, err)
}

func waitJob(t *testing.T, client *river.Client[pgx.Tx], id int64, state rivertype.JobState) *rivertype.JobRow {
	t.Helper()
	var job *rivertype.JobRow
	testenv.Poll(t, 20*time.Second, func() (err error) {
		if job, err = client.JobGet(context.Background(), id); err != nil {
			return err
		}
		if job.State != state {
			return fmt.Errorf("job %d is %s (errors: %v), want %s", id, job.State, job.Errors, state)
		}
		return nil
	})
	return job
}

func TestIdentityWorker_WritesTheProfileKratosHas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	client := b.startWorkers(t)
	email := testenv.Email("ann")
	ident := b.createIdentity(t, email, "Ann")

	res, err := client.Insert(context.Background(), profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)
	waitJob(t, client, res.Job.ID, rivertype.JobStateCompleted)

	p, err := profilesync.GetProfile(context.Background(), b.db.Pool, ident.ID)
	require.NoError(t, err)
	require.Equal(t, email, *p.Email)
	require.Equal(t, "Ann Tester", *p.Name)
	require.Equal(t, "person", p.SchemaID)
	require.EqualValues(t, 1, p.Revision)

	// The same content again changes nothing, not even the revision.
	res, err = client.Insert(context.Background(), profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)
	waitJob(t, client, res.Job.ID, rivertype.JobStateCompleted)
	p, err = profilesync.GetProfile(context.Background(), b.db.Pool, ident.ID)
	require.NoError(t, err)
	require.EqualValues(t, 1, p.Revision)
}

func TestIdentityWorker_DeletedIdentityBecomesATombstoneThatStaysDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	client := b.startWorkers(t)
	ident := b.createIdentity(t, testenv.Email("gone"), "Gone")
	ctx := context.Background()

	res, err := client.Insert(ctx, profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)
	waitJob(t, client, res.Job.ID, rivertype.JobStateCompleted)

	require.NoError(t, b.kratos.Admin.DeleteIdentity(ctx, ident.ID))
	res, err = client.Insert(ctx, profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)
	waitJob(t, client, res.Job.ID, rivertype.JobStateCompleted)

	p, err := profilesync.GetProfile(ctx, b.db.Pool, ident.ID)
	require.NoError(t, err)
	require.NotNil(t, p.DeletedAt)
	require.EqualValues(t, 2, p.Revision)
	require.Nil(t, p.Email, "personal data is cleared")
	require.Nil(t, p.Name)
	require.JSONEq(t, `{}`, string(p.Traits))
	require.Empty(t, p.VerifiableAddresses)

	// An old event for the identity (a late or duplicated delivery) cannot bring it back.
	res, err = client.Insert(ctx, profilesync.IdentityArgs{IdentityID: ident.ID, Event: &profilesync.EventKey{
		Hook: profilesync.HookSettingsAfter, FlowID: uuid.New(), BodySHA256: make([]byte, 32)}}, nil)
	require.NoError(t, err)
	waitJob(t, client, res.Job.ID, rivertype.JobStateCompleted)
	p, err = profilesync.GetProfile(ctx, b.db.Pool, ident.ID)
	require.NoError(t, err)
	require.NotNil(t, p.DeletedAt)
	require.EqualValues(t, 2, p.Revision)
}

func TestIdentityWorker_SurvivesKratosAdminBeingDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	client := b.startWorkers(t)
	ident := b.createIdentity(t, testenv.Email("outage"), "Olga")
	ctx := context.Background()

	b.kratos.Stop()
	res, err := client.Insert(ctx, profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)

	// The job fails and is retried while Kratos is down; nothing is written.
	testenv.Poll(t, 20*time.Second, func() error {
		job, err := client.JobGet(ctx, res.Job.ID)
		if err != nil {
			return err
		}
		if len(job.Errors) < 2 {
			return fmt.Errorf("%d failed attempts so far", len(job.Errors))
		}
		return nil
	})
	_, err = profilesync.GetProfile(ctx, b.db.Pool, ident.ID)
	require.ErrorIs(t, err, pgx.ErrNoRows)

	b.kratos.Start(t)
	job := waitJob(t, client, res.Job.ID, rivertype.JobStateCompleted)
	require.GreaterOrEqual(t, job.Attempt, 3)
	p, err := profilesync.GetProfile(ctx, b.db.Pool, ident.ID)
	require.NoError(t, err)
	require.Equal(t, "Olga Tester", *p.Name)
}

func TestIdentityWorker_BrokenMappingFailsThatJobForGood(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mapper, err := jsonnet.NewMapper("broken.jsonnet", []byte(`function(identity) { email: identity.traits.no_such_field }`))
	require.NoError(t, err)
	worker := profilesync.NewIdentityWorker(profilesync.IdentityWorkerOpts{
		Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: mapper, Logger: slog.New(slog.DiscardHandler),
	})
	b.worker = worker
	client := b.startWorkers(t)
	ident := b.createIdentity(t, testenv.Email("broken"), "Bea")

	res, err := client.Insert(context.Background(), profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)
	job := waitJob(t, client, res.Job.ID, rivertype.JobStateCancelled)
	require.Len(t, job.Errors, 1)
	require.Contains(t, job.Errors[0].Error, "broken.jsonnet")
	require.Contains(t, job.Errors[0].Error, "no_such_field")
}

// raceOutcome runs two sync jobs for one identity: A reads Kratos and pauses; the identity changes in
// Kratos; B starts; then A is released. It returns the name the profile ends with.
func raceOutcome(t *testing.T, serialised bool) string {
	b := setup(t)
	b.worker.SetUnserialized(!serialised)
	ident := b.createIdentity(t, testenv.Email("race"), "Old")

	aRead, releaseA := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	b.worker.SetAfterRead(func(ctx context.Context, job *river.Job[profilesync.IdentityArgs]) {
		if calls.Add(1) == 1 {
			close(aRead)
			<-releaseA
		}
	})
	client := b.startWorkers(t)
	ctx := context.Background()

	jobA, err := client.Insert(ctx, profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)
	<-aRead // A has read "Old" from Kratos.
	b.rename(t, ident, "New")
	jobB, err := client.Insert(ctx, profilesync.IdentityArgs{IdentityID: ident.ID}, nil)
	require.NoError(t, err)

	if serialised {
		// B cannot read Kratos before A has written: it waits on the identity lock.
		testenv.Poll(t, 20*time.Second, func() error {
			var waiting int
			if err := b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
				return err
			}
			if waiting == 0 {
				return errors.New("job B is not waiting for the identity lock")
			}
			return nil
		})
	} else {
		waitJob(t, client, jobB.Job.ID, rivertype.JobStateCompleted)
	}
	close(releaseA)
	var wg sync.WaitGroup
	for _, id := range []int64{jobA.Job.ID, jobB.Job.ID} {
		wg.Go(func() { waitJob(t, client, id, rivertype.JobStateCompleted) })
	}
	wg.Wait()

	p, err := profilesync.GetProfile(ctx, b.db.Pool, ident.ID)
	require.NoError(t, err)
	return *p.Name
}

func TestIdentityWorker_ConcurrentJobsForOneIdentityEndWithTheNewestState(t *testing.T) {
	t.Parallel()
	require.Equal(t, "New Tester", raceOutcome(t, true))
}

// The control: the same race without the identity lock ends with the older read written last. If this
// test fails, the race above no longer exercises what it claims to.
func TestIdentityWorker_WithoutTheIdentityLockAnOlderReadOverwritesANewerOne(t *testing.T) {
	t.Parallel()
	require.Equal(t, "Old Tester", raceOutcome(t, false))
}
