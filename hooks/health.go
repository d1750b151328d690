package hooks

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Check is one readiness check.
type Check struct {
	Name string
	// Critical checks fail readiness. The others (the Kratos admin API, Elasticsearch) are reported but do
	// not: their outage delays sync, it does not stop this service from accepting events, and a load
	// balancer must not pull every receiver because of it.
	Critical bool
	Func     func(ctx context.Context) error
}

type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
	Errors map[string]string `json:"errors,omitempty"`
}

// checkTimeout bounds each readiness check.
const checkTimeout = 2 * time.Second

func handleAlive(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady runs every check at once: 200 {"status":"ok"} when every critical check passes, 503 with the
// reasons otherwise; the state of every check is in "checks".
func handleReady(checks []Check) echo.HandlerFunc {
	return func(c echo.Context) error {
		results := make([]error, len(checks))
		var wg sync.WaitGroup
		for i, chk := range checks {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(c.Request().Context(), checkTimeout)
				defer cancel()
				results[i] = chk.Func(ctx)
			})
		}
		wg.Wait()

		body := readyBody{Status: "ok", Checks: map[string]string{}}
		for i, chk := range checks {
			if results[i] == nil {
				body.Checks[chk.Name] = "ok"
				continue
			}
			body.Checks[chk.Name] = results[i].Error()
			if chk.Critical {
				if body.Errors == nil {
					body.Errors = map[string]string{}
				}
				body.Errors[chk.Name] = results[i].Error()
				body.Status = "unavailable"
			}
		}
		if body.Errors != nil {
			return c.JSON(http.StatusServiceUnavailable, body)
		}
		return c.JSON(http.StatusOK, body)
	}
}
