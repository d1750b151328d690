package reconcile

import (
	"context"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// IndexDocuments reads the search index for a pass: one _mget of versions per page.
type IndexDocuments struct {
	Index *search.Index
}

var _ DocumentChecker = IndexDocuments{}

// DocumentVersions reads the versions of the ids' documents, without their content.
func (d IndexDocuments) DocumentVersions(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	return d.Index.DocumentVersions(ctx, ids)
}

// RepairArgs is the index job: it reads the current row and indexes or deletes the document.
func (IndexDocuments) RepairArgs(id uuid.UUID) river.JobArgs {
	return profilesync.IndexArgs{IdentityID: id}
}
