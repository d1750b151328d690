package reconcile

import (
	"context"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// IndexDocuments checks the search index against the profiles: one _mget of versions per page.
type IndexDocuments struct {
	Index *search.Index
}

var _ DocumentChecker = IndexDocuments{}

// CheckDocuments finds live profiles without a document, documents of tombstones, and documents whose
// version is below their profile's revision.
func (d IndexDocuments) CheckDocuments(ctx context.Context, profiles []ProfileVersion) (missing, stale []uuid.UUID, err error) {
	ids := make([]uuid.UUID, len(profiles))
	for i, p := range profiles {
		ids[i] = p.IdentityID
	}
	versions, err := d.Index.DocumentVersions(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range profiles {
		version, found := versions[p.IdentityID]
		switch {
		case p.Deleted && found:
			// A tombstone's document should be gone: deleting it is the repair, with the tombstone's revision.
			stale = append(stale, p.IdentityID)
		case p.Deleted:
		case !found:
			missing = append(missing, p.IdentityID)
		case version < p.Revision:
			stale = append(stale, p.IdentityID)
		}
	}
	return missing, stale, nil
}

// RepairArgs is the index job: it reads the current row and indexes or deletes the document.
func (IndexDocuments) RepairArgs(id uuid.UUID) river.JobArgs {
	return profilesync.IndexArgs{IdentityID: id}
}
