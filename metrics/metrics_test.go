package metrics_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/metrics"
)

type testBundle struct {
	db  *testenv.DB
	reg *prometheus.Registry
	// url is /metrics served from reg.
	url string
}

func setup(t *testing.T, db bool) *testBundle {
	t.Helper()
	b := &testBundle{reg: metrics.NewRegistry()}
	if db {
		b.db = testenv.NewDB(t)
	}
	srv := httptest.NewServer(metrics.Handler(b.reg, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

// scriptedArgs is a job that does what its args say.
type scriptedArgs struct {
	// Do is complete, cancel, fail or fail_once (fail on the first attempt, complete on the next).
	Do string `json:"do"`
}

func (scriptedArgs) Kind() string { return "scripted" }

type scriptedWorker struct {
	river.WorkerDefaults[scriptedArgs]
	logger *slog.Logger
}

func (w *scriptedWorker) Work(ctx context.Context, job *river.Job[scriptedArgs]) error {
	w.logger.InfoContext(ctx, "working", "do", job.Args.Do)
	switch job.Args.Do {
	case "cancel":
		return river.JobCancel(errors.New("told to cancel"))
	case "fail":
		return errors.New("told to fail")
	case "fail_once":
		if job.Attempt == 1 {
			return errors.New("told to fail once")
		}
	}
	return nil
}

func TestJobs_CountRunsByKindAndOutcome_AndTheirLogLinesCarryTheJob(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	jobMetrics := metrics.NewJobs("scripted", "never_run")
	b.reg.MustRegister(jobMetrics)
	var logs testenv.Buffer
	logger, err := logging.New(&logs, "json", "info")
	require.NoError(t, err)

	workers := river.NewWorkers()
	river.AddWorker(workers, &scriptedWorker{logger: logger})
	client, err := river.NewClient(riverpgxv5.New(b.db.Pool), &river.Config{
		Logger:            slog.New(slog.DiscardHandler),
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		Middleware:        []rivertype.Middleware{&logging.JobAttrs{}, jobMetrics},
		RetryPolicy:       fastRetry{},
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
		TestOnly:          true,
	})
	require.NoError(t, err)
	ctx := testenv.Context(t)
	require.NoError(t, client.Start(ctx))
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.StopAndCancel(stopCtx)
	})

	want := map[string]rivertype.JobState{
		"complete":  rivertype.JobStateCompleted,
		"cancel":    rivertype.JobStateCancelled,
		"fail":      rivertype.JobStateDiscarded, // its only attempt fails
		"fail_once": rivertype.JobStateCompleted,
	}
	ids := map[int64]string{}
	for do := range want {
		opts := &river.InsertOpts{MaxAttempts: 3}
		if do == "fail" {
			opts.MaxAttempts = 1
		}
		res, err := client.Insert(ctx, scriptedArgs{Do: do}, opts)
		require.NoError(t, err)
		ids[res.Job.ID] = do
	}
	testenv.Poll(t, 20*time.Second, func() error {
		for id, do := range ids {
			job, err := client.JobGet(ctx, id)
			if err != nil {
				return err
			}
			if job.State != want[do] {
				return fmt.Errorf("%s job is %s, want %s", do, job.State, want[do])
			}
		}
		return nil
	})

	// The middleware counts a run before River records its state, so the counts are complete by now.
	s := testenv.MustScrape(t, b.url)
	for outcome, n := range map[string]float64{"completed": 2, "errored": 1, "cancelled": 1, "discarded": 1, "snoozed": 0} {
		require.Equal(t, n, s.Get("kratos_hooks_jobs_total", "kind", "scripted", "outcome", outcome), outcome)
	}
	require.Equal(t, 5.0, s.Get("kratos_hooks_job_duration_seconds_count", "kind", "scripted"))
	// A kind that never ran is there at zero, so that an alert sees its first discarded job.
	v, ok := s.Value("kratos_hooks_jobs_total", "kind", "never_run", "outcome", "discarded")
	require.True(t, ok)
	require.Zero(t, v)

	// Every line the worker logged carries the id and kind of the job it was working on.
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct {
			Msg     string `json:"msg"`
			Do      string `json:"do"`
			JobID   int64  `json:"job_id"`
			JobKind string `json:"job_kind"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
		require.Equal(t, "working", line.Msg)
		require.Equal(t, ids[line.JobID], line.Do, "line %s", sc.Text())
		require.Equal(t, "scripted", line.JobKind)
		lines++
	}
	require.Equal(t, 5, lines)
}

// fastRetry retries at once, so that a test waits for no backoff.
type fastRetry struct{}

func (fastRetry) NextRetry(*rivertype.JobRow) time.Time { return time.Now() }

func TestOutcome_IsWhatRiverMakesOfTheRun(t *testing.T) {
	t.Parallel()
	live := context.Background()
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		attempt int
		err     error
		want    string
	}{
		{"success", live, 1, nil, metrics.OutcomeCompleted},
		{"snooze", live, 1, river.JobSnooze(time.Minute), metrics.OutcomeSnoozed},
		{"cancel, even on the last attempt", live, 3, river.JobCancel(errors.New("bad job")), metrics.OutcomeCancelled},
		{"error with attempts left", live, 1, errors.New("kratos down"), metrics.OutcomeErrored},
		{"error on the last attempt", live, 3, errors.New("kratos down"), metrics.OutcomeDiscarded},
		{"the job's own timeout", live, 1, fmt.Errorf("read: %w", context.DeadlineExceeded), metrics.OutcomeErrored},
		{"client stopping", stopped, 1, fmt.Errorf("read: %w", context.Canceled), metrics.OutcomeInterrupted},
	} {
		job := &rivertype.JobRow{Kind: "k", Attempt: tc.attempt, MaxAttempts: 3}
		require.Equal(t, tc.want, metrics.Outcome(tc.ctx, job, tc.err), tc.name)
	}
}

type queuedArgs struct{}

func (queuedArgs) Kind() string { return "queued" }

func TestQueues_ReportDepthByStateAndTheAgeOfTheOldestAvailableJob(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	b.reg.MustRegister(metrics.NewQueues(b.db.Pool, []string{"identity", "maintenance"}, 2*time.Second))
	s := testenv.MustScrape(t, b.url)
	require.Equal(t, 0.0, s.Get("kratos_hooks_queue_jobs", "queue", "identity", "state", "available"))
	v, ok := s.Value("kratos_hooks_queue_oldest_available_job_age_seconds", "queue", "identity")
	require.True(t, ok, "an empty listed queue is reported, as zero")
	require.Zero(t, v)

	// Nothing works these jobs: an insert-only client.
	jobs, err := river.NewClient(riverpgxv5.New(b.db.Pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx := testenv.Context(t)
	insert := func(queue string, waited time.Duration) {
		res, err := jobs.Insert(ctx, queuedArgs{}, &river.InsertOpts{Queue: queue})
		require.NoError(t, err)
		// As if it had become available that long ago.
		_, err = b.db.Pool.Exec(ctx, `UPDATE river_job SET scheduled_at = now() - make_interval(secs => $2) WHERE id = $1`,
			res.Job.ID, waited.Seconds())
		require.NoError(t, err)
	}
	insert("identity", 90*time.Second)
	insert("identity", 10*time.Second)
	insert("identity", 0)
	insert("unlisted", 0)
	_, err = jobs.Insert(ctx, queuedArgs{}, &river.InsertOpts{Queue: "identity", ScheduledAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)

	s = testenv.MustScrape(t, b.url)
	require.Equal(t, 3.0, s.Get("kratos_hooks_queue_jobs", "queue", "identity", "state", "available"))
	require.Equal(t, 1.0, s.Get("kratos_hooks_queue_jobs", "queue", "identity", "state", "scheduled"))
	require.Equal(t, 0.0, s.Get("kratos_hooks_queue_jobs", "queue", "identity", "state", "retryable"))
	require.Equal(t, 1.0, s.Get("kratos_hooks_queue_jobs", "queue", "unlisted", "state", "available"))
	require.Equal(t, 0.0, s.Get("kratos_hooks_queue_jobs", "queue", "maintenance", "state", "available"))
	age := s.Get("kratos_hooks_queue_oldest_available_job_age_seconds", "queue", "identity")
	require.GreaterOrEqual(t, age, 90.0)
	require.Less(t, age, 600.0)
}

func TestQueues_ADatabaseThatDoesNotAnswerFailsOnlyItsOwnMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	b.reg.MustRegister(metrics.NewQueues(b.db.Pool, []string{"identity"}, 2*time.Second))
	b.db.Pool.Close()

	s := testenv.MustScrape(t, b.url)
	_, ok := s.Value("kratos_hooks_queue_jobs", "queue", "identity")
	require.False(t, ok)
	_, ok = s.Value("go_goroutines")
	require.True(t, ok, "the rest of the scrape is served")
}

func TestReconcile_ReportsTheLastCompletedPassAndTheLastFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	b.reg.MustRegister(metrics.NewReconcile(b.db.Pool, 2*time.Second))
	s := testenv.MustScrape(t, b.url)
	_, ok := s.Value("kratos_hooks_reconcile_last_success_timestamp_seconds")
	require.False(t, ok, "no pass yet: absent, so that an alert can tell")

	finished := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	record := func(outcome string, at time.Time, missing, orphaned int) {
		_, err := b.db.Pool.Exec(testenv.Context(t), `
INSERT INTO reconcile_passes (pass_id, started_at, finished_at, outcome, pages, identities_scanned,
    profiles_missing, profiles_inserted, profiles_stale, profiles_orphaned, documents_missing, documents_stale,
    invites_settled, repairs_enqueued)
VALUES ($1, $2, $3, $4, 1, 40, $5, $5, 0, $6, 0, 0, 0, $6)`, uuid.New(), at.Add(-5*time.Second), at, outcome, missing, orphaned)
		require.NoError(t, err)
	}
	record("completed", finished.Add(-time.Hour), 9, 9)
	record("completed", finished, 3, 1)
	record("stopped", finished.Add(time.Minute), 0, 30)

	s = testenv.MustScrape(t, b.url)
	require.Equal(t, float64(finished.Unix()), s.Get("kratos_hooks_reconcile_last_success_timestamp_seconds"))
	require.Equal(t, float64(finished.Add(time.Minute).Unix()), s.Get("kratos_hooks_reconcile_last_failure_timestamp_seconds"))
	require.Equal(t, 3.0, s.Get("kratos_hooks_reconcile_drift", "kind", "profiles_missing"))
	require.Equal(t, 1.0, s.Get("kratos_hooks_reconcile_drift", "kind", "profiles_orphaned"))
	require.Equal(t, 0.0, s.Get("kratos_hooks_reconcile_drift", "kind", "documents_stale"))
	require.Equal(t, 5.0, s.Get("kratos_hooks_reconcile_last_duration_seconds"))
	require.Equal(t, 40.0, s.Get("kratos_hooks_reconcile_last_identities"))
	require.Equal(t, 1.0, s.Get("kratos_hooks_reconcile_last_repairs"))
}

func TestDependencies_ReportEachOneUpOrDownWithinTheTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.reg.MustRegister(metrics.NewDependencies([]metrics.Dependency{
		{Name: "database", CheckFunc: func(context.Context) error { return nil }},
		{Name: "kratos_admin", CheckFunc: func(context.Context) error { return errors.New("connection refused") }},
		{Name: "elasticsearch", CheckFunc: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
	}, 200*time.Millisecond))

	start := time.Now()
	s := testenv.MustScrape(t, b.url)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, 1.0, s.Get("kratos_hooks_dependency_up", "dependency", "database"))
	v, ok := s.Value("kratos_hooks_dependency_up", "dependency", "kratos_admin")
	require.True(t, ok)
	require.Zero(t, v)
	v, ok = s.Value("kratos_hooks_dependency_up", "dependency", "elasticsearch")
	require.True(t, ok)
	require.Zero(t, v)
}
