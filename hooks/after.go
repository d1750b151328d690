package hooks

import (
	"context"
	"crypto/sha256"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/invites"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// afterResponse is the 200 body of an after hook. It is a JSON object, so the hook also works if someone
// wires it with response.parse: true (Kratos fails a flow on an empty 200 body).
type afterResponse struct {
	Event     string `json:"event"`
	Duplicate bool   `json:"duplicate"`
}

// handleAfter records an after-hook event: one short transaction stores the event and its sync job, and
// only then does Kratos get its 2xx. Everything slow (reading Kratos, writing the profile) happens in the
// worker.
func handleAfter(hook profilesync.Hook, pool *pgxpool.Pool, jobs *river.Client[pgx.Tx], dbTimeout time.Duration, bind bindFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, err := readBody(c)
		if err != nil {
			return err
		}
		p, err := DecodePayload(body, decodeOpts{identity: true})
		if err != nil {
			return badRequest(err.Error())
		}
		sum := sha256.Sum256(body)
		ev := profilesync.Event{
			Key:        profilesync.EventKey{Hook: hook, FlowID: p.Flow.ID, BodySHA256: sum[:]},
			IdentityID: p.Identity.ID,
		}
		if p.Session != nil {
			ev.OccurredAt = p.Session.AuthenticatedAt
		}

		var also func(ctx context.Context, tx pgx.Tx) error
		if bind != nil {
			also = func(ctx context.Context, tx pgx.Tx) error { return bind(ctx, tx, p) }
		}
		rec, err := recordEvent(c.Request().Context(), pool, jobs, dbTimeout, ev, also)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, afterResponse{Event: ev.Key.String(), Duplicate: rec.Duplicate})
	}
}

// retryAfter is what a 503 asks Kratos to wait. Kratos makes three attempts, so this covers a database
// restart of about twice as long.
const retryAfter = 5 * time.Second

// bindFunc is more work a hook point does in the transaction that records its event.
type bindFunc func(ctx context.Context, tx pgx.Tx, p Payload) error

// bindInvite confirms the invite reservation the registration's validate hook made, with the identity id
// Kratos has now given it. Doing it in the event's transaction means a Kratos retry finds it done.
func bindInvite(now func() time.Time) bindFunc {
	return func(ctx context.Context, tx pgx.Tx, p Payload) error {
		c := readContact(p.Identity.Traits)
		_, err := invites.Confirm(ctx, tx, p.Flow.ID, invites.Address(c.Email, c.Phone), p.Identity.ID, now())
		return err
	}
}

func recordEvent(ctx context.Context, pool *pgxpool.Pool, jobs *river.Client[pgx.Tx], dbTimeout time.Duration, ev profilesync.Event, also func(context.Context, pgx.Tx) error) (profilesync.Recorded, error) {
	// A short deadline on the whole transaction, acquiring the connection included: when Postgres is down
	// or the pool is exhausted, answer 503 at once instead of holding Kratos's request open.
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()

	tx, err := pool.Begin(ctx)
	if err != nil {
		return profilesync.Recorded{}, unavailable(retryAfter, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rec, err := profilesync.RecordEvent(ctx, tx, jobs, ev)
	if err != nil {
		return profilesync.Recorded{}, unavailable(retryAfter, err)
	}
	if also != nil {
		if err := also(ctx, tx); err != nil {
			return profilesync.Recorded{}, unavailable(retryAfter, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// The commit may or may not have happened. Either way a retry is safe: the same event key makes no
		// second event.
		return profilesync.Recorded{}, unavailable(retryAfter, err)
	}
	return rec, nil
}
