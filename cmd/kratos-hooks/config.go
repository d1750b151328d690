package main

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// The configuration comes from the environment only. Each command reads the part it needs, once, at start,
// and refuses to start with an error that names the variable.

type LogConfig struct {
	LogLevel  string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`
}

type DBConfig struct {
	DatabaseURL string `env:"DATABASE_URL,required,notEmpty"`
}

type KratosConfig struct {
	KratosAdminURL string `env:"KRATOS_ADMIN_URL,required,notEmpty"`
}

// serveConfig is what `serve` reads.
type serveConfig struct {
	LogConfig
	DBConfig
	KratosConfig
	ElasticsearchConfig
	IndexConfig
	GatingConfig

	HooksAPIKeys []string `env:"HOOKS_API_KEY" envSeparator:","`
	ListenAddr   string   `env:"LISTEN_ADDR" envDefault:":8080"`
	// MetricsAddr, when set, is where /metrics is served instead of LISTEN_ADDR.
	MetricsAddr string `env:"METRICS_ADDR"`
	// AdminAPITokens are the tokens the admin API (/admin/*) accepts as "Authorization: Bearer <token>";
	// unset, the admin API refuses every request.
	AdminAPITokens []string `env:"ADMIN_API_TOKEN" envSeparator:","`

	// The HTTP side and the workers get separate pools, so that busy workers never starve the hook
	// transaction (pgxpool's default, max(4, cores), is 4 on a 2-core machine).
	HTTPDBMaxConns   int32         `env:"HTTP_DB_MAX_CONNS" envDefault:"16"`
	WorkerDBMaxConns int32         `env:"WORKER_DB_MAX_CONNS" envDefault:"0"`
	HookDBTimeout    time.Duration `env:"HOOK_DB_TIMEOUT" envDefault:"2s"`
	// HookCommitters is how many after-hook transactions run at once, each on a connection of the HTTP
	// pool; deliveries that arrive while all are busy share the next transaction (a group commit).
	HookCommitters int `env:"HOOK_COMMITTERS" envDefault:"4"`

	// Sync jobs run in batches (sync.IdentityWorker): SYNC_WORKERS jobs in flight, which wait (a goroutine
	// each, no connection) to be synced SYNC_BATCH_SIZE at a time by up to SYNC_BATCHES transactions at once.
	SyncWorkers    int           `env:"SYNC_WORKERS" envDefault:"200"`
	SyncBatchSize  int           `env:"SYNC_BATCH_SIZE" envDefault:"100"`
	SyncBatches    int           `env:"SYNC_BATCHES" envDefault:"4"`
	SyncJobTimeout time.Duration `env:"SYNC_JOB_TIMEOUT" envDefault:"30s"`
	// Retries back off from JOB_RETRY_BASE, doubling up to JOB_RETRY_MAX; JOB_MAX_ATTEMPTS bounds them.
	// The defaults keep retrying for about three days, longer than any outage worth waiting out; reconcile
	// repairs whatever is left after that.
	JobRetryBase   time.Duration `env:"JOB_RETRY_BASE" envDefault:"1s"`
	JobRetryMax    time.Duration `env:"JOB_RETRY_MAX" envDefault:"15m"`
	JobMaxAttempts int           `env:"JOB_MAX_ATTEMPTS" envDefault:"300"`
	// A job whose worker died (killed, OOM) is retried after this long. It must exceed every job timeout.
	RescueStuckJobsAfter time.Duration `env:"RESCUE_STUCK_JOBS_AFTER" envDefault:"2m"`
	EventRetention       time.Duration `env:"EVENT_RETENTION" envDefault:"720h"`
	ShutdownTimeout      time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`

	ProfileMappingFile string `env:"PROFILE_MAPPING_FILE"`

	// DevSMSSink turns on the development SMS sink at /dev/sms. Never in production: it shows codes.
	DevSMSSink bool `env:"DEV_SMS_SINK" envDefault:"false"`

	// Scheduled reconcile passes, off unless RECONCILE_INTERVAL is set.
	ReconcileInterval         time.Duration `env:"RECONCILE_INTERVAL"`
	ReconcileTimeout          time.Duration `env:"RECONCILE_TIMEOUT" envDefault:"1h"`
	ReconcilePageSize         int           `env:"RECONCILE_PAGE_SIZE" envDefault:"500"`
	ReconcileMaxDeletePercent float64       `env:"RECONCILE_MAX_DELETE_PERCENT" envDefault:"10"`
}

// minAPIKeyLength refuses keys short enough to guess.
const minAPIKeyLength = 16

func (c *serveConfig) validate(role string) error {
	var errs []error
	if role != roleWorker {
		if len(c.HooksAPIKeys) == 0 {
			errs = append(errs, errors.New("HOOKS_API_KEY is not set: Kratos must authenticate with Authorization: Bearer <key>"))
		}
		for i, k := range c.HooksAPIKeys {
			c.HooksAPIKeys[i] = strings.TrimSpace(k)
			if len(c.HooksAPIKeys[i]) < minAPIKeyLength {
				errs = append(errs, fmt.Errorf("HOOKS_API_KEY: key %d of %d is shorter than %d characters", i+1, len(c.HooksAPIKeys), minAPIKeyLength))
			}
		}
	}
	errs = append(errs, c.GatingConfig.validate()...)
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("LISTEN_ADDR %q: want host:port or :port", c.ListenAddr))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("METRICS_ADDR %q: want host:port or :port", c.MetricsAddr))
		} else if c.MetricsAddr == c.ListenAddr {
			errs = append(errs, errors.New("METRICS_ADDR is LISTEN_ADDR: leave METRICS_ADDR unset to serve /metrics there"))
		}
	}
	if _, err := kratos.NewClient(c.KratosAdminURL, nil); err != nil {
		errs = append(errs, fmt.Errorf("KRATOS_ADMIN_URL: %w", err))
	}
	positive := map[string]time.Duration{
		"HOOK_DB_TIMEOUT": c.HookDBTimeout, "SYNC_JOB_TIMEOUT": c.SyncJobTimeout, "JOB_RETRY_BASE": c.JobRetryBase,
		"JOB_RETRY_MAX": c.JobRetryMax, "RESCUE_STUCK_JOBS_AFTER": c.RescueStuckJobsAfter,
		"EVENT_RETENTION": c.EventRetention, "SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
	}
	for name, d := range positive {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if c.JobRetryMax < c.JobRetryBase {
		errs = append(errs, fmt.Errorf("JOB_RETRY_MAX (%s) is less than JOB_RETRY_BASE (%s)", c.JobRetryMax, c.JobRetryBase))
	}
	if c.RescueStuckJobsAfter <= c.SyncJobTimeout {
		errs = append(errs, fmt.Errorf("RESCUE_STUCK_JOBS_AFTER (%s) must exceed SYNC_JOB_TIMEOUT (%s), or running jobs get rescued", c.RescueStuckJobsAfter, c.SyncJobTimeout))
	}
	if c.SyncWorkers < 1 || c.SyncWorkers > 10000 {
		errs = append(errs, fmt.Errorf("SYNC_WORKERS must be 1..10000, got %d", c.SyncWorkers))
	}
	if c.SyncBatchSize < 1 || c.SyncBatchSize > kratos.MaxIDsPerList {
		errs = append(errs, fmt.Errorf("SYNC_BATCH_SIZE must be 1..%d (the ids one Kratos request carries), got %d", kratos.MaxIDsPerList, c.SyncBatchSize))
	}
	if c.SyncBatches < 1 || c.SyncBatches > 100 {
		errs = append(errs, fmt.Errorf("SYNC_BATCHES must be 1..100, got %d", c.SyncBatches))
	}
	if c.JobMaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("JOB_MAX_ATTEMPTS must be at least 1, got %d", c.JobMaxAttempts))
	}
	if c.ReconcileInterval != 0 && c.ReconcileInterval < time.Second {
		errs = append(errs, fmt.Errorf("RECONCILE_INTERVAL must be 0 (off) or at least 1s, got %s", c.ReconcileInterval))
	}
	if c.ReconcileTimeout <= 0 {
		errs = append(errs, fmt.Errorf("RECONCILE_TIMEOUT must be positive, got %s", c.ReconcileTimeout))
	}
	if c.ReconcilePageSize < 1 || c.ReconcilePageSize > kratos.MaxPageSize {
		errs = append(errs, fmt.Errorf("RECONCILE_PAGE_SIZE must be 1..%d, got %d", kratos.MaxPageSize, c.ReconcilePageSize))
	}
	if !(c.ReconcileMaxDeletePercent > 0 && c.ReconcileMaxDeletePercent <= 100) {
		errs = append(errs, fmt.Errorf("RECONCILE_MAX_DELETE_PERCENT must be more than 0 and at most 100, got %g", c.ReconcileMaxDeletePercent))
	}
	if c.HTTPDBMaxConns < 2 {
		errs = append(errs, fmt.Errorf("HTTP_DB_MAX_CONNS must be at least 2, got %d", c.HTTPDBMaxConns))
	}
	// The other endpoints (validate hooks, the admin API, readiness) need connections of that pool too.
	if c.HookCommitters < 1 || int32(c.HookCommitters) >= c.HTTPDBMaxConns {
		errs = append(errs, fmt.Errorf("HOOK_COMMITTERS must be at least 1 and less than HTTP_DB_MAX_CONNS (%d), got %d", c.HTTPDBMaxConns, c.HookCommitters))
	}
	for i, k := range c.AdminAPITokens {
		c.AdminAPITokens[i] = strings.TrimSpace(k)
		switch {
		case len(c.AdminAPITokens[i]) < minAPIKeyLength:
			errs = append(errs, fmt.Errorf("ADMIN_API_TOKEN: token %d of %d is shorter than %d characters", i+1, len(c.AdminAPITokens), minAPIKeyLength))
		case slices.Contains(c.HooksAPIKeys, c.AdminAPITokens[i]):
			errs = append(errs, errors.New("ADMIN_API_TOKEN must differ from every HOOKS_API_KEY: Kratos holds those"))
		}
	}
	errs = append(errs, c.ElasticsearchConfig.validate()...)
	if c.IndexWorkers < 1 || c.IndexWorkers > 10000 {
		errs = append(errs, fmt.Errorf("INDEX_WORKERS must be 1..10000, got %d", c.IndexWorkers))
	}
	if c.IndexFlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("INDEX_FLUSH_INTERVAL must be positive, got %s", c.IndexFlushInterval))
	}
	if c.WorkerDBMaxConns == 0 {
		// Every sync batch holds a connection while it reads Kratos; River needs a few of its own.
		c.WorkerDBMaxConns = int32(c.SyncBatches) + 8
		if c.ElasticsearchConfig.enabled() {
			// Index jobs hold a connection only to read their row, never while they wait for Elasticsearch.
			c.WorkerDBMaxConns += 8
		}
	}
	return errors.Join(errs...)
}

// loadConfig fills cfg from the environment through getenv.
func loadConfig(cfg any, getenv func(string) string) error {
	params, err := env.GetFieldParams(cfg)
	if err != nil {
		return err
	}
	environ := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			environ[p.Key] = v
		}
	}
	if err := env.ParseWithOptions(cfg, env.Options{Environment: environ}); err != nil {
		return configError(cfg, environ, err)
	}
	return nil
}

// configError rewrites the env library's messages into one line per variable, named by its variable.
func configError(cfg any, environ map[string]string, err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	var errs []error
	for _, e := range agg.Errors {
		var (
			notSet   env.VarIsNotSetError
			empty    env.EmptyVarError
			parseErr env.ParseError
		)
		switch {
		case errors.As(e, &notSet):
			errs = append(errs, fmt.Errorf("%s is not set", notSet.Key))
		case errors.As(e, &empty):
			errs = append(errs, fmt.Errorf("%s is empty", empty.Key))
		case errors.As(e, &parseErr):
			key := envKey(reflect.TypeOf(cfg), parseErr.Name)
			errs = append(errs, fmt.Errorf("%s: cannot read %q as %s", key, environ[key], kindName(parseErr.Type)))
		default:
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// envKey finds the variable name of the struct field called field, looking into embedded structs.
func envKey(t reflect.Type, field string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			if k := envKey(f.Type, field); k != "" {
				return k
			}
			continue
		}
		if f.Name == field {
			key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			return key
		}
	}
	return ""
}

func kindName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration (such as 30s, 5m, 72h)"
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Float64:
		return "a number"
	}
	return t.String()
}
