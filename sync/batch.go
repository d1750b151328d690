package sync

import (
	"context"
	"sync"

	"github.com/riverqueue/river"
)

// group runs calls in groups, for the sync jobs River runs at the same time (IdentityWorker) and the hook
// deliveries that arrive together (EventRecorder). A call that arrives while fewer than `concurrency`
// groups run goes at once, with whatever else is waiting; otherwise it waits for a group to finish. So an
// idle service adds no delay (there is no timer), and under load the groups grow to `size` by themselves.
type group[T any] struct {
	size, concurrency int
	// run answers every call of the group.
	run func(calls []T)

	mu      sync.Mutex
	waiting []T
	running int
}

func newGroup[T any](size, concurrency int, run func(calls []T)) *group[T] {
	return &group[T]{size: size, concurrency: concurrency, run: run}
}

// add queues a call; run answers it.
func (g *group[T]) add(c T) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting = append(g.waiting, c)
	g.dispatchLocked()
}

// queued is how many calls wait for a group.
func (g *group[T]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiting)
}

func (g *group[T]) dispatchLocked() {
	for g.running < g.concurrency && len(g.waiting) > 0 {
		n := min(len(g.waiting), g.size)
		calls := g.waiting[:n:n]
		g.waiting = g.waiting[n:]
		if len(g.waiting) == 0 {
			g.waiting = nil // let the backing array go
		}
		g.running++
		go func() {
			g.run(calls)
			g.mu.Lock()
			g.running--
			g.dispatchLocked()
			g.mu.Unlock()
		}()
	}
}

// syncCall is one job waiting for its batch.
type syncCall struct {
	ctx  context.Context
	job  *river.Job[IdentityArgs]
	done chan error // buffered: the batch never waits for a caller that gave up
}

func (c *syncCall) answer(err error) { c.done <- err }

// syncInBatch syncs job in a batch of g and returns its outcome, or ctx's error if ctx ends first (the batch
// may still complete the job: its completion is in the batch's transaction).
func syncInBatch(ctx context.Context, g *group[*syncCall], job *river.Job[IdentityArgs]) error {
	c := &syncCall{ctx: ctx, job: job, done: make(chan error, 1)}
	g.add(c)
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
