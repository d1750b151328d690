package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kratos-hooks/kratos-hooks/search"
)

// ReindexResult says what Reindex did.
type ReindexResult struct {
	// Index is the new versioned index the alias now points at; Previous are the ones it pointed at before
	// (kept, for a rollback, until deleted by hand or with --delete-old).
	Index    string
	Previous []string
	// Documents is how many profiles were written; CaughtUp how many changed while that ran and were
	// written again after the alias moved.
	Documents int64
	CaughtUp  int64
}

// reindexBatch is how many rows are read, and how many documents are written together, at a time.
const reindexBatch = 1000

// catchUpMargin reaches back before the start of a reindex for the catch-up pass. synced_at is the start
// time of the transaction that wrote a row, so a row committed during the reindex can carry a time from
// before it: this covers any transaction shorter than the margin (sync jobs time out long before).
const catchUpMargin = 10 * time.Minute

// Reindex projects every profile from Postgres into a new versioned index with the current mapping and moves
// the alias to it in one atomic step. The index workers go on writing through the alias meanwhile: changes
// that reach the old index during the load are written again into the new one by a catch-up pass after the
// alias has moved (external versions make the two writers commute). The test distribution has no _reindex,
// and Postgres is the source of truth anyway.
func Reindex(ctx context.Context, pool *pgxpool.Pool, index *search.Index, logger *slog.Logger) (res ReindexResult, err error) {
	var start time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&start); err != nil {
		return res, fmt.Errorf("read database clock: %w", err)
	}
	if res.Index, err = index.CreateNextVersion(ctx); err != nil {
		return res, err
	}
	logger.InfoContext(ctx, "reindex: filling new index", "index", res.Index)

	w, err := index.NewWriter(search.WriterOpts{Index: res.Index, FlushInterval: 50 * time.Millisecond, FlushBytes: 8 << 20, Logger: logger})
	if err != nil {
		return res, err
	}
	defer func() { _ = w.Close(context.WithoutCancel(ctx)) }()

	swapped := false
	defer func() {
		if err != nil && !swapped {
			// Nothing reads the half-filled index: drop it, so the next attempt starts clean.
			if delErr := index.DeleteIndex(context.WithoutCancel(ctx), res.Index); delErr != nil {
				err = errors.Join(err, delErr)
			}
		}
	}()

	if res.Documents, err = projectProfiles(ctx, pool, w, time.Time{}); err != nil {
		return res, err
	}
	if err = index.FinishLoad(ctx, res.Index); err != nil {
		return res, err
	}
	if res.Previous, err = index.SwapAlias(ctx, res.Index); err != nil {
		return res, err
	}
	swapped = true
	logger.InfoContext(ctx, "reindex: alias moved", "alias", index.Alias(), "index", res.Index, "previous", res.Previous)

	if res.CaughtUp, err = projectProfiles(ctx, pool, w, start.Add(-catchUpMargin)); err != nil {
		return res, fmt.Errorf("catch up after moving the alias: %w", err)
	}
	return res, nil
}

// projectProfiles writes the profiles changed since `since` (all live profiles when since is zero) through
// w, a batch at a time; a batch's documents share bulk requests. With a since, tombstones are deleted too.
func projectProfiles(ctx context.Context, pool *pgxpool.Pool, w *search.Writer, since time.Time) (int64, error) {
	var (
		after uuid.UUID
		total int64
	)
	for {
		batch, err := listProfiles(ctx, pool, after, since, reindexBatch)
		if err != nil {
			return total, err
		}
		if len(batch) == 0 {
			return total, nil
		}
		errs := make(chan error, len(batch))
		for _, p := range batch {
			go func() {
				var err error
				if p.DeletedAt != nil {
					_, err = w.Delete(ctx, p.IdentityID, p.Revision)
				} else {
					_, err = w.Put(ctx, DocumentFromProfile(p))
				}
				errs <- err
			}()
		}
		var batchErr error
		for range batch {
			batchErr = errors.Join(batchErr, <-errs)
		}
		if batchErr != nil {
			return total, batchErr
		}
		total += int64(len(batch))
		after = batch[len(batch)-1].IdentityID
	}
}

// listProfiles reads up to limit profiles after the given id, in id order: live ones only, or with a since,
// every row (tombstones included) written at or after it.
func listProfiles(ctx context.Context, q Querier, after uuid.UUID, since time.Time, limit int) ([]Profile, error) {
	rows, err := q.Query(ctx, `
SELECT identity_id, schema_id, state, traits, email, email_verified, phone, phone_verified, name, locale,
       attributes, created_at, revision, last_login_at, login_count, deleted_at
FROM profiles
WHERE identity_id > $1 AND CASE WHEN $2::timestamptz IS NULL THEN deleted_at IS NULL ELSE synced_at >= $2 END
ORDER BY identity_id
LIMIT $3`, after, nullTime(since), limit)
	if err != nil {
		return nil, fmt.Errorf("list profiles after %s: %w", after, err)
	}
	defer rows.Close()
	var out []Profile
	for rows.Next() {
		var p Profile
		if err := rows.Scan(&p.IdentityID, &p.SchemaID, &p.State, &p.Traits, &p.Email, &p.EmailVerified, &p.Phone,
			&p.PhoneVerified, &p.Name, &p.Locale, &p.Attributes, &p.CreatedAt, &p.Revision, &p.LastLoginAt,
			&p.LoginCount, &p.DeletedAt); err != nil {
			return nil, fmt.Errorf("list profiles after %s: %w", after, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list profiles after %s: %w", after, err)
	}
	return out, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
