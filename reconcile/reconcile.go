// Package reconcile pages the Kratos admin identities API and repairs every difference between Kratos and
// the profiles table: identities without a profile, profiles that fell behind their identity, and profiles
// of identities Kratos no longer has. It is what makes the profiles trustworthy although webhooks get lost,
// and how a team backfills the identities it already has.
//
// Repairs go through the same code paths as webhook events, so every invariant of the sync pipeline holds
// while webhooks keep arriving during a pass:
//   - a page's snapshot may only insert a missing profile (sync.InsertMissingProfiles, one statement per
//     page: never over an existing row, tombstones included), which makes a backfill cost no admin call per
//     identity;
//   - a stale profile or an orphan gets a sync job (sync.IdentityArgs without an event) that re-reads the
//     identity from Kratos under the identity lock, and tombstones the profile only when Kratos answers 404;
//   - documents are written by an index job per page (sync.IndexBatchArgs) that reads the current rows and
//     writes each as the per-profile index job does.
//
// One pass runs at a time, under a Postgres session advisory lock held on one connection for the whole pass.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/search"
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

// DocumentChecker reads the search index for a pass (*search.Index): one _mget of versions per page, which
// Run compares with the page's profiles.
type DocumentChecker interface {
	// DocumentVersions returns the version of each id's document; ids without a document are absent.
	DocumentVersions(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]int64, error)
}

var _ DocumentChecker = (*search.Index)(nil)

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

	if err := p.pages(ctx); err != nil {
		return err
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

// pages reads Kratos's list page by page, compares each page with the profiles and hands its repairs to a
// writer. Three pages are in flight at once: the next one is read from Kratos while this one is compared
// and its missing profiles mapped, and the previous one's repairs are written.
func (p *pass) pages(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pages := newPager(ctx, p.Kratos, p.PageSize)
	defer pages.close()
	var w *repairWriter
	if !p.DryRun {
		w = p.startWriter(ctx, cancel)
	}
	err := func() error {
		for {
			pg, ok, err := pages.next(ctx)
			if err != nil || !ok {
				return err
			}
			repairs, err := p.page(ctx, pg)
			if err != nil {
				return err
			}
			if w != nil && (len(repairs.missing) > 0 || len(repairs.jobs) > 0 || len(repairs.index) > 0) {
				if err := w.write(ctx, repairs); err != nil {
					return err
				}
			}
			if p.ProgressFunc != nil {
				p.ProgressFunc(Progress{Pages: p.report.Pages, Identities: p.report.IdentitiesScanned, Elapsed: time.Since(p.started)})
			}
			// Orphans only grow: once the guard would trip, stop before reading the rest of Kratos.
			if p.guardTripped() && !p.DryRun {
				return p.guardError()
			}
		}
	}()
	if w != nil {
		// The pages compared so far are written even when the pass stops: none of their repairs removes
		// anything. A write that failed is the cause of whatever stopped the loop.
		inserted, enqueued, werr := w.finish()
		p.report.ProfilesInserted += inserted
		p.report.RepairsEnqueued += enqueued
		if werr != nil {
			return werr
		}
	}
	return err
}

// pageRepairs is what one page needs written: its missing profiles (mapped, or the mapping's error) and its
// jobs.
type pageRepairs struct {
	missing  []*kratos.Identity
	profiles []profilesync.Profile
	mapErrs  []error
	jobs     []river.InsertManyParams
	// index are the profiles whose documents need writing (those inserted are added as they are).
	index []uuid.UUID
}

// page compares one page of identities with the profiles (and the index) and returns the repairs it needs.
func (p *pass) page(ctx context.Context, pg page) (pageRepairs, error) {
	p.report.Pages++
	p.report.IdentitiesScanned += len(pg.identities)
	ids := make([]uuid.UUID, len(pg.identities))
	for i := range pg.identities {
		ids[i] = pg.identities[i].ID
	}

	// The profiles of the page, their documents and the orphans in its range, at the same time: they are
	// independent, and the orphan search runs on the lock's connection.
	var (
		rows     map[uuid.UUID]*profileRow
		versions map[uuid.UUID]int64
		orphans  int
	)
	var loadErr, versionsErr, orphanErr error
	var wg sync.WaitGroup
	wg.Go(func() { rows, loadErr = p.loadProfiles(ctx, ids) })
	if p.Documents != nil {
		// All of the page's ids, not only those with a row: asking Elasticsearch about an id it does not
		// have costs less than waiting for the rows first.
		wg.Go(func() {
			if versions, versionsErr = p.Documents.DocumentVersions(ctx, ids); versionsErr != nil {
				versionsErr = fmt.Errorf("check documents: %w", versionsErr)
			}
		})
	}
	wg.Go(func() { orphans, orphanErr = p.findOrphans(ctx, pg, ids) })
	wg.Wait()
	if err := errors.Join(loadErr, versionsErr, orphanErr); err != nil {
		return pageRepairs{}, err
	}
	p.report.ProfilesOrphaned += orphans

	var r pageRepairs
	for i := range pg.identities {
		ident := &pg.identities[i]
		row, ok := rows[ident.ID]
		switch {
		case !ok:
			r.missing = append(r.missing, ident)
		case row.Deleted:
			// Kratos has the identity, the profile says it was deleted. Only a sync job that reads Kratos
			// may bring a tombstone back to life.
			p.report.ProfilesStale++
			r.jobs = append(r.jobs, p.repair(profilesync.IdentityArgs{IdentityID: ident.ID}))
			p.Logger.DebugContext(ctx, "tombstone of a listed identity", "identity_id", ident.ID)
		default:
			if field := staleField(ident, row); field != "" {
				p.report.ProfilesStale++
				r.jobs = append(r.jobs, p.repair(profilesync.IdentityArgs{IdentityID: ident.ID}))
				p.Logger.DebugContext(ctx, "profile stale", "identity_id", ident.ID, "field", field)
			}
		}
	}
	p.report.ProfilesMissing += len(r.missing)

	if p.Documents != nil {
		docMissing, docStale := documentDrift(ids, rows, versions)
		p.report.DocumentsMissing += len(docMissing)
		p.report.DocumentsStale += len(docStale)
		r.index = append(docMissing, docStale...)
	}

	if p.afterClassify != nil {
		p.afterClassify(ctx, ids)
	}
	if !p.DryRun && len(r.missing) > 0 {
		r.profiles, r.mapErrs = mapProfiles(r.missing, p.Mapper)
	}
	return r, nil
}

// documentDrift finds, among the page's profiles, live ones without a document, documents of tombstones
// (deleting them is the repair, with the tombstone's revision), and documents whose version is below their
// profile's revision.
func documentDrift(ids []uuid.UUID, rows map[uuid.UUID]*profileRow, versions map[uuid.UUID]int64) (missing, stale []uuid.UUID) {
	for _, id := range ids {
		row, ok := rows[id]
		if !ok {
			continue
		}
		version, found := versions[id]
		switch {
		case row.Deleted && found:
			stale = append(stale, id)
		case row.Deleted:
		case !found:
			missing = append(missing, id)
		case version < row.Revision:
			stale = append(stale, id)
		}
	}
	return missing, stale
}

// repairWriter writes pages' repairs, one page at a time and in order, beside the reading of the next ones.
type repairWriter struct {
	pages chan pageRepairs
	done  chan struct{}
	// Set by the writer's goroutine; read after done is closed.
	inserted, enqueued int
	err                error
}

// startWriter starts the writer. When a write fails, it cancels the pass with the error (through cancel)
// and stops.
func (p *pass) startWriter(ctx context.Context, cancel context.CancelCauseFunc) *repairWriter {
	w := &repairWriter{pages: make(chan pageRepairs, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for r := range w.pages {
			inserted, enqueued, err := p.writeRepairs(ctx, r)
			if err != nil {
				// The pass stops: write waits for the writer, or for the cancellation.
				w.err = err
				cancel(err)
				return
			}
			w.inserted += inserted
			w.enqueued += enqueued
		}
	}()
	return w
}

// write queues a page's repairs; it waits while the writer is busy with the page before.
func (w *repairWriter) write(ctx context.Context, r pageRepairs) error {
	select {
	case w.pages <- r:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// finish waits until the queued pages are written and returns what the writer did, and the first error.
func (w *repairWriter) finish() (inserted, enqueued int, err error) {
	close(w.pages)
	<-w.done
	return w.inserted, w.enqueued, w.err
}

func (p *pass) loadProfiles(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*profileRow, error) {
	rows, err := p.Pool.Query(ctx, selectProfilesSQL, profilesync.PgUUIDs(ids))
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
	sql, args := orphanSQL, []any{profilesync.PgUUIDs(ids)}
	if pg.after != nil {
		sql += ` AND identity_id > $2`
		args = append(args, profilesync.PgUUID(*pg.after))
	}
	if pg.through != nil {
		sql += fmt.Sprintf(` AND identity_id <= $%d`, len(args)+1)
		args = append(args, profilesync.PgUUID(*pg.through))
	}
	tag, err := p.lock.Exec(ctx, sql, args...)
	if err != nil {
		return 0, fmt.Errorf("find orphaned profiles: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// writeRepairs inserts the missing profiles of a page from its snapshot and enqueues the page's jobs, in
// one transaction, and returns how many profiles it inserted and how many jobs it enqueued.
func (p *pass) writeRepairs(ctx context.Context, r pageRepairs) (inserted, enqueued int, err error) {
	jobs := r.jobs
	insert := make([]profilesync.Profile, 0, len(r.missing))
	for i, ident := range r.missing {
		if r.mapErrs[i] != nil {
			// The mapping fails for this identity. A sync job fails the same way, but with the error on
			// record in River, where an operator finds it.
			p.Logger.WarnContext(ctx, "cannot map a missing identity; enqueued a sync job instead",
				"identity_id", ident.ID, "error", r.mapErrs[i])
			jobs = append(jobs, p.repair(profilesync.IdentityArgs{IdentityID: ident.ID}))
			continue
		}
		insert = append(insert, r.profiles[i])
	}

	tx, err := p.Pool.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("begin repairs: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	// One statement for the page. A row that exists is never touched: a webhook's sync wrote it since the
	// page was read, and it is newer.
	writes, err := profilesync.InsertMissingProfiles(ctx, tx, insert)
	if err != nil {
		return 0, 0, err
	}
	index := r.index
	for i, w := range writes {
		if w.Changed {
			inserted++
			index = append(index, insert[i].IdentityID)
		}
	}
	if p.Documents != nil && len(index) > 0 {
		// One index job for the page, for the profiles whose documents differ and those inserted here: it
		// reads the current rows, so it writes what they hold when it runs.
		jobs = append(jobs, p.repair(profilesync.IndexBatchArgs{IdentityIDs: index}))
	}
	if enqueued, err = p.enqueue(ctx, tx, jobs); err != nil {
		return 0, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, fmt.Errorf("commit repairs: %w", err)
	}
	return inserted, enqueued, nil
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

// mapBatch is how many identities are mapped in one evaluation (sync.ProfilesFromIdentities). An evaluation
// holds its identities' values until it is done: enough of them to spread its fixed cost thin, few enough
// to keep the memory of a page's mapping small.
const mapBatch = 50

// mapProfiles builds the profiles of identities with the mapping, mapBatch at a time, on every core: the
// mapping is the costliest step of a backfill.
func mapProfiles(idents []*kratos.Identity, mapper profilesync.Mapper) ([]profilesync.Profile, []error) {
	profiles := make([]profilesync.Profile, len(idents))
	errs := make([]error, len(idents))
	var next atomic.Int64 // the start of the next batch to map
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), (len(idents)+mapBatch-1)/mapBatch) {
		wg.Go(func() {
			for {
				start := int(next.Add(mapBatch)) - mapBatch
				if start >= len(idents) {
					return
				}
				end := min(start+mapBatch, len(idents))
				ps, es := profilesync.ProfilesFromIdentities(idents[start:end], mapper)
				copy(profiles[start:end], ps)
				copy(errs[start:end], es)
			}
		})
	}
	wg.Wait()
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
