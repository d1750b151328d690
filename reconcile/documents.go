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

// RepairArgs is the job that indexes the profiles (or deletes their documents): it reads the current rows,
// so it writes what they hold when it runs, whatever they held when the pass read them.
func (IndexDocuments) RepairArgs(ids []uuid.UUID) river.JobArgs {
	return profilesync.IndexBatchArgs{IdentityIDs: ids}
}
