package sync

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// EventRecorder records webhook deliveries: each one's event (hook_events; a second delivery of the same
// event, a Kratos retry, writes nothing) and, for a new event, its sync job, in a transaction that commits
// before the delivery is acknowledged. It commits the deliveries that arrive together in one transaction
// (a group commit). Under load most of a delivery's cost is per transaction, not per row: the round trips
// of BEGIN, the inserts and COMMIT, the WAL flush of the commit, and River's insert statement, which takes
// a whole batch as cheaply as one job. A delivery that finds a committer free goes at once, in a
// transaction of its own; while every committer is busy, deliveries wait and the next free committer takes
// them (up to MaxBatch), as IdentityWorker batches its jobs (group). So an idle service adds no latency, and
// a busy one commits many deliveries per flush.
//
// Each delivery is acknowledged only after the transaction holding it commits. If a batch fails as a
// whole for any reason but the database being unreachable, its halves are tried again on their own, down
// to single deliveries, so that one delivery that cannot be written fails alone.
type EventRecorder struct {
	pool    *pgxpool.Pool
	jobs    *river.Client[pgx.Tx]
	timeout time.Duration
	// batches are the transactions: up to Committers at once, each of up to MaxBatch deliveries.
	batches *group[*delivery]

	onCommit func(size int) // test seam: told the size of every committed transaction
}

// EventRecorderOpts configures an EventRecorder.
type EventRecorderOpts struct {
	Pool *pgxpool.Pool
	// Jobs inserts the sync jobs (an insert-only River client is enough).
	Jobs *river.Client[pgx.Tx]
	// Timeout bounds one transaction, acquiring its connection included. Default 2 s.
	Timeout time.Duration
	// Committers is how many transactions may be in flight at once, each holding a connection of Pool.
	// Default 4.
	Committers int
	// MaxBatch is the most deliveries in one transaction. Default 100.
	MaxBatch int
}

// NewEventRecorder makes an EventRecorder. It starts nothing: committers run only while deliveries wait.
func NewEventRecorder(opts EventRecorderOpts) *EventRecorder {
	r := &EventRecorder{pool: opts.Pool, jobs: opts.Jobs, timeout: opts.Timeout}
	if r.timeout <= 0 {
		r.timeout = 2 * time.Second
	}
	size, committers := opts.MaxBatch, opts.Committers
	if size <= 0 {
		size = 100
	}
	if committers <= 0 {
		committers = 4
	}
	r.batches = newGroup(size, committers, r.commitBatch)
	return r
}

// Also is work to do in the transaction that records a delivery (an invite's confirmation).
type Also func(ctx context.Context, tx pgx.Tx) error

// delivery is one Record call waiting for its transaction.
type delivery struct {
	ctx  context.Context
	ev   Event
	also Also
	done chan recordResult // buffered: a committer never waits for an abandoned caller
}

type recordResult struct {
	rec Recorded
	err error
}

// ErrDatabaseUnavailable wraps the error of a transaction that could not begin: the database is down or
// every connection is busy past the deadline.
var ErrDatabaseUnavailable = errors.New("database unavailable")

// Record stores ev and enqueues its sync job, and runs also in the same transaction, returning once that
// transaction has committed. It gives up after the recorder's Timeout, or when ctx ends, with an error; the
// delivery may still commit later, which a retry of it finds (Recorded.Duplicate).
func (r *EventRecorder) Record(ctx context.Context, ev Event, also Also) (Recorded, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	d := &delivery{ctx: ctx, ev: ev, also: also, done: make(chan recordResult, 1)}
	r.batches.add(d)
	select {
	case res := <-d.done:
		return res.rec, res.err
	case <-ctx.Done():
		return Recorded{}, fmt.Errorf("record event %s: %w", ev.Key, ctx.Err())
	}
}

func (r *EventRecorder) commitBatch(batch []*delivery) {
	// A caller that has given up has been told to retry (503): leave its delivery to the retry.
	batch = slices.DeleteFunc(batch, func(d *delivery) bool { return d.ctx.Err() != nil })
	if len(batch) == 0 {
		return
	}
	// One order for every transaction: two batches that share a delivery (a retry racing the original)
	// wait for each other on its row instead of deadlocking.
	slices.SortFunc(batch, func(a, b *delivery) int {
		return cmp.Or(cmp.Compare(a.ev.Key.Hook, b.ev.Key.Hook), bytes.Compare(a.ev.Key.FlowID[:], b.ev.Key.FlowID[:]),
			bytes.Compare(a.ev.Key.BodySHA256, b.ev.Key.BodySHA256))
	})
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	r.commitOrSplit(ctx, batch)
}

// commitOrSplit commits batch and answers its deliveries. If it fails as a whole for any reason but the
// database being unreachable, each half is tried again on its own, down to single deliveries: a delivery
// that cannot be written fails alone, after a few transactions rather than one per delivery of the batch.
func (r *EventRecorder) commitOrSplit(ctx context.Context, batch []*delivery) {
	recs, err := r.commit(ctx, batch)
	if err != nil && len(batch) > 1 && !errors.Is(err, ErrDatabaseUnavailable) {
		r.commitOrSplit(ctx, batch[:len(batch)/2])
		r.commitOrSplit(ctx, batch[len(batch)/2:])
		return
	}
	for i, d := range batch {
		if err != nil {
			d.done <- recordResult{err: err}
			continue
		}
		d.done <- recordResult{rec: recs[i]}
	}
}

// commit records the deliveries in one transaction: the events in one pipelined round trip, the sync jobs
// of the new ones in one River insert, then each delivery's Also.
func (r *EventRecorder) commit(ctx context.Context, batch []*delivery) ([]Recorded, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: begin: %w", ErrDatabaseUnavailable, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	b := &pgx.Batch{}
	for _, d := range batch {
		ev := d.ev
		b.Queue(insertEventSQL, string(ev.Key.Hook), ev.Key.FlowID, ev.Key.BodySHA256, ev.IdentityID, ev.OccurredAt)
	}
	results := tx.SendBatch(ctx, b)
	recs := make([]Recorded, len(batch))
	var jobs []river.InsertManyParams
	var fresh []int // recs[fresh[j]] gets the job jobs[j]
	for i, d := range batch {
		tag, err := results.Exec()
		if err != nil {
			_ = results.Close()
			return nil, fmt.Errorf("record event %s: %w", d.ev.Key, err)
		}
		if tag.RowsAffected() == 0 {
			recs[i].Duplicate = true
			continue
		}
		key := d.ev.Key
		jobs = append(jobs, river.InsertManyParams{Args: IdentityArgs{IdentityID: d.ev.IdentityID, Event: &key}})
		fresh = append(fresh, i)
	}
	if err := results.Close(); err != nil {
		return nil, fmt.Errorf("record %d events: %w", len(batch), err)
	}
	if len(jobs) > 0 {
		inserted, err := r.jobs.InsertManyTx(ctx, tx, jobs)
		if err != nil {
			return nil, fmt.Errorf("enqueue sync of %d events: %w", len(jobs), err)
		}
		for j, i := range fresh {
			recs[i].JobID = inserted[j].Job.ID
		}
	}
	for _, d := range batch {
		if d.also == nil {
			continue
		}
		if err := d.also(ctx, tx); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit %d events: %w", len(batch), err)
	}
	if r.onCommit != nil {
		r.onCommit(len(batch))
	}
	return recs, nil
}
