package invites

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// SettleArgs settles stale invite reservations and prunes old failed code checks. It runs as a periodic
// job.
type SettleArgs struct{}

func (SettleArgs) Kind() string { return "settle_invites" }

// SettleWorker works SettleArgs.
type SettleWorker struct {
	river.WorkerDefaults[SettleArgs]
	Pool   *pgxpool.Pool
	Kratos *kratos.Client
	// ReservationTimeout is how long a reservation waits for the post-persist hook.
	ReservationTimeout time.Duration
	// GuessWindow is the guess limiter's window: failed checks older than it are deleted.
	GuessWindow time.Duration
	Logger      *slog.Logger
	// NowFunc is the clock; nil means time.Now.
	NowFunc func() time.Time
}

// Timeout leaves room for a full batch of Kratos look-ups.
func (w *SettleWorker) Timeout(*river.Job[SettleArgs]) time.Duration { return 5 * time.Minute }

func (w *SettleWorker) Work(ctx context.Context, _ *river.Job[SettleArgs]) error {
	now := time.Now()
	if w.NowFunc != nil {
		now = w.NowFunc()
	}
	if _, err := PruneGuesses(ctx, w.Pool, now.Add(-w.GuessWindow)); err != nil {
		return err
	}
	done, err := SettleStale(ctx, w.Pool, w.Kratos, now, w.ReservationTimeout)
	if done.Confirmed > 0 || done.Released > 0 {
		w.Logger.InfoContext(ctx, "settled invite reservations", "confirmed", done.Confirmed, "released", done.Released)
	}
	if err != nil {
		return fmt.Errorf("settle invite reservations: %w", err)
	}
	return nil
}
