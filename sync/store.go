package sync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Querier is what the store functions need: a pool, a connection or a transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// PgUUID is id as pgx encodes it directly. pgx encodes a uuid.UUID through its driver.Valuer: as a string,
// parsed again, at about 2 µs and 20 allocations each; a page's worth of them shows in a pass's profile.
func PgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

// PgUUIDs is PgUUID for a list, for an array parameter (uuid[]).
func PgUUIDs(ids []uuid.UUID) []pgtype.UUID {
	out := make([]pgtype.UUID, len(ids))
	for i, id := range ids {
		out[i] = PgUUID(id)
	}
	return out
}

// Write says what a store write did.
type Write struct {
	// Changed is true when the row was inserted or its content changed; Revision is then its new revision.
	Changed  bool
	Revision int64
}

// contentColumns are the columns a sync writes from Kratos. A row whose content equals the new content is
// left alone: no revision bump, no index write.
const upsertProfileSQL = `
INSERT INTO profiles AS p (
    identity_id, schema_id, state, traits, metadata_public, verifiable_addresses, recovery_addresses,
    email, email_verified, phone, phone_verified, name, locale, attributes, created_at,
    revision, synced_at, deleted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, now(), NULL)
ON CONFLICT (identity_id) DO UPDATE SET
    schema_id = excluded.schema_id,
    state = excluded.state,
    traits = excluded.traits,
    metadata_public = excluded.metadata_public,
    verifiable_addresses = excluded.verifiable_addresses,
    recovery_addresses = excluded.recovery_addresses,
    email = excluded.email,
    email_verified = excluded.email_verified,
    phone = excluded.phone,
    phone_verified = excluded.phone_verified,
    name = excluded.name,
    locale = excluded.locale,
    attributes = excluded.attributes,
    created_at = excluded.created_at,
    revision = p.revision + 1,
    synced_at = now(),
    deleted_at = NULL
WHERE (p.schema_id, p.state, p.traits, p.metadata_public, p.verifiable_addresses, p.recovery_addresses,
       p.email, p.email_verified, p.phone, p.phone_verified, p.name, p.locale, p.attributes, p.created_at,
       p.deleted_at)
      IS DISTINCT FROM
      (excluded.schema_id, excluded.state, excluded.traits, excluded.metadata_public,
       excluded.verifiable_addresses, excluded.recovery_addresses, excluded.email, excluded.email_verified,
       excluded.phone, excluded.phone_verified, excluded.name, excluded.locale, excluded.attributes,
       excluded.created_at, NULL::timestamptz)
RETURNING revision`

// UpsertProfile writes p's content. It inserts a new row at revision 1, or updates an existing one and bumps
// its revision, but only when the content differs. Writing an identity Kratos has again clears a tombstone:
// Kratos is the truth, and a deleted identity can only be read back if it exists again.
func UpsertProfile(ctx context.Context, q Querier, p Profile) (Write, error) {
	var w Write
	err := upsertProfile(p, &w).run(ctx, q)
	return w, err
}

func upsertProfile(p Profile, w *Write) statement {
	return statement{
		sql:  upsertProfileSQL,
		args: contentArgs(p),
		scan: scanWrite(w, "upsert profile", p.IdentityID),
	}
}

// InsertMissingProfile inserts p only if there is no row for the identity at all, tombstones included. It is
// how a reconcile snapshot fills gaps without ever overwriting what a newer sync (or a deletion) wrote.
func InsertMissingProfile(ctx context.Context, q Querier, p Profile) (Write, error) {
	writes, err := insertMissing(ctx, q, []Profile{p})
	if err != nil {
		return Write{}, fmt.Errorf("insert profile %s: %w", p.IdentityID, err)
	}
	return writes[0], nil
}

// InsertMissingProfiles is InsertMissingProfile for many profiles (of distinct identities), in one statement
// per insertBatch of them: writes[i] says what became of ps[i]. A reconcile pass inserts a page's missing
// profiles with it, in one round trip instead of one per profile.
func InsertMissingProfiles(ctx context.Context, q Querier, ps []Profile) ([]Write, error) {
	writes := make([]Write, 0, len(ps))
	for chunk := range slices.Chunk(ps, insertBatch) {
		w, err := insertMissing(ctx, q, chunk)
		if err != nil {
			return nil, fmt.Errorf("insert %d profiles: %w", len(ps), err)
		}
		writes = append(writes, w...)
	}
	return writes, nil
}

// insertBatch is the most profiles one INSERT takes: 15 parameters each, and a statement takes at most
// 65,535.
const insertBatch = 4000

// insertMissingColumns are the parameters of one profile in insertMissing's INSERT: contentArgs.
const insertMissingColumns = 15

// contentArgs are the columns a sync writes from Kratos, in the order upsertProfileSQL and insertMissing
// take them.
func contentArgs(p Profile) []any {
	return []any{PgUUID(p.IdentityID), p.SchemaID, p.State, p.Traits, p.MetadataPublic, p.VerifiableAddresses,
		p.RecoveryAddresses, p.Email, p.EmailVerified, p.Phone, p.PhoneVerified, p.Name, p.Locale,
		p.Attributes, p.CreatedAt}
}

// insertMissing inserts ps (at most insertBatch) with ON CONFLICT DO NOTHING: a row that exists, tombstone or
// not, is never touched.
func insertMissing(ctx context.Context, q Querier, ps []Profile) ([]Write, error) {
	var values strings.Builder
	args := make([]any, 0, len(ps)*insertMissingColumns)
	for i, p := range ps {
		if i > 0 {
			values.WriteString(",\n")
		}
		values.WriteByte('(')
		for c := range insertMissingColumns {
			fmt.Fprintf(&values, "$%d, ", i*insertMissingColumns+c+1)
		}
		values.WriteString("1, now())")
		args = append(args, contentArgs(p)...)
	}
	rows, err := q.Query(ctx, `
INSERT INTO profiles (
    identity_id, schema_id, state, traits, metadata_public, verifiable_addresses, recovery_addresses,
    email, email_verified, phone, phone_verified, name, locale, attributes, created_at, revision, synced_at)
VALUES `+values.String()+`
ON CONFLICT (identity_id) DO NOTHING
RETURNING identity_id`, args...)
	if err != nil {
		return nil, err
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, err
	}
	// A row inserted is at revision 1; one that existed was left alone.
	wasInserted := make(map[uuid.UUID]bool, len(inserted))
	for _, id := range inserted {
		wasInserted[id] = true
	}
	writes := make([]Write, len(ps))
	for i, p := range ps {
		if wasInserted[p.IdentityID] {
			writes[i] = Write{Changed: true, Revision: 1}
		}
	}
	return writes, nil
}

// TombstoneProfile marks the identity as deleted: deleted_at set, revision bumped, personal data cleared. An
// identity never seen before gets a tombstone row too, so that a reconcile snapshot read before the deletion
// cannot insert it afterwards. A row that is already a tombstone is left alone.
func TombstoneProfile(ctx context.Context, q Querier, id uuid.UUID) (Write, error) {
	var w Write
	err := tombstoneProfile(id, &w).run(ctx, q)
	return w, err
}

func tombstoneProfile(id uuid.UUID, w *Write) statement {
	return statement{sql: `
INSERT INTO profiles AS p (identity_id, deleted_at, revision, synced_at)
VALUES ($1, now(), 1, now())
ON CONFLICT (identity_id) DO UPDATE SET
    traits = '{}', metadata_public = NULL, verifiable_addresses = '[]', recovery_addresses = '[]',
    email = NULL, email_verified = false, phone = NULL, phone_verified = false, name = NULL, locale = NULL,
    attributes = '{}',
    deleted_at = now(), revision = p.revision + 1, synced_at = now()
WHERE p.deleted_at IS NULL
RETURNING revision`, args: []any{id}, scan: scanWrite(w, "tombstone profile", id)}
}

// RecordLogin counts one login and moves last_login_at forward (never back: logins can be applied out of
// order). Call it once per login event; ApplyEvent makes sure of that.
func RecordLogin(ctx context.Context, q Querier, id uuid.UUID, at time.Time) (Write, error) {
	var w Write
	err := recordLogin(id, at, &w).run(ctx, q)
	return w, err
}

func recordLogin(id uuid.UUID, at time.Time, w *Write) statement {
	return statement{sql: `
UPDATE profiles
SET login_count = login_count + 1,
    last_login_at = GREATEST(last_login_at, $2),
    revision = revision + 1,
    synced_at = now()
WHERE identity_id = $1 AND deleted_at IS NULL
RETURNING revision`, args: []any{id, at}, scan: scanWrite(w, "record login of", id)}
}

// scanWrite reads the revision a write returns into w; no row means the write changed nothing.
func scanWrite(w *Write, what string, id uuid.UUID) func(pgx.Row) error {
	return func(row pgx.Row) error {
		*w = Write{}
		err := row.Scan(&w.Revision)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, id, err)
		}
		w.Changed = true
		return nil
	}
}

// statement is one SQL statement answering at most one row, apart from running it: alone (run), or with
// others in one round trip (runAll), as the sync worker sends a batch's writes.
type statement struct {
	sql  string
	args []any
	scan func(pgx.Row) error
}

func (s statement) run(ctx context.Context, q Querier) error {
	return s.scan(q.QueryRow(ctx, s.sql, s.args...))
}

// runAll runs stmts in order, in one round trip (a pgx.Batch), and returns the first error; the statements
// after it do not run.
func runAll(ctx context.Context, tx pgx.Tx, stmts []statement) error {
	if len(stmts) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, s := range stmts {
		b.Queue(s.sql, s.args...).QueryRow(s.scan)
	}
	return tx.SendBatch(ctx, b).Close()
}

// bumpRevision raises a live profile's revision by one if it is still at revision, and returns the new one;
// ok is false when the row has moved on (or is a tombstone).
func bumpRevision(ctx context.Context, q Querier, id uuid.UUID, revision int64) (newRevision int64, ok bool, err error) {
	err = q.QueryRow(ctx, `
UPDATE profiles SET revision = revision + 1, synced_at = now()
WHERE identity_id = $1 AND revision = $2 AND deleted_at IS NULL
RETURNING revision`, id, revision).Scan(&newRevision)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("raise revision of %s: %w", id, err)
	}
	return newRevision, true, nil
}

// profileColumns are every column of a profile row, in the order scanProfile reads them.
const profileColumns = `identity_id, schema_id, state, traits, metadata_public, verifiable_addresses, recovery_addresses,
       email, email_verified, phone, phone_verified, name, locale, attributes, created_at,
       revision, synced_at, last_login_at, login_count, deleted_at`

func scanProfile(row pgx.Row) (Profile, error) {
	var p Profile
	err := row.Scan(&p.IdentityID, &p.SchemaID, &p.State, &p.Traits, &p.MetadataPublic, &p.VerifiableAddresses,
		&p.RecoveryAddresses, &p.Email, &p.EmailVerified, &p.Phone, &p.PhoneVerified, &p.Name, &p.Locale,
		&p.Attributes, &p.CreatedAt, &p.Revision, &p.SyncedAt, &p.LastLoginAt, &p.LoginCount, &p.DeletedAt)
	return p, err
}

// GetProfile reads one profile row, tombstones included. It returns pgx.ErrNoRows when there is none.
func GetProfile(ctx context.Context, q Querier, id uuid.UUID) (Profile, error) {
	p, err := scanProfile(q.QueryRow(ctx, `SELECT `+profileColumns+` FROM profiles WHERE identity_id = $1`, id))
	if err != nil {
		return Profile{}, fmt.Errorf("get profile %s: %w", id, err)
	}
	return p, nil
}

// GetProfiles reads the rows of the ids that have one, tombstones included, in one query and in no
// particular order.
func GetProfiles(ctx context.Context, q Querier, ids []uuid.UUID) ([]Profile, error) {
	rows, err := q.Query(ctx, `SELECT `+profileColumns+` FROM profiles WHERE identity_id = ANY($1)`, PgUUIDs(ids))
	if err != nil {
		return nil, fmt.Errorf("get %d profiles: %w", len(ids), err)
	}
	profiles, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Profile, error) { return scanProfile(row) })
	if err != nil {
		return nil, fmt.Errorf("get %d profiles: %w", len(ids), err)
	}
	return profiles, nil
}

// later returns the later of two writes' outcomes, so a job that writes twice reports its last revision.
func later(a, b Write) Write {
	if b.Changed {
		return b
	}
	return a
}
