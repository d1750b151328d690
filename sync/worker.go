package sync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// QueueIdentity is the River queue of identity sync jobs.
const QueueIdentity = "identity"

// IdentityArgs asks for one identity's profile to be brought in step with Kratos. It carries the identity id
// and the event that caused it, never a copy of the identity: the event is a hint, Kratos is the truth, and
// the worker reads the current identity when it runs.
type IdentityArgs struct {
	IdentityID uuid.UUID `json:"identity_id"`
	// Event is the webhook delivery that caused the job; nil for a repair (reconcile).
	Event *EventKey `json:"event,omitempty"`
}

func (IdentityArgs) Kind() string { return "sync_identity" }

func (IdentityArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueIdentity}
}

// IdentityWorkerOpts configures an IdentityWorker.
type IdentityWorkerOpts struct {
	Pool   *pgxpool.Pool
	Kratos *kratos.Client
	Mapper Mapper
	Logger *slog.Logger
	// Timeout bounds one job: the wait for its batch, the Kratos read and the database write. Default 30 s.
	Timeout time.Duration
	// IndexProfiles enqueues an index job (IndexArgs) with every profile change: on when the search
	// projection is.
	IndexProfiles bool
	// BatchSize is the most jobs synced together, in one transaction and one Kratos request; 1 to
	// kratos.MaxIDsPerList. Default kratos.MaxIDsPerList.
	BatchSize int
	// Batches is how many batches may be in flight at once; each holds a database connection while it reads
	// Kratos and writes. Default 4.
	Batches int
	// ObserveLagFunc, if set, is given the time from an event's receipt to the commit of its profile write,
	// once per event (the first job that applies it).
	ObserveLagFunc func(lag time.Duration)
}

// IdentityWorker works IdentityArgs, in batches: the jobs River runs at the same time are synced together,
// up to BatchSize of them in one transaction, with one Kratos request for all their identities (the admin
// list filtered by id). A job that arrives while Batches batches are in flight waits for one to finish and
// goes with the next; a job that arrives on an idle worker goes at once, on its own. Most of a sync's cost
// is per statement and per request, not per identity, so a burst costs a fraction of one job at a time.
//
// Concurrent jobs for one identity are serialised by a transaction-scoped advisory lock on the identity id,
// taken before Kratos is read and held until the profile write commits. A job that reads Kratos later
// therefore also writes later, and an older read can never overwrite a newer one, without needing a version
// from Kratos (v1.3.1 has none: updated_at does not move when traits change). A batch takes the locks of all
// its identities, in one order every batch follows (so two batches cannot deadlock), before its read.
//
// Each job is completed in the transaction that writes its profile (completeJobsTx: what river.JobCompleteTx
// does, for the whole batch in one statement): a job is never done without its write.
type IdentityWorker struct {
	river.WorkerDefaults[IdentityArgs]

	pool    *pgxpool.Pool
	kratos  *kratos.Client
	mapper  Mapper
	logger  *slog.Logger
	timeout time.Duration
	index   bool
	batches *group[*syncCall]
	lag     func(time.Duration)

	// Test seams: afterRead runs between the Kratos read and the database write, once per job;
	// unserialized turns the identity lock off, to show in a test that it is what keeps the newest state.
	afterRead    func(ctx context.Context, job *river.Job[IdentityArgs])
	unserialized bool
}

// NewIdentityWorker returns a worker for IdentityArgs.
func NewIdentityWorker(opts IdentityWorkerOpts) *IdentityWorker {
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.BatchSize <= 0 || opts.BatchSize > kratos.MaxIDsPerList {
		opts.BatchSize = kratos.MaxIDsPerList
	}
	if opts.Batches <= 0 {
		opts.Batches = 4
	}
	w := &IdentityWorker{
		pool:    opts.Pool,
		kratos:  opts.Kratos,
		mapper:  opts.Mapper,
		logger:  opts.Logger,
		timeout: opts.Timeout,
		index:   opts.IndexProfiles,
		lag:     opts.ObserveLagFunc,
	}
	w.batches = newGroup(opts.BatchSize, opts.Batches, w.syncBatch)
	return w
}

func (w *IdentityWorker) Timeout(*river.Job[IdentityArgs]) time.Duration { return w.timeout }

// identityLockClass namespaces the identity locks among other advisory locks (two-int form).
const identityLockClass = 0x6b68 // "kh"

func (w *IdentityWorker) Work(ctx context.Context, job *river.Job[IdentityArgs]) error {
	if job.Args.IdentityID == uuid.Nil {
		// The pre-persist nil UUID is never a sync target; the hooks refuse it, so this is a bad job.
		return river.JobCancel(errors.New("job has the nil identity id"))
	}
	return syncInBatch(ctx, w.batches, job)
}

var _ river.Worker[IdentityArgs] = (*IdentityWorker)(nil)

// syncBatch syncs a batch and answers each of its jobs. If the batch fails after Kratos answered (a
// database error), each half is tried again at once, down to single jobs, so that a job that cannot be
// written fails only itself, after a few transactions rather than one per job of the batch.
func (w *IdentityWorker) syncBatch(batch []*syncCall) {
	// A job whose caller gave up (its timeout passed while it waited) has returned already, and River will
	// retry it: leave it out.
	batch = slices.DeleteFunc(batch, func(j *syncCall) bool { return j.ctx.Err() != nil })
	if len(batch) == 0 {
		return
	}
	results, err := w.sync(batch)
	var writeErr *batchWriteError
	if errors.As(err, &writeErr) && len(batch) > 1 {
		w.logger.WarnContext(batch[0].ctx, "batch sync failed; trying each half again", "jobs", len(batch), "error", writeErr.err)
		w.syncBatch(batch[:len(batch)/2])
		w.syncBatch(batch[len(batch)/2:])
		return
	}
	for _, j := range batch {
		if err != nil {
			j.answer(err)
		} else {
			j.answer(results[j])
		}
	}
}

// batchWriteError is a failure after Kratos was read: one job's write may be the cause.
type batchWriteError struct{ err error }

func (e *batchWriteError) Error() string { return e.err.Error() }
func (e *batchWriteError) Unwrap() error { return e.err }

// sync syncs the batch's identities in one transaction. It returns each job's outcome (nil, or a
// river.JobCancel for an identity the mapping refuses), or one error for the whole batch, which then
// wrote nothing.
func (w *IdentityWorker) sync(batch []*syncCall) (map[*syncCall]error, error) {
	// The batch serves many jobs, so no one job's cancellation may end it; it has its own deadline, and it
	// keeps the first job's context values (the River client is one of them).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), w.timeout)
	defer cancel()

	ids := make([]uuid.UUID, 0, len(batch))
	for _, j := range batch {
		ids = append(ids, j.job.Args.IdentityID)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	ids = slices.Compact(ids)

	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin sync of %d identities: %w", len(ids), err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if !w.unserialized {
		if err := lockIdentities(ctx, tx, ids); err != nil {
			return nil, err
		}
	}

	idents, err := w.kratos.GetIdentities(ctx, ids)
	if err != nil {
		// Kratos unreachable or failing: River retries with backoff.
		return nil, fmt.Errorf("read %d identities from kratos: %w", len(ids), err)
	}
	if w.afterRead != nil {
		for _, j := range batch {
			w.afterRead(j.ctx, j.job)
		}
	}

	// Map every identity Kratos returned in one evaluation of the mapping: what an evaluation costs beyond
	// the mapping itself (the interpreter and its standard library) is paid once per batch.
	present := make([]*kratos.Identity, 0, len(idents))
	for _, id := range ids {
		if ident, ok := idents[id]; ok {
			present = append(present, ident)
		}
	}
	mapped, mapErrs := ProfilesFromIdentities(present, w.mapper)
	profiles := make(map[uuid.UUID]int, len(present)) // index into mapped and mapErrs
	for i, ident := range present {
		profiles[ident.ID] = i
	}

	// The batch's writes go to Postgres together, in two round trips (runAll) rather than one per statement:
	// first every profile write and every event marked applied, then the logins of the events applied first.
	results := make(map[*syncCall]error, len(batch))
	writes := make(map[uuid.UUID]*Write, len(ids))
	var stmts []statement
	var tombstoned []uuid.UUID
	for _, id := range ids {
		write := new(Write)
		at, found := profiles[id]
		if !found {
			// Kratos commits an identity before any post-persist hook runs, so an id we were told about that
			// Kratos does not have was deleted.
			writes[id], tombstoned = write, append(tombstoned, id)
			stmts = append(stmts, tombstoneProfile(id, write))
			continue
		}
		profile, err := mapped[at], mapErrs[at]
		var mappingErr *jsonnet.MappingError
		if errors.As(err, &mappingErr) {
			// Trying again gives the same result: fail this identity's jobs for good, with the error on
			// record. They are left out of the transaction.
			for _, j := range batch {
				if j.job.Args.IdentityID == id {
					results[j] = river.JobCancel(err)
				}
			}
			continue
		}
		if err != nil {
			return nil, &batchWriteError{err}
		}
		writes[id] = write
		stmts = append(stmts, upsertProfile(profile, write))
	}
	type event struct {
		applied appliedEvent
		first   bool
	}
	events := make(map[*syncCall]*event)
	var completed []*syncCall
	for _, j := range batch {
		if _, cancelled := results[j]; cancelled {
			continue
		}
		if key := j.job.Args.Event; key != nil {
			ev := new(event)
			events[j] = ev
			stmts = append(stmts, markEventApplied(*key, &ev.applied, &ev.first))
		}
		completed = append(completed, j)
	}
	if err := runAll(ctx, tx, stmts); err != nil {
		return nil, &batchWriteError{err}
	}
	for _, id := range tombstoned {
		if write := writes[id]; write.Changed {
			w.logger.InfoContext(ctx, "identity deleted in kratos; profile tombstoned", "identity_id", id, "revision", write.Revision)
		}
	}

	stmts = stmts[:0]
	var received []time.Time // of the events this batch applies first
	logins := make(map[uuid.UUID][]*Write)
	for _, j := range completed {
		ev := events[j]
		if ev == nil || !ev.first {
			continue
		}
		received = append(received, ev.applied.ReceivedAt)
		id := j.job.Args.IdentityID
		if _, found := idents[id]; found && j.job.Args.Event.Hook == HookLoginAfter {
			at := ev.applied.ReceivedAt
			if ev.applied.OccurredAt != nil {
				at = *ev.applied.OccurredAt
			}
			login := new(Write)
			logins[id] = append(logins[id], login)
			stmts = append(stmts, recordLogin(id, at, login))
		}
	}
	if err := runAll(ctx, tx, stmts); err != nil {
		return nil, &batchWriteError{err}
	}
	for id, ls := range logins {
		for _, login := range ls {
			*writes[id] = later(*writes[id], *login)
		}
	}

	// The search documents follow the rows: their index jobs commit with the writes, or neither happens.
	if w.index {
		var changed []uuid.UUID
		for _, id := range ids {
			if write := writes[id]; write != nil && write.Changed {
				changed = append(changed, id)
			}
		}
		if err := enqueueIndex(ctx, tx, changed); err != nil {
			return nil, &batchWriteError{err}
		}
	}

	// Complete each job in the same transaction as its write: a job is never done without its write.
	jobs := make([]*river.Job[IdentityArgs], len(completed))
	for i, j := range completed {
		jobs[i] = j.job
		results[j] = nil
	}
	if err := completeJobsTx(ctx, tx, jobs); err != nil {
		return nil, &batchWriteError{err}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, &batchWriteError{fmt.Errorf("commit sync of %d identities: %w", len(ids), err)}
	}
	if w.lag != nil {
		for _, at := range received {
			w.lag(time.Since(at))
		}
	}
	for _, id := range ids {
		if write, ok := writes[id]; ok {
			w.logger.DebugContext(ctx, "identity synced", "identity_id", id, "changed", write.Changed, "revision", write.Revision)
		}
	}
	return results, nil
}

// lockIdentities takes the identity locks of ids in tx, in the order of their lock keys, which every
// batch follows: two batches that share identities wait for each other instead of deadlocking.
func lockIdentities(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error {
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	_, err := tx.Exec(ctx, `
SELECT count(pg_advisory_xact_lock($1, key))
FROM (SELECT DISTINCT hashtext(id) AS key FROM unnest($2::text[]) AS id ORDER BY key) AS keys`,
		identityLockClass, strs)
	if err != nil {
		return fmt.Errorf("lock %d identities: %w", len(ids), err)
	}
	return nil
}
