package logging

import (
	"context"
	"log/slog"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// JobAttrs is a River worker middleware that puts the job's id, kind and attempt into the context it works
// the job with, so that every line a worker logs with that context carries them, as a request's lines carry
// its request id. Put it in river.Config.Middleware.
type JobAttrs struct {
	river.MiddlewareDefaults
}

func (*JobAttrs) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	return doInner(With(ctx,
		slog.Int64("job_id", job.ID),
		slog.String("job_kind", job.Kind),
		slog.Int("job_attempt", job.Attempt),
	))
}

var _ rivertype.WorkerMiddleware = (*JobAttrs)(nil)
