package hooks_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

// Every test here registers through a real Kratos's native API, with the shipped kratos.yml, against the
// service in invite-only mode.

func TestInviteOnly_ThroughKratos(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})

	t.Run("an uninvited registration is refused on the e-mail field and stores nothing", func(t *testing.T) {
		email := testenv.Email("uninvited")
		res := s.register(t, testenv.Traits(email, "", ""), "", "198.51.100.1")
		msg := requireRefusedAt(t, res, "traits.email", hooks.MsgInviteRequired)
		require.Contains(t, msg.Text, "invitation")
		require.Empty(t, s.identityWith(t, email))
	})

	t.Run("an e-mail invite admits its address in any letter case and is bound to the new identity", func(t *testing.T) {
		email := testenv.Email("invited")
		inv := s.createInvite(t, invites.CreateOpts{Email: strings.ToUpper(email)})
		id := requireRegistered(t, s.register(t, testenv.Traits(strings.Replace(email, "invited", "InViTeD", 1), "", ""), "", "198.51.100.2"))

		// The post-persist hook binds the reservation to the identity (Kratos sends it asynchronously).
		testenv.Poll(t, 10*time.Second, func() error {
			if got := s.invite(t, inv.ID).RedeemedBy; len(got) != 1 || got[0] != id {
				return fmt.Errorf("redeemed by %v", got)
			}
			return nil
		})
		require.Equal(t, 1, s.invite(t, inv.ID).Uses)

		// Single use: another registration of the same address (a new flow) is refused as used up.
		res := s.register(t, testenv.Traits(email, "", ""), "", "198.51.100.2")
		msg := requireRefusedAt(t, res, "traits.email", hooks.MsgInviteUsedUp)
		require.EqualValues(t, 1, msg.Context["max_uses"])
	})

	t.Run("a code invite admits whoever holds the code", func(t *testing.T) {
		inv := s.createInvite(t, invites.CreateOpts{Code: true, MaxUses: 2})
		for _, who := range []string{"holder-a", "holder-b"} {
			requireRegistered(t, s.register(t, testenv.Traits(testenv.Email(who), "", ""), strings.ToLower(inv.Code), "198.51.100.3"))
		}
		// A third is refused as used up, on the form (the code is not a Kratos field).
		res := s.register(t, testenv.Traits(testenv.Email("holder-c"), "", ""), inv.Code, "198.51.100.3")
		requireRefusedAt(t, res, "", hooks.MsgInviteUsedUp)
		testenv.Poll(t, 10*time.Second, func() error {
			if got := s.invite(t, inv.ID).RedeemedBy; len(got) != 2 {
				return fmt.Errorf("redeemed by %v", got)
			}
			return nil
		})
	})

	t.Run("an unknown code is refused with its own message", func(t *testing.T) {
		res := s.register(t, testenv.Traits(testenv.Email("guess"), "", ""), "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH", "198.51.100.4")
		requireRefusedAt(t, res, "", hooks.MsgInviteCodeUnknown)
		res = s.register(t, testenv.Traits(testenv.Email("guess"), "", ""), "", "198.51.100.4")
		requireRefusedAt(t, res, "traits.email", hooks.MsgInviteRequired)
	})

	t.Run("an expired invite is refused with its own message", func(t *testing.T) {
		code := s.createInvite(t, invites.CreateOpts{Code: true, ExpiresIn: time.Hour})
		email := testenv.Email("late")
		bound := s.createInvite(t, invites.CreateOpts{Email: email, ExpiresIn: time.Hour})
		s.clock.Advance(2 * time.Hour)
		defer s.clock.Advance(-2 * time.Hour)

		msg := requireRefusedAt(t, s.register(t, testenv.Traits(testenv.Email("late-code"), "", ""), code.Code, "198.51.100.5"), "", hooks.MsgInviteExpired)
		require.Equal(t, code.ExpiresAt.Format(time.RFC3339), msg.Context["expired_at"])
		requireRefusedAt(t, s.register(t, testenv.Traits(email, "", ""), "", "198.51.100.5"), "traits.email", hooks.MsgInviteExpired)
		require.Zero(t, s.invite(t, bound.ID).Uses)
	})

	t.Run("a revoked invite can no longer be used", func(t *testing.T) {
		inv := s.createInvite(t, invites.CreateOpts{Code: true, MaxUses: 5})
		requireRegistered(t, s.register(t, testenv.Traits(testenv.Email("before-revoke"), "", ""), inv.Code, "198.51.100.6"))

		status, body := s.adminCall(t, http.MethodDelete, "/admin/invites/"+inv.ID.String(), adminToken, nil)
		require.Equal(t, http.StatusOK, status, string(body))
		require.Contains(t, string(body), `"status":"revoked"`)

		email := testenv.Email("after-revoke")
		requireRefusedAt(t, s.register(t, testenv.Traits(email, "", ""), inv.Code, "198.51.100.6"), "", hooks.MsgInviteRevoked)
		require.Empty(t, s.identityWith(t, email))
	})

	t.Run("an identity without an e-mail address is gated by invite only", func(t *testing.T) {
		phone := "+4915112345678"
		res := s.register(t, map[string]any{"phone": phone}, "", "198.51.100.7")
		requireRefusedAt(t, res, "", hooks.MsgInviteRequired)

		inv := s.createInvite(t, invites.CreateOpts{Code: true})
		id := requireRegistered(t, s.register(t, map[string]any{"phone": phone}, inv.Code, "198.51.100.7"))
		testenv.Poll(t, 10*time.Second, func() error {
			if got := s.invite(t, inv.ID).RedeemedBy; len(got) != 1 || got[0] != id {
				return fmt.Errorf("redeemed by %v", got)
			}
			return nil
		})
	})
}

func TestInviteOnly_TwentyRegistrationsRacingForOneCodeMakeOneIdentity(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})
	inv := s.createInvite(t, invites.CreateOpts{Code: true})
	before := len(s.identities(t))

	// Each racer starts its own flow from its own address first, then all submit at once.
	const n = 20
	type racer struct {
		flowID, email, ip string
	}
	racers := make([]racer, n)
	for i := range racers {
		ip := fmt.Sprintf("203.0.113.%d", i+1)
		flowID, status, body := s.kratos.StartFlow(t, "registration", "", flowOpts(ip))
		require.NotEmpty(t, flowID, "%d %s", status, body)
		racers[i] = racer{flowID: flowID, email: testenv.Email(fmt.Sprintf("racer%d", i)), ip: ip}
	}
	barrier := make(chan struct{})
	results := make([]testenv.FlowResult, n)
	var wg sync.WaitGroup
	for i, r := range racers {
		wg.Go(func() {
			<-barrier
			results[i] = s.kratos.SubmitFlow(t, "registration", r.flowID, "", map[string]any{
				"method": "password", "traits": testenv.Traits(r.email, "", ""), "password": testenv.Password,
				"transient_payload": map[string]any{"invite_code": inv.Code},
			}, flowOpts(r.ip))
		})
	}
	close(barrier)
	wg.Wait()

	won := 0
	for _, res := range results {
		if res.Status == http.StatusOK {
			won++
			continue
		}
		requireRefusedAt(t, res, "", hooks.MsgInviteUsedUp)
	}
	require.Equal(t, 1, won)
	require.Len(t, s.identities(t), before+1, "identities in Kratos")
	require.Equal(t, 1, s.invite(t, inv.ID).Uses)
}

func TestInviteOnly_KratosRetryingTheValidateCallTakesNoSecondUse(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})
	inv := s.createInvite(t, invites.CreateOpts{Code: true})

	// The service reserves the use, but Kratos gets a 500 instead of the answer and sends the same call
	// again: the single-use invite must still admit it.
	before := s.proxy.count("/hooks/registration/validate")
	s.proxy.failNextCalls("/hooks/registration/validate", 1)
	id := requireRegistered(t, s.register(t, testenv.Traits(testenv.Email("retried"), "", ""), inv.Code, "192.0.2.10"))
	require.Equal(t, 2, s.proxy.count("/hooks/registration/validate")-before, "Kratos called the validate hook twice")

	testenv.Poll(t, 10*time.Second, func() error {
		got := s.invite(t, inv.ID)
		if len(got.RedeemedBy) != 1 || got.RedeemedBy[0] != id {
			return fmt.Errorf("redeemed by %v", got.RedeemedBy)
		}
		return nil
	})
	require.Equal(t, 1, s.invite(t, inv.ID).Uses)
}

func TestInviteOnly_UnconfirmedReservationsAreSettledWithKratosAfterTheirTimeout(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})
	inv := s.createInvite(t, invites.CreateOpts{Code: true, MaxUses: 3})

	// 1. A registration whose post-persist hook is lost: the identity exists, the reservation stays
	// unconfirmed.
	s.proxy.dropCalls("/hooks/registration/after", true)
	lostEmail := testenv.Email("lost-hook")
	lostID := requireRegistered(t, s.register(t, testenv.Traits(lostEmail, "", ""), inv.Code, "192.0.2.20"))
	// Kratos sends the hook from a goroutine and retries it: wait until all three attempts were dropped.
	testenv.Poll(t, 15*time.Second, func() error {
		if n := s.proxy.dropped.Load(); n < 3 {
			return fmt.Errorf("%d deliveries dropped", n)
		}
		return nil
	})
	s.proxy.dropCalls("/hooks/registration/after", false)

	// 2. A registration that fails in Kratos after the validate hook reserved a use: the address belongs
	// to an existing account (its own, earlier registration).
	dupEmail := testenv.Email("duplicate")
	dupID := requireRegistered(t, s.register(t, testenv.Traits(dupEmail, "", ""), inv.Code, "192.0.2.21"))
	res := s.register(t, testenv.Traits(dupEmail, "", ""), inv.Code, "192.0.2.21")
	require.Equal(t, http.StatusBadRequest, res.Status, string(res.Body))
	require.Contains(t, string(res.Body), "4000007", "Kratos refused the duplicate")

	// All three uses are taken: a fourth registration is refused.
	requireRefusedAt(t, s.register(t, testenv.Traits(testenv.Email("fourth"), "", ""), inv.Code, "192.0.2.22"), "", hooks.MsgInviteUsedUp)

	// Before the timeout, settling changes nothing.
	done, err := invites.SettleStale(s.ctx, s.db.Pool, s.kratos.Admin, s.clock.Now().Add(14*time.Minute), 15*time.Minute)
	require.NoError(t, err)
	require.Equal(t, invites.Settled{}, done)

	// After it, the lost hook's identity is found and bound; the duplicate's use is given back, because
	// the account Kratos has for that address is older than the reservation and already redeemed.
	done, err = invites.SettleStale(s.ctx, s.db.Pool, s.kratos.Admin, s.clock.Now().Add(16*time.Minute), 15*time.Minute)
	require.NoError(t, err)
	require.Equal(t, invites.Settled{Confirmed: 1, Released: 1}, done)
	got := s.invite(t, inv.ID)
	require.Equal(t, 2, got.Uses)
	require.ElementsMatch(t, []uuid.UUID{lostID, dupID}, got.RedeemedBy)

	// The use given back admits the next person.
	requireRegistered(t, s.register(t, testenv.Traits(testenv.Email("fourth"), "", ""), inv.Code, "192.0.2.22"))
}

func TestInviteOnly_GuessLimiterTripsAfterTenFailuresAndResetsAfterItsWindow(t *testing.T) {
	t.Parallel()
	s := startGateStack(t, hooks.Gating{InviteOnly: true})
	inv := s.createInvite(t, invites.CreateOpts{Code: true, ExpiresIn: 24 * time.Hour})
	const ip = "2001:db8:77::5"

	// Ten wrong codes from one client (a flow of its own each) are refused as unknown.
	for i := range 10 {
		res := s.register(t, testenv.Traits(testenv.Email("guesser"), "", ""), fmt.Sprintf("WRONG-%d", i), ip)
		requireRefusedAt(t, res, "", hooks.MsgInviteCodeUnknown)
	}
	// The eleventh check is refused by the limiter, even with the right code, and even from another
	// address of the same IPv6 /64.
	res := s.register(t, testenv.Traits(testenv.Email("guesser"), "", ""), inv.Code, "2001:db8:77::9")
	msg := requireRefusedAt(t, res, "", hooks.MsgInviteTooManyGuesses)
	require.Greater(t, msg.Context["retry_after_seconds"], float64(14*60))
	require.Zero(t, s.invite(t, inv.ID).Uses)

	// Another client is not limited.
	requireRefusedAt(t, s.register(t, testenv.Traits(testenv.Email("other"), "", ""), "WRONG", "192.0.2.99"), "", hooks.MsgInviteCodeUnknown)

	// After the window, the right code is admitted.
	s.clock.Advance(15*time.Minute + time.Second)
	requireRegistered(t, s.register(t, testenv.Traits(testenv.Email("guesser"), "", ""), inv.Code, ip))
}
