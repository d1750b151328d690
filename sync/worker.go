package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

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
	// Timeout bounds one job: the Kratos read and the database write. Default 30 s.
	Timeout time.Duration
	// IndexProfiles enqueues an index job (IndexArgs) with every profile change: on when the search
	// projection is.
	IndexProfiles bool
	// ObserveLagFunc, if set, is given the time from an event's receipt to the commit of its profile write,
	// once per event (the first job that applies it).
	ObserveLagFunc func(lag time.Duration)
}

// IdentityWorker works IdentityArgs.
//
// Concurrent jobs for one identity are serialised by a transaction-scoped advisory lock on the identity id,
// taken before Kratos is read and held until the profile write commits. A job that reads Kratos later
// therefore also writes later, and an older read can never overwrite a newer one, without needing a version
// from Kratos (v1.3.1 has none: updated_at does not move when traits change).
type IdentityWorker struct {
	river.WorkerDefaults[IdentityArgs]

	pool    *pgxpool.Pool
	kratos  *kratos.Client
	mapper  Mapper
	logger  *slog.Logger
	timeout time.Duration
	index   bool
	lag     func(time.Duration)

	// Test seams: afterRead runs between the Kratos read and the database write; unserialized turns the
	// identity lock off, to show in a test that it is what keeps the newest state.
	afterRead    func(ctx context.Context, job *river.Job[IdentityArgs])
	unserialized bool
}

// NewIdentityWorker returns a worker for IdentityArgs.
func NewIdentityWorker(opts IdentityWorkerOpts) *IdentityWorker {
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	return &IdentityWorker{
		pool:    opts.Pool,
		kratos:  opts.Kratos,
		mapper:  opts.Mapper,
		logger:  opts.Logger,
		timeout: opts.Timeout,
		index:   opts.IndexProfiles,
		lag:     opts.ObserveLagFunc,
	}
}

func (w *IdentityWorker) Timeout(*river.Job[IdentityArgs]) time.Duration { return w.timeout }

// identityLockClass namespaces the identity locks among other advisory locks (two-int form).
const identityLockClass = 0x6b68 // "kh"

func (w *IdentityWorker) Work(ctx context.Context, job *river.Job[IdentityArgs]) error {
	id := job.Args.IdentityID
	if id == uuid.Nil {
		// The pre-persist nil UUID is never a sync target; the hooks refuse it, so this is a bad job.
		return river.JobCancel(errors.New("job has the nil identity id"))
	}

	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin sync of %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if !w.unserialized {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, identityLockClass, id.String()); err != nil {
			return fmt.Errorf("lock identity %s: %w", id, err)
		}
	}

	ident, readErr := w.kratos.GetIdentity(ctx, id)
	if w.afterRead != nil {
		w.afterRead(ctx, job)
	}

	var write Write
	switch {
	case errors.Is(readErr, kratos.ErrNotFound):
		// Kratos commits an identity before any post-persist hook runs, so a 404 for an id we were told
		// about means it was deleted.
		if write, err = TombstoneProfile(ctx, tx, id); err != nil {
			return err
		}
		if write.Changed {
			w.logger.InfoContext(ctx, "identity deleted in kratos; profile tombstoned", "identity_id", id, "revision", write.Revision)
		}
	case readErr != nil:
		// Kratos unreachable or failing: River retries with backoff.
		return fmt.Errorf("read identity %s from kratos: %w", id, readErr)
	default:
		profile, err := ProfileFromIdentity(ident, w.mapper)
		var mappingErr *jsonnet.MappingError
		if errors.As(err, &mappingErr) {
			// Trying again gives the same result: fail this job for good, with the error on record.
			return river.JobCancel(err)
		}
		if err != nil {
			return err
		}
		if write, err = UpsertProfile(ctx, tx, profile); err != nil {
			return err
		}
	}

	var received time.Time // of the event this job applies first, if any
	if job.Args.Event != nil {
		ev, first, err := markEventApplied(ctx, tx, *job.Args.Event)
		if err != nil {
			return err
		}
		if first {
			received = ev.ReceivedAt
		}
		if first && job.Args.Event.Hook == HookLoginAfter && readErr == nil {
			at := ev.ReceivedAt
			if ev.OccurredAt != nil {
				at = *ev.OccurredAt
			}
			login, err := RecordLogin(ctx, tx, id, at)
			if err != nil {
				return err
			}
			write = later(write, login)
		}
	}

	// The search document follows the row: its index job commits with the write, or neither happens.
	if write.Changed && w.index {
		if err := enqueueIndex(ctx, tx, id); err != nil {
			return err
		}
	}

	// Complete the job in the same transaction as the write: the job is done if and only if the write is.
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return fmt.Errorf("complete sync job of %s: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit sync of %s: %w", id, err)
	}
	if w.lag != nil && !received.IsZero() {
		w.lag(time.Since(received))
	}
	w.logger.DebugContext(ctx, "identity synced", "identity_id", id, "changed", write.Changed, "revision", write.Revision)
	return nil
}

var _ river.Worker[IdentityArgs] = (*IdentityWorker)(nil)
