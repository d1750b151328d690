package sync_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	gosync "sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// recorderBundle is an EventRecorder with one committer over a fresh database, and the sizes of the
// transactions it committed.
type recorderBundle struct {
	db       *testenv.DB
	recorder *profilesync.EventRecorder
	mu       gosync.Mutex
	commits  []int
}

func newRecorder(t *testing.T, pool *pgxpool.Pool, committers int) *recorderBundle {
	t.Helper()
	b := &recorderBundle{}
	if pool == nil {
		b.db = testenv.NewDB(t)
		pool = b.db.Pool
	}
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	b.recorder = profilesync.NewEventRecorder(profilesync.EventRecorderOpts{Pool: pool, Jobs: jobs, Committers: committers, Timeout: 5 * time.Second})
	b.recorder.SetOnCommit(func(n int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.commits = append(b.commits, n)
	})
	return b
}

func (b *recorderBundle) commitSizes() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.commits...)
}

func delivery(body string) profilesync.Event {
	sum := sha256.Sum256([]byte(body))
	return profilesync.Event{
		Key:        profilesync.EventKey{Hook: profilesync.HookLoginAfter, FlowID: uuid.New(), BodySHA256: sum[:]},
		IdentityID: uuid.New(),
	}
}

type outcome struct {
	rec profilesync.Recorded
	err error
}

// recordWhileHeld records a delivery whose transaction waits, so that evs, recorded meanwhile, all wait for
// the one committer; once they all wait, it lets the first transaction commit and returns their outcomes.
func (b *recorderBundle) recordWhileHeld(t *testing.T, evs []profilesync.Event, alsos []profilesync.Also) []outcome {
	t.Helper()
	release, started := make(chan struct{}), make(chan struct{})
	held := make(chan outcome, 1)
	go func() {
		rec, err := b.recorder.Record(context.Background(), delivery("held"), func(ctx context.Context, _ pgx.Tx) error {
			close(started)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		held <- outcome{rec, err}
	}()
	<-started

	outcomes := make([]outcome, len(evs))
	var wg gosync.WaitGroup
	for i, ev := range evs {
		wg.Go(func() {
			var also profilesync.Also
			if alsos != nil {
				also = alsos[i]
			}
			rec, err := b.recorder.Record(context.Background(), ev, also)
			outcomes[i] = outcome{rec, err}
		})
	}
	require.Eventually(t, func() bool { return b.recorder.Waiting() == len(evs) }, 5*time.Second, time.Millisecond,
		"every delivery waits while the committer is busy")
	close(release)
	wg.Wait()
	require.NoError(t, (<-held).err)
	return outcomes
}

func countRows(t *testing.T, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func TestEventRecorder_DeliveriesThatArriveWhileTheCommitterIsBusyShareOneTransaction(t *testing.T) {
	b := newRecorder(t, nil, 1)
	evs := make([]profilesync.Event, 50)
	for i := range evs {
		evs[i] = delivery(fmt.Sprintf("body %d", i))
	}
	outcomes := b.recordWhileHeld(t, evs, nil)

	require.Equal(t, []int{1, 50}, b.commitSizes(), "the held delivery alone, then the 50 that waited together")
	jobIDs := map[int64]bool{}
	for i, o := range outcomes {
		require.NoError(t, o.err)
		require.False(t, o.rec.Duplicate)
		require.NotZero(t, o.rec.JobID)
		jobIDs[o.rec.JobID] = true
		// Acknowledged means committed: the event and a job for its identity are there.
		require.Equal(t, 1, countRows(t, b.db.Pool, `SELECT count(*) FROM hook_events WHERE flow_id = $1`, evs[i].Key.FlowID))
		require.Equal(t, 1, countRows(t, b.db.Pool, `SELECT count(*) FROM river_job WHERE id = $1 AND args->>'identity_id' = $2`,
			o.rec.JobID, evs[i].IdentityID.String()))
	}
	require.Len(t, jobIDs, 50, "a job of its own for every delivery")
}

func TestEventRecorder_ADeliveryThatCannotBeWrittenFailsAlone(t *testing.T) {
	b := newRecorder(t, nil, 1)
	evs := make([]profilesync.Event, 10)
	alsos := make([]profilesync.Also, 10)
	broken := errors.New("this delivery's own work fails")
	for i := range evs {
		evs[i] = delivery(fmt.Sprintf("body %d", i))
	}
	alsos[3] = func(context.Context, pgx.Tx) error { return broken }
	outcomes := b.recordWhileHeld(t, evs, alsos)

	for i, o := range outcomes {
		if i == 3 {
			require.ErrorIs(t, o.err, broken)
			require.Zero(t, countRows(t, b.db.Pool, `SELECT count(*) FROM hook_events WHERE flow_id = $1`, evs[i].Key.FlowID),
				"a delivery that failed leaves nothing")
			continue
		}
		require.NoError(t, o.err, "delivery %d", i)
		require.Equal(t, 1, countRows(t, b.db.Pool, `SELECT count(*) FROM hook_events WHERE flow_id = $1`, evs[i].Key.FlowID))
	}
	require.Equal(t, 10, countRows(t, b.db.Pool, `SELECT count(*) FROM river_job`), "the held delivery's job and the 9 others'")
	// The held delivery alone; then the batch of the 9 others failed as a whole, and its halves were tried
	// again down to the broken delivery: each other one committed once, in a few transactions (halving 9
	// takes at most 4 steps, each committing the half without the broken delivery).
	sizes := b.commitSizes()
	require.Equal(t, 1, sizes[0])
	committed := 0
	for _, n := range sizes {
		committed += n
	}
	require.Equal(t, 10, committed)
	require.LessOrEqual(t, len(sizes), 1+4, "commits: %v", sizes)
}

func TestEventRecorder_ARetryInTheSameTransactionIsADuplicate(t *testing.T) {
	b := newRecorder(t, nil, 1)
	ev := delivery("the same bytes")
	other := delivery("another")
	outcomes := b.recordWhileHeld(t, []profilesync.Event{ev, other, ev}, nil)

	require.Equal(t, []int{1, 3}, b.commitSizes())
	var fresh, dup int
	for _, o := range outcomes {
		require.NoError(t, o.err)
		if o.rec.Duplicate {
			dup++
			require.Zero(t, o.rec.JobID)
		} else {
			fresh++
		}
	}
	require.Equal(t, 2, fresh)
	require.Equal(t, 1, dup)
	require.Equal(t, 1, countRows(t, b.db.Pool, `SELECT count(*) FROM hook_events WHERE flow_id = $1`, ev.Key.FlowID))
	require.Equal(t, 3, countRows(t, b.db.Pool, `SELECT count(*) FROM river_job`), "the held one, ev once, other")
}

func TestEventRecorder_AnUnreachableDatabaseFailsEveryDeliveryAtOnce(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	b := newRecorder(t, pool, 2)

	var wg gosync.WaitGroup
	errs := make([]error, 20)
	start := time.Now()
	for i := range errs {
		wg.Go(func() { _, errs[i] = b.recorder.Record(context.Background(), delivery(fmt.Sprint(i)), nil) })
	}
	wg.Wait()
	for _, err := range errs {
		require.ErrorIs(t, err, profilesync.ErrDatabaseUnavailable)
	}
	require.Less(t, time.Since(start), 5*time.Second, "refused connections fail fast, not at the deadline")
}
