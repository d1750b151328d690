package kratos

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/google/uuid"
)

// NextPageToken reads the page_token of the rel="next" entry of Kratos's Link headers, or "" when there is
// no next page (Kratos leaves rel="next" out on the last page).
//
// Kratos writes relative URLs, entries separated by "," with no space, for example:
//
//	</admin/identities?page_size=2&page_token=00000000-…>; rel="first",</admin/identities?page_size=2&page_token=b9c5…>; rel="next"
//
// The token is the last identity id of the page, a UUID; anything else is an error rather than a token to
// send back, so a malformed header can never send the pager in a loop.
func NextPageToken(headers []string) (string, error) {
	for _, h := range headers {
		for _, entry := range splitLinks(h) {
			target, params, ok := strings.Cut(entry, ";")
			if !ok {
				continue
			}
			if !isNext(params) {
				continue
			}
			target = strings.TrimSpace(target)
			if len(target) < 2 || target[0] != '<' || target[len(target)-1] != '>' {
				return "", fmt.Errorf("kratos: malformed Link entry %q", entry)
			}
			u, err := url.Parse(target[1 : len(target)-1])
			if err != nil {
				return "", fmt.Errorf("kratos: malformed Link URL: %w", err)
			}
			token := u.Query().Get("page_token")
			if _, err := uuid.Parse(token); err != nil {
				return "", fmt.Errorf("kratos: next page token %q is not a UUID", token)
			}
			return token, nil
		}
	}
	return "", nil
}

// splitLinks splits a Link header on the commas between entries, not on commas inside <…>.
func splitLinks(h string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(h); i++ {
		switch h[i] {
		case '<':
			depth++
		case '>':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				out = append(out, h[start:i])
				start = i + 1
			}
		}
	}
	return append(out, h[start:])
}

func isNext(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
			continue
		}
		for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
			if strings.EqualFold(rel, "next") {
				return true
			}
		}
	}
	return false
}
