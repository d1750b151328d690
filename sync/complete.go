package sync

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivertype"
)

// completeJobsTx marks jobs completed as part of tx, as river.JobCompleteTx does for one job, in one
// statement for all of them: the statement JobCompleteTx runs (the driver's JobSetStateIfRunningMany, through
// the client's pilot), with one element per job instead of one call per job. That statement is most of a
// batch's database time when it runs once per job.
//
// Like JobCompleteTx it runs inside a worker (the River client is in ctx) and completes only jobs that are
// still running. A job that is not (its timeout passed while the batch ran, and River will run it again) is
// left as it is: the batch's write of its identity stands, and the retry finds its event applied. Failing
// the batch for it instead would roll back every other job's write and try them all again one by one. It
// assumes River's default schema and no metadata updates recorded by the jobs (this service configures
// neither).
func completeJobsTx(ctx context.Context, tx pgx.Tx, jobs []*river.Job[IdentityArgs]) error {
	if len(jobs) == 0 {
		return nil
	}
	client, err := river.ClientFromContextSafely[pgx.Tx](ctx)
	if err != nil {
		return fmt.Errorf("complete %d sync jobs: %w", len(jobs), err)
	}
	now := time.Now()
	params := &riverdriver.JobSetStateIfRunningManyParams{
		ID:              make([]int64, len(jobs)),
		Attempt:         make([]*int, len(jobs)),
		ErrData:         make([][]byte, len(jobs)),
		FinalizedAt:     make([]*time.Time, len(jobs)),
		MetadataDoMerge: make([]bool, len(jobs)),
		MetadataUpdates: make([][]byte, len(jobs)),
		ScheduledAt:     make([]*time.Time, len(jobs)),
		State:           make([]rivertype.JobState, len(jobs)),
	}
	for i, job := range jobs {
		p := riverdriver.JobSetStateCompleted(job.ID, now, nil)
		params.ID[i] = p.ID
		params.FinalizedAt[i] = p.FinalizedAt
		params.State[i] = p.State
	}
	if _, err := client.Pilot().JobSetStateIfRunningMany(ctx, client.Driver().UnwrapExecutor(tx), params); err != nil {
		return fmt.Errorf("complete %d sync jobs: %w", len(jobs), err)
	}
	return nil
}
