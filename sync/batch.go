package sync

import (
	"context"
	"sync"

	"github.com/riverqueue/river"
)

// batcher gathers the sync jobs River runs at the same time into batches. A job that arrives while fewer than
// `concurrency` batches are in flight goes at once, with whatever else is waiting; otherwise it waits for a
// batch to finish. So an idle worker adds no delay (there is no timer), and under load the batches grow to
// `size` by themselves.
type batcher struct {
	size, concurrency int
	// run answers every job of the batch.
	run func(batch []*syncCall)

	mu      sync.Mutex
	waiting []*syncCall
	running int
}

// syncCall is one job waiting for its batch.
type syncCall struct {
	ctx  context.Context
	job  *river.Job[IdentityArgs]
	done chan error // buffered: run never waits for a caller that gave up
}

func (c *syncCall) answer(err error) { c.done <- err }

func newBatcher(size, concurrency int, run func(batch []*syncCall)) *batcher {
	return &batcher{size: size, concurrency: concurrency, run: run}
}

// do syncs job in a batch and returns its outcome, or ctx's error if ctx ends first (the batch may still
// complete the job: its completion is in the batch's transaction).
func (b *batcher) do(ctx context.Context, job *river.Job[IdentityArgs]) error {
	c := &syncCall{ctx: ctx, job: job, done: make(chan error, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, c)
	b.dispatchLocked()
	b.mu.Unlock()
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *batcher) dispatchLocked() {
	for b.running < b.concurrency && len(b.waiting) > 0 {
		n := min(len(b.waiting), b.size)
		batch := b.waiting[:n:n]
		b.waiting = b.waiting[n:]
		if len(b.waiting) == 0 {
			b.waiting = nil // let the backing array go
		}
		b.running++
		go func() {
			b.run(batch)
			b.mu.Lock()
			b.running--
			b.dispatchLocked()
			b.mu.Unlock()
		}()
	}
}
