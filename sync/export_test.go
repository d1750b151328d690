package sync

import (
	"context"

	"github.com/riverqueue/river"
)

// Test seams of IdentityWorker, for this package's tests only.

func (w *IdentityWorker) SetAfterRead(f func(ctx context.Context, job *river.Job[IdentityArgs])) {
	w.afterRead = f
}

func (w *IdentityWorker) SetUnserialized(v bool) { w.unserialized = v }
