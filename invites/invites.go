// Package invites keeps the invites that admit registrations in invite-only mode: creating, listing and
// revoking them, admitting a registration (with a limit on code guessing), and settling the reservations
// Kratos never confirmed. Everything lives in Postgres, so every replica sees the same uses and the same
// guess counts.
package invites

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what the store functions need: a pool, a connection or a transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Defaults of a new invite.
const (
	DefaultExpiresIn = 7 * 24 * time.Hour
	DefaultMaxUses   = 1
	// MaxNoteLength caps the free-text note.
	MaxNoteLength = 1000
)

// ErrNotFound means there is no invite with that id.
var ErrNotFound = errors.New("invite not found")

// InputError is a request to create an invite that cannot be carried out as asked. Its message says what
// to change.
type InputError struct{ Message string }

func (e *InputError) Error() string { return e.Message }

// Status is where an invite stands.
type Status string

const (
	StatusActive  Status = "active"
	StatusExpired Status = "expired"
	StatusUsedUp  Status = "used_up"
	StatusRevoked Status = "revoked"
)

// Invite is an invite as stored; the code itself is never stored.
type Invite struct {
	ID uuid.UUID `json:"id"`
	// Email is the address the invite is bound to; nil for a code invite.
	Email     *string    `json:"email"`
	Note      string     `json:"note"`
	MaxUses   int        `json:"max_uses"`
	Uses      int        `json:"uses"`
	ExpiresAt time.Time  `json:"expires_at"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	// RedeemedBy are the identities whose registration the invite admitted (confirmed uses). Uses also
	// counts reservations not confirmed yet.
	RedeemedBy []uuid.UUID `json:"redeemed_by"`
}

// Kind is "email" or "code".
func (i Invite) Kind() string {
	if i.Email != nil {
		return "email"
	}
	return "code"
}

// StatusAt is the invite's status at now. Revoked wins over expired, expired over used up.
func (i Invite) StatusAt(now time.Time) Status {
	switch {
	case i.RevokedAt != nil:
		return StatusRevoked
	case !now.Before(i.ExpiresAt):
		return StatusExpired
	case i.Uses >= i.MaxUses:
		return StatusUsedUp
	}
	return StatusActive
}

// Summary is what a new invite is announced with: `invites create --json` prints it as one line, and
// POST /admin/invites answers with it. Code is null for an e-mail invite, Email for a code invite.
type Summary struct {
	ID        uuid.UUID `json:"id"`
	Code      *string   `json:"code"`
	Email     *string   `json:"email"`
	ExpiresAt time.Time `json:"expires_at"`
	MaxUses   int       `json:"max_uses"`
}

// Summary announces the created invite, its code included.
func (c Created) Summary() Summary {
	s := Summary{ID: c.ID, Email: c.Email, ExpiresAt: c.ExpiresAt, MaxUses: c.MaxUses}
	if c.Code != "" {
		code := c.Code
		s.Code = &code
	}
	return s
}

// Report is an invite as listed: with its kind and its status at the time of listing.
type Report struct {
	Invite
	Kind   string `json:"kind"`
	Status Status `json:"status"`
}

// Report is the invite as listed at now.
func (i Invite) Report(now time.Time) Report {
	return Report{Invite: i, Kind: i.Kind(), Status: i.StatusAt(now)}
}

// CreateOpts says what invite to create: exactly one of Email and Code.
type CreateOpts struct {
	// Email binds the invite to this address: a registration with it needs no code.
	Email string
	// Code makes a code invite: whoever sends the code as transient_payload.invite_code is admitted.
	Code bool
	// ExpiresIn is how long the invite is valid; 0 means DefaultExpiresIn.
	ExpiresIn time.Duration
	// MaxUses is how many registrations it admits; 0 means DefaultMaxUses.
	MaxUses int
	Note    string
}

// Created is a new invite and, for a code invite, its code: the only time the code is known.
type Created struct {
	Invite
	Code string
}

// Create stores a new invite.
func Create(ctx context.Context, q Querier, opts CreateOpts, now time.Time) (Created, error) {
	if opts.ExpiresIn == 0 {
		opts.ExpiresIn = DefaultExpiresIn
	}
	if opts.MaxUses == 0 {
		opts.MaxUses = DefaultMaxUses
	}
	email := NormalizeEmail(opts.Email)
	switch {
	case email == "" && !opts.Code:
		return Created{}, &InputError{"give an e-mail address to bind the invite to, or ask for a code"}
	case email != "" && opts.Code:
		return Created{}, &InputError{"an invite is bound to an e-mail address or has a code, not both"}
	case email != "" && !validEmail(email):
		return Created{}, &InputError{fmt.Sprintf("%q is not an e-mail address", opts.Email)}
	case opts.ExpiresIn < 0:
		return Created{}, &InputError{"the expiry must be in the future"}
	case opts.MaxUses < 1 || opts.MaxUses > 1_000_000:
		return Created{}, &InputError{"max uses must be 1 to 1000000"}
	case len(opts.Note) > MaxNoteLength:
		return Created{}, &InputError{fmt.Sprintf("the note is longer than %d bytes", MaxNoteLength)}
	}

	c := Created{Invite: Invite{
		ID:         uuid.New(),
		Note:       opts.Note,
		MaxUses:    opts.MaxUses,
		ExpiresAt:  now.Add(opts.ExpiresIn).UTC().Truncate(time.Microsecond),
		CreatedAt:  now.UTC().Truncate(time.Microsecond),
		RedeemedBy: []uuid.UUID{},
	}}
	var hash []byte
	if opts.Code {
		c.Code, hash = newCode()
	} else {
		c.Email = &email
	}
	_, err := q.Exec(ctx, `
INSERT INTO invites (id, email, code_sha256, note, max_uses, expires_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		c.ID, c.Email, hash, c.Note, c.MaxUses, c.ExpiresAt, c.CreatedAt)
	if err != nil {
		return Created{}, fmt.Errorf("create invite: %w", err)
	}
	return c, nil
}

const selectInvites = `
SELECT i.id, i.email, i.note, i.max_uses, i.uses, i.expires_at, i.created_at, i.revoked_at,
       COALESCE(array_agg(r.identity_id ORDER BY r.confirmed_at) FILTER (WHERE r.identity_id IS NOT NULL), '{}')
FROM invites i
LEFT JOIN invite_redemptions r ON r.invite_id = i.id`

func scanInvite(row pgx.Row) (Invite, error) {
	var inv Invite
	err := row.Scan(&inv.ID, &inv.Email, &inv.Note, &inv.MaxUses, &inv.Uses, &inv.ExpiresAt, &inv.CreatedAt,
		&inv.RevokedAt, &inv.RedeemedBy)
	inv.inUTC()
	return inv, err
}

// inUTC puts the times in UTC (pgx reads timestamptz in the local zone).
func (i *Invite) inUTC() {
	i.ExpiresAt, i.CreatedAt = i.ExpiresAt.UTC(), i.CreatedAt.UTC()
	if i.RevokedAt != nil {
		r := i.RevokedAt.UTC()
		i.RevokedAt = &r
	}
}

// List returns every invite, newest first.
func List(ctx context.Context, q Querier) ([]Invite, error) {
	rows, err := q.Query(ctx, selectInvites+` GROUP BY i.id ORDER BY i.created_at DESC, i.id`)
	if err != nil {
		return nil, fmt.Errorf("list invites: %w", err)
	}
	out := []Invite{}
	for rows.Next() {
		inv, err := scanInvite(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list invites: %w", err)
		}
		out = append(out, inv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list invites: %w", err)
	}
	return out, nil
}

// Get returns one invite, or ErrNotFound.
func Get(ctx context.Context, q Querier, id uuid.UUID) (Invite, error) {
	inv, err := scanInvite(q.QueryRow(ctx, selectInvites+` WHERE i.id = $1 GROUP BY i.id`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Invite{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Invite{}, fmt.Errorf("read invite %s: %w", id, err)
	}
	return inv, nil
}

// Revoke makes an invite unusable from now on; registrations it already admitted stay. Revoking a revoked
// invite changes nothing. It returns the invite, or ErrNotFound.
func Revoke(ctx context.Context, q Querier, id uuid.UUID, now time.Time) (Invite, error) {
	tag, err := q.Exec(ctx, `UPDATE invites SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`, id, now)
	if err != nil {
		return Invite{}, fmt.Errorf("revoke invite %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return Invite{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return Get(ctx, q, id)
}

// NormalizeEmail is the form addresses are stored and compared in: trimmed and lower-cased (as Kratos
// normalises e-mail identifiers).
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Address is the key a registration is reserved under: the e-mail address being registered, or the phone
// number when there is no e-mail address (as Kratos matches credential identifiers: trimmed, lower-cased).
func Address(email, phone string) string {
	if e := NormalizeEmail(email); e != "" {
		return e
	}
	return strings.ToLower(strings.TrimSpace(phone))
}

func validEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	return at > 0 && at < len(s)-1 && len(s) <= 320 && !strings.ContainsAny(s, " \t\r\n")
}
