package chaos

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// Kratos (and so its admin API, which every sync job reads) is down for 30 s while events arrive. The hooks
// go on accepting them, the sync jobs fail and retry (JOB_RETRY_BASE 100 ms, JOB_RETRY_MAX 1 s), and once
// Kratos is back every one of them completes.
func TestKratosAdminDownFor30s(t *testing.T) {
	t.Parallel()
	const outage = 30 * time.Second
	s := startStack(t, stackOpts{})
	people := s.createPeople(t, 1000, "kratos")
	events := make([]event, len(people))
	for i, p := range people {
		events[i] = newEvent(t, "registration/after", p, time.Time{})
	}
	ctx := context.Background()

	s.kratos.Stop()
	stopped := time.Now()
	// The events arrive over the first 20 s of the outage.
	d := startDelivery(t, s.http.URL, events, deliveryOpts{Senders: 8, PerSecond: 50})
	acked := d.wait(t, time.Minute)
	d.requireNoFailures(t)
	// Every sync job has tried and failed at least once, and nothing reached profiles.
	testenv.Poll(t, outage, func() error {
		c, err := s.jobs(ctx)
		if err != nil {
			return err
		}
		return atLeast("sync jobs retried", c.Retried, len(events))
	})
	n, err := s.countProfiles(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "profiles written while Kratos was down")
	// Readiness stays green and names the cause: an admin API outage must not pull the receivers.
	status, checks := testenv.Readiness(t, s.http.URL)
	require.Equal(t, http.StatusOK, status)
	require.NotEqual(t, "ok", checks["kratos_admin"])

	time.Sleep(time.Until(stopped.Add(outage))) // the outage's length, as specified
	s.kratos.Start(t)
	down := time.Since(stopped)
	back := time.Now()
	jobs := s.waitSettled(t, len(events), 2*time.Minute)
	caughtUp := time.Since(back)
	c := s.takeCensus(t, acked)
	present, wrong := c.present(acked)
	var attempts int
	require.NoError(t, s.db.QueryRow(ctx, `SELECT coalesce(sum(attempt), 0) FROM river_job WHERE kind = 'sync_identity'`).Scan(&attempts))

	t.Logf("injected: Kratos stopped for %s (%s with its restart), %d events delivered meanwhile", outage, down.Round(time.Millisecond), len(events))
	t.Logf("counted: sent %d, acknowledged %d, present %d, lost %d; %d sync attempts for %d sync jobs, all done %s after Kratos was back; %s",
		len(events), d.ackedEvents(), present, len(acked)-present, attempts, jobs.SyncJobs, caughtUp.Round(time.Millisecond), d.latencyText())

	require.Zero(t, jobs.Failed)
	require.Len(t, acked, len(people))
	require.Equal(t, len(acked), present, "acknowledged but not as Kratos has them; the first:\n%s", strings.Join(wrong, "\n"))
	c.requireEqualsKratos(t)
	require.Greater(t, attempts, 2*len(events), "sync jobs should have retried through the outage")
}
