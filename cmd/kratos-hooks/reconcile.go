package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/spf13/cobra"

	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	"github.com/kratos-hooks/kratos-hooks/invites"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/migrations"
	"github.com/kratos-hooks/kratos-hooks/reconcile"
	"github.com/kratos-hooks/kratos-hooks/search"
)

// Exit statuses of `reconcile`, so that a cron wrapper can tell why a pass did not complete.
const (
	exitFailed        = 1 // the pass could not complete (Kratos or Postgres unreachable, cancelled, …)
	exitMassDelete    = 3 // stopped by the mass-deletion guard
	exitLocked        = 4 // another pass holds the lock
	exitRepairsFailed = 5 // --wait: repairs failed or were still pending at --wait-timeout
)

// exitError carries a process exit status other than 1 (main reads it).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

type reconcileConfig struct {
	LogConfig
	DBConfig
	KratosConfig
	ElasticsearchConfig
	ProfileMappingFile       string        `env:"PROFILE_MAPPING_FILE"`
	InviteReservationTimeout time.Duration `env:"INVITE_RESERVATION_TIMEOUT" envDefault:"15m"`
}

type reconcileFlags struct {
	pageSize         int
	dryRun           bool
	json             bool
	wait             bool
	waitTimeout      time.Duration
	allowMassDelete  bool
	maxDeletePercent float64
	waitForLock      time.Duration
}

func newReconcileCmd(e *environment) *cobra.Command {
	var f reconcileFlags
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Make one pass over Kratos's identities and repair every difference in profiles",
		Long: `Page through the Kratos admin identities API and compare every identity with its profile: insert
missing profiles, enqueue a sync job for each stale profile and for each profile whose identity is gone
(it is tombstoned once Kratos answers 404), then exit. The jobs are worked by a running 'serve'.

Exit status: 0 the pass completed (whether or not it repaired anything); 1 it could not complete;
2 bad command line; 3 stopped by the mass-deletion guard; 4 another pass is running;
5 with --wait, repairs failed or were still pending at --wait-timeout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(); err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			report, outcome, err := runReconcile(cmd.Context(), e, f)
			err = reconcileError(err)
			// With --json there is exactly one line on stdout, whatever happened after the flags were read.
			if f.json {
				writeReportJSON(e.stdout, report, outcome, err)
			} else {
				writeReportText(e.stdout, report, outcome)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.pageSize, "page-size", reconcile.DefaultPageSize, fmt.Sprintf("identities per Kratos page (1 to %d)", kratos.MaxPageSize))
	fl.BoolVar(&f.dryRun, "dry-run", false, "find and report differences, change nothing")
	fl.BoolVar(&f.json, "json", false, "print the report as one JSON line on stdout (and no progress line)")
	fl.BoolVar(&f.wait, "wait", false, "wait until the repair jobs are done (worked by a running serve) and report their outcome")
	fl.DurationVar(&f.waitTimeout, "wait-timeout", 10*time.Minute, "how long --wait waits")
	fl.BoolVar(&f.allowMassDelete, "allow-mass-delete", false, "remove profiles even when more than --max-delete-percent of them are gone from Kratos")
	fl.Float64Var(&f.maxDeletePercent, "max-delete-percent", reconcile.DefaultMaxDeleteShare*100,
		fmt.Sprintf("stop rather than remove more than this share of profiles (a pass may always remove %d)", reconcile.AlwaysAllowedDeletes))
	fl.DurationVar(&f.waitForLock, "wait-for-lock", 0, "when another pass is running, wait this long for it (0: exit at once, status 4)")
	return cmd
}

func (f *reconcileFlags) validate() error {
	var errs []error
	if f.pageSize < 1 || f.pageSize > kratos.MaxPageSize {
		errs = append(errs, fmt.Errorf("--page-size %d: want 1 to %d", f.pageSize, kratos.MaxPageSize))
	}
	if !(f.maxDeletePercent > 0 && f.maxDeletePercent <= 100) {
		errs = append(errs, fmt.Errorf("--max-delete-percent %g: want more than 0 and at most 100", f.maxDeletePercent))
	}
	if f.waitTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--wait-timeout %s: want a positive duration", f.waitTimeout))
	}
	if f.waitForLock < 0 {
		errs = append(errs, fmt.Errorf("--wait-for-lock %s: want 0 or a positive duration", f.waitForLock))
	}
	if f.wait && f.dryRun {
		errs = append(errs, errors.New("--wait and --dry-run: a dry run enqueues nothing to wait for"))
	}
	return errors.Join(errs...)
}

// runReconcile makes one pass and, with --wait, waits for its repairs. The report is returned with any
// error, as far as the pass got.
func runReconcile(ctx context.Context, e *environment, f reconcileFlags) (reconcile.Report, *reconcile.Outcome, error) {
	var cfg reconcileConfig
	if err := loadConfig(&cfg, e.getenv); err != nil {
		return reconcile.Report{}, nil, err
	}
	// On a terminal (and not with --json) a progress line sits at the bottom of stderr; log lines go above it.
	var progress *progressLine
	stderr := e.stderr
	if !f.json && isTerminal(e.stderr) {
		progress = &progressLine{w: e.stderr}
		stderr = progress
	}
	logger, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return reconcile.Report{}, nil, fmt.Errorf("LOG_LEVEL/LOG_FORMAT: %w", err)
	}
	kratosClient, err := kratos.NewClient(cfg.KratosAdminURL, nil)
	if err != nil {
		return reconcile.Report{}, nil, fmt.Errorf("KRATOS_ADMIN_URL: %w", err)
	}
	mapper, err := loadMapper(cfg.ProfileMappingFile)
	if err != nil {
		return reconcile.Report{}, nil, err
	}
	// One connection holds the lock for the whole pass; the pass uses one more at a time, --wait another.
	pool, err := newPool(ctx, cfg.DatabaseURL, 4, "kratos-hooks-reconcile")
	if err != nil {
		return reconcile.Report{}, nil, err
	}
	defer pool.Close()
	if err := migrations.Check(ctx, pool); err != nil {
		return reconcile.Report{}, nil, fmt.Errorf("database not ready: %w", err)
	}
	// Insert-only: the jobs are worked by serve's workers. Such a client fetches nothing, and its FetchCooldown
	// only spaces out the notifications of its inserts: at River's default (100 ms) the index job of a page
	// written soon after the one before goes unnoticed until the workers poll (every second), which is most of
	// the time between a backfill's end and its last document being searchable.
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger, FetchCooldown: river.FetchCooldownMin})
	if err != nil {
		return reconcile.Report{}, nil, fmt.Errorf("river client: %w", err)
	}

	index, err := cfg.ElasticsearchConfig.open()
	if err != nil {
		return reconcile.Report{}, nil, err
	}
	opts := reconcile.Opts{
		Pool: pool, Kratos: kratosClient, Mapper: mapper, Jobs: jobs, Logger: logger,
		PageSize:        f.pageSize,
		DryRun:          f.dryRun,
		MaxDeleteShare:  f.maxDeletePercent / 100,
		AllowMassDelete: f.allowMassDelete,
		WaitForLock:     f.waitForLock,
		// Invite reservations whose confirming webhook was lost are settled by asking Kratos.
		SettleInvitesFunc: settleInvites(pool, kratosClient, cfg.InviteReservationTimeout),
	}
	if index != nil {
		defer func() { _ = index.Close(context.WithoutCancel(ctx)) }()
		opts.Documents = index
	}
	if progress != nil {
		opts.ProgressFunc = progress.update
	}
	report, err := reconcile.Run(ctx, opts)
	progress.clear()
	if err != nil || !f.wait {
		return report, nil, err
	}

	waitCtx, cancel := context.WithTimeout(ctx, f.waitTimeout)
	defer cancel()
	o, err := reconcile.WaitRepairs(waitCtx, pool, report.PassID)
	switch {
	case err != nil && ctx.Err() == nil && waitCtx.Err() != nil:
		err = &exitError{code: exitRepairsFailed, err: fmt.Errorf("%d of %d repairs still pending after %s: "+
			"they are worked by `kratos-hooks serve` (all or worker role); is it running?", o.Pending, report.RepairsEnqueued, f.waitTimeout)}
	case err == nil && o.Failed > 0:
		err = &exitError{code: exitRepairsFailed, err: fmt.Errorf("%d of %d repairs failed; River keeps their errors "+
			"(river_job rows in state cancelled or discarded with metadata reconcile_pass %s)", o.Failed, report.RepairsEnqueued, report.PassID)}
	}
	return report, &o, err
}

// reconcileError gives the errors a person must act on their exit status and what to do.
func reconcileError(err error) error {
	var guard *reconcile.MassDeleteError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &guard):
		return &exitError{code: exitMassDelete, err: fmt.Errorf("%w.\nNo profile was removed. If these identities "+
			"really are gone from Kratos, run again with --allow-mass-delete (or a higher --max-delete-percent)", err)}
	case errors.Is(err, reconcile.ErrLocked):
		return &exitError{code: exitLocked, err: fmt.Errorf("%w; try again later, or pass --wait-for-lock", err)}
	}
	return err
}

// reportJSON is the --json line. The first eight fields are the contract; the rest add detail.
type reportJSON struct {
	IdentitiesScanned int     `json:"identities_scanned"`
	ProfilesMissing   int     `json:"profiles_missing"`
	ProfilesStale     int     `json:"profiles_stale"`
	ProfilesOrphaned  int     `json:"profiles_orphaned"`
	DocumentsMissing  int     `json:"documents_missing"`
	DocumentsStale    int     `json:"documents_stale"`
	RepairsEnqueued   int     `json:"repairs_enqueued"`
	DurationSeconds   float64 `json:"duration_seconds"`

	PassID           string `json:"pass_id"`
	DryRun           bool   `json:"dry_run"`
	Pages            int    `json:"pages"`
	ProfilesInserted int    `json:"profiles_inserted"`
	InvitesSettled   int    `json:"invites_settled"`
	// With --wait.
	RepairsCompleted *int `json:"repairs_completed,omitempty"`
	RepairsFailed    *int `json:"repairs_failed,omitempty"`
	RepairsPending   *int `json:"repairs_pending,omitempty"`
	// Set when the pass did not complete (the exit status is not 0).
	Error string `json:"error,omitempty"`
}

func writeReportJSON(w io.Writer, r reconcile.Report, o *reconcile.Outcome, err error) {
	line := reportJSON{
		IdentitiesScanned: r.IdentitiesScanned, ProfilesMissing: r.ProfilesMissing, ProfilesStale: r.ProfilesStale,
		ProfilesOrphaned: r.ProfilesOrphaned, DocumentsMissing: r.DocumentsMissing, DocumentsStale: r.DocumentsStale,
		RepairsEnqueued: r.RepairsEnqueued, DurationSeconds: math.Round(r.Duration.Seconds()*1000) / 1000,
		PassID: r.PassID, DryRun: r.DryRun, Pages: r.Pages, ProfilesInserted: r.ProfilesInserted,
		InvitesSettled: r.InvitesSettled,
	}
	if o != nil {
		line.RepairsCompleted, line.RepairsFailed, line.RepairsPending = &o.Completed, &o.Failed, &o.Pending
	}
	if err != nil {
		line.Error = err.Error()
	}
	b, _ := json.Marshal(line)
	fmt.Fprintf(w, "%s\n", b)
}

func writeReportText(w io.Writer, r reconcile.Report, o *reconcile.Outcome) {
	if r.PassID == "" {
		return // nothing ran
	}
	title := "reconcile pass"
	if r.DryRun {
		title = "reconcile dry run (nothing changed)"
	}
	fmt.Fprintf(w, "%s %s: %s, %d pages\n", title, r.PassID, r.Duration.Round(time.Millisecond), r.Pages)
	rows := []struct {
		name string
		n    int
		note string
	}{
		{"identities scanned", r.IdentitiesScanned, ""},
		{"profiles missing", r.ProfilesMissing, fmt.Sprintf("(%d inserted)", r.ProfilesInserted)},
		{"profiles stale", r.ProfilesStale, ""},
		{"profiles orphaned", r.ProfilesOrphaned, ""},
		{"documents missing", r.DocumentsMissing, ""},
		{"documents stale", r.DocumentsStale, ""},
		{"invites settled", r.InvitesSettled, ""},
		{"repairs enqueued", r.RepairsEnqueued, ""},
	}
	if r.DryRun {
		rows[1].note = ""
	}
	for _, row := range rows {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-20s %8d %s", row.name, row.n, row.note), " "))
	}
	if o != nil {
		fmt.Fprintf(w, "  %-20s %8d completed, %d failed, %d pending\n", "repairs", o.Completed, o.Failed, o.Pending)
	}
}

// scheduleReconcile makes serve run a reconcile pass every RECONCILE_INTERVAL: River's leader inserts the
// job, one worker runs it under the reconcile lock. A pass also runs when a process becomes leader (after a
// deploy), so that a long interval still comes round when processes restart more often than that.
func scheduleReconcile(config *river.Config, workers *river.Workers, cfg serveConfig, pool *pgxpool.Pool,
	kratosClient *kratos.Client, mapper *jsonnet.Mapper, index *search.Index, logger *slog.Logger) {
	opts := reconcile.Opts{
		Pool: pool, Kratos: kratosClient, Mapper: mapper, Logger: logger,
		PageSize:          cfg.ReconcilePageSize,
		MaxDeleteShare:    cfg.ReconcileMaxDeletePercent / 100,
		SettleInvitesFunc: settleInvites(pool, kratosClient, cfg.InviteReservationTimeout),
	}
	if index != nil {
		opts.Documents = index
	}
	river.AddWorker(workers, reconcile.NewPassWorker(opts, cfg.ReconcileTimeout))
	config.PeriodicJobs = append(config.PeriodicJobs, river.NewPeriodicJob(river.PeriodicInterval(cfg.ReconcileInterval),
		func() (river.JobArgs, *river.InsertOpts) { return reconcile.PassArgs{}, nil },
		&river.PeriodicJobOpts{RunOnStart: true}))
	logger.Info("scheduled reconcile passes", "interval", cfg.ReconcileInterval.String(), "timeout", cfg.ReconcileTimeout.String())
}

// settleInvites is reconcile's hook for invite reservations left unconfirmed.
func settleInvites(pool *pgxpool.Pool, kc *kratos.Client, timeout time.Duration) func(ctx context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		settled, err := invites.SettleStale(ctx, pool, kc, time.Now(), timeout)
		return settled.Confirmed + settled.Released, err
	}
}
