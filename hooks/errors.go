package hooks

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

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
