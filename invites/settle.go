package invites

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// DefaultReservationTimeout is how long a reservation may wait for the post-persist hook before it is
// settled by asking Kratos.
const DefaultReservationTimeout = 15 * time.Minute

// Confirm binds the reservation of a flow and address to the identity Kratos created, in the caller's
// transaction (the one that records the post-persist event). It reports whether there was a reservation to
// confirm; a registration no invite admitted (open mode) has none. Confirming again changes nothing.
func Confirm(ctx context.Context, q Querier, flowID uuid.UUID, address string, identityID uuid.UUID, now time.Time) (bool, error) {
	tag, err := q.Exec(ctx, `
UPDATE invite_redemptions SET identity_id = $3, confirmed_at = $4
WHERE flow_id = $1 AND address = $2 AND confirmed_at IS NULL`, flowID, address, identityID, now)
	if err != nil {
		return false, fmt.Errorf("confirm invite reservation of flow %s: %w", flowID, err)
	}
	return tag.RowsAffected() > 0, nil
}

// Settled counts what SettleStale did.
type Settled struct {
	// Confirmed reservations: Kratos has the identity, the post-persist hook was lost.
	Confirmed int
	// Released reservations: Kratos has no such identity (the registration failed after the pre-persist
	// hook); the use is given back.
	Released int
}

// clockSkew is how much earlier than its reservation Kratos may date an identity and still have it count
// as the identity that registration created (Kratos and this service read different clocks).
const clockSkew = time.Minute

// settleBatch bounds one SettleStale call.
const settleBatch = 500

// SettleStale settles reservations still unconfirmed timeout after they were made (timeout 0 means
// DefaultReservationTimeout), as of now. For each it asks Kratos for the identity with the reserved address
// as credentials identifier: an identity created after the reservation and not bound to another invite
// confirms it; otherwise the reservation is deleted and its use given back. A reservation without an address
// cannot be looked up and is kept as a use. Safe to run from several processes at once (reconcile, the
// periodic job): each change is conditional on the reservation still being unconfirmed. It stops at the
// first Kratos error (the rest wait for the next run) and returns what it settled until then.
func SettleStale(ctx context.Context, pool *pgxpool.Pool, kc *kratos.Client, now time.Time, timeout time.Duration) (Settled, error) {
	if timeout <= 0 {
		timeout = DefaultReservationTimeout
	}
	var done Settled
	rows, err := pool.Query(ctx, `
SELECT flow_id, address, reserved_at FROM invite_redemptions
WHERE confirmed_at IS NULL AND reserved_at < $1
ORDER BY reserved_at LIMIT $2`, now.Add(-timeout), settleBatch)
	if err != nil {
		return done, fmt.Errorf("find stale invite reservations: %w", err)
	}
	type stale struct {
		flowID     uuid.UUID
		address    string
		reservedAt time.Time
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stale, error) {
		var s stale
		err := r.Scan(&s.flowID, &s.address, &s.reservedAt)
		return s, err
	})
	if err != nil {
		return done, fmt.Errorf("find stale invite reservations: %w", err)
	}

	for _, s := range list {
		if s.address == "" {
			// Nothing to ask Kratos by: keep the use (never admit more than max_uses), identity unknown.
			if _, err := pool.Exec(ctx, `UPDATE invite_redemptions SET confirmed_at = $3
WHERE flow_id = $1 AND address = $2 AND confirmed_at IS NULL`, s.flowID, s.address, now); err != nil {
				return done, fmt.Errorf("settle invite reservation of flow %s: %w", s.flowID, err)
			}
			done.Confirmed++
			continue
		}
		id, err := createdIdentity(ctx, pool, kc, s.address, s.reservedAt)
		if err != nil {
			return done, fmt.Errorf("settle invite reservation of flow %s: %w", s.flowID, err)
		}
		if id != uuid.Nil {
			ok, err := Confirm(ctx, pool, s.flowID, s.address, id, now)
			if err != nil {
				return done, err
			}
			if ok {
				done.Confirmed++
			}
			continue
		}
		ok, err := release(ctx, pool, s.flowID, s.address)
		if err != nil {
			return done, err
		}
		if ok {
			done.Released++
		}
	}
	return done, nil
}

// createdIdentity returns the identity Kratos has for address if it can be the one the reservation admitted:
// created no earlier than the reservation (less clock skew) and not already bound to a redemption. An
// account that existed before (the registration then failed as a duplicate) does not count.
func createdIdentity(ctx context.Context, q Querier, kc *kratos.Client, address string, reservedAt time.Time) (uuid.UUID, error) {
	page, err := kc.ListIdentities(ctx, kratos.ListOpts{CredentialsIdentifier: address, PageSize: 10})
	if err != nil {
		return uuid.Nil, err
	}
	for _, ident := range page.Identities {
		if ident.CreatedAt.Before(reservedAt.Add(-clockSkew)) {
			continue
		}
		var bound bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM invite_redemptions WHERE identity_id = $1)`, ident.ID).Scan(&bound); err != nil {
			return uuid.Nil, fmt.Errorf("look up redemptions of %s: %w", ident.ID, err)
		}
		if !bound {
			return ident.ID, nil
		}
	}
	return uuid.Nil, nil
}

// release deletes an unconfirmed reservation and gives its use back, in one transaction.
func release(ctx context.Context, pool *pgxpool.Pool, flowID uuid.UUID, address string) (bool, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("release invite reservation of flow %s: %w", flowID, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var inviteID uuid.UUID
	err = tx.QueryRow(ctx, `
DELETE FROM invite_redemptions WHERE flow_id = $1 AND address = $2 AND confirmed_at IS NULL
RETURNING invite_id`, flowID, address).Scan(&inviteID)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // confirmed (or released) by someone else meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("release invite reservation of flow %s: %w", flowID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE invites SET uses = uses - 1 WHERE id = $1`, inviteID); err != nil {
		return false, fmt.Errorf("release invite reservation of flow %s: %w", flowID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("release invite reservation of flow %s: %w", flowID, err)
	}
	return true, nil
}
