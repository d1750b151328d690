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

// Elasticsearch is stopped for 30 s while 2,000 events arrive. The hooks go on accepting them, the sync
// jobs go on writing profiles, the index jobs fail and retry; once the cluster is back every document is
// there, at its profile's revision.
func TestElasticsearchStoppedFor30s(t *testing.T) {
	t.Parallel()
	const outage = 30 * time.Second
	// A node of the test's own: stopping the shared cluster would fail every other test.
	es := testenv.StartElasticsearch(t)
	s := startStack(t, stackOpts{ElasticsearchURL: es.URL, Env: map[string]string{
		// 2,000 index jobs retrying every second while the cluster is down would compete with its restart
		// (tens of seconds of CPU on two cores); every 5 s is still soon enough once it is back.
		"JOB_RETRY_MAX": "5s",
	}})
	people := s.createPeople(t, 2000, "es")
	events := make([]event, len(people))
	for i, p := range people {
		events[i] = newEvent(t, "registration/after", p, time.Time{})
	}
	ctx := context.Background()

	es.Stop(t)
	stopped := time.Now()
	// The events arrive over the first 20 s of the outage.
	d := startDelivery(t, s.http.URL, events, deliveryOpts{Senders: 16, PerSecond: 100})
	acked := d.wait(t, time.Minute)
	d.requireNoFailures(t)
	// Meanwhile every profile is written: only the projection waits.
	testenv.Poll(t, outage, func() error {
		n, err := s.countProfiles(ctx)
		if err != nil {
			return err
		}
		return atLeast("profiles", n, len(people))
	})
	profilesIn := time.Since(stopped)
	// Readiness stays green and names the cause: an index outage must not pull the receivers.
	status, checks := testenv.Readiness(t, s.http.URL)
	require.Equal(t, http.StatusOK, status)
	require.NotEqual(t, "ok", checks["elasticsearch"])

	time.Sleep(time.Until(stopped.Add(outage))) // the outage's length, as specified
	es.Start(t)
	down := time.Since(stopped)
	back := time.Now()
	jobs := s.waitSettled(t, len(events), 2*time.Minute)
	caughtUp := time.Since(back)
	c := s.takeCensus(t, acked)
	present, wrong := c.present(acked)
	var indexAttempts, indexJobs int
	require.NoError(t, s.db.QueryRow(ctx, `SELECT coalesce(sum(attempt), 0), count(*) FROM river_job WHERE kind = 'index_profile'`).Scan(&indexAttempts, &indexJobs))

	t.Logf("injected: Elasticsearch stopped for %s (%s with its restart), %d events delivered meanwhile; all profiles written %s into the outage",
		outage, down.Round(time.Millisecond), len(events), profilesIn.Round(time.Millisecond))
	t.Logf("counted: sent %d, acknowledged %d, present %d (document at the profile's revision), lost %d; %d index attempts for %d index jobs, all done %s after the cluster was back; %s",
		len(events), d.ackedEvents(), present, len(acked)-present, indexAttempts, indexJobs, caughtUp.Round(time.Millisecond), d.latencyText())

	require.Zero(t, jobs.Failed)
	require.Len(t, acked, len(people))
	require.Equal(t, len(acked), present, "acknowledged but not as Kratos has them; the first:\n%s", strings.Join(wrong, "\n"))
	c.requireEqualsKratos(t)
	require.Greater(t, indexAttempts, indexJobs, "index jobs should have failed during the outage and been retried")
}
