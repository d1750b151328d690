package hooks

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kratos-hooks/kratos-hooks/search"
)

// profileHit is one profile in a search answer. The field names are a public contract.
type profileHit struct {
	IdentityID string  `json:"identity_id"`
	Email      *string `json:"email"`
	Phone      *string `json:"phone"`
	Name       *string `json:"name"`
	Score      float64 `json:"score"`
}

type profilesResponse struct {
	Profiles []profileHit `json:"profiles"`
	Total    int64        `json:"total"`
}

const (
	defaultSearchLimit = 20
	maxQueryLength     = 256
	searchTimeout      = 10 * time.Second
)

// handleSearchProfiles answers GET /admin/profiles?q=…&limit=…: the profiles in the search index that match
// q (an e-mail address or its beginning, a name, a phone number, an identity id), best first.
func handleSearchProfiles(index *search.Index) echo.HandlerFunc {
	return func(c echo.Context) error {
		if index == nil {
			return &Error{Status: http.StatusNotFound, Message: "search is off: ELASTICSEARCH_URL is not set"}
		}
		q := strings.TrimSpace(c.QueryParam("q"))
		if q == "" {
			return badRequest("q is required: the text to search for (an e-mail address, a name, a phone number or an identity id)")
		}
		if len(q) > maxQueryLength {
			return badRequest(fmt.Sprintf("q is longer than %d bytes", maxQueryLength))
		}
		limit := defaultSearchLimit
		if raw := c.QueryParam("limit"); raw != "" {
			n, err := strconv.Atoi(raw)
			if err != nil || n < 1 || n > search.MaxLimit {
				return badRequest(fmt.Sprintf("limit must be a whole number from 1 to %d", search.MaxLimit))
			}
			limit = n
		}

		ctx, cancel := context.WithTimeout(c.Request().Context(), searchTimeout)
		defer cancel()
		res, err := index.Search(ctx, q, limit)
		if err != nil {
			return &Error{Status: http.StatusServiceUnavailable, Message: "search index unavailable, try again later", Err: err}
		}
		body := profilesResponse{Profiles: make([]profileHit, 0, len(res.Hits)), Total: res.Total}
		for _, h := range res.Hits {
			body.Profiles = append(body.Profiles, profileHit{
				IdentityID: h.IdentityID, Email: h.Email, Phone: h.Phone, Name: h.Name, Score: h.Score,
			})
		}
		return c.JSON(http.StatusOK, body)
	}
}
