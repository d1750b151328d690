package invites_test

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// TestSettleStale_SettlesUnconfirmedReservationsBothWays runs against a real Kratos: the registrations are
// played by creating (or not creating) the identity through the admin API, the post-persist hook by
// Confirm (or its loss by not calling it). Time is the injected clock: nothing sleeps.
func TestSettleStale_SettlesUnconfirmedReservationsBothWays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := testenv.StartKratos(t, testenv.KratosOpts{})
	c := b.create(t, invites.CreateOpts{MaxUses: 4})

	reserve := func(email string, at time.Time) invites.AdmitRequest {
		t.Helper()
		req := invites.AdmitRequest{FlowID: uuid.New(), Email: email, Address: email, Code: c.Code, ClientKey: "ip:192.0.2.1"}
		_, err := invites.Admit(b.ctx, b.db.Pool, req, invites.DefaultGuessLimit, at)
		require.NoError(t, err)
		return req
	}
	createIdentity := func(email string) uuid.UUID {
		t.Helper()
		traits, _ := json.Marshal(map[string]string{"email": email})
		ident, err := k.Admin.CreateIdentity(b.ctx, kratos.CreateIdentityBody{SchemaID: "person", Traits: traits})
		require.NoError(t, err)
		return ident.ID
	}

	// A pre-existing account: its second registration failed in Kratos as a duplicate after our hook
	// reserved a use. Kratos has the address, but the identity predates the reservation.
	dupEmail := testenv.Email("dup")
	createIdentity(dupEmail)
	reservedAt := time.Now().Add(5 * time.Minute)
	duplicate := reserve(dupEmail, reservedAt)

	now := time.Now()
	// Registered, post-persist hook lost.
	lostEmail := testenv.Email("lost")
	lost := reserve(lostEmail, now)
	lostID := createIdentity(lostEmail)
	// Registration failed after the pre-persist hook: no identity.
	failed := reserve(testenv.Email("failed"), now)
	// Registered and confirmed by the post-persist hook.
	okEmail := testenv.Email("ok")
	ok := reserve(okEmail, now)
	okID := createIdentity(okEmail)
	confirmed, err := invites.Confirm(b.ctx, b.db.Pool, ok.FlowID, ok.Address, okID, now)
	require.NoError(t, err)
	require.True(t, confirmed)

	inv, err := invites.Get(b.ctx, b.db.Pool, c.ID)
	require.NoError(t, err)
	require.Equal(t, 4, inv.Uses)

	// Before the timeout nothing is settled.
	done, err := invites.SettleStale(b.ctx, b.db.Pool, k.Admin, now.Add(14*time.Minute), 15*time.Minute)
	require.NoError(t, err)
	require.Equal(t, invites.Settled{}, done)

	// After it, the lost confirmation is made up, and the failed registration's use is given back, as is
	// the duplicate's (its own reservation turns stale five minutes later).
	done, err = invites.SettleStale(b.ctx, b.db.Pool, k.Admin, reservedAt.Add(16*time.Minute), 15*time.Minute)
	require.NoError(t, err)
	require.Equal(t, invites.Settled{Confirmed: 1, Released: 2}, done)

	inv, err = invites.Get(b.ctx, b.db.Pool, c.ID)
	require.NoError(t, err)
	require.Equal(t, 2, inv.Uses)
	require.ElementsMatch(t, []uuid.UUID{lostID, okID}, inv.RedeemedBy)
	for _, req := range []invites.AdmitRequest{failed, duplicate} {
		var n int
		require.NoError(t, b.db.Pool.QueryRow(b.ctx, `SELECT count(*) FROM invite_redemptions WHERE flow_id = $1`, req.FlowID).Scan(&n))
		require.Zero(t, n)
	}
	var bound uuid.UUID
	require.NoError(t, b.db.Pool.QueryRow(b.ctx, `SELECT identity_id FROM invite_redemptions WHERE flow_id = $1`, lost.FlowID).Scan(&bound))
	require.Equal(t, lostID, bound)

	// Settling again finds nothing left to do.
	done, err = invites.SettleStale(b.ctx, b.db.Pool, k.Admin, reservedAt.Add(time.Hour), 15*time.Minute)
	require.NoError(t, err)
	require.Equal(t, invites.Settled{}, done)

	var n int
	// The periodic job settles and prunes old failed code checks.
	gone := reserve(testenv.Email("gone"), now)
	_, err = b.db.Pool.Exec(b.ctx, `INSERT INTO invite_code_failures (client_key, failed_at) VALUES ('ip:192.0.2.9', $1), ('ip:192.0.2.9', $2)`,
		now, now.Add(time.Hour))
	require.NoError(t, err)
	w := &invites.SettleWorker{Pool: b.db.Pool, Kratos: k.Admin, ReservationTimeout: 15 * time.Minute, GuessWindow: 15 * time.Minute,
		Logger: slog.New(slog.DiscardHandler), NowFunc: func() time.Time { return now.Add(time.Hour) }}
	require.NoError(t, w.Work(b.ctx, &river.Job[invites.SettleArgs]{}))
	require.NoError(t, b.db.Pool.QueryRow(b.ctx, `SELECT count(*) FROM invite_redemptions WHERE flow_id = $1`, gone.FlowID).Scan(&n))
	require.Zero(t, n)
	require.NoError(t, b.db.Pool.QueryRow(b.ctx, `SELECT count(*) FROM invite_code_failures`).Scan(&n))
	require.Equal(t, 1, n, "only the failure still inside its window is kept")

	// A Kratos outage leaves the reservation for the next run.
	stuck := reserve(testenv.Email("stuck"), now)
	k.Stop()
	_, err = invites.SettleStale(b.ctx, b.db.Pool, k.Admin, now.Add(time.Hour), 15*time.Minute)
	require.Error(t, err)
	require.NoError(t, b.db.Pool.QueryRow(b.ctx, `SELECT count(*) FROM invite_redemptions WHERE flow_id = $1 AND confirmed_at IS NULL`, stuck.FlowID).Scan(&n))
	require.Equal(t, 1, n)
}
