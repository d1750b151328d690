package hooks

import (
	"context"
	"crypto/sha256"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

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
func handleAfter(hook profilesync.Hook, recorder *profilesync.EventRecorder, bind bindFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, body, err := readPayload(c, decodeOpts{identity: true})
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ev := profilesync.Event{
			Key:        profilesync.EventKey{Hook: hook, FlowID: p.Flow.ID, BodySHA256: sum[:]},
			IdentityID: p.Identity.ID,
		}
		if p.Session != nil {
			ev.OccurredAt = p.Session.AuthenticatedAt
		}

		var also profilesync.Also
		if bind != nil {
			also = func(ctx context.Context, tx pgx.Tx) error { return bind(ctx, tx, p) }
		}
		rec, err := recorder.Record(c.Request().Context(), ev, also)
		if err != nil {
			// The database is down, slow past the deadline, or refused the write: Kratos retries a 503, and
			// a retry of a delivery that did commit is found to be a duplicate.
			return unavailable(retryAfter, err)
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
