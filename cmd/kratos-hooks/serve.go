package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/spf13/cobra"

	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	"github.com/kratos-hooks/kratos-hooks/invites"
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/metrics"
	"github.com/kratos-hooks/kratos-hooks/migrations"
	"github.com/kratos-hooks/kratos-hooks/reconcile"
	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// Roles of a serve process: everything, only the HTTP side, or only the workers. HTTP and workers scale
// independently: run more of either.
const (
	roleAll    = "all"
	roleHTTP   = "http"
	roleWorker = "worker"
)

func newServeCmd(e *environment) *cobra.Command {
	var role string
	var migrate bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the webhook receiver and the sync workers",
		Long: `Serve the Kratos web_hook endpoints under /hooks, /health/alive, /health/ready and /metrics on LISTEN_ADDR
(/metrics on METRICS_ADDR instead when that is set), and run the River workers that sync profiles. Stops gracefully on SIGINT or SIGTERM: HTTP first, then the workers
(waiting up to SHUTDOWN_TIMEOUT for running jobs), then the database pools.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch role {
			case roleAll, roleHTTP, roleWorker:
			default:
				return &usageError{cmd: cmd, err: fmt.Errorf("--role %q: want all, http or worker", role)}
			}
			var cfg serveConfig
			if err := loadConfig(&cfg, e.getenv); err != nil {
				return err
			}
			if err := cfg.validate(role); err != nil {
				return err
			}
			logger, err := logging.New(e.stderr, cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return fmt.Errorf("LOG_LEVEL/LOG_FORMAT: %w", err)
			}
			return serve(cmd.Context(), cfg, role, migrate, logger)
		},
	}
	cmd.Flags().StringVar(&role, "role", roleAll, "what this process runs: all, http (webhook endpoints only) or worker (sync workers only)")
	cmd.Flags().BoolVar(&migrate, "migrate", false, "apply database migrations before serving")
	return cmd
}

func serve(ctx context.Context, cfg serveConfig, role string, migrate bool, logger *slog.Logger) error {
	runHTTP := role != roleWorker
	runWorkers := role != roleHTTP

	kratosClient, err := kratos.NewClient(cfg.KratosAdminURL, nil)
	if err != nil {
		return fmt.Errorf("KRATOS_ADMIN_URL: %w", err)
	}
	mapper, err := loadMapper(cfg.ProfileMappingFile)
	if err != nil {
		return err
	}
	if err := checkMapping(ctx, mapper, cfg.ProfileMappingFile != "", kratosClient, logger); err != nil {
		return err
	}
	index, err := cfg.ElasticsearchConfig.open()
	if err != nil {
		return err
	}
	if index == nil {
		logger.InfoContext(ctx, "search projection is off: ELASTICSEARCH_URL is not set")
	} else {
		defer func() { _ = index.Close(context.WithoutCancel(ctx)) }()
	}

	// Metrics go to a registry of this process's own; each part registers what it measures.
	reg := metrics.NewRegistry()
	requests := metrics.NewRequests()
	reg.MustRegister(requests)

	httpPool, err := newPool(ctx, cfg.DatabaseURL, cfg.HTTPDBMaxConns, "kratos-hooks-http")
	if err != nil {
		return err
	}
	defer httpPool.Close()

	if migrate {
		if _, err := migrations.Up(ctx, httpPool, logger); err != nil {
			return err
		}
	}
	if err := migrations.Check(ctx, httpPool); err != nil {
		return fmt.Errorf("database not ready: %w", err)
	}

	// The River client: one that works jobs in worker roles, an insert-only one for the HTTP role.
	riverPool := httpPool
	riverConfig := &river.Config{Logger: logger}
	if runWorkers {
		workerPool, err := newPool(ctx, cfg.DatabaseURL, cfg.WorkerDBMaxConns, "kratos-hooks-worker")
		if err != nil {
			return err
		}
		defer workerPool.Close()
		riverPool = workerPool
		syncMetrics := metrics.NewSync()
		reg.MustRegister(syncMetrics)
		var writer *search.Writer
		if index != nil {
			ensureIndexAtStart(ctx, index, logger)
			// One writer for all index jobs, so that their documents share bulk requests. It closes after
			// River has stopped (deferred after the pool, so it runs before the pool closes).
			writer, err = index.NewWriter(search.WriterOpts{FlushInterval: cfg.IndexFlushInterval, Logger: logger,
				ObserveBulkFunc: syncMetrics.ObserveBulk})
			if err != nil {
				return err
			}
			defer func() {
				closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				if err := writer.Close(closeCtx); err != nil {
					logger.WarnContext(ctx, "search writer did not close cleanly", "error", err)
				}
			}()
		}
		riverConfig = workerConfig(cfg, workerPool, kratosClient, mapper, index, writer, reg, syncMetrics, logger)
	}
	jobs, err := river.NewClient(riverpgxv5.New(riverPool), riverConfig)
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}

	var smsSink *hooks.SMSSink
	if cfg.DevSMSSink {
		smsSink = hooks.NewSMSSink()
		logger.WarnContext(ctx, "DEV_SMS_SINK is on: SMS sent to /dev/sms are kept in memory and shown at GET /dev/sms; never use it in production")
	}

	// Queue depths, the last reconcile passes and the dependencies are read when Prometheus scrapes.
	dependencies := []metrics.Dependency{
		{Name: "database", CheckFunc: func(ctx context.Context) error { return httpPool.Ping(ctx) }},
		{Name: "kratos_admin", CheckFunc: kratosClient.Alive},
	}
	if index != nil {
		dependencies = append(dependencies, metrics.Dependency{Name: "elasticsearch", CheckFunc: index.Health})
	}
	reg.MustRegister(
		metrics.NewQueues(riverPool, queueNames(index != nil), scrapeTimeout),
		metrics.NewReconcile(riverPool, scrapeTimeout),
		metrics.NewDependencies(dependencies, scrapeTimeout),
	)
	metricsHandler := metrics.Handler(reg, logger)
	var mainMetrics http.Handler // /metrics on the main listener, unless it has one of its own
	if cfg.MetricsAddr == "" {
		mainMetrics = metricsHandler
	}

	var migrated atomic.Bool
	handler := hooks.New(hooks.Opts{
		Logger:         logger,
		Pool:           httpPool,
		Jobs:           jobs,
		APIKeys:        cfg.HooksAPIKeys,
		AdminAPITokens: cfg.AdminAPITokens,
		Search:         index,
		DBTimeout:      cfg.HookDBTimeout,
		Committers:     cfg.HookCommitters,
		Hooks:          runHTTP,
		Checks: append([]hooks.Check{
			{Name: "database", Critical: true, Func: func(ctx context.Context) error { return httpPool.Ping(ctx) }},
			{Name: "migrations", Critical: true, Func: func(ctx context.Context) error {
				if migrated.Load() {
					return nil
				}
				err := migrations.Check(ctx, httpPool)
				migrated.Store(err == nil)
				return err
			}},
			{Name: "kratos_admin", Func: kratosClient.Alive},
		}, searchChecks(index)...),
		Gating:             cfg.gating,
		SMSSink:            smsSink,
		ObserveRequestFunc: requests.ObserveRequest,
		Metrics:            mainMetrics,
	})

	// The listener is opened before anything starts, so a busy port fails fast.
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR: %w", err)
	}
	srv := newHTTPServer(handler, logger)
	servers := []*http.Server{srv}
	listeners := []net.Listener{ln}
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metricsHandler)
		servers = append(servers, newHTTPServer(mux, logger))
		listeners = append(listeners, mln)
	}

	// River runs under its own context: the signal stops HTTP first, and River is stopped explicitly after.
	if runWorkers {
		if err := jobs.Start(context.WithoutCancel(ctx)); err != nil {
			for _, l := range listeners {
				_ = l.Close()
			}
			return fmt.Errorf("start workers: %w", err)
		}
	}
	serveErr := make(chan error, len(servers))
	for i, s := range servers {
		go func() { serveErr <- s.Serve(listeners[i]) }()
	}
	metricsAddr := ln.Addr().String()
	if len(listeners) > 1 {
		metricsAddr = listeners[1].Addr().String()
	}
	logger.InfoContext(ctx, "kratos-hooks serving", "addr", ln.Addr().String(), "metrics_addr", metricsAddr,
		"role", role, "sync_workers", cfg.SyncWorkers, "sync_batches", cfg.SyncBatches)

	select {
	case <-ctx.Done():
		logger.InfoContext(ctx, "shutting down")
	case err := <-serveErr:
		logger.ErrorContext(ctx, "http server stopped", "error", err)
	}

	// Reverse order of start: HTTP, then River (soft stop, then cancel running jobs), then the pools
	// (deferred above).
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(stopCtx); err != nil {
			logger.WarnContext(ctx, "http shutdown", "error", err)
		}
	}
	if runWorkers {
		if err := jobs.Stop(stopCtx); err != nil {
			logger.WarnContext(ctx, "workers did not finish in time; cancelling running jobs", "error", err)
			hardCtx, cancelHard := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancelHard()
			if err := jobs.StopAndCancel(hardCtx); err != nil {
				logger.ErrorContext(ctx, "workers did not stop", "error", err)
			}
		}
	}
	logger.InfoContext(ctx, "stopped")
	return nil
}

// scrapeTimeout bounds what a scrape of /metrics waits for each of the database and the dependencies.
const scrapeTimeout = 2 * time.Second

func newHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// queueNames are the River queues /metrics reports even when they are empty.
func queueNames(search bool) []string {
	queues := []string{profilesync.QueueIdentity, profilesync.QueueMaintenance}
	if search {
		queues = append(queues, profilesync.QueueIndex, profilesync.QueueIndexBatch)
	}
	return queues
}

// workerConfig is the River configuration of a process that works jobs. Every job is measured (registered
// on reg) and logs with its id and kind.
func workerConfig(cfg serveConfig, pool *pgxpool.Pool, kratosClient *kratos.Client, mapper *jsonnet.Mapper,
	index *search.Index, writer *search.Writer, reg prometheus.Registerer, syncMetrics *metrics.Sync, logger *slog.Logger) *river.Config {
	workers := river.NewWorkers()
	river.AddWorker(workers, profilesync.NewIdentityWorker(profilesync.IdentityWorkerOpts{
		Pool:           pool,
		Kratos:         kratosClient,
		Mapper:         mapper,
		Logger:         logger,
		Timeout:        cfg.SyncJobTimeout,
		IndexProfiles:  index != nil,
		ObserveLagFunc: syncMetrics.ObserveProfileLag,
		BatchSize:      cfg.SyncBatchSize,
		Batches:        cfg.SyncBatches,
	}))
	river.AddWorker(workers, &profilesync.EventCleanupWorker{Pool: pool, Retention: cfg.EventRetention, Logger: logger})
	river.AddWorker(workers, &invites.SettleWorker{Pool: pool, Kratos: kratosClient, Logger: logger,
		ReservationTimeout: cfg.InviteReservationTimeout, GuessWindow: cfg.InviteGuessWindow})
	kinds := []string{profilesync.IdentityArgs{}.Kind(), profilesync.EventCleanupArgs{}.Kind(), invites.SettleArgs{}.Kind()}
	queues := map[string]river.QueueConfig{
		profilesync.QueueIdentity:    {MaxWorkers: cfg.SyncWorkers},
		profilesync.QueueMaintenance: {MaxWorkers: 2},
	}
	if index != nil {
		indexWorker := profilesync.NewIndexWorker(profilesync.IndexWorkerOpts{
			Pool: pool, Index: index, Writer: writer, Logger: logger, Timeout: cfg.SyncJobTimeout,
			ObserveLagFunc: syncMetrics.ObserveDocumentLag,
		})
		river.AddWorker(workers, indexWorker)
		river.AddWorker(workers, profilesync.NewIndexBatchWorker(indexWorker))
		queues[profilesync.QueueIndex] = river.QueueConfig{MaxWorkers: cfg.IndexWorkers}
		// Reconcile's index jobs, a page of profiles each.
		queues[profilesync.QueueIndexBatch] = river.QueueConfig{MaxWorkers: profilesync.IndexBatchWorkers}
		kinds = append(kinds, profilesync.IndexArgs{}.Kind(), profilesync.IndexBatchArgs{}.Kind())
	}

	config := &river.Config{
		Logger:               logger,
		Workers:              workers,
		Queues:               queues,
		MaxAttempts:          cfg.JobMaxAttempts,
		RetryPolicy:          profilesync.RetryPolicy{Base: cfg.JobRetryBase, Max: cfg.JobRetryMax},
		JobTimeout:           cfg.SyncJobTimeout,
		RescueStuckJobsAfter: cfg.RescueStuckJobsAfter,
		PeriodicJobs: []*river.PeriodicJob{
			river.NewPeriodicJob(river.PeriodicInterval(time.Hour), func() (river.JobArgs, *river.InsertOpts) {
				return profilesync.EventCleanupArgs{}, nil
			}, &river.PeriodicJobOpts{RunOnStart: true}),
			river.NewPeriodicJob(river.PeriodicInterval(time.Minute), func() (river.JobArgs, *river.InsertOpts) {
				return invites.SettleArgs{}, &river.InsertOpts{Queue: profilesync.QueueMaintenance}
			}, nil),
		},
	}
	if cfg.ReconcileInterval > 0 {
		scheduleReconcile(config, workers, cfg, pool, kratosClient, mapper, index, logger)
		kinds = append(kinds, reconcile.PassArgs{}.Kind())
	}
	jobMetrics := metrics.NewJobs(kinds...)
	reg.MustRegister(jobMetrics)
	config.Middleware = []rivertype.Middleware{&logging.JobAttrs{}, jobMetrics}
	return config
}

func newPool(ctx context.Context, url string, maxConns int32, appName string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the connection string, password included: do not pass it on.
		return nil, errors.New("DATABASE_URL: cannot parse the connection string (not shown: it may hold a password)")
	}
	pc.MaxConns = maxConns
	pc.MinConns = min(4, maxConns)
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = appName
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return pool, nil
}

func loadMapper(path string) (*jsonnet.Mapper, error) {
	if path == "" {
		return jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("PROFILE_MAPPING_FILE: %w", err)
	}
	m, err := jsonnet.NewMapper(path, src)
	if err != nil {
		return nil, fmt.Errorf("PROFILE_MAPPING_FILE: %w", err)
	}
	return m, nil
}

// searchChecks is Elasticsearch's readiness check: reported, never failing readiness, since an index outage
// only delays indexing.
func searchChecks(index *search.Index) []hooks.Check {
	if index == nil {
		return nil
	}
	return []hooks.Check{{Name: "elasticsearch", Func: index.Health}}
}
