package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// testBundle is a real Kratos (its own database) and a database of our own, with River workers running the
// sync jobs as `serve` would.
type testBundle struct {
	ctx    context.Context
	db     *testenv.DB
	kratos *testenv.Kratos
	mapper *jsonnet.Mapper
	jobs   *river.Client[pgx.Tx]
	logger *slog.Logger
	// indexProfiles makes sync jobs enqueue index jobs (withIndex sets it).
	indexProfiles bool
}

// setup starts Kratos, makes a database and starts River workers for sync jobs; configure adds to the
// River configuration (every client of a database must have the same: any of them can be the leader).
func setup(t *testing.T, configure ...func(*testBundle, *river.Workers, *river.Config)) *testBundle {
	t.Helper()
	b := &testBundle{ctx: testenv.Context(t), db: testenv.NewDB(t), kratos: testenv.StartKratos(t, testenv.KratosOpts{})}
	var err error
	b.mapper, err = jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	b.logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))

	workers := river.NewWorkers()
	config := &river.Config{
		Logger:            b.logger,
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{profilesync.QueueIdentity: {MaxWorkers: 4}},
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
		RetryPolicy:       profilesync.RetryPolicy{Base: 100 * time.Millisecond, Max: time.Second},
		TestOnly:          true,
	}
	for _, c := range configure {
		c(b, workers, config)
	}
	river.AddWorker(workers, profilesync.NewIdentityWorker(profilesync.IdentityWorkerOpts{
		Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: b.mapper, Logger: b.logger, IndexProfiles: b.indexProfiles,
	}))
	b.jobs, err = river.NewClient(riverpgxv5.New(b.db.Pool), config)
	require.NoError(t, err)
	require.NoError(t, b.jobs.Start(b.ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.jobs.Stop(ctx)
	})
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (b *testBundle) opts() Opts {
	return Opts{Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: b.mapper, Jobs: b.jobs, Logger: b.logger}
}

func (b *testBundle) run(t *testing.T, opts Opts) Report {
	t.Helper()
	report, err := Run(b.ctx, opts)
	require.NoError(t, err)
	return report
}

// createIdentities creates n identities through the admin API, without credentials (no password hashing)
// and, as every admin API change, without a webhook.
func (b *testBundle) createIdentities(t *testing.T, n int) []uuid.UUID {
	t.Helper()
	var ids []uuid.UUID
	for len(ids) < n {
		bodies := make([]kratos.CreateIdentityBody, min(n-len(ids), kratos.BatchCreateLimit))
		for i := range bodies {
			traits, _ := json.Marshal(testenv.Traits(testenv.Email("user"), "First", fmt.Sprint("Last", len(ids)+i)))
			bodies[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: traits}
		}
		created, err := b.kratos.Admin.BatchCreateIdentities(b.ctx, bodies)
		require.NoError(t, err)
		ids = append(ids, created...)
	}
	return ids
}

// rename changes an identity's name trait through the admin API (no webhook).
func (b *testBundle) rename(t *testing.T, id uuid.UUID, first, last string) {
	t.Helper()
	ident, err := b.kratos.Admin.GetIdentity(b.ctx, id)
	require.NoError(t, err)
	var traits map[string]any
	require.NoError(t, json.Unmarshal(ident.Traits, &traits))
	traits["name"] = map[string]any{"first": first, "last": last}
	raw, _ := json.Marshal(traits)
	_, err = b.kratos.Admin.UpdateIdentity(b.ctx, id, kratos.UpdateIdentityBody{SchemaID: ident.SchemaID, Traits: raw, State: ident.State})
	require.NoError(t, err)
}

// waitRepairs waits until the pass's repair jobs are worked and checks that all succeeded.
func (b *testBundle) waitRepairs(t *testing.T, r Report) Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	o, err := WaitRepairs(ctx, b.db.Pool, r.PassID)
	require.NoError(t, err)
	require.Equal(t, Outcome{Completed: r.RepairsEnqueued}, o)
	return o
}

func (b *testBundle) profile(t *testing.T, id uuid.UUID) profilesync.Profile {
	t.Helper()
	p, err := profilesync.GetProfile(b.ctx, b.db.Pool, id)
	require.NoError(t, err)
	return p
}

// state fingerprints everything a pass could change: the profiles and the job queue.
func (b *testBundle) state(t *testing.T) string {
	t.Helper()
	var profiles, jobs string
	require.NoError(t, b.db.Pool.QueryRow(b.ctx,
		`SELECT coalesce(md5(string_agg(p::text, ',' ORDER BY identity_id)), '') FROM profiles p`).Scan(&profiles))
	require.NoError(t, b.db.Pool.QueryRow(b.ctx,
		`SELECT coalesce(md5(string_agg(j.id::text || j.state::text, ',' ORDER BY id)), '') FROM river_job j`).Scan(&jobs))
	return profiles + "/" + jobs
}

// classification is the part of a report a dry run and a real pass must agree on.
func classification(r Report) Report {
	return Report{IdentitiesScanned: r.IdentitiesScanned, Pages: r.Pages, ProfilesMissing: r.ProfilesMissing,
		ProfilesStale: r.ProfilesStale, ProfilesOrphaned: r.ProfilesOrphaned, LiveProfiles: r.LiveProfiles}
}

func name(p profilesync.Profile) string {
	if p.Name == nil {
		return ""
	}
	return *p.Name
}

func TestRun_BackfillsAndRepairsEveryKindOfDrift(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// Identities created through the admin API fire no webhook: only a pass brings them in.
	ids := b.createIdentities(t, 12)
	before := b.state(t)
	dry := b.run(t, Opts{Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: b.mapper, DryRun: true})
	require.Equal(t, before, b.state(t), "a dry run changed something")
	require.Equal(t, Report{IdentitiesScanned: 12, Pages: 1, ProfilesMissing: 12}, classification(dry))

	backfill := b.run(t, b.opts())
	require.Equal(t, classification(dry), classification(backfill))
	require.Equal(t, 12, backfill.ProfilesInserted)
	require.Zero(t, backfill.RepairsEnqueued, "a backfill needs no job per identity")
	for _, id := range ids {
		// What the pass inserted from the list is what the worker makes of a GET.
		ident, err := b.kratos.Admin.GetIdentity(b.ctx, id)
		require.NoError(t, err)
		want, err := profilesync.ProfileFromIdentity(ident, b.mapper)
		require.NoError(t, err)
		got := b.profile(t, id)
		require.Equal(t, *want.Email, *got.Email)
		require.Equal(t, *want.Name, *got.Name)
		require.EqualValues(t, 1, got.Revision)
		require.Nil(t, got.DeletedAt)
	}

	// Drift of every kind, none of it announced by a webhook.
	renamed := ids[:3]
	for _, id := range renamed {
		b.rename(t, id, "Renamed", id.String()[:8])
	}
	deleted := ids[3:6]
	for _, id := range deleted {
		require.NoError(t, b.kratos.Admin.DeleteIdentity(b.ctx, id))
	}
	// One deletion was already seen by a sync job: a tombstone is not an orphan.
	_, err := profilesync.TombstoneProfile(b.ctx, b.db.Pool, deleted[0])
	require.NoError(t, err)
	// A tombstone of an identity Kratos still has is drift too, repaired by reading Kratos.
	revived := ids[6]
	_, err = profilesync.TombstoneProfile(b.ctx, b.db.Pool, revived)
	require.NoError(t, err)
	added := b.createIdentities(t, 4)

	before = b.state(t)
	dry = b.run(t, Opts{Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: b.mapper, DryRun: true})
	require.Equal(t, before, b.state(t), "a dry run changed something")
	require.Equal(t, Report{IdentitiesScanned: 13, Pages: 1, ProfilesMissing: 4, ProfilesStale: 4, ProfilesOrphaned: 2, LiveProfiles: 10},
		classification(dry))

	repair := b.run(t, b.opts())
	require.Equal(t, classification(dry), classification(repair))
	require.Equal(t, 4, repair.ProfilesInserted)
	require.Equal(t, 6, repair.RepairsEnqueued, "one sync job per stale profile and per orphan")
	b.waitRepairs(t, repair)

	for _, id := range renamed {
		require.Equal(t, "Renamed "+id.String()[:8], name(b.profile(t, id)))
	}
	for _, id := range deleted {
		p := b.profile(t, id)
		require.NotNil(t, p.DeletedAt, "profile of deleted identity %s", id)
		require.Nil(t, p.Email)
	}
	require.Nil(t, b.profile(t, revived).DeletedAt)
	for _, id := range added {
		require.Nil(t, b.profile(t, id).DeletedAt)
	}

	// Nothing is left to repair.
	again := b.run(t, b.opts())
	require.Zero(t, again.Drift(), "%+v", again)
	require.Zero(t, again.RepairsEnqueued)
	require.Equal(t, 13, again.IdentitiesScanned)
}

func TestRun_MassDeletionGuardStopsAPassAgainstAnEmptyKratos(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.createIdentities(t, 8)
	b.run(t, b.opts())

	// Kratos loses every identity (a wrong URL, a restore gone wrong): the pass must not empty profiles.
	for _, id := range ids {
		require.NoError(t, b.kratos.Admin.DeleteIdentity(b.ctx, id))
	}
	before := b.state(t)
	report, err := Run(b.ctx, b.opts())
	var guard *MassDeleteError
	require.ErrorAs(t, err, &guard)
	require.Equal(t, MassDeleteError{Orphans: 8, Live: 8, Share: DefaultMaxDeleteShare}, *guard)
	require.Contains(t, err.Error(), "would remove 8 of 8 live profiles, more than 10 %")
	require.Equal(t, before, b.state(t), "a stopped pass enqueued or changed something")
	require.Zero(t, report.RepairsEnqueued)

	// A dry run reports what a real pass would do, and completes.
	dry := b.run(t, Opts{Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: b.mapper, DryRun: true})
	require.Equal(t, 8, dry.ProfilesOrphaned)
	require.Equal(t, before, b.state(t))

	// Allowed explicitly, the orphans are removed, each after Kratos answered 404.
	allowed := b.run(t, Opts{Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: b.mapper, Jobs: b.jobs, AllowMassDelete: true})
	require.Equal(t, 8, allowed.RepairsEnqueued)
	b.waitRepairs(t, allowed)
	for _, id := range ids {
		require.NotNil(t, b.profile(t, id).DeletedAt)
	}

	// A pass that cannot reach Kratos fails.
	down, err := kratos.NewClient(fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), nil)
	require.NoError(t, err)
	_, err = Run(b.ctx, Opts{Pool: b.db.Pool, Kratos: down, Mapper: b.mapper, Jobs: b.jobs})
	require.Error(t, err)

	// Every pass that ran is on record with its outcome, the dry run excepted (it changes nothing).
	require.Equal(t, []string{PassCompleted, PassStopped, PassCompleted, PassFailed}, b.passOutcomes(t))
	last, failed, err := LastPasses(b.ctx, b.db.Pool)
	require.NoError(t, err)
	require.Equal(t, allowed.PassID, last.PassID)
	require.Equal(t, 8, last.ProfilesOrphaned)
	require.Equal(t, 8, last.RepairsEnqueued)
	require.WithinDuration(t, time.Now(), failed, time.Minute)
}

// passOutcomes are the outcomes of the recorded passes, oldest first.
func (b *testBundle) passOutcomes(t *testing.T) []string {
	t.Helper()
	rows, err := b.db.Pool.Query(b.ctx, `SELECT outcome FROM reconcile_passes ORDER BY finished_at`)
	require.NoError(t, err)
	outcomes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return outcomes
}

func TestRun_AWebhookUpdateDuringAPassIsNotOverwrittenByItsSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.createIdentities(t, 2)
	synced, drifted := ids[0], ids[1]
	b.run(t, b.opts())
	unsynced := b.createIdentities(t, 1)[0]
	b.rename(t, drifted, "Drifted", "Once")
	changing := []uuid.UUID{synced, drifted, unsynced}

	// The pass reads the page and compares it with the profiles: one identity in step, one stale, one
	// missing. Before it writes anything, all three change in Kratos and their webhooks are recorded and
	// synced: the snapshot the pass holds is now older than every profile.
	opts := b.opts()
	opts.afterClassify = func(ctx context.Context, _ []uuid.UUID) {
		for _, id := range changing {
			b.rename(t, id, "Newer", "Name")
			b.recordWebhook(t, id)
		}
		testenv.Poll(t, 20*time.Second, func() error {
			for _, id := range changing {
				p, err := profilesync.GetProfile(ctx, b.db.Pool, id)
				if err != nil {
					return err
				}
				if name(p) != "Newer Name" {
					return fmt.Errorf("profile %s: name %q", id, name(p))
				}
			}
			return nil
		})
	}
	report := b.run(t, opts)
	require.Equal(t, 1, report.ProfilesMissing)
	require.Equal(t, 1, report.ProfilesStale)
	// The missing profile's insert found the webhook's row and left it alone; the stale one got a job,
	// never a write from the snapshot.
	require.Zero(t, report.ProfilesInserted)
	require.Equal(t, 1, report.RepairsEnqueued)
	for _, id := range changing {
		require.Equal(t, "Newer Name", name(b.profile(t, id)))
	}
	b.waitRepairs(t, report)
	for _, id := range changing {
		require.Equal(t, "Newer Name", name(b.profile(t, id)))
	}

	// The next pass finds nothing to do.
	again := b.run(t, b.opts())
	require.Zero(t, again.Drift(), "%+v", again)
}

// recordWebhook records an after-settings event for the identity and enqueues its sync job, as the hooks
// endpoint does for Kratos's delivery.
func (b *testBundle) recordWebhook(t *testing.T, id uuid.UUID) {
	t.Helper()
	recorder := profilesync.NewEventRecorder(profilesync.EventRecorderOpts{Pool: b.db.Pool, Jobs: b.jobs})
	key := profilesync.EventKey{Hook: profilesync.HookSettingsAfter, FlowID: uuid.New(), BodySHA256: make([]byte, 32)}
	_, err := recorder.Record(b.ctx, profilesync.Event{Key: key, IdentityID: id}, nil)
	require.NoError(t, err)
}

func TestRun_PagesThroughKratosInIDOrderAndFindsOrphansBetweenPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.createIdentities(t, 23)
	slices.SortFunc(ids, func(x, y uuid.UUID) int { return bytes.Compare(x[:], y[:]) })

	// Kratos lists by id; Postgres orders uuids the same way (byte order). The orphan search depends on it.
	var listed []uuid.UUID
	for token := ""; ; {
		page, err := b.kratos.Admin.ListIdentities(b.ctx, kratos.ListOpts{PageSize: 3, PageToken: token})
		require.NoError(t, err)
		for _, ident := range page.Identities {
			listed = append(listed, ident.ID)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	require.Equal(t, ids, listed)

	var progress []Progress
	opts := b.opts()
	opts.PageSize = 3
	opts.ProgressFunc = func(p Progress) { progress = append(progress, p) }
	report := b.run(t, opts)
	require.Equal(t, 8, report.Pages)
	require.Equal(t, 23, report.IdentitiesScanned)
	require.Equal(t, 23, report.ProfilesInserted)
	require.Len(t, progress, 8)
	require.Equal(t, 3, progress[0].Identities)
	require.Equal(t, 23, progress[7].Identities)

	var stored []uuid.UUID
	rows, err := b.db.Pool.Query(b.ctx, `SELECT identity_id FROM profiles ORDER BY identity_id`)
	require.NoError(t, err)
	stored, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	require.NoError(t, err)
	require.Equal(t, ids, stored, "Postgres's uuid order is Kratos's order")

	// Profiles of identities Kratos never had, placed before the first id, right after a page's last id
	// (the pages end at ids[2], ids[5], …), right before a page's first id, and after the last id.
	orphans := []uuid.UUID{
		uuid.MustParse("00000000-0000-0000-0000-000000000001"),
		nextID(ids[2]),
		prevID(ids[9]),
		uuid.MustParse("ffffffff-ffff-ffff-ffff-ffffffffffff"),
	}
	for _, id := range orphans {
		_, err := profilesync.InsertMissingProfile(b.ctx, b.db.Pool, profilesync.Profile{
			IdentityID: id, SchemaID: "person", State: "active", Traits: json.RawMessage(`{}`),
			VerifiableAddresses: []kratos.VerifiableAddress{}, RecoveryAddresses: []kratos.RecoveryAddress{},
			Attributes: map[string]any{},
		})
		require.NoError(t, err)
	}
	report = b.run(t, opts)
	require.Equal(t, 4, report.ProfilesOrphaned)
	require.Zero(t, report.ProfilesMissing+report.ProfilesStale)
	b.waitRepairs(t, report)
	for _, id := range orphans {
		require.NotNil(t, b.profile(t, id).DeletedAt, "orphan %s", id)
	}
	for _, id := range ids {
		require.Nil(t, b.profile(t, id).DeletedAt, "identity %s", id)
	}
}

// nextID and prevID are the uuids right after and before id in byte order.
func nextID(id uuid.UUID) uuid.UUID {
	for i := len(id) - 1; i >= 0; i-- {
		id[i]++
		if id[i] != 0 {
			break
		}
	}
	return id
}

func prevID(id uuid.UUID) uuid.UUID {
	for i := len(id) - 1; i >= 0; i-- {
		id[i]--
		if id[i] != 0xff {
			break
		}
	}
	return id
}

// The pass writes a page's repairs while it compares the next ones. A write that fails stops the pass
// within a page or two, and Run returns the write's error, not the cancellation it caused.
func TestRun_AFailedWriteStopsThePass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createIdentities(t, 10)
	_, err := b.db.Pool.Exec(b.ctx, `
CREATE FUNCTION refuse_profiles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'profiles are read-only today'; END $$;
CREATE TRIGGER refuse_profiles BEFORE INSERT ON profiles FOR EACH ROW EXECUTE FUNCTION refuse_profiles();`)
	require.NoError(t, err)

	opts := b.opts()
	opts.PageSize = 1
	report, err := Run(b.ctx, opts)
	require.ErrorContains(t, err, "profiles are read-only today")
	require.NotErrorIs(t, err, context.Canceled)
	// The first page's write failed; the pass compared at most the two pages queued behind it.
	require.LessOrEqual(t, report.Pages, 3)
	require.Zero(t, report.ProfilesInserted)
	require.Zero(t, report.RepairsEnqueued)
	var n int
	require.NoError(t, b.db.Pool.QueryRow(b.ctx, `SELECT count(*) FROM river_job`).Scan(&n))
	require.Zero(t, n)
}

func TestRun_OnePassAtATime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createIdentities(t, 2)

	// The first pass holds the lock while it is paused on its page.
	paused, resume := make(chan struct{}), make(chan struct{})
	first := b.opts()
	first.afterClassify = func(context.Context, []uuid.UUID) { close(paused); <-resume }
	firstDone := make(chan error, 1)
	go func() { _, err := Run(b.ctx, first); firstDone <- err }()
	<-paused

	_, err := Run(b.ctx, b.opts())
	var locked *LockedError
	require.ErrorAs(t, err, &locked)
	require.ErrorIs(t, err, ErrLocked)
	require.Contains(t, locked.Holder, "Postgres backend")

	waiting := b.opts()
	waiting.WaitForLock = 100 * time.Millisecond
	_, err = Run(b.ctx, waiting)
	require.ErrorAs(t, err, &locked)
	require.Equal(t, 100*time.Millisecond, locked.Waited)

	// One that may wait long enough runs once the first is done.
	waiting.WaitForLock = 30 * time.Second
	secondDone := make(chan error, 1)
	var second Report
	go func() { r, err := Run(b.ctx, waiting); second = r; secondDone <- err }()
	close(resume)
	require.NoError(t, <-firstDone)
	require.NoError(t, <-secondDone)
	require.Zero(t, second.Drift(), "the second pass started after the first repaired everything: %+v", second)
	// The passes that found the lock taken did not run, and are not on record.
	require.Equal(t, []string{PassCompleted, PassCompleted}, b.passOutcomes(t))
}

func TestRun_RefusesBadOptions(t *testing.T) {
	t.Parallel()
	// A pool that never connects: the options are refused before anything is dialled.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, tc := range []struct {
		name string
		opts func(*Opts)
		want string
	}{
		{"negative page size", func(o *Opts) { o.PageSize = -1 }, "page size -1 out of range"},
		{"absurd page size", func(o *Opts) { o.PageSize = 1_000_000 }, "page size 1000000 out of range"},
		{"share above one", func(o *Opts) { o.MaxDeleteShare = 1.5 }, "max delete share 1.5 out of range"},
		{"no job client", func(o *Opts) { o.Jobs = nil }, "Jobs is required"},
		{"nothing", func(o *Opts) { *o = Opts{} }, "Pool, Kratos and Mapper are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc, err := kratos.NewClient("http://127.0.0.1:1", nil)
			require.NoError(t, err)
			mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
			require.NoError(t, err)
			jobs, err := river.NewClient(riverpgxv5.New(nil), &river.Config{})
			require.NoError(t, err)
			opts := Opts{Kratos: kc, Mapper: mapper, Jobs: jobs, Pool: pool}
			tc.opts(&opts)
			_, err = Run(context.Background(), opts)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestPassWorker_RunsScheduledPassesUnderTheSameLock(t *testing.T) {
	t.Parallel()
	// River as `serve` runs it with RECONCILE_INTERVAL set: the leader inserts a pass at start, a worker
	// runs it, and its repairs go to the sync workers.
	b := setup(t, func(b *testBundle, workers *river.Workers, config *river.Config) {
		river.AddWorker(workers, NewPassWorker(Opts{Pool: b.db.Pool, Kratos: b.kratos.Admin, Mapper: b.mapper, Logger: b.logger}, time.Minute))
		config.Queues[profilesync.QueueMaintenance] = river.QueueConfig{MaxWorkers: 2}
		config.PeriodicJobs = []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return PassArgs{}, nil }, &river.PeriodicJobOpts{RunOnStart: true})}
	})
	passes := b.jobs
	lastPass := func(t *testing.T) *rivertype.JobRow {
		t.Helper()
		res, err := passes.JobList(b.ctx, river.NewJobListParams().Kinds(PassArgs{}.Kind()).OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(1))
		require.NoError(t, err)
		if len(res.Jobs) == 0 {
			return nil
		}
		return res.Jobs[0]
	}
	passFinished := func(t *testing.T, state rivertype.JobState) *rivertype.JobRow {
		t.Helper()
		var job *rivertype.JobRow
		testenv.Poll(t, 30*time.Second, func() error {
			if job = lastPass(t); job == nil || job.FinalizedAt == nil {
				return errors.New("no finished pass yet")
			}
			return nil
		})
		require.Equal(t, state, job.State, "%+v", job.Errors)
		return job
	}
	// The leader's pass at start finds an empty Kratos. The next one backfills what was created since.
	started := passFinished(t, rivertype.JobStateCompleted)
	ids := b.createIdentities(t, 6)
	_, err := passes.Insert(b.ctx, PassArgs{}, nil)
	require.NoError(t, err)
	require.Greater(t, passFinished(t, rivertype.JobStateCompleted).ID, started.ID)
	for _, id := range ids {
		require.Nil(t, b.profile(t, id).DeletedAt)
	}

	// While a pass runs (paused here), a scheduled one is skipped, not queued behind it.
	paused, resume := make(chan struct{}), make(chan struct{})
	manual := b.opts()
	manual.afterClassify = func(context.Context, []uuid.UUID) { close(paused); <-resume }
	manualDone := make(chan error, 1)
	go func() { _, err := Run(b.ctx, manual); manualDone <- err }()
	<-paused
	first := lastPass(t).ID
	_, err = passes.Insert(b.ctx, PassArgs{}, nil)
	require.NoError(t, err)
	skipped := passFinished(t, rivertype.JobStateCompleted)
	require.Greater(t, skipped.ID, first)
	close(resume)
	require.NoError(t, <-manualDone)

	// A scheduled pass the mass-deletion guard stops is cancelled: retrying would find the same.
	for _, id := range ids {
		require.NoError(t, b.kratos.Admin.DeleteIdentity(b.ctx, id))
	}
	_, err = passes.Insert(b.ctx, PassArgs{}, nil)
	require.NoError(t, err)
	stopped := passFinished(t, rivertype.JobStateCancelled)
	require.Contains(t, stopped.Errors[0].Error, "mass-deletion guard")
	for _, id := range ids {
		require.Nil(t, b.profile(t, id).DeletedAt)
	}
}

// withIndex adds the search projection to setup's workers: sync jobs enqueue index jobs, and an index
// worker writes documents to a test index of the shared Elasticsearch.
func withIndex(t *testing.T) (func(*testBundle, *river.Workers, *river.Config), *search.Index, testenv.ElasticsearchIndex) {
	es := testenv.Elasticsearch(t)
	index, err := search.New(search.Config{Addresses: []string{es.URL}, Alias: es.Alias})
	require.NoError(t, err)
	_, err = index.Ensure(context.Background())
	require.NoError(t, err)
	writer, err := index.NewWriter(search.WriterOpts{FlushInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = writer.Close(context.Background()) })
	return func(b *testBundle, workers *river.Workers, config *river.Config) {
		b.indexProfiles = true
		indexWorker := profilesync.NewIndexWorker(profilesync.IndexWorkerOpts{
			Pool: b.db.Pool, Index: index, Writer: writer, Logger: b.logger,
		})
		river.AddWorker(workers, indexWorker)
		river.AddWorker(workers, profilesync.NewIndexBatchWorker(indexWorker))
		config.Queues[profilesync.QueueIndex] = river.QueueConfig{MaxWorkers: 50}
		config.Queues[profilesync.QueueIndexBatch] = river.QueueConfig{MaxWorkers: profilesync.IndexBatchWorkers}
	}, index, es
}

func TestRun_RepairsTheSearchIndex(t *testing.T) {
	t.Parallel()
	configure, index, es := withIndex(t)
	b := setup(t, configure)
	opts := b.opts()
	opts.Documents = index
	ids := b.createIdentities(t, 3)
	doc := func(id uuid.UUID) testenv.ESDoc {
		d, err := testenv.GetDoc(es.URL, es.Alias, id.String())
		require.NoError(t, err)
		return d
	}

	// A backfill inserts the profiles and projects them, with one index job for the page.
	r := b.run(t, opts)
	require.Equal(t, 3, r.ProfilesMissing)
	require.Equal(t, 1, r.RepairsEnqueued)
	b.waitRepairs(t, r)
	for _, id := range ids {
		testenv.Poll(t, 20*time.Second, func() error {
			if d := doc(id); !d.Found || d.Version != b.profile(t, id).Revision {
				return fmt.Errorf("document of %s: %+v", id, d)
			}
			return nil
		})
	}

	// A document deleted from the index by hand comes back; an admin change reaches the index; an admin
	// deletion removes the profile and the document.
	req, _ := http.NewRequest(http.MethodDelete, es.URL+"/"+es.Alias+"/_doc/"+ids[0].String()+"?refresh=true", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.False(t, doc(ids[0]).Found)
	b.rename(t, ids[1], "Renamed", "Person")
	require.NoError(t, b.kratos.Admin.DeleteIdentity(b.ctx, ids[2]))

	r = b.run(t, opts)
	require.Equal(t, 1, r.DocumentsMissing)
	require.Equal(t, 1, r.ProfilesStale)
	require.Equal(t, 1, r.ProfilesOrphaned)
	b.waitRepairs(t, r)
	testenv.Poll(t, 20*time.Second, func() error {
		if !doc(ids[0]).Found {
			return fmt.Errorf("document of %s not back", ids[0])
		}
		if d := doc(ids[1]); !d.Found || d.Source["name"] != "Renamed Person" {
			return fmt.Errorf("document of %s: %v", ids[1], d.Source["name"])
		}
		if doc(ids[2]).Found {
			return fmt.Errorf("document of deleted %s still there", ids[2])
		}
		return nil
	})
	require.NotNil(t, b.profile(t, ids[2]).DeletedAt)

	// Nothing is left to repair, in the profiles or in the index.
	r = b.run(t, opts)
	require.Zero(t, r.ProfilesMissing+r.ProfilesStale+r.ProfilesOrphaned+r.DocumentsMissing+r.DocumentsStale, "%+v", r)
	require.Zero(t, r.RepairsEnqueued)
}
