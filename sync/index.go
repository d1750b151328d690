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
// tombstone's document. A document written is reported to ObserveLagFunc.
func (w *IndexWorker) write(ctx context.Context, p Profile) (search.Outcome, error) {
	var outcome search.Outcome
	var err error
	if p.DeletedAt != nil {
		outcome, err = w.writer.Delete(ctx, p.IdentityID, p.Revision)
	} else {
		outcome, err = w.writer.Put(ctx, DocumentFromProfile(p))
	}
	return w.settle(ctx, p, outcome, err)
}

// settle completes the write of p's document, which Elasticsearch answered with outcome (or err): a
// document refused as stale may be held back by a foreign delete, and a written one ends the sync lag.
func (w *IndexWorker) settle(ctx context.Context, p Profile, outcome search.Outcome, err error) (search.Outcome, error) {
	if err == nil && outcome == search.Stale && p.DeletedAt == nil {
		outcome, err = w.overtakeForeignDelete(ctx, p)
	}
	w.observeLag(p, outcome, err)
	return outcome, err
}

// observeLag ends p's sync lag when its document was written.
func (w *IndexWorker) observeLag(p Profile, outcome search.Outcome, err error) {
	if err == nil && outcome == search.Written && w.lag != nil {
		w.lag(time.Since(p.SyncedAt))
	}
}

// settleMany is settle for a batch's answers (outcomes[i] and errs[i] for profiles[i], updated in place):
// the documents refused as stale are looked up in one request, and those a foreign delete holds back are
// raised past it at the same time.
func (w *IndexWorker) settleMany(ctx context.Context, profiles []Profile, outcomes []search.Outcome, errs []error) {
	var stale []uuid.UUID
	for i, p := range profiles {
		if errs[i] == nil && outcomes[i] == search.Stale && p.DeletedAt == nil {
			stale = append(stale, p.IdentityID)
		}
	}
	var versions map[uuid.UUID]int64
	if len(stale) > 0 {
		var err error
		if versions, err = w.index.DocumentVersions(ctx, stale); err != nil {
			for i, p := range profiles {
				if errs[i] == nil && outcomes[i] == search.Stale && p.DeletedAt == nil {
					errs[i] = err
				}
			}
		}
	}
	var wg sync.WaitGroup
	for i, p := range profiles {
		if errs[i] != nil {
			continue
		}
		if _, found := versions[p.IdentityID]; outcomes[i] == search.Stale && p.DeletedAt == nil && !found {
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

// writeOf is the write that brings p's document in step with p.
func writeOf(p Profile) search.Write {
	wr := search.Write{ID: p.IdentityID, Revision: p.Revision}
	if p.DeletedAt == nil {
		doc := DocumentFromProfile(p)
		wr.Doc = &doc
	}
	return wr
}

// overtakeForeignDelete handles a Put refused as stale. Usually a newer revision got there first, and there
// is nothing to do. But when there is no document at all, what holds the higher version is a delete this
// service did not make (by hand, with internal versioning, which bumps the version): Elasticsearch keeps it
// for index.gc_deletes and refuses the profile's own revision until then. The revision is then raised past
// it (a revision may grow without a content change), so that the document comes back now.
func (w *IndexWorker) overtakeForeignDelete(ctx context.Context, p Profile) (search.Outcome, error) {
	versions, err := w.index.DocumentVersions(ctx, []uuid.UUID{p.IdentityID})
	if err != nil {
		return 0, err
	}
	if _, found := versions[p.IdentityID]; found {
		return search.Stale, nil
	}
	return w.raisePastForeignDelete(ctx, p)
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
