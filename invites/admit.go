package invites

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kratos-hooks/kratos-hooks/gating"
)

// GuessLimit bounds failed code checks per client: at most Max in any Window.
type GuessLimit struct {
	Max    int
	Window time.Duration
}

// DefaultGuessLimit is 10 failed checks per 15 minutes.
var DefaultGuessLimit = GuessLimit{Max: 10, Window: 15 * time.Minute}

// AdmitRequest is a registration that needs an invite.
type AdmitRequest struct {
	// FlowID is the Kratos registration flow.
	FlowID uuid.UUID
	// Address is what is being registered (see Address); with FlowID it keys the reservation.
	Address string
	// Email is the normalised e-mail address being registered, "" when the identity has none. An invite
	// bound to it admits the registration without a code.
	Email string
	// Code is the invite code as the client sent it (transient_payload.invite_code), "" when none.
	Code string
	// ClientKey is who guesses count against (see ClientKey).
	ClientKey string
}

// Admission is an admitted registration.
type Admission struct {
	InviteID uuid.UUID
	// Repeat: the flow already held a reservation for this address (a Kratos retry); no use was taken.
	Repeat bool
}

// Reason says why a registration was refused.
type Reason string

const (
	// ReasonNoInvite: no code was sent and no invite is bound to the address.
	ReasonNoInvite Reason = "no_invite"
	// ReasonUnknownCode: the code matches no invite (a failed check: it counts against the guess limit).
	ReasonUnknownCode Reason = "unknown_code"
	ReasonExpired     Reason = "expired"
	ReasonUsedUp      Reason = "used_up"
	ReasonRevoked     Reason = "revoked"
	// ReasonTooManyGuesses: the client failed too many code checks; the code was not looked at.
	ReasonTooManyGuesses Reason = "too_many_guesses"
)

// RefusedError is a registration the invites do not admit.
type RefusedError struct {
	Reason Reason
	// ByCode: the refusal is about the code the client sent, not about the e-mail address.
	ByCode bool
	// ExpiredAt is set for ReasonExpired, MaxUses for ReasonUsedUp, RetryAfter for ReasonTooManyGuesses.
	ExpiredAt  time.Time
	MaxUses    int
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string { return "registration not admitted: " + string(e.Reason) }

// ClientKey is the key guesses are counted by: the client's IP address (an IPv6 client by its /64, the
// block one subscriber usually holds), or the flow when the address is unknown.
func ClientKey(clientIP string, flowID uuid.UUID) string {
	addr, ok := gating.ParseAddr(clientIP)
	switch {
	case !ok:
		return "flow:" + flowID.String()
	case addr.Is4():
		return "ip:" + addr.String()
	}
	return "ip6:" + netip.PrefixFrom(addr, 64).Masked().String()
}

// Admit decides whether an invite admits a registration and, if so, reserves one of its uses for the flow
// and address, in one transaction. A repeated call for the same flow and address (Kratos retrying) admits
// again without taking another use.
//
// An invite bound to the e-mail address is tried first; then the code, if one was sent. Code checks are
// limited per client: after limit.Max failures within limit.Window every code check is refused until the
// oldest failure leaves the window. A refusal is a *RefusedError.
func Admit(ctx context.Context, pool *pgxpool.Pool, req AdmitRequest, limit GuessLimit, now time.Time) (Admission, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return Admission{}, fmt.Errorf("admit registration: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	adm, refusal, err := admit(ctx, tx, req, limit, now)
	if err != nil {
		return Admission{}, err
	}
	// A refusal commits too: a failed code check is recorded.
	if err := tx.Commit(ctx); err != nil {
		return Admission{}, fmt.Errorf("admit registration: commit: %w", err)
	}
	if refusal != nil {
		return Admission{}, refusal
	}
	return adm, nil
}

func admit(ctx context.Context, tx pgx.Tx, req AdmitRequest, limit GuessLimit, now time.Time) (Admission, *RefusedError, error) {
	var held uuid.UUID
	err := tx.QueryRow(ctx, `SELECT invite_id FROM invite_redemptions WHERE flow_id = $1 AND address = $2`,
		req.FlowID, req.Address).Scan(&held)
	if err == nil {
		return Admission{InviteID: held, Repeat: true}, nil, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Admission{}, nil, fmt.Errorf("look up reservation: %w", err)
	}

	var emailRefusal *RefusedError
	if req.Email != "" {
		candidates, err := readInvites(ctx, tx, `WHERE email = $1 ORDER BY created_at DESC LIMIT 20`, req.Email)
		if err != nil {
			return Admission{}, nil, err
		}
		for _, inv := range candidates {
			if inv.StatusAt(now) != StatusActive {
				continue
			}
			adm, ok, err := reserve(ctx, tx, inv.ID, req, now)
			if err != nil || ok {
				return adm, nil, err
			}
			// Used up or revoked by a concurrent transaction a moment ago: try the next.
		}
		if len(candidates) > 0 {
			emailRefusal = refusal(candidates[0], now, false)
		}
	}
	if req.Code == "" {
		if emailRefusal != nil {
			return Admission{}, emailRefusal, nil
		}
		return Admission{}, &RefusedError{Reason: ReasonNoInvite}, nil
	}
	return admitCode(ctx, tx, req, limit, now)
}

func admitCode(ctx context.Context, tx pgx.Tx, req AdmitRequest, limit GuessLimit, now time.Time) (Admission, *RefusedError, error) {
	// One code check at a time per client, across replicas: the count below and the failure recorded after
	// it must not interleave with another check by the same client.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(req.ClientKey)); err != nil {
		return Admission{}, nil, fmt.Errorf("lock guess counter: %w", err)
	}
	// Count the failures in the window, and forget this client's older ones on the way.
	var failures int
	var oldest *time.Time
	if err := tx.QueryRow(ctx, `
WITH pruned AS (DELETE FROM invite_code_failures WHERE client_key = $1 AND failed_at <= $2)
SELECT count(*), min(failed_at) FROM invite_code_failures WHERE client_key = $1 AND failed_at > $2`,
		req.ClientKey, now.Add(-limit.Window)).Scan(&failures, &oldest); err != nil {
		return Admission{}, nil, fmt.Errorf("read guess counter: %w", err)
	}
	if failures >= limit.Max {
		retry := time.Second
		if oldest != nil {
			retry = max(oldest.Add(limit.Window).Sub(now), time.Second)
		}
		return Admission{}, &RefusedError{Reason: ReasonTooManyGuesses, ByCode: true, RetryAfter: retry}, nil
	}

	var found []Invite
	if norm, ok := normalizeCode(req.Code); ok {
		var err error
		if found, err = readInvites(ctx, tx, `WHERE code_sha256 = $1`, hashCode(norm)); err != nil {
			return Admission{}, nil, err
		}
	}
	if len(found) == 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO invite_code_failures (client_key, failed_at) VALUES ($1, $2)`,
			req.ClientKey, now); err != nil {
			return Admission{}, nil, fmt.Errorf("count failed code check: %w", err)
		}
		return Admission{}, &RefusedError{Reason: ReasonUnknownCode, ByCode: true}, nil
	}
	inv := found[0]
	if inv.StatusAt(now) == StatusActive {
		adm, ok, err := reserve(ctx, tx, inv.ID, req, now)
		if err != nil || ok {
			return adm, nil, err
		}
	}
	// refusal reads an invite that looked active here but lost the race for its row as used up.
	return Admission{}, refusal(inv, now, true), nil
}

// reserve takes one use of the invite for the flow and address. ok is false when the invite was used up,
// revoked or expired by the time its row was locked.
//
// The reservation row goes in first: the invite's row is locked only from the conditional update to the
// commit, the shortest wait for registrations racing for the same invite.
func reserve(ctx context.Context, tx pgx.Tx, inviteID uuid.UUID, req AdmitRequest, now time.Time) (Admission, bool, error) {
	tag, err := tx.Exec(ctx, `
INSERT INTO invite_redemptions (flow_id, address, invite_id, reserved_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (flow_id, address) DO NOTHING`, req.FlowID, req.Address, inviteID, now)
	if err != nil {
		return Admission{}, false, fmt.Errorf("reserve invite %s: %w", inviteID, err)
	}
	if tag.RowsAffected() == 0 {
		// The same flow and address reserved concurrently (two deliveries of one call at once): that
		// reservation stands, and this call takes no use.
		var held uuid.UUID
		if err := tx.QueryRow(ctx, `SELECT invite_id FROM invite_redemptions WHERE flow_id = $1 AND address = $2`,
			req.FlowID, req.Address).Scan(&held); err != nil {
			return Admission{}, false, fmt.Errorf("reserve invite %s: %w", inviteID, err)
		}
		return Admission{InviteID: held, Repeat: true}, true, nil
	}
	// The conditions are checked again on the locked row: a concurrent registration that took the last use
	// makes this one update nothing.
	tag, err = tx.Exec(ctx, `
UPDATE invites SET uses = uses + 1
WHERE id = $1 AND uses < max_uses AND revoked_at IS NULL AND expires_at > $2`, inviteID, now)
	if err != nil {
		return Admission{}, false, fmt.Errorf("reserve invite %s: %w", inviteID, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM invite_redemptions WHERE flow_id = $1 AND address = $2`, req.FlowID, req.Address); err != nil {
			return Admission{}, false, fmt.Errorf("reserve invite %s: %w", inviteID, err)
		}
		return Admission{}, false, nil
	}
	return Admission{InviteID: inviteID}, true, nil
}

func refusal(inv Invite, now time.Time, byCode bool) *RefusedError {
	switch inv.StatusAt(now) {
	case StatusRevoked:
		return &RefusedError{Reason: ReasonRevoked, ByCode: byCode}
	case StatusExpired:
		return &RefusedError{Reason: ReasonExpired, ByCode: byCode, ExpiredAt: inv.ExpiresAt}
	default:
		return &RefusedError{Reason: ReasonUsedUp, ByCode: byCode, MaxUses: inv.MaxUses}
	}
}

// readInvites reads invites (without their redemptions) matching where.
func readInvites(ctx context.Context, q Querier, where string, args ...any) ([]Invite, error) {
	rows, err := q.Query(ctx, `SELECT id, email, note, max_uses, uses, expires_at, created_at, revoked_at FROM invites `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("look up invites: %w", err)
	}
	invs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Invite, error) {
		var inv Invite
		err := row.Scan(&inv.ID, &inv.Email, &inv.Note, &inv.MaxUses, &inv.Uses, &inv.ExpiresAt, &inv.CreatedAt, &inv.RevokedAt)
		inv.inUTC()
		return inv, err
	})
	if err != nil {
		return nil, fmt.Errorf("look up invites: %w", err)
	}
	return invs, nil
}

// lockKey maps a client key to an advisory lock id. Two clients that collide only wait for each other.
func lockKey(clientKey string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("invite-guess:" + clientKey))
	return int64(h.Sum64())
}

// PruneGuesses deletes failed code checks that have left every window (those at or before before).
func PruneGuesses(ctx context.Context, q Querier, before time.Time) (int64, error) {
	tag, err := q.Exec(ctx, `DELETE FROM invite_code_failures WHERE failed_at <= $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune failed code checks: %w", err)
	}
	return tag.RowsAffected(), nil
}
