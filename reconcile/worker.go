package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// PassArgs runs one reconcile pass as a River job. `serve` schedules it as a periodic job when
// RECONCILE_INTERVAL is set: River's leader inserts it, and one worker runs it.
type PassArgs struct{}

func (PassArgs) Kind() string { return "reconcile_pass" }

func (PassArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue: profilesync.QueueMaintenance,
		// A failed pass (Kratos down) is tried again a few times; the schedule brings the next one anyway.
		MaxAttempts: 3,
		// At most one pass waits or runs at a time: a schedule shorter than a pass does not pile them up.
		// Finished passes do not count, so the next interval inserts a new one.
		UniqueOpts: river.UniqueOpts{ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
			rivertype.JobStateRetryable, rivertype.JobStateScheduled,
		}},
	}
}

// PassWorker works PassArgs: one pass, under the same lock as `kratos-hooks reconcile`.
type PassWorker struct {
	river.WorkerDefaults[PassArgs]
	opts    Opts
	timeout time.Duration
}

// NewPassWorker returns a worker that runs passes with opts (its Jobs is the River client working the job)
// and gives each pass timeout. River's default job timeout (1 minute) is far too short for a pass; the
// rescuer leaves a running job alone for its own timeout, so a long timeout here does not make a pass look
// stuck.
func NewPassWorker(opts Opts, timeout time.Duration) *PassWorker {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &PassWorker{opts: opts, timeout: timeout}
}

func (w *PassWorker) Timeout(*river.Job[PassArgs]) time.Duration { return w.timeout }

func (w *PassWorker) Work(ctx context.Context, job *river.Job[PassArgs]) error {
	opts := w.opts
	opts.Jobs = river.ClientFromContext[pgx.Tx](ctx)
	opts.DryRun = false
	opts.WaitForLock = 0
	opts.ProgressFunc = nil
	_, err := Run(ctx, opts)
	var guard *MassDeleteError
	switch {
	case errors.Is(err, ErrLocked):
		// A pass started by hand (or a slow earlier one) is doing the work already.
		w.opts.Logger.InfoContext(ctx, "scheduled reconcile pass skipped", "reason", err.Error())
		return nil
	case errors.As(err, &guard):
		// Trying again finds the same: a person must look (and run `reconcile --allow-mass-delete`). River
		// logs a cancelled job at debug level only, so it is said here, once.
		w.opts.Logger.ErrorContext(ctx, "scheduled reconcile pass stopped", "error", err.Error())
		return river.JobCancel(err)
	}
	return err
}

var _ river.Worker[PassArgs] = (*PassWorker)(nil)
