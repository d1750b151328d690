package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/kratos-hooks/kratos-hooks/invites"
)

// createInviteRequest is the body of POST /admin/invites.
type createInviteRequest struct {
	Email string `json:"email"`
	Code  bool   `json:"code"`
	// ExpiresIn is a Go duration ("72h"); empty means 7 days.
	ExpiresIn string `json:"expires_in"`
	MaxUses   int    `json:"max_uses"`
	Note      string `json:"note"`
}

// handleCreateInvite creates an invite. The answer is the only place the code ever appears.
func handleCreateInvite(pool *pgxpool.Pool, dbTimeout time.Duration, now func() time.Time) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, err := readBody(c)
		if err != nil {
			return err
		}
		var req createInviteRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return badRequest("body must be a JSON object with email, code, expires_in, max_uses, note: " + jsonErrorText(err))
		}
		opts := invites.CreateOpts{Email: req.Email, Code: req.Code, MaxUses: req.MaxUses, Note: req.Note}
		if req.ExpiresIn != "" {
			if opts.ExpiresIn, err = time.ParseDuration(req.ExpiresIn); err != nil || opts.ExpiresIn <= 0 {
				return badRequest(`expires_in must be a positive duration such as "72h"`)
			}
		}
		ctx, cancel := contextWithTimeout(c, dbTimeout)
		defer cancel()
		created, err := invites.Create(ctx, pool, opts, now())
		if err != nil {
			return inviteError(err)
		}
		return c.JSON(http.StatusCreated, created.Summary())
	}
}

func handleListInvites(pool *pgxpool.Pool, dbTimeout time.Duration, now func() time.Time) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, cancel := contextWithTimeout(c, dbTimeout)
		defer cancel()
		list, err := invites.List(ctx, pool)
		if err != nil {
			return err
		}
		at := now()
		out := make([]invites.Report, len(list))
		for i, inv := range list {
			out[i] = inv.Report(at)
		}
		return c.JSON(http.StatusOK, map[string]any{"invites": out})
	}
}

// handleRevokeInvite revokes an invite (it stays listed, as revoked).
func handleRevokeInvite(pool *pgxpool.Pool, dbTimeout time.Duration, now func() time.Time) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := uuid.Parse(c.Param("id"))
		if err != nil {
			return badRequest("the invite id must be a UUID")
		}
		ctx, cancel := contextWithTimeout(c, dbTimeout)
		defer cancel()
		at := now()
		inv, err := invites.Revoke(ctx, pool, id, at)
		if err != nil {
			return inviteError(err)
		}
		return c.JSON(http.StatusOK, inv.Report(at))
	}
}

func inviteError(err error) error {
	var input *invites.InputError
	switch {
	case errors.As(err, &input):
		return badRequest(input.Message)
	case errors.Is(err, invites.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Message: "no such invite"}
	}
	return err
}

func contextWithTimeout(c echo.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), d)
}
