// Package reconcile pages the Kratos admin identities API and repairs every difference between Kratos and
// the profiles table: identities without a profile, profiles that fell behind their identity, and profiles
// of identities Kratos no longer has. It is what makes the profiles trustworthy although webhooks get lost,
// and how a team backfills the identities it already has.
//
// Repairs go through the same code paths as webhook events, so every invariant of the sync pipeline holds
// while webhooks keep arriving during a pass:
//   - a page's snapshot may only insert a missing profile (sync.InsertMissingProfile: never over an
//     existing row, tombstones included), which makes a backfill cost no admin call per identity;
//   - a stale profile or an orphan gets a sync job (sync.IdentityArgs without an event) that re-reads the
//     identity from Kratos under the identity lock, and tombstones the profile only when Kratos answers 404.
//
// One pass runs at a time, under a Postgres session advisory lock held on one connection for the whole pass.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/kratos"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// DefaultPageSize is the number of identities read from Kratos per page unless told otherwise.
const DefaultPageSize = 500

// DefaultMaxDeleteShare is the share of live profiles a pass may remove before the mass-deletion guard
// stops it.
const DefaultMaxDeleteShare = 0.10

// AlwaysAllowedDeletes is how many profiles a pass may always remove, whatever their share: a small
// installation that loses a few users is not a mass deletion.
const AlwaysAllowedDeletes = 5

// RepairTag is the River tag on every job a pass enqueues.
const RepairTag = "reconcile"

// RepairPriority is the River priority of repair jobs: below webhook events (priority 1), so a large
// repair never delays the events of people using the system.
const RepairPriority = 3

// Opts configures a pass.
type Opts struct {
	// Pool is the database. The pass takes one connection out of it for the lock, for the whole pass, and
	// uses one more at a time.
	Pool *pgxpool.Pool
	// Kratos is the admin API client the identities are listed from.
	Kratos *kratos.Client
	// Mapper derives a missing profile's searchable fields, as the sync worker does.
	Mapper profilesync.Mapper
	// Jobs enqueues repair jobs; it needs no workers (serve's workers work them). Not used in a dry run.
	Jobs   *river.Client[pgx.Tx]
	Logger *slog.Logger

	// PageSize is the number of identities per Kratos page, 1 to kratos.MaxPageSize; 0 means
	// DefaultPageSize.
	PageSize int
	// DryRun classifies and reports but changes nothing.
	DryRun bool
	// MaxDeleteShare is the share of live profiles (0 < share ≤ 1) above which the pass refuses to remove
	// profiles (above AlwaysAllowedDeletes) and stops with a *MassDeleteError; 0 means
	// DefaultMaxDeleteShare. AllowMassDelete turns the guard off.
	MaxDeleteShare  float64
	AllowMassDelete bool
	// WaitForLock is how long to wait for a pass that is already running; 0 fails at once with ErrLocked.
	WaitForLock time.Duration

	// ProgressFunc, if set, is called after each page.
	ProgressFunc func(Progress)

	// Documents checks the search index against the profiles; nil when the index is off.
	Documents DocumentChecker
	// SettleInvitesFunc settles invite reservations whose confirming webhook was lost (asking Kratos whether
	// the identity exists) and returns how many it settled; nil when invites are off. It runs once per
	// pass, under the pass lock, after the identities; never in a dry run.
	SettleInvitesFunc func(ctx context.Context) (settled int, err error)

	// afterClassify is a test seam: it runs after a page was compared with the database and before its
	// repairs are written.
	afterClassify func(ctx context.Context, ids []uuid.UUID)
}

// DocumentChecker compares profiles with their documents in the search index. The index projection
// implements it; Run calls it once per page with the profiles of the page's identities.
type DocumentChecker interface {
	// CheckDocuments returns, among profiles, the ids whose document is missing (a live profile) or should
	// not exist (a tombstone), and those whose document's version is below the profile's revision.
	CheckDocuments(ctx context.Context, profiles []ProfileVersion) (missing, stale []uuid.UUID, err error)
	// RepairArgs is the job that projects one profile into the index (or removes its document). Run also
	// enqueues it, in the same transaction, for every profile it inserts.
	RepairArgs(id uuid.UUID) river.JobArgs
}

// ProfileVersion is a profile as the index check sees it.
type ProfileVersion struct {
	IdentityID uuid.UUID
	Revision   int64
	Deleted    bool
}

// Progress is how far a pass has come.
type Progress struct {
	Pages      int
	Identities int
	Elapsed    time.Duration
}

// Report is what a pass found and did.
type Report struct {
	// PassID names the pass; its repair jobs carry it in their metadata (see WaitRepairs).
	PassID string
	DryRun bool
	Pages  int

	IdentitiesScanned int
	// ProfilesMissing counts identities without a profile row; ProfilesInserted how many of them the pass
	// inserted from its snapshot (fewer when a webhook sync wrote the row first).
	ProfilesMissing  int
	ProfilesInserted int
	// ProfilesStale counts profiles whose compared fields differ from Kratos, and tombstones of identities
	// Kratos lists.
	ProfilesStale int
	// ProfilesOrphaned counts live profiles whose identity Kratos did not list.
	ProfilesOrphaned int
	// LiveProfiles is the number of live profiles when the pass started (the mass-deletion guard's base).
	LiveProfiles     int
	DocumentsMissing int
	DocumentsStale   int
	InvitesSettled   int
	// RepairsEnqueued counts the jobs the pass enqueued.
	RepairsEnqueued int
	Duration        time.Duration
}

// Drift is the number of differences found.
func (r Report) Drift() int {
	return r.ProfilesMissing + r.ProfilesStale + r.ProfilesOrphaned + r.DocumentsMissing + r.DocumentsStale
}

// MassDeleteError stops a pass that would remove more profiles than the guard allows.
type MassDeleteError struct {
	Orphans int
	Live    int
	Share   float64
}

func (e *MassDeleteError) Error() string {
	return fmt.Sprintf("mass-deletion guard: the pass would remove %d of %d live profiles, more than %s "+
		"(and more than %d); Kratos may be the wrong one, empty or restored from an old backup",
		e.Orphans, e.Live, percent(e.Share), AlwaysAllowedDeletes)
}

func percent(share float64) string { return fmt.Sprintf("%g %%", share*100) }

func (o *Opts) defaults() error {
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.PageSize < 1 || o.PageSize > kratos.MaxPageSize {
		return fmt.Errorf("reconcile: page size %d out of range 1..%d", o.PageSize, kratos.MaxPageSize)
	}
	if o.MaxDeleteShare == 0 {
		o.MaxDeleteShare = DefaultMaxDeleteShare
	}
	if o.MaxDeleteShare < 0 || o.MaxDeleteShare > 1 {
		return fmt.Errorf("reconcile: max delete share %g out of range (0, 1]", o.MaxDeleteShare)
	}
	if o.WaitForLock < 0 {
		return fmt.Errorf("reconcile: negative lock wait %s", o.WaitForLock)
	}
	if o.Pool == nil || o.Kratos == nil || o.Mapper == nil {
		return errors.New("reconcile: Pool, Kratos and Mapper are required")
	}
	if o.Jobs == nil && !o.DryRun {
		return errors.New("reconcile: Jobs is required to enqueue repairs")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// pass is the state of one Run.
type pass struct {
	Opts
	lock     *pgx.Conn
	metadata []byte
	report   Report
	started  time.Time
}

// Run makes one full pass over Kratos's identities and returns what it found and did. The report is
// returned with the error too, as far as the pass got.
//
// Every pass that ran, dry runs excepted, is recorded in reconcile_passes with its outcome (see LastPasses).
//
// A pass that another pass holds the lock for fails with ErrLocked (after WaitForLock), and one that would
// remove too many profiles with a *MassDeleteError; repairs written before the guard tripped (inserts of
// missing profiles and sync jobs for stale ones) stay, since none of them removes anything.
func Run(ctx context.Context, opts Opts) (Report, error) {
	if err := opts.defaults(); err != nil {
		return Report{}, err
	}
	p := &pass{Opts: opts, started: time.Now()}
	p.report.PassID = uuid.NewString()
	p.report.DryRun = opts.DryRun
	p.metadata = fmt.Appendf(nil, `{"reconcile_pass":%q}`, p.report.PassID)

	err := p.run(ctx)
	p.report.Duration = time.Since(p.started)
	if !opts.DryRun && !errors.Is(err, ErrLocked) {
		// Recorded even when the pass was cancelled (SIGTERM): that is a failed pass too.
		recCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if recErr := recordPass(recCtx, p.Pool, p.started, p.report, err); recErr != nil {
			p.Logger.WarnContext(ctx, "could not record the reconcile pass; /metrics will not show it",
				"pass_id", p.report.PassID, "error", recErr)
		}
	}
	return p.report, err
}

func (p *pass) run(ctx context.Context) error {
	lock, err := acquireLock(ctx, p.Pool, p.WaitForLock)
	if err != nil {
		return err
	}
	// Closing the connection ends the session: the orphan table goes with it.
	defer releaseLock(ctx, lock)
	p.lock = lock

	if _, err := lock.Exec(ctx, `CREATE TEMP TABLE reconcile_orphans (identity_id uuid PRIMARY KEY)`); err != nil {
		return fmt.Errorf("create orphan table: %w", err)
	}
	if err := p.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE deleted_at IS NULL`).Scan(&p.report.LiveProfiles); err != nil {
		return fmt.Errorf("count profiles: %w", err)
	}
	p.Logger.InfoContext(ctx, "reconcile pass started", "pass_id", p.report.PassID, "page_size", p.PageSize,
		"dry_run", p.DryRun, "live_profiles", p.report.LiveProfiles)

	pages := newPager(ctx, p.Kratos, p.PageSize)
	defer pages.close()
	for {
		pg, ok, err := pages.next(ctx)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := p.page(ctx, pg); err != nil {
			return err
		}
		if p.ProgressFunc != nil {
			p.ProgressFunc(Progress{Pages: p.report.Pages, Identities: p.report.IdentitiesScanned, Elapsed: time.Since(p.started)})
		}
		// Orphans only grow: once the guard would trip, stop before reading the rest of Kratos.
		if p.guardTripped() && !p.DryRun {
			return p.guardError()
		}
	}

	if p.guardTripped() {
		if !p.DryRun {
			return p.guardError()
		}
		p.Logger.WarnContext(ctx, "a real pass would stop here", "error", p.guardError().Error())
	}
	if !p.DryRun {
		if err := p.enqueueOrphans(ctx); err != nil {
			return err
		}
		if p.SettleInvitesFunc != nil {
			n, err := p.SettleInvitesFunc(ctx)
			if err != nil {
				return fmt.Errorf("settle invites: %w", err)
			}
			p.report.InvitesSettled = n
		}
	}
	r := p.report
	p.Logger.InfoContext(ctx, "reconcile pass done", "pass_id", r.PassID, "dry_run", r.DryRun,
		"identities_scanned", r.IdentitiesScanned, "profiles_missing", r.ProfilesMissing,
		"profiles_inserted", r.ProfilesInserted, "profiles_stale", r.ProfilesStale,
		"profiles_orphaned", r.ProfilesOrphaned, "documents_missing", r.DocumentsMissing,
		"documents_stale", r.DocumentsStale, "invites_settled", r.InvitesSettled,
		"repairs_enqueued", r.RepairsEnqueued, "duration", time.Since(p.started).String())
	return nil
}

func (p *pass) guardTripped() bool {
	if p.AllowMassDelete {
		return false
	}
	n := p.report.ProfilesOrphaned
	return n > AlwaysAllowedDeletes && float64(n) > p.MaxDeleteShare*float64(p.report.LiveProfiles)
}

func (p *pass) guardError() error {
	return &MassDeleteError{Orphans: p.report.ProfilesOrphaned, Live: p.report.LiveProfiles, Share: p.MaxDeleteShare}
}

// page compares one page of identities with the profiles and repairs what differs.
func (p *pass) page(ctx context.Context, pg page) error {
	p.report.Pages++
	p.report.IdentitiesScanned += len(pg.identities)
	ids := make([]uuid.UUID, len(pg.identities))
	for i := range pg.identities {
		ids[i] = pg.identities[i].ID
	}

	rows, err := p.loadProfiles(ctx, ids)
	if err != nil {
		return err
	}
	var missing []*kratos.Identity
	var jobs []river.InsertManyParams
	for i := range pg.identities {
		ident := &pg.identities[i]
		row, ok := rows[ident.ID]
		switch {
		case !ok:
			missing = append(missing, ident)
		case row.Deleted:
			// Kratos has the identity, the profile says it was deleted. Only a sync job that reads Kratos
			// may bring a tombstone back to life.
			p.report.ProfilesStale++
			jobs = append(jobs, p.repair(profilesync.IdentityArgs{IdentityID: ident.ID}))
			p.Logger.DebugContext(ctx, "tombstone of a listed identity", "identity_id", ident.ID)
		default:
			if field := staleField(ident, row); field != "" {
				p.report.ProfilesStale++
				jobs = append(jobs, p.repair(profilesync.IdentityArgs{IdentityID: ident.ID}))
				p.Logger.DebugContext(ctx, "profile stale", "identity_id", ident.ID, "field", field)
			}
		}
	}
	p.report.ProfilesMissing += len(missing)

	orphans, err := p.findOrphans(ctx, pg, ids)
	if err != nil {
		return err
	}
	p.report.ProfilesOrphaned += orphans

	if p.Documents != nil && len(rows) > 0 {
		versions := make([]ProfileVersion, 0, len(rows))
		for _, id := range ids {
			if row, ok := rows[id]; ok {
				versions = append(versions, ProfileVersion{IdentityID: id, Revision: row.Revision, Deleted: row.Deleted})
			}
		}
		docMissing, docStale, err := p.Documents.CheckDocuments(ctx, versions)
		if err != nil {
			return fmt.Errorf("check documents: %w", err)
		}
		p.report.DocumentsMissing += len(docMissing)
		p.report.DocumentsStale += len(docStale)
		for _, id := range append(docMissing, docStale...) {
			jobs = append(jobs, p.repair(p.Documents.RepairArgs(id)))
		}
	}

	if p.afterClassify != nil {
		p.afterClassify(ctx, ids)
	}
	if p.DryRun || len(missing) == 0 && len(jobs) == 0 {
		return nil
	}
	return p.writeRepairs(ctx, missing, jobs)
}

func (p *pass) loadProfiles(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*profileRow, error) {
	rows, err := p.Pool.Query(ctx, selectProfilesSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	defer rows.Close()
	out := make(map[uuid.UUID]*profileRow, len(ids))
	for rows.Next() {
		r := &profileRow{}
		if err := rows.Scan(&r.IdentityID, &r.SchemaID, &r.State, &r.Traits, &r.MetadataPublic,
			&r.VerifiableAddresses, &r.RecoveryAddresses, &r.CreatedAt, &r.Revision, &r.Deleted); err != nil {
			return nil, fmt.Errorf("read profiles: %w", err)
		}
		out[r.IdentityID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	return out, nil
}

// The orphan search: the page covers the id range (after, through], and every live profile in that range
// whose id is not on the page has no identity in Kratos. Both sides are ordered by id, so this is a merge
// of the two sorted streams, done by Postgres over the primary key; the ids land in a temporary table of the
// lock's session, not in memory, and become jobs only once the whole list was read and the guard agreed.
//
// One statement per bound combination: a generic plan for "$1 IS NULL OR identity_id > $1" could not use
// the index.
const orphanSQL = `INSERT INTO reconcile_orphans (identity_id)
SELECT identity_id FROM profiles WHERE deleted_at IS NULL AND identity_id <> ALL($1)`

func (p *pass) findOrphans(ctx context.Context, pg page, ids []uuid.UUID) (int, error) {
	sql, args := orphanSQL, []any{ids}
	if pg.after != nil {
		sql += ` AND identity_id > $2`
		args = append(args, *pg.after)
	}
	if pg.through != nil {
		sql += fmt.Sprintf(` AND identity_id <= $%d`, len(args)+1)
		args = append(args, *pg.through)
	}
	tag, err := p.lock.Exec(ctx, sql, args...)
	if err != nil {
		return 0, fmt.Errorf("find orphaned profiles: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// writeRepairs inserts the missing profiles from the page's snapshot and enqueues the page's jobs, in one
// transaction.
func (p *pass) writeRepairs(ctx context.Context, missing []*kratos.Identity, jobs []river.InsertManyParams) error {
	profiles, mapErrs := mapProfiles(missing, p.Mapper)

	tx, err := p.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin repairs: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	inserted := 0
	for i, ident := range missing {
		if mapErrs[i] != nil {
			// The mapping fails for this identity. A sync job fails the same way, but with the error on
			// record in River, where an operator finds it.
			p.Logger.WarnContext(ctx, "cannot map a missing identity; enqueued a sync job instead",
				"identity_id", ident.ID, "error", mapErrs[i])
			jobs = append(jobs, p.repair(profilesync.IdentityArgs{IdentityID: ident.ID}))
			continue
		}
		w, err := profilesync.InsertMissingProfile(ctx, tx, profiles[i])
		if err != nil {
			return err
		}
		if !w.Changed {
			continue // a webhook's sync wrote the row since the page was read: it is newer
		}
		inserted++
		if p.Documents != nil {
			jobs = append(jobs, p.repair(p.Documents.RepairArgs(ident.ID)))
		}
	}
	enqueued, err := p.enqueue(ctx, tx, jobs)
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit repairs: %w", err)
	}
	p.report.ProfilesInserted += inserted
	p.report.RepairsEnqueued += enqueued
	return nil
}

// enqueue inserts jobs in tx and returns how many were new. InsertManyTx rather than the COPY-based
// InsertManyFastTx: it is as much a single statement, and it skips a job that unique options (which an
// index job may have) say exists already, where InsertManyFastTx would fail the whole page.
func (p *pass) enqueue(ctx context.Context, tx pgx.Tx, jobs []river.InsertManyParams) (int, error) {
	if len(jobs) == 0 {
		return 0, nil
	}
	res, err := p.Jobs.InsertManyTx(ctx, tx, jobs)
	if err != nil {
		return 0, fmt.Errorf("enqueue repairs: %w", err)
	}
	n := 0
	for _, r := range res {
		if !r.UniqueSkippedAsDuplicate {
			n++
		}
	}
	return n, nil
}

// mapProfiles builds the profiles of identities with the mapping, on every core: the mapping is the
// costliest step of a backfill.
func mapProfiles(idents []*kratos.Identity, mapper profilesync.Mapper) ([]profilesync.Profile, []error) {
	profiles := make([]profilesync.Profile, len(idents))
	errs := make([]error, len(idents))
	workers := min(runtime.GOMAXPROCS(0), len(idents))
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := w; i < len(idents); i += workers {
				profiles[i], errs[i] = profilesync.ProfileFromIdentity(idents[i], mapper)
			}
		}()
	}
	for range workers {
		<-done
	}
	return profiles, errs
}

// orphanBatch is how many orphan jobs are enqueued per statement.
const orphanBatch = 1000

// enqueueOrphans enqueues a sync job for every orphan found, in batches read back from the orphan table.
func (p *pass) enqueueOrphans(ctx context.Context) error {
	var after *uuid.UUID
	for {
		sql, args := `SELECT identity_id FROM reconcile_orphans ORDER BY identity_id LIMIT $1`, []any{orphanBatch}
		if after != nil {
			sql = `SELECT identity_id FROM reconcile_orphans WHERE identity_id > $2 ORDER BY identity_id LIMIT $1`
			args = append(args, *after)
		}
		rows, err := p.lock.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("read orphans: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return fmt.Errorf("read orphans: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		jobs := make([]river.InsertManyParams, len(ids))
		for i, id := range ids {
			jobs[i] = p.repair(profilesync.IdentityArgs{IdentityID: id})
		}
		tx, err := p.Pool.Begin(ctx)
		if err != nil {
			return fmt.Errorf("enqueue orphan repairs: %w", err)
		}
		n, err := p.enqueue(ctx, tx, jobs)
		if err == nil {
			err = tx.Commit(ctx)
		}
		_ = tx.Rollback(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("enqueue orphan repairs: %w", err)
		}
		p.report.RepairsEnqueued += n
		after = &ids[len(ids)-1]
		if len(ids) < orphanBatch {
			return nil
		}
	}
}

// repair is a repair job: its args' own queue, a lower priority than webhook events, and the pass id in
// its metadata.
func (p *pass) repair(args river.JobArgs) river.InsertManyParams {
	return river.InsertManyParams{Args: args, InsertOpts: &river.InsertOpts{
		Priority: RepairPriority,
		Tags:     []string{RepairTag},
		Metadata: p.metadata,
	}}
}
