package reconcile

import (
	"context"
	"fmt"
	"time"

	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// Outcome is where a pass's repair jobs are.
type Outcome struct {
	Completed int
	// Failed jobs were discarded (out of attempts) or cancelled (a permanent error such as a failing
	// profile mapping); River keeps their errors.
	Failed int
	// Pending jobs are not finished: waiting, running or waiting to be retried.
	Pending int
}

// CountRepairs reads where the repair jobs of a pass are.
func CountRepairs(ctx context.Context, q profilesync.Querier, passID string) (Outcome, error) {
	// The GIN index on river_job.metadata serves the containment test.
	rows, err := q.Query(ctx, `SELECT state, count(*) FROM river_job WHERE metadata @> $1::jsonb GROUP BY state`,
		fmt.Sprintf(`{"reconcile_pass":%q}`, passID))
	if err != nil {
		return Outcome{}, fmt.Errorf("count repair jobs: %w", err)
	}
	defer rows.Close()
	var o Outcome
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return Outcome{}, fmt.Errorf("count repair jobs: %w", err)
		}
		switch state {
		case "completed":
			o.Completed += n
		case "cancelled", "discarded":
			o.Failed += n
		default:
			o.Pending += n
		}
	}
	if err := rows.Err(); err != nil {
		return Outcome{}, fmt.Errorf("count repair jobs: %w", err)
	}
	return o, nil
}

// WaitRepairs waits until no repair job of the pass is pending and returns their outcome. Serve's workers
// work the jobs: without a running `serve` (worker role) they stay pending. Give ctx a deadline; when it
// passes, WaitRepairs returns the outcome so far with ctx's error.
func WaitRepairs(ctx context.Context, q profilesync.Querier, passID string) (Outcome, error) {
	interval := 50 * time.Millisecond
	var last Outcome
	for {
		o, err := CountRepairs(ctx, q, passID)
		if err != nil && ctx.Err() != nil {
			return last, ctx.Err()
		}
		if err != nil || o.Pending == 0 {
			return o, err
		}
		last = o
		select {
		case <-ctx.Done():
			return o, ctx.Err()
		case <-time.After(interval):
		}
		interval = min(interval*2, time.Second)
	}
}
