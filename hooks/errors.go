package hooks

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"
)

// Error is an error with the HTTP status it maps to and a message safe to show the caller.
type Error struct {
	Status  int
	Message string
	// RetryAfter, when set, is sent as Retry-After (Kratos's HTTP client honours it on 429 and 503).
	RetryAfter time.Duration
	// Err is the cause, logged for 5xx and never shown.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func badRequest(msg string) *Error { return &Error{Status: http.StatusBadRequest, Message: msg} }

var errUnauthorized = &Error{Status: http.StatusUnauthorized, Message: "missing or wrong credentials: send Authorization: Bearer <key>"}

// unavailable is the answer when the database cannot take the event now. Kratos retries a 503 after
// Retry-After, and the event is not acknowledged until it is stored.
func unavailable(retryAfter time.Duration, err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Message: "database unavailable, try again later", RetryAfter: retryAfter, Err: err}
}

// errorBody is the error shape Ory's services use, so that operators see one format everywhere.
type errorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"error"`
}

// errorHandler is the one place errors become responses. Known errors keep their status and message; an
// unknown error is a 500 that says "internal error", logged once with the request id.
func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		ctx := c.Request().Context()
		status, message := http.StatusInternalServerError, "internal error"

		var (
			hookErr     *Error
			messagesErr *MessagesError
			echoErr     *echo.HTTPError
		)
		// A database that is down, restarting or too slow is a 503 wherever it shows, the admin API
		// included: the request may succeed when tried again, and a 500 would say this service is broken.
		if !errors.As(err, &hookErr) && !errors.As(err, &messagesErr) && databaseUnavailable(err) {
			err = unavailable(retryAfter, err)
		}
		switch {
		case errors.As(err, &messagesErr):
			// A refusal Kratos renders in its form: the body is the messages shape, not an error envelope.
			if messagesErr.Err != nil {
				logger.ErrorContext(ctx, "flow interrupted by an internal error", "error", messagesErr.Err,
					"path", c.Path())
			} else {
				logger.InfoContext(ctx, "flow interrupted", "reason", messagesErr.Error(), "path", c.Path())
			}
			_ = c.JSON(messagesErr.Status, messagesErr.Body())
			return
		case errors.As(err, &hookErr):
			status, message = hookErr.Status, hookErr.Message
			if hookErr.RetryAfter > 0 {
				c.Response().Header().Set("Retry-After", strconv.Itoa(int(hookErr.RetryAfter.Round(time.Second)/time.Second)))
			}
		case errors.As(err, &echoErr):
			status = echoErr.Code
			if m, ok := echoErr.Message.(string); ok {
				message = m
			} else {
				message = http.StatusText(status)
			}
		}

		if status >= 500 {
			logger.ErrorContext(ctx, "request failed", "status", status, "error", err,
				"method", c.Request().Method, "path", c.Path())
		}
		var body errorBody
		body.Error.Code = status
		body.Error.Status = http.StatusText(status)
		body.Error.Message = message
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(status)
			return
		}
		_ = c.JSON(status, body)
	}
}

// databaseUnavailable reports whether err says that the database could not be reached, went away or did not
// answer in time, as opposed to refusing a statement: trying again later may succeed.
func databaseUnavailable(err error) bool {
	var (
		connectErr *pgconn.ConnectError
		pgErr      *pgconn.PgError
		netErr     net.Error
	)
	switch {
	case errors.As(err, &pgErr):
		// Class 08: connection exception; 57P01–57P03: the server is shutting down, crashed or is starting up;
		// 53300: too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" ||
			pgErr.Code == "57P03" || pgErr.Code == "53300"
	case errors.As(err, &connectErr), pgconn.Timeout(err), pgconn.SafeToRetry(err), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	// A connection that broke in the middle of a statement.
	return errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &netErr)
}
