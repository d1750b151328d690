package kratos

import (
	"context"
	"fmt"

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
	asked := make(map[uuid.UUID]bool, len(ids))
	unique := make([]uuid.UUID, 0, len(ids))
	for _, id := range ids {
		if !asked[id] {
			asked[id] = true
			unique = append(unique, id)
		}
	}
	for start := 0; start < len(unique); start += MaxIDsPerList {
		chunk := unique[start:min(start+MaxIDsPerList, len(unique))]
		// page_size is the number of ids, so the answer is one page; a next page, should Kratos ever send
		// one, is followed all the same.
		opts := ListOpts{PageSize: len(chunk), IDs: chunk}
		for {
			page, err := c.ListIdentities(ctx, opts)
			if err != nil {
				return nil, err
			}
			for i := range page.Identities {
				ident := &page.Identities[i]
				if !asked[ident.ID] {
					// A Kratos (or a proxy) that ignores the ids filter would otherwise have every sync read
					// the whole list.
					return nil, fmt.Errorf("kratos: the list filtered by ids answered identity %s, which was not asked for", ident.ID)
				}
				found[ident.ID] = ident
			}
			if page.NextPageToken == "" {
				break
			}
			opts.PageToken = page.NextPageToken
		}
	}
	return found, nil
}
