package sync

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/search"
)

// QueueIndexBatch is the River queue of IndexBatchArgs. Each of its jobs writes many documents in a bulk
// request of its own, so few run at a time (IndexBatchWorkers): the documents of a backfill wait in the
// queue, not in Elasticsearch's write queue under their jobs' timeout.
const QueueIndexBatch = "index_batch"

// IndexBatchWorkers is how many IndexBatchArgs jobs a process works at once: with reconcile's pages of 500,
// up to 4 bulk requests of 500 documents in flight, enough to keep Elasticsearch writing while each job
// reads its rows.
const IndexBatchWorkers = 4

// IndexBatchArgs is IndexArgs for many profiles: each one's document is brought in step with its row, as an
// IndexArgs job does it. A reconcile pass enqueues one per page for the profiles it inserted and those whose
// documents it found missing or stale, so that a backfill costs a job and a row read per page rather than
// per profile.
type IndexBatchArgs struct {
	IdentityIDs []uuid.UUID `json:"identity_ids"`
}

func (IndexBatchArgs) Kind() string { return "index_profiles" }

func (IndexBatchArgs) InsertOpts() river.InsertOpts {
	// Not unique, as IndexArgs: a job already running may have read the rows before the change that
	// enqueued this one.
	return river.InsertOpts{Queue: QueueIndexBatch}
}

// IndexBatchWorker works IndexBatchArgs with an IndexWorker: it reads the rows in one query and writes each
// profile's document as the IndexWorker does (index at the revision, or delete a tombstone's document,
// decided from the row). A profile whose write fails is handed to an IndexArgs job of its own, with this
// job's metadata: that job retries it, or records why the index refuses it, as any index job does. The batch
// is done once every profile is written or handed on, so one document the index refuses, or a short
// outage, never holds back the others.
type IndexBatchWorker struct {
	river.WorkerDefaults[IndexBatchArgs]
	index *IndexWorker
}

// NewIndexBatchWorker returns a worker for IndexBatchArgs that writes with w (and has its timeout).
func NewIndexBatchWorker(w *IndexWorker) *IndexBatchWorker { return &IndexBatchWorker{index: w} }

var _ river.Worker[IndexBatchArgs] = (*IndexBatchWorker)(nil)

func (w *IndexBatchWorker) Timeout(*river.Job[IndexBatchArgs]) time.Duration { return w.index.timeout }

func (w *IndexBatchWorker) Work(ctx context.Context, job *river.Job[IndexBatchArgs]) error {
	// No row, no document: an id without a row is skipped, as IndexArgs skips it.
	profiles, err := GetProfiles(ctx, w.index.pool, job.Args.IdentityIDs)
	if err != nil {
		return err
	}
	// In one bulk request of their own, sent now: the batch is all there is to wait for.
	writes := make([]search.Write, len(profiles))
	for i, p := range profiles {
		writes[i] = writeOf(p)
	}
	outcomes, errs, err := w.index.writer.WriteMany(ctx, writes)
	if err != nil {
		// Nothing is known about any document: the whole batch again.
		return fmt.Errorf("index %d profiles: %w", len(profiles), err)
	}
	w.index.settle(ctx, profiles, outcomes, errs)

	var failed []uuid.UUID
	var firstErr error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, profiles[i].IdentityID)
			firstErr = cmp.Or(firstErr, err)
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case ctx.Err() != nil:
		// Out of time: the whole batch again (documents already written are refused as stale, harmlessly).
		return fmt.Errorf("index %d profiles: %d not written: %w", len(profiles), len(failed), firstErr)
	}
	return w.handOn(ctx, job, failed, firstErr)
}

// handOn enqueues an IndexArgs job for each id, with the batch job's priority, tags and metadata (a
// reconcile pass's --wait counts them).
func (w *IndexBatchWorker) handOn(ctx context.Context, job *river.Job[IndexBatchArgs], ids []uuid.UUID, cause error) error {
	client, err := river.ClientFromContextSafely[pgx.Tx](ctx)
	if err != nil {
		return fmt.Errorf("hand on %d profiles: %w", len(ids), err)
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: IndexArgs{IdentityID: id}, InsertOpts: &river.InsertOpts{
			Priority: job.Priority, Tags: job.Tags, Metadata: job.Metadata,
		}}
	}
	if _, err := client.InsertMany(ctx, params); err != nil {
		return fmt.Errorf("hand on %d profiles: %w", len(ids), err)
	}
	w.index.logger.WarnContext(ctx, "profiles of an index batch not written; each has an index job of its own now",
		"job_id", job.ID, "profiles", len(ids), "first_error", cause)
	return nil
}
