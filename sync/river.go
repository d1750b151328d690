package sync

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// RetryPolicy backs off exponentially from Base up to Max, with ±10 % jitter so that jobs that failed
// together (an outage) do not all come back in the same instant.
//
// River's default (attempt⁴ seconds) waits minutes after a few failures; this one keeps retrying every Max
// once it gets there, so sync resumes within Max of a dependency coming back.
type RetryPolicy struct {
	Base time.Duration
	Max  time.Duration
}

func (p RetryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	return time.Now().Add(p.Delay(job.Attempt))
}

// Delay is the wait before retrying after the given attempt (1-based) failed.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	d := p.Max
	if shift := attempt - 1; shift < 32 {
		if exp := p.Base << max(shift, 0); exp > 0 && exp < p.Max {
			d = exp
		}
	}
	jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
	return d + jitter
}

var _ river.ClientRetryPolicy = RetryPolicy{}

// QueueMaintenance is the queue of housekeeping jobs (event cleanup, scheduled reconcile).
const QueueMaintenance = "maintenance"

// EventCleanupArgs deletes hook events older than the retention period. It runs as a periodic job.
type EventCleanupArgs struct{}

func (EventCleanupArgs) Kind() string { return "cleanup_events" }

func (EventCleanupArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, UniqueOpts: river.UniqueOpts{ByPeriod: time.Hour}}
}

// EventCleanupWorker works EventCleanupArgs.
type EventCleanupWorker struct {
	river.WorkerDefaults[EventCleanupArgs]
	Pool      *pgxpool.Pool
	Retention time.Duration
	Logger    *slog.Logger
}

func (w *EventCleanupWorker) Work(ctx context.Context, _ *river.Job[EventCleanupArgs]) error {
	n, err := DeleteEventsBefore(ctx, w.Pool, time.Now().Add(-w.Retention))
	if err != nil {
		return fmt.Errorf("clean up events: %w", err)
	}
	if n > 0 {
		w.Logger.InfoContext(ctx, "deleted old hook events", "count", n, "retention", w.Retention.String())
	}
	return nil
}
