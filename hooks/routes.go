// Package hooks is the HTTP side of kratos-hooks: the endpoints Kratos calls as web_hook targets, health,
// and the admin API. routes.go lists every route.
package hooks

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// Opts are the HTTP side's dependencies.
type Opts struct {
	Logger *slog.Logger
	// Pool is the HTTP side's own pool, so that busy workers never starve the hook transaction.
	Pool *pgxpool.Pool
	// Jobs inserts sync jobs (an insert-only River client is enough).
	Jobs *river.Client[pgx.Tx]
	// APIKeys are the keys Kratos sends as "Authorization: Bearer <key>"; any of them is accepted.
	APIKeys []string
	// AdminAPITokens are the tokens the admin API accepts as "Authorization: Bearer <token>"; with none, it
	// refuses every request.
	AdminAPITokens []string
	// Search is the profiles index; nil when the search projection is off.
	Search *search.Index
	// DBTimeout bounds the hook transaction, acquiring the connection included. Default 2 s.
	DBTimeout time.Duration
	// Committers is how many after-hook transactions may be in flight at once; deliveries that arrive
	// while all are busy share the next one (see sync.EventRecorder). Default 4.
	Committers int
	// Checks are the readiness checks.
	Checks []Check
	// Hooks serves the /hooks/* endpoints and the admin API; false for a process that only runs workers
	// (it still serves health).
	Hooks bool
	// Gating decides who may register and log in (the before and validate hooks).
	Gating Gating
	// SMSSink, when set, receives Kratos's SMS at /dev/sms (DEV_SMS_SINK=true): development only.
	SMSSink *SMSSink
	// NowFunc is the clock of invite expiry and guess limiting; nil means time.Now.
	NowFunc func() time.Time
	// ObserveRequestFunc, if set, is told of every answered request: its route template (such as
	// /admin/invites/:id, never the raw path; "unmatched" for a path no route serves), method, the status
	// sent and how long it took.
	ObserveRequestFunc func(route, method string, status int, elapsed time.Duration)
	// Metrics, if set, is served at GET /metrics.
	Metrics http.Handler
}

// New returns the HTTP handler with every route.
func New(opts Opts) *echo.Echo {
	if opts.DBTimeout == 0 {
		opts.DBTimeout = 2 * time.Second
	}
	if opts.NowFunc == nil {
		opts.NowFunc = time.Now
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = errorHandler(opts.Logger)
	if opts.ObserveRequestFunc != nil {
		e.Use(observeRequests(opts.ObserveRequestFunc))
	}
	e.Use(requestID)

	e.GET("/health/alive", handleAlive)
	e.GET("/health/ready", handleReady(opts.Checks))
	if opts.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(opts.Metrics))
	}

	if opts.Hooks {
		// Kratos's ctx does not say which hook point called, so each has its own URL.
		hooks := e.Group("/hooks", requireBearer(opts.APIKeys))
		recorder := profilesync.NewEventRecorder(profilesync.EventRecorderOpts{
			Pool: opts.Pool, Jobs: opts.Jobs, Timeout: opts.DBTimeout, Committers: opts.Committers,
		})
		after := func(h profilesync.Hook) echo.HandlerFunc {
			return handleAfter(h, recorder, nil)
		}
		// The registration's post-persist hook also binds the invite its validate hook reserved.
		hooks.POST("/registration/after", handleAfter(profilesync.HookRegistrationAfter, recorder, bindInvite(opts.NowFunc)))
		hooks.POST("/login/after", after(profilesync.HookLoginAfter))
		hooks.POST("/settings/after", after(profilesync.HookSettingsAfter))
		hooks.POST("/verification/after", after(profilesync.HookVerificationAfter))
		hooks.POST("/recovery/after", after(profilesync.HookRecoveryAfter))

		// Gating: before hooks (IP only: Kratos sends them no traits) and pre-persist validate hooks
		// (response.parse: true) whose refusals Kratos shows in its form.
		hooks.POST("/registration/before", handleIPGate(opts.Gating.IP, flowRegistration))
		hooks.POST("/login/before", handleIPGate(opts.Gating.IP, flowLogin))
		hooks.POST("/registration/validate", handleRegistrationValidate(opts.Gating, opts.Pool, opts.DBTimeout, opts.NowFunc))
		hooks.POST("/settings/validate", handleSettingsValidate(opts.Gating.Domains, opts.Pool, opts.DBTimeout))

		// The admin API is for operators and back-office tools, with its own tokens: never Kratos's keys.
		admin := e.Group("/admin", requireBearer(opts.AdminAPITokens))
		admin.POST("/invites", handleCreateInvite(opts.Pool, opts.DBTimeout, opts.NowFunc))
		admin.GET("/invites", handleListInvites(opts.Pool, opts.DBTimeout, opts.NowFunc))
		admin.DELETE("/invites/:id", handleRevokeInvite(opts.Pool, opts.DBTimeout, opts.NowFunc))
		admin.GET("/profiles", handleSearchProfiles(opts.Search))

		if opts.SMSSink != nil {
			// Kratos's courier posts with the hooks key; reading codes back takes an admin token.
			e.POST("/dev/sms", handleReceiveSMS(opts.SMSSink, opts.NowFunc), requireBearer(opts.APIKeys))
			e.GET("/dev/sms", handleListSMS(opts.SMSSink), requireBearer(opts.AdminAPITokens))
		}
	}
	return e
}
