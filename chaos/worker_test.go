package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// The worker process is killed with SIGKILL (the OOM killer, a lost node) in the middle of a load and
// started again, while the HTTP process goes on accepting events. The jobs it was running stay "running"
// in River's table until River's rescuer, run by the elected leader, hands them out again: with
// RESCUE_STUCK_JOBS_AFTER at seconds instead of River's hour, nothing is lost and no profile is left wrong.
// The rescue also waits for a new leader: the dead one's lease lasts up to 15 s (River's 5 s election
// interval plus 10 s), and the new leader's rescuer runs as it takes over, so about 20 s in all.
func TestWorkerKilledMidLoad(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{})
	people := s.createPeople(t, 2000, "kill")
	events := make([]event, len(people))
	for i, p := range people {
		events[i] = newEvent(t, "registration/after", p, time.Time{})
	}
	ctx := context.Background()

	d := startDelivery(t, s.http.URL, events, deliveryOpts{Senders: 16, PerSecond: 200})
	// Mid-load: a fifth of the profiles written, and jobs running.
	testenv.Poll(t, time.Minute, func() error {
		n, err := s.countProfiles(ctx)
		if err != nil {
			return err
		}
		if err := atLeast("profiles", n, len(people)/5); err != nil {
			return err
		}
		c, err := s.runningJobs(ctx)
		if err != nil {
			return err
		}
		return atLeast("running jobs", c, 5)
	})
	s.worker.Kill(t)
	killed := time.Now()
	// What the dead worker held: nobody else works a running job until it is rescued.
	orphaned, err := s.runningJobs(ctx)
	require.NoError(t, err)
	profilesAtKill, err := s.countProfiles(ctx)
	require.NoError(t, err)

	// While no worker runs, people whose profiles were written change their names in Kratos, and their
	// settings events arrive: the old name is in profiles and the index, and must not stay there.
	var renamed []event
	for _, p := range s.rename(t, people[:200], "After the kill") {
		renamed = append(renamed, newEvent(t, "settings/after", p, time.Time{}))
	}
	d2 := startDelivery(t, s.http.URL, renamed, deliveryOpts{Senders: 4})
	s.worker.Start(t)
	restarted := time.Since(killed)

	acked := d.wait(t, 2*time.Minute)
	d.requireNoFailures(t)
	d2.wait(t, time.Minute)
	d2.requireNoFailures(t)
	jobs := s.waitSettled(t, len(events)+len(renamed), 2*time.Minute)
	settled := time.Since(killed)
	c := s.takeCensus(t, acked)
	present, wrong := c.present(acked)

	t.Logf("injected: SIGKILL to the worker process with %d of %d profiles written and %d jobs running, started again %s later; %d renames in Kratos meanwhile",
		profilesAtKill, len(people), orphaned, restarted.Round(time.Millisecond), len(renamed))
	t.Logf("counted: sent %d, acknowledged %d (+ %d settings events), present %d, lost %d; %d jobs rescued, every job done %s after the kill; %s",
		len(events), d.ackedEvents(), d2.ackedEvents(), present, len(acked)-present, jobs.Rescued, settled.Round(time.Millisecond), d.latencyText())

	require.Positive(t, orphaned, "the kill must catch jobs running")
	require.GreaterOrEqual(t, jobs.Rescued, orphaned, "every job the dead worker held is rescued")
	require.Zero(t, jobs.Failed)
	require.Len(t, acked, len(people))
	require.Equal(t, len(acked), present, "acknowledged but not as Kratos has them; the first:\n%s", strings.Join(wrong, "\n"))
	c.requireEqualsKratos(t)
	for _, p := range people[:200] {
		require.Equal(t, "Renamed After the kill", c.docs[p.ID].Source["name"], "document of %s", p.ID)
	}
}

// runningJobs counts the sync and index jobs in River's running state.
func (s *stack) runningJobs(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state = 'running' AND kind IN ('sync_identity', 'index_profile')`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count running jobs: %w", err)
	}
	return n, nil
}
