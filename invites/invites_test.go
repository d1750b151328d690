package invites_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

type testBundle struct {
	db  *testenv.DB
	ctx context.Context
	now time.Time
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	return &testBundle{db: testenv.NewDB(t), ctx: testenv.Context(t), now: time.Now().UTC().Truncate(time.Microsecond)}
}

// createOpts is a factory: a code invite unless the test says otherwise.
func (b *testBundle) create(t *testing.T, opts invites.CreateOpts) invites.Created {
	t.Helper()
	if opts.Email == "" {
		opts.Code = true
	}
	c, err := invites.Create(b.ctx, b.db.Pool, opts, b.now)
	require.NoError(t, err)
	return c
}

func (b *testBundle) admit(t *testing.T, req invites.AdmitRequest, at time.Time) (invites.Admission, error) {
	t.Helper()
	if req.FlowID == uuid.Nil {
		req.FlowID = uuid.New()
	}
	if req.Address == "" {
		req.Address = invites.Address(req.Email, "")
	}
	if req.Address == "" {
		req.Address = "+4930" + uuid.NewString()[:8]
	}
	if req.ClientKey == "" {
		req.ClientKey = invites.ClientKey("", req.FlowID)
	}
	return invites.Admit(b.ctx, b.db.Pool, req, invites.DefaultGuessLimit, at)
}

func requireRefused(t *testing.T, err error, reason invites.Reason) *invites.RefusedError {
	t.Helper()
	var refused *invites.RefusedError
	require.ErrorAs(t, err, &refused)
	require.Equal(t, reason, refused.Reason)
	return refused
}

func TestCreate_Defaults(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{Email: " Alice@Example.COM ", Note: "from the sales team"})
	require.Empty(t, c.Code)
	require.Equal(t, "alice@example.com", *c.Email)
	require.Equal(t, 1, c.MaxUses)
	require.Equal(t, b.now.Add(7*24*time.Hour), c.ExpiresAt)

	got, err := invites.Get(b.ctx, b.db.Pool, c.ID)
	require.NoError(t, err)
	require.Equal(t, c.Invite, got)
	require.Equal(t, invites.StatusActive, got.StatusAt(b.now))
}

func TestCreate_RefusesBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, opts := range []invites.CreateOpts{
		{},
		{Email: "a@example.com", Code: true},
		{Email: "not-an-address"},
		{Code: true, MaxUses: -1},
		{Code: true, ExpiresIn: -time.Hour},
		{Code: true, Note: strings.Repeat("x", 1001)},
	} {
		_, err := invites.Create(b.ctx, b.db.Pool, opts, b.now)
		var input *invites.InputError
		require.ErrorAs(t, err, &input, "%+v", opts)
	}
}

func TestAdmit_CodeInviteAdmitsTheHolderInAnySpelling(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{MaxUses: 3})
	require.Regexp(t, `^[A-Z2-7]{4}(-[A-Z2-7]{4}){7}$`, c.Code)

	for _, spelling := range []string{c.Code, strings.ToLower(c.Code), strings.ReplaceAll(c.Code, "-", " ")} {
		adm, err := b.admit(t, invites.AdmitRequest{Email: testenv.Email("holder"), Code: spelling}, b.now)
		require.NoError(t, err, spelling)
		require.Equal(t, c.ID, adm.InviteID)
	}
	got, err := invites.Get(b.ctx, b.db.Pool, c.ID)
	require.NoError(t, err)
	require.Equal(t, 3, got.Uses)
}

func TestAdmit_EmailInviteAdmitsItsAddressOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{Email: "Bob@Example.com"})

	_, err := b.admit(t, invites.AdmitRequest{Email: "mallory@example.com"}, b.now)
	requireRefused(t, err, invites.ReasonNoInvite)

	adm, err := b.admit(t, invites.AdmitRequest{Email: invites.NormalizeEmail("BOB@example.COM")}, b.now)
	require.NoError(t, err)
	require.Equal(t, c.ID, adm.InviteID)

	// Single use: a second registration of the address (a second flow) is refused as used up.
	refused := requireRefused(t, mustErr(b.admit(t, invites.AdmitRequest{Email: "bob@example.com"}, b.now)), invites.ReasonUsedUp)
	require.False(t, refused.ByCode)
	require.Equal(t, 1, refused.MaxUses)
}

func mustErr(_ invites.Admission, err error) error { return err }

func TestAdmit_RefusesExpiredUsedUpAndRevokedInvitesWithTheirOwnReason(t *testing.T) {
	t.Parallel()
	b := setup(t)

	expired := b.create(t, invites.CreateOpts{ExpiresIn: time.Hour})
	refused := requireRefused(t, mustErr(b.admit(t, invites.AdmitRequest{Code: expired.Code}, b.now.Add(time.Hour))), invites.ReasonExpired)
	require.True(t, refused.ByCode)
	require.Equal(t, expired.ExpiresAt, refused.ExpiredAt)

	usedUp := b.create(t, invites.CreateOpts{})
	_, err := b.admit(t, invites.AdmitRequest{Code: usedUp.Code}, b.now)
	require.NoError(t, err)
	requireRefused(t, mustErr(b.admit(t, invites.AdmitRequest{Code: usedUp.Code}, b.now)), invites.ReasonUsedUp)

	revoked := b.create(t, invites.CreateOpts{MaxUses: 5})
	_, err = b.admit(t, invites.AdmitRequest{Code: revoked.Code}, b.now)
	require.NoError(t, err)
	inv, err := invites.Revoke(b.ctx, b.db.Pool, revoked.ID, b.now)
	require.NoError(t, err)
	require.Equal(t, invites.StatusRevoked, inv.StatusAt(b.now))
	requireRefused(t, mustErr(b.admit(t, invites.AdmitRequest{Code: revoked.Code}, b.now)), invites.ReasonRevoked)

	emailExpired := b.create(t, invites.CreateOpts{Email: "late@example.com", ExpiresIn: time.Minute})
	refused = requireRefused(t, mustErr(b.admit(t, invites.AdmitRequest{Email: "late@example.com"}, b.now.Add(2*time.Minute))), invites.ReasonExpired)
	require.False(t, refused.ByCode)
	require.Equal(t, emailExpired.ExpiresAt, refused.ExpiredAt)

	_, err = invites.Revoke(b.ctx, b.db.Pool, uuid.New(), b.now)
	require.ErrorIs(t, err, invites.ErrNotFound)
}

func TestAdmit_ANewerEmailInviteIsUsedWhenAnOlderOneIsSpent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := b.create(t, invites.CreateOpts{Email: "carol@example.com"})
	_, err := b.admit(t, invites.AdmitRequest{Email: "carol@example.com"}, b.now)
	require.NoError(t, err)
	_, err = invites.Revoke(b.ctx, b.db.Pool, old.ID, b.now)
	require.NoError(t, err)

	b.now = b.now.Add(time.Second)
	fresh := b.create(t, invites.CreateOpts{Email: "carol@example.com"})
	adm, err := b.admit(t, invites.AdmitRequest{Email: "carol@example.com"}, b.now)
	require.NoError(t, err)
	require.Equal(t, fresh.ID, adm.InviteID)
}

func TestAdmit_TheSameFlowAndAddressTakeOneUse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{})
	req := invites.AdmitRequest{FlowID: uuid.New(), Email: "dave@example.com", Address: "dave@example.com", Code: c.Code}

	first, err := b.admit(t, req, b.now)
	require.NoError(t, err)
	require.False(t, first.Repeat)
	// Kratos retrying the same call: admitted again, no second use (the invite is single-use, so a second
	// use would be refused).
	again, err := b.admit(t, req, b.now.Add(2*time.Second))
	require.NoError(t, err)
	require.True(t, again.Repeat)
	require.Equal(t, c.ID, again.InviteID)

	got, err := invites.Get(b.ctx, b.db.Pool, c.ID)
	require.NoError(t, err)
	require.Equal(t, 1, got.Uses)
}

func TestAdmit_ConcurrentRegistrationsNeverExceedMaxUses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{MaxUses: 3})

	const n = 24
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = b.admit(t, invites.AdmitRequest{Email: fmt.Sprintf("racer%d@example.com", i), Code: c.Code,
				ClientKey: fmt.Sprintf("ip:198.51.100.%d", i)}, b.now)
		})
	}
	close(start)
	wg.Wait()

	admitted := 0
	for _, err := range errs {
		if err == nil {
			admitted++
			continue
		}
		requireRefused(t, err, invites.ReasonUsedUp)
	}
	require.Equal(t, 3, admitted)
	var rows int
	require.NoError(t, b.db.Pool.QueryRow(b.ctx, `SELECT count(*) FROM invite_redemptions WHERE invite_id = $1`, c.ID).Scan(&rows))
	require.Equal(t, 3, rows)
}

func TestAdmit_GuessLimiterTripsAfterTenFailuresAndResetsAfterItsWindow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{ExpiresIn: 24 * time.Hour})
	client := invites.ClientKey("203.0.113.50", uuid.New())
	guess := func(code string, at time.Time) error {
		_, err := b.admit(t, invites.AdmitRequest{Email: testenv.Email("guesser"), Code: code, ClientKey: client}, at)
		return err
	}

	t0 := b.now
	for i := range 10 {
		requireRefused(t, guess(fmt.Sprintf("WRONG-CODE-%d", i), t0.Add(time.Duration(i)*time.Minute)), invites.ReasonUnknownCode)
	}
	// The 11th check is refused without looking at the code, even the right one.
	refused := requireRefused(t, guess(c.Code, t0.Add(10*time.Minute)), invites.ReasonTooManyGuesses)
	require.Equal(t, 5*time.Minute, refused.RetryAfter, "the first failure leaves the window 15 minutes after it")

	// Another client is not affected.
	_, err := b.admit(t, invites.AdmitRequest{Email: testenv.Email("other"), Code: "WRONG", ClientKey: invites.ClientKey("203.0.113.51", uuid.New())}, t0.Add(10*time.Minute))
	requireRefused(t, err, invites.ReasonUnknownCode)

	// Once the first failure is 15 minutes old, one more check is allowed (nine failures remain in the
	// window), and the right code is admitted.
	require.NoError(t, guess(c.Code, t0.Add(15*time.Minute)))
	// A full window after the last failure, all are forgotten: ten more failures before the limit.
	later := t0.Add(9*time.Minute + 15*time.Minute)
	for i := range 10 {
		requireRefused(t, guess("WRONG", later.Add(time.Duration(i)*time.Second)), invites.ReasonUnknownCode)
	}
	requireRefused(t, guess("WRONG", later.Add(11*time.Second)), invites.ReasonTooManyGuesses)
}

func TestClientKey_IPv6ClientsAreCountedByTheirSlash64(t *testing.T) {
	t.Parallel()
	flow := uuid.New()
	require.Equal(t, "ip:192.0.2.1", invites.ClientKey("192.0.2.1", flow))
	require.Equal(t, "ip:192.0.2.1", invites.ClientKey("::ffff:192.0.2.1", flow))
	require.Equal(t, invites.ClientKey("2001:db8:1:2::1", flow), invites.ClientKey("2001:db8:1:2:ffff::9", flow))
	require.NotEqual(t, invites.ClientKey("2001:db8:1:2::1", flow), invites.ClientKey("2001:db8:1:3::1", flow))
	require.Equal(t, "flow:"+flow.String(), invites.ClientKey("", flow))
	require.Equal(t, "flow:"+flow.String(), invites.ClientKey("garbage", flow))
}

func TestCodes_NoPlaintextCodeIsStoredAnywhere(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{MaxUses: 2})
	// Use it, fail a check, confirm a use: every table that could hold it has rows.
	adm := invites.AdmitRequest{FlowID: uuid.New(), Email: "erin@example.com", Address: "erin@example.com", Code: c.Code}
	_, err := b.admit(t, adm, b.now)
	require.NoError(t, err)
	_, err = b.admit(t, invites.AdmitRequest{Code: strings.ToLower(c.Code)[:10]}, b.now)
	requireRefused(t, err, invites.ReasonUnknownCode)
	_, err = invites.Confirm(b.ctx, b.db.Pool, adm.FlowID, adm.Address, uuid.New(), b.now)
	require.NoError(t, err)

	plain := strings.ReplaceAll(c.Code, "-", "")
	needles := []string{c.Code, plain, strings.ToLower(plain), plain[:12]}
	tables := []string{}
	rows, err := b.db.Pool.Query(b.ctx, `SELECT quote_ident(table_name) FROM information_schema.tables WHERE table_schema = 'public'`)
	require.NoError(t, err)
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Contains(t, tables, "invites")
	require.Contains(t, tables, "invite_redemptions")
	require.Contains(t, tables, "invite_code_failures")
	for _, table := range tables {
		for _, needle := range needles {
			var n int
			require.NoError(t, b.db.Pool.QueryRow(b.ctx,
				fmt.Sprintf(`SELECT count(*) FROM %s t WHERE strpos(upper(t::text), upper($1)) > 0`, table), needle).Scan(&n))
			require.Zero(t, n, "table %s holds the code", table)
		}
	}
}

func TestList_ShowsUsesAndWhoRedeemed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.create(t, invites.CreateOpts{MaxUses: 2, Note: "beta testers"})
	req := invites.AdmitRequest{FlowID: uuid.New(), Email: "frank@example.com", Address: "frank@example.com", Code: c.Code}
	_, err := b.admit(t, req, b.now)
	require.NoError(t, err)
	identity := uuid.New()
	ok, err := invites.Confirm(b.ctx, b.db.Pool, req.FlowID, req.Address, identity, b.now)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = invites.Confirm(b.ctx, b.db.Pool, req.FlowID, req.Address, identity, b.now)
	require.NoError(t, err)
	require.False(t, ok, "confirming twice changes nothing")
	b.now = b.now.Add(time.Second)
	e := b.create(t, invites.CreateOpts{Email: "gina@example.com"})

	list, err := invites.List(b.ctx, b.db.Pool)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, e.ID, list[0].ID, "newest first")
	require.Equal(t, "email", list[0].Kind())
	require.Empty(t, list[0].RedeemedBy)
	require.Equal(t, "code", list[1].Kind())
	require.Equal(t, 1, list[1].Uses)
	require.Equal(t, []uuid.UUID{identity}, list[1].RedeemedBy)
	require.Equal(t, "beta testers", list[1].Note)
}

func TestAdmit_AnOverdueDeadlineIsAnErrorNotARefusal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(b.ctx)
	cancel()
	_, err := invites.Admit(ctx, b.db.Pool, invites.AdmitRequest{FlowID: uuid.New(), Address: "x@example.com", Email: "x@example.com"}, invites.DefaultGuessLimit, b.now)
	require.Error(t, err)
	var refused *invites.RefusedError
	require.False(t, errors.As(err, &refused))
}
