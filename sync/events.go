package sync

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Hook is a Kratos hook point this service records events for.
type Hook string

// The after-hook points. Each has its own URL, because Kratos's ctx does not say which hook point called.
const (
	HookRegistrationAfter Hook = "registration/after"
	HookLoginAfter        Hook = "login/after"
	HookSettingsAfter     Hook = "settings/after"
	HookVerificationAfter Hook = "verification/after"
	HookRecoveryAfter     Hook = "recovery/after"
)

// Hooks lists every after-hook point, in the order a person meets them.
var Hooks = []Hook{HookRegistrationAfter, HookLoginAfter, HookSettingsAfter, HookVerificationAfter, HookRecoveryAfter}

// EventKey identifies one delivery: the hook point, the Kratos flow and the SHA-256 of the exact body.
// Kratos builds a hook's body once and resends the same bytes on retry, so a retry has the same key, while a
// settings flow submitted twice with different content makes two events.
type EventKey struct {
	Hook       Hook      `json:"hook"`
	FlowID     uuid.UUID `json:"flow_id"`
	BodySHA256 []byte    `json:"body_sha256"`
}

func (k EventKey) String() string {
	return fmt.Sprintf("%s:%s:%s", k.Hook, k.FlowID, hex.EncodeToString(k.BodySHA256))
}

// Event is a webhook delivery to record.
type Event struct {
	Key        EventKey
	IdentityID uuid.UUID
	// OccurredAt is when it happened, if the payload says (a login's authentication time); otherwise the
	// time it was received counts.
	OccurredAt *time.Time
}

// Recorded is what EventRecorder.Record did.
type Recorded struct {
	// Duplicate is true when the event was already recorded (a Kratos retry): nothing was written.
	Duplicate bool
	JobID     int64
}

// insertEventSQL stores an event, or nothing when it is stored already (a retry): $1 hook, $2 flow id,
// $3 body SHA-256, $4 identity id, $5 occurred at.
const insertEventSQL = `
INSERT INTO hook_events (hook, flow_id, body_sha256, identity_id, occurred_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING`

// appliedEvent is an event whose effects a job has just applied.
type appliedEvent struct {
	OccurredAt *time.Time
	ReceivedAt time.Time
}

// markEventApplied marks the event applied and reads it into ev, or sets ok to false when it was applied
// before (or is gone: events are deleted after their retention period). Run it in the transaction that
// applies the event's effects, so they are applied exactly once.
func markEventApplied(key EventKey, ev *appliedEvent, ok *bool) statement {
	return statement{sql: `
UPDATE hook_events SET applied_at = now()
WHERE hook = $1 AND flow_id = $2 AND body_sha256 = $3 AND applied_at IS NULL
RETURNING occurred_at, received_at`, args: []any{string(key.Hook), key.FlowID, key.BodySHA256}, scan: func(row pgx.Row) error {
		err := row.Scan(&ev.OccurredAt, &ev.ReceivedAt)
		*ok = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("mark event %s applied: %w", key, err)
		}
		return nil
	}}
}

// DeleteEventsBefore removes events received before cutoff. Kratos retries within minutes; events are kept
// far longer so that a job retried for days still finds its event.
func DeleteEventsBefore(ctx context.Context, q Querier, cutoff time.Time) (int64, error) {
	tag, err := q.Exec(ctx, `DELETE FROM hook_events WHERE received_at < $1`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("delete old events: %w", err)
	}
	return tag.RowsAffected(), nil
}
