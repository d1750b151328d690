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

// Test seams of EventRecorder.

// SetOnCommit makes r call f with the size of every transaction it commits.
func (r *EventRecorder) SetOnCommit(f func(size int)) { r.onCommit = f }

// Waiting is how many deliveries wait for a committer.
func (r *EventRecorder) Waiting() int { return r.batches.queued() }
