package chaos

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// Every event delivered three times, in a random order, many at once: the final state must be the one a
// single in-order delivery leaves, which is Kratos's state, identity by identity, with each login counted
// once.
func TestDuplicatedAndShuffledDeliveries(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{})
	people := s.createPeople(t, 400, "dup")

	// Each person registered and logged in; every second one then changed their name (Kratos stores the
	// change before the settings hook fires); every twentieth was then deleted by an admin, for which no
	// webhook fires at all. 400 + 400 + 200 = 1,000 events.
	base := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	loginAt := func(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }
	var events []event
	var halve []person
	deleted := map[int]bool{}
	for i, p := range people {
		events = append(events, newEvent(t, "registration/after", p, time.Time{}), newEvent(t, "login/after", p, loginAt(i)))
		if i%2 == 0 {
			halve = append(halve, p)
		}
		if i%20 == 1 {
			require.NoError(t, s.admin.DeleteIdentity(testenv.Context(t), p.ID))
			deleted[i] = true
		}
	}
	for _, p := range s.rename(t, halve, "Renamed") {
		events = append(events, newEvent(t, "settings/after", p, time.Time{}))
	}
	require.Len(t, events, 1000)

	const copies = 3
	seed := uint64(time.Now().UnixNano())
	deliveries := make([]event, 0, copies*len(events))
	for range copies {
		deliveries = append(deliveries, events...)
	}
	rand.New(rand.NewPCG(seed, seed)).Shuffle(len(deliveries), func(i, j int) {
		deliveries[i], deliveries[j] = deliveries[j], deliveries[i]
	})

	d := startDelivery(t, s.http.URL, deliveries, deliveryOpts{Senders: 16})
	acked := d.wait(t, 2*time.Minute)
	d.requireNoFailures(t)
	jobs := s.waitSettled(t, len(events), 2*time.Minute)
	c := s.takeCensus(t, acked)
	present, wrong := c.present(acked)

	t.Logf("injected: %d copies of each of %d events (%d identities: %d renamed, %d deleted in Kratos), shuffled (seed %d), %d senders",
		copies, len(events), len(people), len(people)/2, len(deleted), seed, 16)
	t.Logf("counted: sent %d, acknowledged %d (%d as duplicates), identities present %d of %d (%d live in Kratos, %d deleted), lost %d; sync jobs %d; %s",
		d.requests.Load(), d.acknowledged.Load(), d.duplicates.Load(), present, len(acked), len(c.kratos), len(deleted), len(acked)-present, jobs.SyncJobs, d.latencyText())

	require.EqualValues(t, len(deliveries), d.acknowledged.Load())
	require.EqualValues(t, len(deliveries)-len(events), d.duplicates.Load(), "every copy after the first is answered as a duplicate")
	require.Len(t, acked, len(people))
	require.Equal(t, len(acked), present, "identities not as Kratos has them; the first:\n%v", wrong)
	c.requireEqualsKratos(t)
	require.Equal(t, len(events), jobs.SyncJobs, "one sync job per distinct event")
	require.Zero(t, jobs.Failed)

	// Each login counted once, at its own time, whatever order and however often it arrived.
	for i, p := range people {
		row, ok := c.profiles[p.ID]
		require.True(t, ok, "profile of %s", p.ID)
		if deleted[i] {
			require.NotNil(t, row.DeletedAt, "deleted identity %s must be a tombstone", p.ID)
			continue
		}
		require.EqualValues(t, 1, row.LoginCount, "logins of %s", p.ID)
		require.NotNil(t, row.LastLoginAt)
		require.True(t, loginAt(i).Equal(*row.LastLoginAt), "last login of %s: %s, want %s", p.ID, row.LastLoginAt, loginAt(i))
		require.EqualValues(t, 1, c.docs[p.ID].Source["login_count"], "login count in the document of %s", p.ID)
	}
}
