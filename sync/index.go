package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/search"
)

// QueueIndex is the River queue of search index jobs. Its MaxWorkers caps how many documents can wait for
// one bulk request at once: size it for batches, not for CPU (a waiting job costs a goroutine).
const QueueIndex = "index"

// IndexArgs asks for one profile's search document to be brought in step with its row. Like IdentityArgs it
// carries only the id: the worker reads the current row, so a late or replayed job writes today's state.
type IndexArgs struct {
	IdentityID uuid.UUID `json:"identity_id"`
}

func (IndexArgs) Kind() string { return "index_profile" }

func (IndexArgs) InsertOpts() river.InsertOpts {
	// Not unique: a job already running may have read the row before the change that enqueued this one, and
	// a duplicate costs one refused (stale) write at most.
	return river.InsertOpts{Queue: QueueIndex}
}

// enqueueIndex inserts the index jobs of ids in tx, from inside a running job (the River client is in ctx).
func enqueueIndex(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	client, err := river.ClientFromContextSafely[pgx.Tx](ctx)
	if err != nil {
		return fmt.Errorf("enqueue index of %d profiles: %w", len(ids), err)
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: IndexArgs{IdentityID: id}}
	}
	if _, err := client.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue index of %d profiles: %w", len(ids), err)
	}
	return nil
}

// IndexWorkerOpts configures an IndexWorker.
type IndexWorkerOpts struct {
	Pool *pgxpool.Pool
	// Index is the profiles index; Writer is the bulk writer all index jobs share.
	Index  *search.Index
	Writer *search.Writer
	Logger *slog.Logger
	// Timeout bounds one job: the row read and the wait for its bulk request. Default 30 s.
	Timeout time.Duration
	// ObserveLagFunc, if set, is given the time from the profile row's write (its synced_at) to
	// Elasticsearch's acknowledgement of the document written from it.
	ObserveLagFunc func(lag time.Duration)
}

// IndexWorker works IndexArgs: it reads the profile row and writes it to the index with its revision as
// the external version, or deletes it there when the row is a tombstone.
//
// Index or delete is decided from the row, never from the job: Elasticsearch remembers an external-version
// delete only for index.gc_deletes (60 s), so a job that said "index" and ran after a deletion would bring
// the document back once that time has passed.
type IndexWorker struct {
	river.WorkerDefaults[IndexArgs]

	pool    *pgxpool.Pool
	index   *search.Index
	writer  *search.Writer
	logger  *slog.Logger
	timeout time.Duration
	lag     func(time.Duration)
}

// NewIndexWorker returns a worker for IndexArgs.
func NewIndexWorker(opts IndexWorkerOpts) *IndexWorker {
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	return &IndexWorker{pool: opts.Pool, index: opts.Index, writer: opts.Writer, logger: opts.Logger, timeout: opts.Timeout,
		lag: opts.ObserveLagFunc}
}

func (w *IndexWorker) Timeout(*river.Job[IndexArgs]) time.Duration { return w.timeout }

func (w *IndexWorker) Work(ctx context.Context, job *river.Job[IndexArgs]) error {
	id := job.Args.IdentityID
	p, err := GetProfile(ctx, w.pool, id)
	if errors.Is(err, pgx.ErrNoRows) {
		// No row, no document: nothing was ever synced for this id.
		w.logger.DebugContext(ctx, "no profile to index", "identity_id", id)
		return nil
	}
	if err != nil {
		return err
	}

	outcome, err := w.write(ctx, p)
	var itemErr *search.ItemError
	switch {
	case errors.Is(err, search.ErrNoAlias):
		// The index was never made (serve started while Elasticsearch was down) or was deleted by hand. Make
		// it now; this job's retry writes the document.
		res, ensureErr := w.index.Ensure(ctx)
		if ensureErr != nil {
			return errors.Join(err, ensureErr)
		}
		w.logger.InfoContext(ctx, "search index was missing; created it", "index", res.Index, "alias", w.index.Alias())
		return err
	case errors.As(err, &itemErr) && itemErr.Permanent():
		// The mapping cannot take this document; sending it again gives the same answer. Keep the error on
		// record; a mapping fix and `kratos-hooks reindex` repair it.
		return river.JobCancel(err)
	case err != nil:
		return err
	}
	w.logger.DebugContext(ctx, "profile indexed", "identity_id", id, "revision", p.Revision,
		"deleted", p.DeletedAt != nil, "outcome", outcome.String())
	return nil
}

var _ river.Worker[IndexArgs] = (*IndexWorker)(nil)

// write brings p's document in step with p: it indexes a live profile at its revision, or deletes a
// tombstone's document, through the shared writer. A document written is reported to ObserveLagFunc.
func (w *IndexWorker) write(ctx context.Context, p Profile) (search.Outcome, error) {
	outcomes, errs := make([]search.Outcome, 1), make([]error, 1)
	if wr := writeOf(p); wr.Doc != nil {
		outcomes[0], errs[0] = w.writer.Put(ctx, *wr.Doc)
	} else {
		outcomes[0], errs[0] = w.writer.Delete(ctx, wr.ID, wr.Revision)
	}
	w.settle(ctx, []Profile{p}, outcomes, errs)
	return outcomes[0], errs[0]
}

// settle completes the writes of profiles' documents, which Elasticsearch answered with outcomes[i] (or
// errs[i]), updating both in place. A live profile's document refused as stale usually lost to a newer
// revision, and there is nothing to do. But when there is no document at all, what holds the higher version
// is a delete this service did not make (by hand, with internal versioning, which bumps the version):
// Elasticsearch keeps it for index.gc_deletes and refuses the profile's own revision until then. The
// revision is then raised past it (a revision may grow without a content change), so that the document
// comes back now. The stale documents are looked up in one request. A written one ends its sync lag.
func (w *IndexWorker) settle(ctx context.Context, profiles []Profile, outcomes []search.Outcome, errs []error) {
	refusedAsStale := func(i int) bool {
		return errs[i] == nil && outcomes[i] == search.Stale && profiles[i].DeletedAt == nil
	}
	var stale []uuid.UUID
	for i, p := range profiles {
		if refusedAsStale(i) {
			stale = append(stale, p.IdentityID)
		}
	}
	var versions map[uuid.UUID]int64
	var lookupErr error
	if len(stale) > 0 {
		versions, lookupErr = w.index.DocumentVersions(ctx, stale)
	}
	var wg sync.WaitGroup
	for i, p := range profiles {
		if _, found := versions[p.IdentityID]; refusedAsStale(i) && !found {
			if lookupErr != nil {
				errs[i] = lookupErr
				continue
			}
			wg.Go(func() {
				outcomes[i], errs[i] = w.raisePastForeignDelete(ctx, p)
				w.observeLag(p, outcomes[i], errs[i])
			})
			continue
		}
		w.observeLag(p, outcomes[i], errs[i])
	}
	wg.Wait()
}

// observeLag ends p's sync lag when its document was written.
func (w *IndexWorker) observeLag(p Profile, outcome search.Outcome, err error) {
	if err == nil && outcome == search.Written && w.lag != nil {
		w.lag(time.Since(p.SyncedAt))
	}
}

// writeOf is the write that brings p's document in step with p.
func writeOf(p Profile) search.Write {
	wr := search.Write{ID: p.IdentityID, Revision: p.Revision}
	if p.DeletedAt == nil {
		doc := DocumentFromProfile(p)
		wr.Doc = &doc
	}
	return wr
}

// raisePastForeignDelete raises p's revision past a foreign delete that holds its document back, and
// writes the document at the new revision.
func (w *IndexWorker) raisePastForeignDelete(ctx context.Context, p Profile) (search.Outcome, error) {
	for range 3 {
		rev, ok, err := bumpRevision(ctx, w.pool, p.IdentityID, p.Revision)
		if err != nil || !ok {
			// !ok: the row changed meanwhile, and the job its change enqueued writes it.
			return search.Stale, err
		}
		p.Revision = rev
		outcome, err := w.writer.Put(ctx, DocumentFromProfile(p))
		if err != nil || outcome != search.Stale {
			return outcome, err
		}
	}
	return 0, fmt.Errorf("document of %s is held back by a delete at a higher version; trying again later", p.IdentityID)
}

// DocumentFromProfile is the search document of a profile row (not a tombstone: those are deleted).
func DocumentFromProfile(p Profile) search.Document {
	return search.Document{
		IdentityID:    p.IdentityID,
		SchemaID:      p.SchemaID,
		State:         p.State,
		Email:         p.Email,
		EmailVerified: p.EmailVerified,
		Phone:         p.Phone,
		PhoneVerified: p.PhoneVerified,
		Name:          p.Name,
		Locale:        p.Locale,
		Attributes:    p.Attributes,
		Traits:        p.Traits,
		CreatedAt:     p.CreatedAt,
		LastLoginAt:   p.LastLoginAt,
		LoginCount:    p.LoginCount,
		Revision:      p.Revision,
	}
}
