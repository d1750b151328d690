package kratos

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/google/uuid"
)

// MaxIDsPerList is the most ids GetIdentities puts in one request: 100 ids make a URL of about 4 KiB, under
// the 8 KiB request line that common proxies accept.
const MaxIDsPerList = 100

// GetIdentities reads the identities with the given ids through the admin list filter
// (GET /admin/identities?ids=…&ids=…), MaxIDsPerList per request. An id that is not in the answer does not
// exist (any more): Kratos filters its list by id and leaves unknown ids out, as GetIdentity answers 404 for
// them. The list answer has no credentials, which the sync never reads.
func (c *Client) GetIdentities(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*Identity, error) {
	found := make(map[uuid.UUID]*Identity, len(ids))
	seen := make(map[uuid.UUID]bool, len(ids))
	unique := make([]uuid.UUID, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			unique = append(unique, id)
		}
	}
	for start := 0; start < len(unique); start += MaxIDsPerList {
		if err := c.listByIDs(ctx, unique[start:min(start+MaxIDsPerList, len(unique))], found); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// listByIDs reads one request's worth of ids into found. page_size is the number of ids, so the answer is
// one page; a next page, should Kratos ever send one, is followed all the same.
func (c *Client) listByIDs(ctx context.Context, ids []uuid.UUID, found map[uuid.UUID]*Identity) error {
	q := url.Values{"ids": make([]string, len(ids))}
	for i, id := range ids {
		q["ids"][i] = id.String()
	}
	q.Set("page_size", strconv.Itoa(len(ids)))
	for {
		var page []Identity
		var header http.Header
		if err := c.do(ctx, http.MethodGet, "/admin/identities", q, nil, &page, &header); err != nil {
			return err
		}
		for i := range page {
			found[page[i].ID] = &page[i]
		}
		next, err := NextPageToken(header.Values("Link"))
		if err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		q.Set("page_token", next)
	}
}
