package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/reconcile"
)

// reconcileStack is a Kratos (no webhooks reach anything) and a database, for `reconcile` to work on.
type reconcileStack struct {
	db     *testenv.DB
	kratos *testenv.Kratos
	env    map[string]string
}

func startReconcileStack(t *testing.T) *reconcileStack {
	t.Helper()
	s := &reconcileStack{db: testenv.NewDB(t), kratos: testenv.StartKratos(t, testenv.KratosOpts{})}
	s.env = map[string]string{"DATABASE_URL": s.db.URL, "KRATOS_ADMIN_URL": s.kratos.AdminURL, "LOG_LEVEL": "warn", "LOG_FORMAT": "text"}
	return s
}

// createIdentities creates identities through the admin API: no webhook fires.
func (s *reconcileStack) createIdentities(t *testing.T, n int) []uuid.UUID {
	t.Helper()
	bodies := make([]kratos.CreateIdentityBody, n)
	for i := range bodies {
		traits, _ := json.Marshal(testenv.Traits(testenv.Email("admin"), "Ada", fmt.Sprint("Number", i)))
		bodies[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: traits}
	}
	ids, err := s.kratos.Admin.BatchCreateIdentities(testenv.Context(t), bodies)
	require.NoError(t, err)
	return ids
}

func (s *reconcileStack) rename(t *testing.T, id uuid.UUID, first, last string) {
	t.Helper()
	ctx := testenv.Context(t)
	ident, err := s.kratos.Admin.GetIdentity(ctx, id)
	require.NoError(t, err)
	var traits map[string]any
	require.NoError(t, json.Unmarshal(ident.Traits, &traits))
	traits["name"] = map[string]any{"first": first, "last": last}
	raw, _ := json.Marshal(traits)
	_, err = s.kratos.Admin.UpdateIdentity(ctx, id, kratos.UpdateIdentityBody{SchemaID: ident.SchemaID, Traits: raw, State: ident.State})
	require.NoError(t, err)
}

type profileState struct {
	Name    *string
	Deleted bool
}

func (s *reconcileStack) profile(t *testing.T, id uuid.UUID) (profileState, error) {
	var p profileState
	err := s.db.Pool.QueryRow(context.Background(),
		`SELECT name, deleted_at IS NOT NULL FROM profiles WHERE identity_id = $1`, id).Scan(&p.Name, &p.Deleted)
	return p, err
}

func (s *reconcileStack) count(t *testing.T, sql string) int {
	t.Helper()
	var n int
	require.NoError(t, s.db.Pool.QueryRow(context.Background(), sql).Scan(&n))
	return n
}

// reconcileJSON runs `reconcile --json ARGS` and returns the report line, checking that it is the one and
// last line of stdout.
func reconcileJSON(t *testing.T, env map[string]string, args ...string) (map[string]any, string, error) {
	t.Helper()
	stdout, stderr, err := runCLI(t, env, append([]string{"reconcile", "--json"}, args...)...)
	require.True(t, strings.HasSuffix(stdout, "\n"), "stdout %q", stdout)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, 1, "stdout: %s", stdout)
	var report map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &report), lines[0])
	for _, key := range []string{"identities_scanned", "profiles_missing", "profiles_stale", "profiles_orphaned",
		"documents_missing", "documents_stale", "repairs_enqueued", "duration_seconds"} {
		require.Contains(t, report, key)
	}
	return report, stderr, err
}

func exitCode(err error) int {
	var coded interface{ ExitCode() int }
	var usage *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &usage):
		return 2
	case errors.As(err, &coded):
		return coded.ExitCode()
	}
	return 1
}

func TestReconcile_BackfillsAndRepairsThroughServe(t *testing.T) {
	t.Parallel()
	s := startReconcileStack(t)
	ids := s.createIdentities(t, 7)

	report, stderr, err := reconcileJSON(t, s.env, "--dry-run")
	require.NoError(t, err, stderr)
	require.EqualValues(t, 7, report["identities_scanned"])
	require.EqualValues(t, 7, report["profiles_missing"])
	require.Equal(t, true, report["dry_run"])
	require.Zero(t, s.count(t, `SELECT count(*) FROM profiles`), "a dry run wrote profiles")

	report, stderr, err = reconcileJSON(t, s.env)
	require.NoError(t, err, stderr)
	require.EqualValues(t, 7, report["profiles_missing"])
	require.EqualValues(t, 7, report["profiles_inserted"])
	require.EqualValues(t, 0, report["repairs_enqueued"])
	require.Equal(t, 7, s.count(t, `SELECT count(*) FROM profiles WHERE deleted_at IS NULL`))
	require.Zero(t, s.count(t, `SELECT count(*) FROM river_job`), "a backfill needs no job per identity")

	// Changes through the admin API fire no webhook; with --wait, reconcile reports what serve's workers
	// made of its repairs.
	s.rename(t, ids[0], "Grace", "Hopper")
	s.rename(t, ids[1], "Edsger", "Dijkstra")
	require.NoError(t, s.kratos.Admin.DeleteIdentity(testenv.Context(t), ids[2]))
	svc := startService(t, map[string]string{"DATABASE_URL": s.db.URL, "KRATOS_ADMIN_URL": s.kratos.AdminURL})

	// The backfill ran from the command line and exited before serve started; serve's /metrics reports it.
	m := testenv.MustScrape(t, svc.URL+"/metrics")
	backfilled := m.Get("kratos_hooks_reconcile_last_success_timestamp_seconds")
	require.InDelta(t, float64(time.Now().Unix()), backfilled, 120)
	require.Equal(t, 7.0, m.Get("kratos_hooks_reconcile_drift", "kind", "profiles_missing"))
	require.Equal(t, 7.0, m.Get("kratos_hooks_reconcile_last_identities"))

	report, stderr, err = reconcileJSON(t, s.env, "--wait", "--wait-timeout", "30s")
	require.NoError(t, err, stderr)
	require.EqualValues(t, 2, report["profiles_stale"])
	require.EqualValues(t, 1, report["profiles_orphaned"])
	require.EqualValues(t, 3, report["repairs_enqueued"])
	require.EqualValues(t, 3, report["repairs_completed"])
	require.EqualValues(t, 0, report["repairs_failed"])
	require.EqualValues(t, 0, report["repairs_pending"])
	p, err := s.profile(t, ids[0])
	require.NoError(t, err)
	require.Equal(t, "Grace Hopper", *p.Name)
	p, err = s.profile(t, ids[2])
	require.NoError(t, err)
	require.True(t, p.Deleted)
	m = testenv.MustScrape(t, svc.URL+"/metrics")
	require.Equal(t, 0.0, m.Get("kratos_hooks_reconcile_drift", "kind", "profiles_missing"))
	require.Equal(t, 2.0, m.Get("kratos_hooks_reconcile_drift", "kind", "profiles_stale"))
	require.Equal(t, 1.0, m.Get("kratos_hooks_reconcile_drift", "kind", "profiles_orphaned"))
	require.Equal(t, 3.0, m.Get("kratos_hooks_reconcile_last_repairs"))
	require.Equal(t, 3.0, m.Get("kratos_hooks_jobs_total", "kind", "sync_identity", "outcome", "completed"), "the repairs, worked by serve")

	// A second pass finds nothing; without --json it prints a summary for people.
	stdout, stderr, err := runCLI(t, s.env, "reconcile")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "identities scanned          6")
	require.Contains(t, stdout, "profiles stale              0")
	require.Contains(t, stdout, "repairs enqueued            0")
	m = testenv.MustScrape(t, svc.URL+"/metrics")
	require.Equal(t, 0.0, m.Get("kratos_hooks_reconcile_drift", "kind", "profiles_stale"))
	require.Equal(t, 0.0, m.Get("kratos_hooks_reconcile_drift", "kind", "profiles_orphaned"))
	require.GreaterOrEqual(t, m.Get("kratos_hooks_reconcile_last_success_timestamp_seconds"), backfilled)
}

func TestReconcile_ExitStatusSaysWhyAPassDidNotComplete(t *testing.T) {
	t.Parallel()
	s := startReconcileStack(t)
	ids := s.createIdentities(t, 8)
	_, stderr, err := runCLI(t, s.env, "reconcile")
	require.NoError(t, err, stderr)

	// Another pass holds the lock (here: a session that took it by hand).
	ctx := testenv.Context(t)
	conn, err := pgx.Connect(ctx, s.db.URL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, reconcile.LockID)
	require.NoError(t, err)
	report, stderr, err := reconcileJSON(t, s.env)
	require.Equal(t, exitLocked, exitCode(err))
	require.Contains(t, stderr, "another reconcile pass is running")
	require.Contains(t, report["error"], "another reconcile pass is running")
	_, stderr, err = runCLI(t, s.env, "reconcile", "--wait-for-lock", "200ms")
	require.Equal(t, exitLocked, exitCode(err))
	require.Contains(t, stderr, "waited 200ms")
	require.NoError(t, conn.Close(ctx))

	// Kratos lost every identity: the guard stops the pass, and says what to do.
	for _, id := range ids {
		require.NoError(t, s.kratos.Admin.DeleteIdentity(ctx, id))
	}
	report, stderr, err = reconcileJSON(t, s.env)
	require.Equal(t, exitMassDelete, exitCode(err))
	require.Contains(t, stderr, "would remove 8 of 8 live profiles")
	require.Contains(t, stderr, "--allow-mass-delete")
	require.EqualValues(t, 8, report["profiles_orphaned"])
	require.Zero(t, s.count(t, `SELECT count(*) FROM river_job`))

	// Allowed, but no serve is running to work the repairs: --wait says so when its time is up.
	report, stderr, err = reconcileJSON(t, s.env, "--allow-mass-delete", "--wait", "--wait-timeout", "300ms")
	require.Equal(t, exitRepairsFailed, exitCode(err))
	require.Contains(t, stderr, "8 of 8 repairs still pending after 300ms")
	require.EqualValues(t, 8, report["repairs_pending"])
}

func TestReconcile_RefusesBadFlags(t *testing.T) {
	t.Parallel()
	help, _, err := runCLI(t, nil, "reconcile", "--help")
	require.NoError(t, err)
	require.Contains(t, help, "Exit status: 0 the pass completed")
	require.Contains(t, help, "--allow-mass-delete")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--page-size", "-1"}, "--page-size -1: want 1 to 2000"},
		{[]string{"--page-size", "0"}, "--page-size 0: want 1 to 2000"},
		{[]string{"--page-size", "100000"}, "--page-size 100000: want 1 to 2000"},
		{[]string{"--page-size", "many"}, `invalid argument "many" for "--page-size"`},
		{[]string{"--max-delete-percent", "0"}, "--max-delete-percent 0: want more than 0 and at most 100"},
		{[]string{"--max-delete-percent", "150"}, "--max-delete-percent 150"},
		{[]string{"--wait-timeout", "0s"}, "--wait-timeout 0s: want a positive duration"},
		{[]string{"--wait", "--dry-run"}, "a dry run enqueues nothing to wait for"},
		{[]string{"extra"}, `unknown command "extra"`},
	} {
		_, stderr, err := runCLI(t, nil, append([]string{"reconcile"}, tc.args...)...)
		require.Equal(t, 2, exitCode(err), tc.args)
		require.Contains(t, stderr, tc.want, tc.args)
	}
	// Configuration is checked next, and names the variable; --json still prints its one line.
	env := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x"}
	_, stderr, err := runCLI(t, env, "reconcile")
	require.Equal(t, 1, exitCode(err))
	require.Contains(t, stderr, "KRATOS_ADMIN_URL is not set")
	report, _, err := reconcileJSON(t, env)
	require.Equal(t, 1, exitCode(err))
	require.Contains(t, report["error"], "KRATOS_ADMIN_URL is not set")
}

func TestServe_RunsReconcilePassesOnASchedule(t *testing.T) {
	t.Parallel()
	s := startReconcileStack(t)
	ids := s.createIdentities(t, 3)
	svc := startService(t, map[string]string{"DATABASE_URL": s.db.URL, "KRATOS_ADMIN_URL": s.kratos.AdminURL, "RECONCILE_INTERVAL": "1s"})

	// Nothing but the schedule brings identities created through the admin API in, and deletions out.
	testenv.Poll(t, 30*time.Second, func() error {
		for _, id := range ids {
			if _, err := s.profile(t, id); err != nil {
				return fmt.Errorf("profile %s: %w", id, err)
			}
		}
		return nil
	})
	require.NoError(t, s.kratos.Admin.DeleteIdentity(testenv.Context(t), ids[0]))
	testenv.Poll(t, 30*time.Second, func() error {
		if p, err := s.profile(t, ids[0]); err != nil || !p.Deleted {
			return fmt.Errorf("profile of the deleted identity: %+v, %v", p, err)
		}
		return nil
	})

	// The scheduled passes are reported like any other: the one that found the deletion among them.
	testenv.Poll(t, 30*time.Second, func() error {
		m, err := testenv.ScrapeMetrics(svc.URL + "/metrics")
		if err != nil {
			return err
		}
		if _, ok := m.Value("kratos_hooks_reconcile_last_success_timestamp_seconds"); !ok {
			return errors.New("no completed pass reported")
		}
		if n := m.Get("kratos_hooks_jobs_total", "kind", "reconcile_pass", "outcome", "completed"); n < 2 {
			return fmt.Errorf("%g reconcile_pass jobs completed", n)
		}
		return nil
	})
}

func TestProgressLine_KeepsLogLinesAboveIt(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	p := &progressLine{w: &out}
	p.update(reconcile.Progress{Pages: 2, Identities: 1000, Elapsed: 2 * time.Second})
	_, err := p.Write([]byte("a log line\n"))
	require.NoError(t, err)
	p.clear()
	const status = "reconcile: 2 pages, 1000 identities, 500 identities/s, 2s"
	require.Equal(t, "\r\x1b[K"+status+"\r\x1b[Ka log line\n"+status+"\r\x1b[K", out.String())
	require.False(t, isTerminal(&out))
}

// A reservation whose post-persist hook was lost, and one whose registration never happened, are both
// settled by the pass: confirmed for the address Kratos has, released for the one it does not.
func TestReconcile_SettlesInviteReservationsLeftUnconfirmed(t *testing.T) {
	t.Parallel()
	s := startReconcileStack(t)
	ctx := testenv.Context(t)
	long := time.Now().Add(-time.Hour)
	inv, err := invites.Create(ctx, s.db.Pool, invites.CreateOpts{Code: true, MaxUses: 5}, long)
	require.NoError(t, err)

	registered := testenv.Email("kept")
	traits, _ := json.Marshal(testenv.Traits(registered, "", ""))
	_, err = s.kratos.Admin.CreateIdentity(ctx, kratos.CreateIdentityBody{SchemaID: "person", Traits: traits})
	require.NoError(t, err)
	for _, address := range []string{registered, testenv.Email("abandoned")} {
		_, err := invites.Admit(ctx, s.db.Pool, invites.AdmitRequest{FlowID: uuid.New(), Address: address, Email: address,
			Code: inv.Code, ClientKey: "test"}, invites.DefaultGuessLimit, long.Add(time.Minute))
		require.NoError(t, err)
	}

	report, stderr, err := reconcileJSON(t, s.env)
	require.NoError(t, err, stderr)
	require.EqualValues(t, 2, report["invites_settled"])
	require.Equal(t, 1, s.count(t, `SELECT count(*) FROM invite_redemptions WHERE confirmed_at IS NOT NULL`))
	require.Equal(t, 1, s.count(t, `SELECT count(*) FROM invite_redemptions`), "the abandoned reservation gave its use back")
}
