package chaos

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// Postgres crashes (pg_ctl stop -m immediate: every server process quits at once, nothing is flushed
// beyond what commits already made durable) while events arrive, and comes back. While it is down the
// hooks must refuse at once with 503 and Retry-After, never hang and never answer 500; every event that
// got a 2xx must be in profiles afterwards; and a reconcile pass must then find nothing to repair.
func TestPostgresRestartedWhileEventsArrive(t *testing.T) {
	t.Parallel()
	// A server of the test's own, with fsync on, so that "acknowledged, therefore present" is honest across
	// a crash. Kratos keeps its database on the shared server: only kratos-hooks loses its database.
	pg := testenv.StartPostgres(t, testenv.PostgresOpts{})
	const adminToken = "chaos-admin-token-0123456789"
	s := startStack(t, stackOpts{DatabaseURL: pg.URL, Env: map[string]string{"ADMIN_API_TOKEN": adminToken}})
	people := s.createPeople(t, 1000, "pg")
	events := make([]event, len(people))
	for i, p := range people {
		events[i] = newEvent(t, "registration/after", p, time.Time{})
	}

	// Kratos's client retries a 503 after the Retry-After it was given (5 s), with the same bytes.
	const senders = 8
	d := startDelivery(t, s.http.URL, events, deliveryOpts{Senders: senders, PerSecond: 100, Retry: true})
	testenv.Poll(t, time.Minute, func() error { return atLeast("events acknowledged", d.ackedEvents(), 300) })
	ackedBefore := d.ackedEvents()
	stopping := time.Now()
	pg.Stop(t, "immediate")
	stopped := time.Now()
	// Down until every sender has been refused at least once more after the server was gone: each was
	// already refused while it stopped and waits out its Retry-After (5 s) before trying again.
	testenv.Poll(t, 30*time.Second, func() error { return atLeast("503 answers while down", d.refusalsSince(stopped), senders) })
	// The admin API says the same as the hooks while the database is away: 503, not "internal error".
	req, err := http.NewRequest(http.MethodGet, s.http.URL+"/admin/invites", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	adminStatus, adminRetryAfter := resp.StatusCode, resp.Header.Get("Retry-After")
	pg.Start(t)
	downFor := time.Since(stopping)

	acked := d.wait(t, 2*time.Minute)
	d.requireNoFailures(t)
	jobs := s.waitSettled(t, len(events), 2*time.Minute)
	c := s.takeCensus(t, acked)
	present, wrong := c.present(acked)

	d.mu.Lock()
	refusals := append([]refusal(nil), d.unavailable...)
	statuses := d.statuses
	d.mu.Unlock()
	var slowest time.Duration
	for _, r := range refusals {
		slowest = max(slowest, r.took)
	}
	t.Logf("injected: pg_ctl stop -m immediate after %d events were acknowledged, start again once all %d senders were refused while it was down: down %s (crash recovery included)",
		ackedBefore, senders, downFor.Round(time.Millisecond))
	t.Logf("counted: sent %d events in %d requests (answers: %v), acknowledged %d, present %d, lost %d; slowest 503 %s; sync jobs %d, retried %d; %s",
		len(events), d.requests.Load(), statuses, d.ackedEvents(), present, len(acked)-present, slowest.Round(time.Millisecond), jobs.SyncJobs, jobs.Retried, d.latencyText())

	require.NotEmpty(t, refusals)
	for _, r := range refusals {
		require.Equal(t, "5", r.retryAfter, "a 503 must say when to retry")
		// At once: a refused connection, not a wait for HOOK_DB_TIMEOUT (10 s here) or Kratos's 30 s.
		require.Less(t, r.took, 2*time.Second, "a 503 took %s", r.took)
	}
	require.Equal(t, http.StatusServiceUnavailable, adminStatus, "GET /admin/invites while the database was down")
	require.Equal(t, "5", adminRetryAfter, "GET /admin/invites while the database was down")
	require.Len(t, acked, len(people), "every event is acknowledged in the end")
	require.Equal(t, len(acked), present, "acknowledged but not as Kratos has them; the first:\n%s", strings.Join(wrong, "\n"))
	c.requireEqualsKratos(t)

	// A reconcile pass, as cron would run it, finds profiles and index equal to Kratos.
	stdout, stderr, err := testenv.RunBinary(t, s.env, "reconcile", "--json")
	require.NoError(t, err, "reconcile: %s\n%s", stdout, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var pass map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &pass), stdout)
	t.Logf("reconcile: %s", lines[len(lines)-1])
	require.EqualValues(t, len(people), pass["identities_scanned"])
	for _, drift := range []string{"profiles_missing", "profiles_stale", "profiles_orphaned", "documents_missing", "documents_stale", "repairs_enqueued"} {
		require.EqualValues(t, 0, pass[drift], drift)
	}
}
