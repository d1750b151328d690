package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// The outcomes of a recorded pass.
const (
	PassCompleted = "completed"
	// PassStopped: the mass-deletion guard stopped the pass.
	PassStopped = "stopped"
	// PassFailed: the pass could not complete (Kratos or Postgres unreachable, cancelled, …).
	PassFailed = "failed"
)

// PassRecord is a pass as recorded in reconcile_passes.
type PassRecord struct {
	Report
	Outcome    string
	StartedAt  time.Time
	FinishedAt time.Time
}

// passRetention is how long pass records are kept.
const passRetention = 90 * 24 * time.Hour

// maxErrorLength bounds the error text stored with a pass.
const maxErrorLength = 2000

// recordPass writes a pass that ran (and removes records past their retention), so that the last pass is
// known after the process that ran it exited: serve's /metrics reads it with LastPasses.
func recordPass(ctx context.Context, q profilesync.Querier, started time.Time, r Report, passErr error) error {
	outcome, errText := PassCompleted, ""
	if passErr != nil {
		outcome = PassFailed
		var guard *MassDeleteError
		if errors.As(passErr, &guard) {
			outcome = PassStopped
		}
		errText = logging.Redact(passErr.Error())
		if len(errText) > maxErrorLength {
			errText = errText[:maxErrorLength]
		}
	}
	passID, err := uuid.Parse(r.PassID)
	if err != nil {
		return fmt.Errorf("record reconcile pass: %w", err)
	}
	_, err = q.Exec(ctx, `
WITH expired AS (DELETE FROM reconcile_passes WHERE finished_at < $16)
INSERT INTO reconcile_passes (pass_id, started_at, finished_at, outcome, error, pages, identities_scanned,
    profiles_missing, profiles_inserted, profiles_stale, profiles_orphaned, documents_missing, documents_stale,
    invites_settled, repairs_enqueued)
VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (pass_id) DO NOTHING`,
		passID, started, started.Add(r.Duration), outcome, errText, r.Pages, r.IdentitiesScanned,
		r.ProfilesMissing, r.ProfilesInserted, r.ProfilesStale, r.ProfilesOrphaned, r.DocumentsMissing,
		r.DocumentsStale, r.InvitesSettled, r.RepairsEnqueued, started.Add(-passRetention))
	if err != nil {
		return fmt.Errorf("record reconcile pass %s: %w", r.PassID, err)
	}
	return nil
}

// LastPasses returns the latest completed pass (nil when none is recorded) and when the latest pass that did
// not complete (failed or stopped by the guard) finished (zero when none did).
func LastPasses(ctx context.Context, q profilesync.Querier) (last *PassRecord, lastFailure time.Time, err error) {
	var r PassRecord
	var passID uuid.UUID
	err = q.QueryRow(ctx, `
SELECT pass_id, started_at, finished_at, pages, identities_scanned, profiles_missing, profiles_inserted,
       profiles_stale, profiles_orphaned, documents_missing, documents_stale, invites_settled, repairs_enqueued
FROM reconcile_passes WHERE outcome = 'completed' ORDER BY finished_at DESC LIMIT 1`).Scan(
		&passID, &r.StartedAt, &r.FinishedAt, &r.Pages, &r.IdentitiesScanned, &r.ProfilesMissing,
		&r.ProfilesInserted, &r.ProfilesStale, &r.ProfilesOrphaned, &r.DocumentsMissing, &r.DocumentsStale,
		&r.InvitesSettled, &r.RepairsEnqueued)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, time.Time{}, fmt.Errorf("read the last reconcile pass: %w", err)
	default:
		r.PassID, r.Outcome, r.Duration = passID.String(), PassCompleted, r.FinishedAt.Sub(r.StartedAt)
		last = &r
	}
	var failed *time.Time
	if err := q.QueryRow(ctx, `SELECT max(finished_at) FROM reconcile_passes WHERE outcome <> 'completed'`).Scan(&failed); err != nil {
		return nil, time.Time{}, fmt.Errorf("read the last failed reconcile pass: %w", err)
	}
	if failed != nil {
		lastFailure = *failed
	}
	return last, lastFailure, nil
}
