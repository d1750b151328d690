package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// The outcomes of a job run, as River settles them.
const (
	OutcomeCompleted = "completed"
	// OutcomeErrored: the run failed and River retries the job later.
	OutcomeErrored = "errored"
	// OutcomeDiscarded: the run failed and it was the last attempt; the job is given up.
	OutcomeDiscarded = "discarded"
	// OutcomeCancelled: the worker cancelled the job for good (river.JobCancel).
	OutcomeCancelled = "cancelled"
	// OutcomeSnoozed: the worker asked to run the job again later (river.JobSnooze); not a failure.
	OutcomeSnoozed = "snoozed"
	// OutcomeInterrupted: the process was stopping; River makes the job available again.
	OutcomeInterrupted = "interrupted"
)

var outcomes = []string{OutcomeCompleted, OutcomeErrored, OutcomeDiscarded, OutcomeCancelled, OutcomeSnoozed, OutcomeInterrupted}

// Jobs counts River job runs by kind and outcome and times them. It is a River worker middleware: put it in
// river.Config.Middleware and every worker is measured, with no code in the workers.
//
// A middleware rather than an event subscription: it runs in the job's own goroutine, so no run is missed
// (a subscription drops events when its channel is full, which a burst of thousands of jobs can do), and it
// needs no goroutine of its own to start and stop. The outcome is read from the error the worker returned,
// the way River's executor reads it (snooze, cancel, client stopping, last attempt). The one outcome it
// cannot see is an error handler cancelling a job; this service configures none.
type Jobs struct {
	river.MiddlewareDefaults

	runs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// jobBuckets span an identity sync (milliseconds), an index job that waits for its bulk request (up to the
// flush interval and the request) and a reconcile pass (minutes).
var jobBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800}

// NewJobs returns the job metrics. The series of kinds are created at zero for every outcome, so that an
// alert on the increase of discarded jobs sees the first one.
func NewJobs(kinds ...string) *Jobs {
	m := &Jobs{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "jobs_total",
			Help: "River job runs by kind and outcome (completed, errored = will be retried, discarded, cancelled, snoozed, interrupted). A job that fails twice and then succeeds counts two errored and one completed.",
		}, []string{"kind", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "job_duration_seconds",
			Help:    "Time a River job run took in its worker, by kind, whatever the outcome.",
			Buckets: jobBuckets,
		}, []string{"kind"}),
	}
	for _, kind := range kinds {
		for _, o := range outcomes {
			m.runs.WithLabelValues(kind, o)
		}
	}
	return m
}

func (m *Jobs) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) (err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			// River recovers the panic and fails the attempt like an error: count it so, then let it go on.
			m.observe(job.Kind, failedOutcome(job), time.Since(start))
			panic(r)
		}
		m.observe(job.Kind, Outcome(ctx, job, err), time.Since(start))
	}()
	return doInner(ctx)
}

func (m *Jobs) observe(kind, outcome string, elapsed time.Duration) {
	m.runs.WithLabelValues(kind, outcome).Inc()
	m.duration.WithLabelValues(kind).Observe(elapsed.Seconds())
}

// Outcome is what River makes of a run of job that returned err; ctx is the job's context as the
// middleware got it (before the job's timeout was applied).
func Outcome(ctx context.Context, job *rivertype.JobRow, err error) string {
	var (
		snooze *rivertype.JobSnoozeError
		cancel *rivertype.JobCancelError
	)
	switch {
	case err == nil:
		return OutcomeCompleted
	case errors.As(err, &snooze):
		return OutcomeSnoozed
	case errors.As(err, &cancel):
		return OutcomeCancelled
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		// The context River gave the job was cancelled (the job's own timeout is applied further in, so
		// this is the client stopping): River puts the job back without counting the attempt.
		return OutcomeInterrupted
	}
	return failedOutcome(job)
}

func failedOutcome(job *rivertype.JobRow) string {
	if job.Attempt >= job.MaxAttempts {
		return OutcomeDiscarded
	}
	return OutcomeErrored
}

func (m *Jobs) Describe(ch chan<- *prometheus.Desc) {
	m.runs.Describe(ch)
	m.duration.Describe(ch)
}

func (m *Jobs) Collect(ch chan<- prometheus.Metric) {
	m.runs.Collect(ch)
	m.duration.Collect(ch)
}

var (
	_ rivertype.WorkerMiddleware = (*Jobs)(nil)
	_ prometheus.Collector       = (*Jobs)(nil)
)
