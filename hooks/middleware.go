package hooks

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kratos-hooks/kratos-hooks/internal/logging"
)

// requireBearer lets a request through only if it carries "Authorization: Bearer <key>" with one of keys
// (several keys allow rotation). It runs before the body is read: a refused request changes nothing.
func requireBearer(keys []string) echo.MiddlewareFunc {
	// Compare digests, so that neither the length nor the content of a key leaks through timing.
	digests := make([][32]byte, len(keys))
	for i, k := range keys {
		digests[i] = sha256.Sum256([]byte(k))
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			scheme, token, ok := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
				return errUnauthorized
			}
			got := sha256.Sum256([]byte(strings.TrimSpace(token)))
			match := 0
			for i := range digests {
				match |= subtle.ConstantTimeCompare(got[:], digests[i][:])
			}
			if match != 1 {
				return errUnauthorized
			}
			return next(c)
		}
	}
}

// requestID puts the request id (from X-Request-Id, or a new one) into the response and into the request
// context, so that every log line of the request carries it.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if id == "" || len(id) > 128 {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		ctx := logging.With(c.Request().Context(), slog.String("request_id", id))
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// observeRequests reports every request to observe once its response is decided: the route template, the
// method, the status sent and the time taken.
func observeRequests(observe func(route, method string, status int, elapsed time.Duration)) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				// Render the error here, so that the status observed is the one sent. The error handler
				// leaves a committed response alone, so nothing renders it twice.
				c.Error(err)
			}
			route := c.Path()
			if route == "" || errors.Is(err, echo.ErrNotFound) || errors.Is(err, echo.ErrMethodNotAllowed) {
				// The path matched no route: never a label made of whatever path a client sent.
				route = "unmatched"
			}
			observe(route, methodLabel(c.Request().Method), c.Response().Status, time.Since(start))
			return nil
		}
	}
}

// methodLabel keeps the method label to the standard methods: a client cannot make new series by inventing
// methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// MaxBodyBytes caps every request body.
const MaxBodyBytes = 1 << 20

// readPayload reads a Kratos hook's body and decodes it with opts: the body as sent (its hash is part of
// an event's key) and the payload, or the 413 or 400 to answer.
func readPayload(c echo.Context, opts decodeOpts) (Payload, []byte, error) {
	body, err := readBody(c)
	if err != nil {
		return Payload{}, nil, err
	}
	p, err := DecodePayload(body, opts)
	if err != nil {
		return Payload{}, nil, badRequest(err.Error())
	}
	return p, body, nil
}

// readBody reads the whole body, refusing one over MaxBodyBytes with 413.
func readBody(c echo.Context) ([]byte, error) {
	r := http.MaxBytesReader(c.Response(), c.Request().Body, MaxBodyBytes)
	b, err := io.ReadAll(r)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Message: "request body over 1 MiB"}
	}
	if err != nil {
		return nil, badRequest("could not read the request body")
	}
	return b, nil
}
