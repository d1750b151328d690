-- +goose Up

-- reconcile_passes records every reconcile pass that ran (not dry runs, not a pass that found another one
-- holding the lock), whether from cron (`kratos-hooks reconcile`, a process that exits) or scheduled inside
-- `serve`. It is how serve's /metrics reports the last successful pass and the drift it found, whichever
-- process ran it. Rows older than 90 days are removed as new ones are written.
CREATE TABLE reconcile_passes (
    pass_id            uuid        PRIMARY KEY,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz NOT NULL,
    -- completed; stopped (by the mass-deletion guard); failed (Kratos or Postgres unreachable, cancelled, …)
    outcome            text        NOT NULL CHECK (outcome IN ('completed', 'stopped', 'failed')),
    error              text,
    pages              integer     NOT NULL,
    identities_scanned integer     NOT NULL,
    profiles_missing   integer     NOT NULL,
    profiles_inserted  integer     NOT NULL,
    profiles_stale     integer     NOT NULL,
    profiles_orphaned  integer     NOT NULL,
    documents_missing  integer     NOT NULL,
    documents_stale    integer     NOT NULL,
    invites_settled    integer     NOT NULL,
    repairs_enqueued   integer     NOT NULL
);

CREATE INDEX reconcile_passes_outcome_finished_idx ON reconcile_passes (outcome, finished_at);
CREATE INDEX reconcile_passes_finished_idx ON reconcile_passes (finished_at);

-- +goose Down
DROP TABLE reconcile_passes;
