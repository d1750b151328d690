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
// still running; a job that is not (River gave up on it: its timeout passed) makes it fail, so that the
// batch rolls back and every job in it is tried again. It assumes River's default schema and no metadata
// updates recorded by the jobs (this service configures neither).
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
		if job.State != rivertype.JobStateRunning {
			return fmt.Errorf("complete sync job %d: it is %s, not running", job.ID, job.State)
		}
		p := riverdriver.JobSetStateCompleted(job.ID, now, nil)
		params.ID[i] = p.ID
		params.FinalizedAt[i] = p.FinalizedAt
		params.State[i] = p.State
	}
	rows, err := client.Pilot().JobSetStateIfRunningMany(ctx, client.Driver().UnwrapExecutor(tx), params)
	if err != nil {
		return fmt.Errorf("complete %d sync jobs: %w", len(jobs), err)
	}
	for _, row := range rows {
		if row.State != rivertype.JobStateCompleted {
			return fmt.Errorf("complete sync job %d: it is %s, no longer running", row.ID, row.State)
		}
	}
	if len(rows) != len(jobs) {
		return fmt.Errorf("complete %d sync jobs: %d of them not found", len(jobs), len(jobs)-len(rows))
	}
	return nil
}
