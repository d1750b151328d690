package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LockID is the key of the session advisory lock a pass holds for its whole duration ("khreconc"). An
// operator can see it in pg_locks, or hold it to keep passes from running:
// SELECT pg_advisory_lock(7739561739421707875).
const LockID int64 = 0x6b68_7265_636f_6e63

// ErrLocked means another pass holds the reconcile lock.
var ErrLocked = errors.New("another reconcile pass is running")

// LockedError is ErrLocked with what Postgres knows about the holder.
type LockedError struct {
	// Holder describes the session that holds the lock ("" when it ended in the meantime).
	Holder string
	Waited time.Duration
}

func (e *LockedError) Error() string {
	msg := ErrLocked.Error()
	if e.Holder != "" {
		msg += " (" + e.Holder + ")"
	}
	if e.Waited > 0 {
		msg += fmt.Sprintf("; waited %s for it", e.Waited)
	}
	return msg
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// acquireLock takes the reconcile lock on a connection of its own, taken out of the pool: the lock lives as
// long as that session, so it must be one connection for the whole pass (behind PgBouncer, session
// pooling). releaseLock gives it back.
func acquireLock(ctx context.Context, pool *pgxpool.Pool, wait time.Duration) (*pgx.Conn, error) {
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect for the reconcile lock: %w", err)
	}
	conn := pc.Hijack()
	release := func() { _ = conn.Close(context.WithoutCancel(ctx)) }

	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, LockID).Scan(&locked); err != nil {
		release()
		return nil, fmt.Errorf("take the reconcile lock: %w", err)
	}
	if locked {
		return conn, nil
	}
	holder := lockHolder(ctx, conn)
	if wait <= 0 {
		release()
		return nil, &LockedError{Holder: holder}
	}

	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	_, err = conn.Exec(waitCtx, `SELECT pg_advisory_lock($1)`, LockID)
	if err == nil {
		return conn, nil
	}
	release()
	if ctx.Err() == nil && waitCtx.Err() != nil {
		return nil, &LockedError{Holder: holder, Waited: wait}
	}
	return nil, fmt.Errorf("wait for the reconcile lock: %w", err)
}

// lockHolder describes the session holding the lock, for the error message.
func lockHolder(ctx context.Context, conn *pgx.Conn) string {
	var pid int
	var app string
	var since time.Time
	err := conn.QueryRow(ctx, `
SELECT a.pid, a.application_name, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1
LIMIT 1`, LockID).Scan(&pid, &app, &since)
	if err != nil {
		return ""
	}
	if app == "" {
		app = "unnamed client"
	}
	return fmt.Sprintf("Postgres backend %d, %s, connected since %s", pid, app, since.UTC().Format(time.RFC3339))
}

// releaseLock unlocks and closes the lock's connection. Closing alone would release the lock too, but only
// once the server has noticed, which a pass started right after could still lose the race against.
func releaseLock(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, LockID)
	_ = conn.Close(ctx)
}
